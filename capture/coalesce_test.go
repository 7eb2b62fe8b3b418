package capture

import (
	"context"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// scriptedConn returns its chunks one per Read, then io.EOF.
type scriptedConn struct {
	net.Conn
	chunks [][]byte
}

func (s *scriptedConn) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	s.chunks = s.chunks[1:]
	return n, nil
}

func TestCoalescingConnWaitsOnlyAfterEmptyingTheSocket(t *testing.T) {
	const wait = time.Millisecond
	clock := time.Unix(1000, 0)
	var slept []time.Duration
	c := &coalescingConn{
		Conn: &scriptedConn{chunks: [][]byte{
			[]byte("0123"), // fills the 4-byte buffer: more may be waiting
			[]byte("ab"),   // less than asked: the socket is empty
			[]byte("cd"),   // after a wait; empties it again
			[]byte("efgh"), // read late, after the wait had passed
			[]byte("ij"),   // no wait before it (the last read filled its buffer)
		}},
		wait:  wait,
		now:   func() time.Time { return clock },
		sleep: func(d time.Duration) { slept = append(slept, d); clock = clock.Add(d) },
		buf:   make([]byte, 4),
	}
	read := func(want string, advance time.Duration) {
		t.Helper()
		clock = clock.Add(advance) // the caller's work before this read
		buf := make([]byte, 4)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("Read = %q, %v; want %q", buf[:n], err, want)
		}
	}

	read("0123", 0)
	read("ab", 0)
	if len(slept) != 0 {
		t.Fatalf("waited %v after a read that filled its buffer; want no wait", slept)
	}
	read("cd", 300*time.Microsecond)
	if len(slept) != 1 || slept[0] != 700*time.Microsecond {
		t.Fatalf("waited %v after emptying the socket and 300µs of work; want [700µs]", slept)
	}
	read("efgh", 2*time.Millisecond)
	if len(slept) != 1 {
		t.Fatalf("waited %v although the wait had passed; want no new wait", slept)
	}
	read("ij", 0)
	if len(slept) != 1 {
		t.Fatalf("waited %v after a read that filled its buffer; want no new wait", slept)
	}
}

func TestCoalescingConnHandsOutOneSocketReadInTheSizesAsked(t *testing.T) {
	clock := time.Unix(1000, 0)
	var slept []time.Duration
	sock := &scriptedConn{chunks: [][]byte{
		[]byte("0123456"), // less than the 8-byte buffer: the socket is empty
		[]byte("abcdefgh"),
	}}
	c := &coalescingConn{
		Conn:  sock,
		wait:  time.Millisecond,
		now:   func() time.Time { return clock },
		sleep: func(d time.Duration) { slept = append(slept, d); clock = clock.Add(d) },
		buf:   make([]byte, 8),
	}
	var got []string
	for range 4 {
		p := make([]byte, 3)
		n, err := c.Read(p)
		if err != nil {
			t.Fatalf("read %d after %q: %v (the socket was read more often than once per chunk)", len(got)+1, got, err)
		}
		got = append(got, string(p[:n]))
	}
	if want := []string{"012", "345", "6", "abc"}; !slices.Equal(got, want) {
		t.Fatalf("reads of 3 bytes gave %q; want %q", got, want)
	}
	if len(sock.chunks) != 0 {
		t.Fatalf("%d socket reads left; want both made", len(sock.chunks))
	}
	// The first socket read emptied the socket; what it brought was handed
	// out without a wait, and the wait came before the second socket read.
	if len(slept) != 1 || slept[0] != time.Millisecond {
		t.Fatalf("waited %v; want one wait of 1ms, before the second socket read", slept)
	}
}

// dialCoalesced dials a local listener through coalesceReads(cfg,
// readCoalesce, receiveBuffer), or, with receiveBuffer below 0, with a
// plain dialer. It returns what the dial gave and the TCP socket under it.
func dialCoalesced(t *testing.T, receiveBuffer int) (c net.Conn, raw *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		if c, err := ln.Accept(); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}()
	cfg := &pgconn.Config{DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			raw = c.(*net.TCPConn)
		}
		return c, err
	}}
	if receiveBuffer >= 0 {
		coalesceReads(cfg, readCoalesce, receiveBuffer)
	}
	c, err = cfg.DialFunc(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, raw
}

// The replication connection is dialled as a coalescingConn over the
// socket made raw (package sockio).
func TestCoalesceReadsWrapsTheSocket(t *testing.T) {
	c, raw := dialCoalesced(t, 0)
	cc, ok := c.(*coalescingConn)
	if !ok {
		t.Fatalf("dialled %T, want *coalescingConn", c)
	}
	if cc.Conn == net.Conn(raw) {
		t.Error("the socket under the coalescingConn is not wrapped by sockio")
	}
	if cc.wait != readCoalesce {
		t.Errorf("wait %v, want %v", cc.wait, readCoalesce)
	}
}

// postgres.receive_buffer sets the TCP socket's receive buffer; 0 leaves
// the kernel's.
func TestCoalesceReadsSetsTheReceiveBuffer(t *testing.T) {
	rcvbuf := func(size int) int {
		t.Helper()
		_, raw := dialCoalesced(t, size)
		sc, err := raw.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		var serr error
		if err := sc.Control(func(fd uintptr) { got, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		return got
	}
	// 16 KiB is below Linux's default (tcp_rmem's middle value, 87380 or
	// 131072 bytes); Linux reports twice what was set, as it counts its
	// bookkeeping in the buffer.
	const size = 16 << 10
	plain := rcvbuf(-1)
	if got := rcvbuf(size); got < size || got > 2*size || got == plain {
		t.Errorf("receive buffer %d bytes with postgres.receive_buffer %d; want %d to %d, not the kernel's %d", got, size, size, 2*size, plain)
	}
	if got := rcvbuf(0); got != plain {
		t.Errorf("receive buffer %d bytes with postgres.receive_buffer 0; want the kernel's %d", got, plain)
	}
}
