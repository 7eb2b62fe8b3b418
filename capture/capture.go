// Package capture owns the replication connection to Postgres. It ensures
// the publication and the slot exist, runs START_REPLICATION with pgoutput,
// hands every XLogData and keepalive downstream in WAL order, and confirms to
// Postgres only the position its Positioner (the checkpoint) allows. It
// reconnects with backoff, and knows nothing of outbox semantics.
package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/outboxrelay/outboxrelay/continuity"
	"github.com/outboxrelay/outboxrelay/internal/backoff"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// Config holds the capture settings. Zero values take the documented defaults.
type Config struct {
	URL         string   // Postgres URL; required
	Slot        string   // replication slot, created if missing; required
	Publication string   // created if missing, FOR TABLE Tables; required
	Tables      []string // "schema.name" of the outbox tables
	Messages    bool     // also stream pg_logical_emit_message messages
	// StatusInterval is how often the confirmed position is sent; default 1s.
	StatusInterval time.Duration
	// MaxBackoff caps the wait between reconnects; default 30s.
	MaxBackoff time.Duration
	// Buffer is how many messages may wait for the consumer; default 4096.
	Buffer int
	// BufferBytes is how many bytes of Data messages may be emitted and not
	// yet released (Message.Release); default DefaultBufferBytes. A message
	// larger than that is still emitted, alone.
	BufferBytes int
	Logger      *slog.Logger // default slog.Default()
	// Verify, when set, is asked at every session start, before the slot is
	// created or streamed, whether the slot continues where the stream ends
	// (package continuity). A *continuity.Error halts the capture.
	Verify func(context.Context, continuity.Facts) error
	// CheckInterval is how often the publication is checked while
	// streaming; default DefaultCheckInterval.
	CheckInterval time.Duration
	// FailoverSlot is "auto" (or ""), "on" or "off": whether the slot is a
	// failover slot (postgres.failover_slot).
	FailoverSlot string
	// ReceiveBuffer is the replication socket's receive buffer in bytes,
	// over TCP (postgres.receive_buffer); 0 leaves it to the kernel.
	ReceiveBuffer int
}

// Kind says what a Message carries.
type Kind uint8

const (
	// Restart starts a new replication session: Postgres replays from the
	// confirmed position, so the consumer drops any partial transaction.
	Restart Kind = iota + 1
	// Data is one pgoutput message (XLogData).
	Data
	// Keepalive says every transaction that commits before WALEnd has been sent.
	Keepalive
)

// Message is one item of the replication stream, in WAL order.
type Message struct {
	Kind     Kind
	WALStart pglogrepl.LSN // Data: where the message starts (0/0 for a Relation); Restart: the start position
	WALEnd   pglogrepl.LSN // Keepalive: the server's sent position
	Data     []byte        // Data: the pgoutput message, owned by the receiver

	budget *budget // what Release returns len(Data) to
}

// Positioner tells the capture which position is safe to confirm.
type Positioner interface {
	Watermark() pglogrepl.LSN
}

// Capture streams one slot. Create it with New and call Run once.
type Capture struct {
	cfg    Config
	pos    Positioner
	out    chan Message
	budget *budget
	log    *slog.Logger

	waited     bool // emit blocked since the stream loop last looked; owned by Run
	streaming  atomic.Bool
	standby    atomic.Bool // the last session found the slot held by another process
	reconnects atomic.Uint64
	confirmed  atomic.Uint64
	// checked is the WAL position of the session's last publication check
	// that found nothing changed: the slot is never confirmed past it.
	checked atomic.Uint64
	poke    chan struct{} // asks watch for a check now; capacity 1
	lastErr atomic.Pointer[string]
	halt    atomic.Pointer[continuity.Error]
}

// New returns a Capture that confirms what pos allows.
func New(cfg Config, pos Positioner) *Capture {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 4096
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("slot", cfg.Slot)
	return &Capture{cfg: cfg, pos: pos, out: make(chan Message, cfg.Buffer), budget: newBudget(cfg.BufferBytes), log: cfg.Logger, poke: make(chan struct{}, 1)}
}

// Messages returns the stream of messages. It is never closed.
func (c *Capture) Messages() <-chan Message { return c.out }

// Streaming reports whether the capture holds the slot and is streaming,
// and if not, why.
func (c *Capture) Streaming() (bool, string) {
	if c.streaming.Load() {
		return true, ""
	}
	if p := c.lastErr.Load(); p != nil {
		return false, *p
	}
	return false, "connecting to postgres"
}

// Standby reports whether the capture waits as a standby: its last
// session found the slot streamed by another process.
func (c *Capture) Standby() bool { return c.standby.Load() && !c.streaming.Load() }

// Halted returns the continuity error the capture stopped at, or nil.
func (c *Capture) Halted() *continuity.Error { return c.halt.Load() }

// Stats are counters for metrics.
type Stats struct {
	Reconnects uint64
	Confirmed  pglogrepl.LSN // last position confirmed to Postgres
}

// Stats returns counters for metrics.
func (c *Capture) Stats() Stats {
	return Stats{
		Reconnects: c.reconnects.Load(),
		Confirmed:  pglogrepl.LSN(c.confirmed.Load()),
	}
}

// Run streams until ctx ends, reconnecting with backoff and jitter after any
// error. When ctx ends it confirms the current watermark once more and
// returns nil. It returns an error only for a problem retrying cannot fix.
func (c *Capture) Run(ctx context.Context) error {
	retry := backoff.Backoff{Min: 250 * time.Millisecond, Max: c.cfg.MaxBackoff}
	for {
		started, err := c.session(ctx)
		c.streaming.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		msg := err.Error()
		c.lastErr.Store(&msg)
		c.standby.Store(isSlotActive(err))
		var broken *continuity.Error
		if errors.As(err, &broken) {
			// Stay up, halted, like a halt at an event: readiness and
			// metrics say why until an operator recovers.
			c.halt.Store(broken)
			c.log.Error("halted: "+broken.What, "fix", broken.Fix)
			<-ctx.Done()
			return nil
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			return err
		}
		if started {
			retry.Reset()
		}
		wait := retry.Next()
		if isSlotActive(err) {
			// A standby polls briskly so that it takes over within seconds.
			wait = retry.Cap(2 * time.Second)
		}
		c.reconnects.Add(1)
		if isSlotActive(err) {
			c.log.Info("slot is held by another process; waiting as a standby", "err", err, "retry_in", wait)
		} else {
			c.log.Warn("replication connection lost; reconnecting", "err", err, "retry_in", wait)
		}
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// PermanentError is a capture error that retrying cannot fix, such as a slot
// that uses another output plugin.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// ErrSlotActive means another process (another relay) streams the slot;
// this one waits as a standby and takes over when the slot is free.
var ErrSlotActive = errors.New("another process holds the slot")

func isSlotActive(err error) bool {
	var pgErr *pgconn.PgError
	// 55006: START_REPLICATION raced with another relay for the slot.
	return errors.Is(err, ErrSlotActive) || errors.As(err, &pgErr) && pgErr.Code == "55006"
}

// SetupTimeout bounds a session's setup: the connect, the setup queries,
// the continuity check and START_REPLICATION. A link that goes silent
// during setup (a partition, a dead NAT entry) fails it then, rather than
// after the kernel's TCP timeouts.
const SetupTimeout = 20 * time.Second

// SilenceTimeout is how long the replication connection may stay silent
// (no message from Postgres, after asking for a reply) before the capture
// treats it as dead and reconnects.
const SilenceTimeout = 20 * time.Second

// session runs one replication connection. started reports whether
// START_REPLICATION succeeded.
func (c *Capture) session(ctx context.Context) (started bool, err error) {
	setup, cancelSetup := context.WithTimeout(ctx, SetupTimeout)
	defer cancelSetup()
	conn, err := connect(setup, c.cfg.URL, readCoalesce, c.cfg.ReceiveBuffer)
	if err != nil {
		return false, setupErr(setup, err)
	}
	defer conn.Close(context.Background())

	slot, err := ensure(setup, conn, c.cfg) // ErrSlotActive when another process streams it
	if err != nil {
		return false, setupErr(setup, err)
	}
	// pgoutput splits publication_names like a list of SQL identifiers,
	// folding unquoted ones to lower case: quote the name, so "MyPub" or
	// "a, b" is the one publication it names.
	args := []string{"proto_version '1'", "publication_names " + pgsql.Literal(pgsql.Ident(c.cfg.Publication))}
	if c.cfg.Messages {
		args = append(args, "messages 'true'")
	}
	// Start at 0/0: Postgres resumes from the slot's confirmed position.
	err = pglogrepl.StartReplication(setup, conn, c.cfg.Slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		return false, setupErr(setup, fmt.Errorf("start replication on slot %q: %w", c.cfg.Slot, explain(err)))
	}
	cancelSetup() // from here the stream loop's own deadlines apply
	// The slot never moves back: confirm nothing below where it stands.
	floor := slot.confirmed
	// Nor past what the last publication check covered: at first where
	// the session's own check stood.
	c.checked.Store(uint64(max(slot.facts.ServerLSN, floor)))
	sctx, stopSession := context.WithCancel(ctx)
	defer stopSession()
	watched := make(chan error, 1)
	go func() {
		err := c.watch(sctx, slot.facts.Publication, slot.version)
		if err != nil {
			stopSession()
		}
		watched <- err
	}()
	defer func() {
		stopSession()
		if werr := <-watched; werr != nil {
			err = werr
		}
	}()
	c.log.Info("streaming", "lsn", floor.String(), "publication", c.cfg.Publication)
	c.streaming.Store(true)
	c.standby.Store(false)
	c.lastErr.Store(nil)
	if !c.emit(sctx, conn, floor, Message{Kind: Restart, WALStart: floor}) {
		return true, c.finish(conn, floor)
	}
	return true, c.stream(sctx, conn, floor)
}

// stream receives until ctx ends or the connection fails.
func (c *Capture) stream(ctx context.Context, conn *pgconn.PgConn, floor pglogrepl.LSN) error {
	nc := conn.Conn()
	// now is the clock as of the last read of it. Reading it for every
	// message costs more than a little at 300k messages/s, so it is read
	// every clockEvery messages, after a wait, and at every read deadline
	// (a quiet connection times out at nextStatus, so the status still goes
	// out on time).
	now := time.Now()
	sinceClock := 0
	nextStatus := now.Add(c.cfg.StatusInterval)
	lastHeard := now
	var deadline time.Time // the read deadline set on nc
	for {
		if ctx.Err() != nil {
			return c.finish(conn, floor)
		}
		if c.waited {
			c.waited, now = false, time.Now()
			lastHeard = now
		}
		if !now.Before(nextStatus) {
			// Ask for a reply when the server has been quiet, so a dead
			// connection shows up as silence within a few seconds.
			quiet := now.Sub(lastHeard)
			if quiet > SilenceTimeout {
				return fmt.Errorf("no message from postgres for %s", quiet.Round(time.Second))
			}
			if err := c.sendStatus(conn, floor, quiet > 5*c.cfg.StatusInterval); err != nil {
				return err
			}
			nextStatus = now.Add(c.cfg.StatusInterval)
		}
		// A read deadline rather than a context: pgconn would start a
		// goroutine per receive to watch a context. Set it only when it
		// moves, not for every message.
		if !deadline.Equal(nextStatus) {
			_ = nc.SetReadDeadline(nextStatus)
			deadline = nextStatus
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				now, sinceClock = time.Now(), 0
				continue
			}
			return fmt.Errorf("receive from postgres: %w", err)
		}
		if sinceClock++; sinceClock >= clockEvery {
			now, sinceClock = time.Now(), 0
		}
		lastHeard = now
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parse keepalive: %w", err)
				}
				if !c.emit(ctx, conn, floor, Message{Kind: Keepalive, WALEnd: ka.ServerWALEnd}) {
					return c.finish(conn, floor)
				}
				if ka.ReplyRequested {
					nextStatus = now
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parse XLogData: %w", err)
				}
				// The receive buffer is reused by the next receive.
				data := make([]byte, len(xld.WALData))
				copy(data, xld.WALData)
				if !c.emit(ctx, conn, floor, Message{Kind: Data, WALStart: xld.WALStart, Data: data}) {
					return c.finish(conn, floor)
				}
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", explain(pgconn.ErrorResponseToPgError(msg)))
		case *pgproto3.CopyDone:
			return errors.New("postgres ended the replication stream")
		}
	}
}

// setupErr says when a setup step failed because it ran out of time.
func setupErr(setup context.Context, err error) error {
	if errors.Is(setup.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("session setup took longer than %s (a silent link to postgres?): %w", SetupTimeout, err)
	}
	return err
}

// clockEvery is how many messages the stream loop receives between reads of
// the clock.
const clockEvery = 64

func (c *Capture) sendStatus(conn *pgconn.PgConn, floor pglogrepl.LSN, replyRequested bool) error {
	wm, checked := c.pos.Watermark(), pglogrepl.LSN(c.checked.Load())
	if wm > checked {
		select { // the position waits for a publication check: ask for one
		case c.poke <- struct{}{}:
		default:
		}
	}
	lsn := max(min(wm, checked), floor)
	_ = conn.Conn().SetWriteDeadline(time.Now().Add(10 * time.Second))
	// Write, flush and apply all carry the watermark: Postgres pings a client
	// whose reported write position is behind, which is what makes it send
	// keepalives while the outbox is idle.
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	if pglogrepl.LSN(c.confirmed.Swap(uint64(lsn))) != lsn {
		c.log.Debug("confirmed", "lsn", lsn.String())
	}
	return nil
}

// finish confirms the final watermark and ends the session cleanly.
func (c *Capture) finish(conn *pgconn.PgConn, floor pglogrepl.LSN) error {
	if err := c.sendStatus(conn, floor, false); err != nil && !isClosed(err) {
		c.log.Warn("final standby status", "err", err)
	}
	c.log.Info("stopped streaming", "lsn", pglogrepl.LSN(c.confirmed.Load()).String())
	return nil
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed")
}
