package capture

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/internal/sockio"
)

// readCoalesce is how long the stream waits, after a read that found the
// socket empty, before it reads the replication connection again.
//
// The walsender sends each pgoutput message on its own as it decodes it, so
// a stream of small transactions arrives a message at a time. Read as it
// came, each event woke the relay, and through the relay nats-server, on
// its own: switching tasks cost more CPU than the work, and a busy machine
// ran out of CPU in bursts that showed as latency spikes. Waiting lets the
// socket gather what arrives meanwhile; the relay then reads, publishes and
// confirms it as one batch (docs/performance.md, "Reads gathered for up to
// 1 ms"). The wait comes only after a read that emptied the socket, so an
// event that arrives after a quiet spell of readCoalesce or more is read at
// once, and one that follows another closely waits at most readCoalesce. A
// read empties a receive buffer smaller than readChunk, so a backlog too
// is read about once per readCoalesce. Reading a backlog back to back
// saved the relay about 6% of its CPU in a drain, but drains with Postgres
// and nats-server on the same cores ran slower (docs/performance.md, "Tried
// and left out").
const readCoalesce = time.Millisecond

// readChunk is how many bytes the stream asks the socket for in one read.
// pgproto3 reads at most 8 KiB at a time; a backlog's 64 KiB receive buffer
// then took eight system calls to empty, where one read of readChunk takes
// all of it.
const readChunk = 128 << 10

// coalescingConn is a net.Conn whose reads wait until wait has passed since
// the last read that emptied the socket. A read that returns less than it
// was asked for emptied it, at that moment. It reads the socket len(buf)
// bytes at a time and hands out what it read in the sizes asked for.
type coalescingConn struct {
	net.Conn
	wait    time.Duration
	now     func() time.Time // time.Now; a test's clock
	sleep   func(time.Duration)
	emptied time.Time // when a read last emptied the socket; zero if the last read filled its buffer
	buf     []byte    // the socket's reads land here
	unread  []byte    // what buf holds that Read has not yet handed out
}

func (c *coalescingConn) Read(p []byte) (int, error) {
	if len(c.unread) == 0 {
		if !c.emptied.IsZero() {
			if d := c.wait - c.now().Sub(c.emptied); d > 0 {
				c.sleep(d)
			}
			c.emptied = time.Time{}
		}
		n, err := c.Conn.Read(c.buf)
		if n > 0 && n < len(c.buf) {
			c.emptied = c.now()
		}
		if n == 0 {
			return 0, err
		}
		c.unread = c.buf[:n] // an error with data comes back on the next read of the socket
	}
	n := copy(p, c.unread)
	c.unread = c.unread[n:]
	return n, nil
}

// coalesceReads makes the connections cfg dials read as coalescingConn
// does. It wraps the socket under TLS, so it sees what the kernel had, and
// makes the socket's reads and writes raw system calls (package sockio).
// With receiveBuffer above 0, a TCP socket's receive buffer is that many
// bytes (the kernel may double it, and caps it at net.core.rmem_max).
//
// The walsender sends each pgoutput message as it is decoded, and with room
// in the relay's receive window each goes out as its own TCP segment: on
// the same host, a segment costs the walsender more than decoding the
// message did. A receive buffer that fills during the read wait closes the
// window, so the messages wait in the walsender's socket and go out
// together when the relay reads (docs/performance.md, "A small receive
// buffer").
func coalesceReads(cfg *pgconn.Config, wait time.Duration, receiveBuffer int) {
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok && receiveBuffer > 0 {
			if err := tc.SetReadBuffer(receiveBuffer); err != nil {
				c.Close()
				return nil, fmt.Errorf("postgres.receive_buffer: set the socket's receive buffer to %d bytes: %w", receiveBuffer, err)
			}
		}
		return &coalescingConn{Conn: sockio.Wrap(c), wait: wait, now: time.Now, sleep: time.Sleep, buf: make([]byte, readChunk)}, nil
	}
}
