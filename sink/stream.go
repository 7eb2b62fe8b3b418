package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names of the contract (DESIGN.md, "Messages").
const (
	HeaderMsgID         = "Nats-Msg-Id"
	HeaderExpectedSeq   = "Nats-Expected-Last-Sequence"
	HeaderEventID       = "Outbox-Event-Id"
	HeaderEventType     = "Outbox-Event-Type"
	HeaderAggregateType = "Outbox-Aggregate-Type"
	HeaderAggregateID   = "Outbox-Aggregate-Id"
	HeaderCommitLSN     = "Outbox-Commit-LSN"
	HeaderTxSeq         = "Outbox-Tx-Seq"
	HeaderCommitTime    = "Outbox-Commit-Time"
	HeaderError         = "Outbox-Error" // dead letters only: why
	HeaderTable         = "Outbox-Table" // dead letters only: the source table
)

// ErrSharedStream means the stream holds a message the relay did not write.
// The publish chain needs the relay to be the stream's only writer.
var ErrSharedStream = errors.New("stream is shared with another writer")

// Position is where an event sits in the log: its transaction's commit LSN,
// then its 1-based index within the transaction.
type Position struct {
	CommitLSN pglogrepl.LSN
	TxSeq     uint32
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	return p.CommitLSN < q.CommitLSN || (p.CommitLSN == q.CommitLSN && p.TxSeq < q.TxSeq)
}

func (p Position) String() string { return fmt.Sprintf("%s#%d", p.CommitLSN, p.TxSeq) }

// EnsureStream returns the stream named name, creating it with file storage
// and subjects "<prefix>.>" (plus extra subjects not covered by that) when it
// does not exist. An existing stream is validated, never modified.
func EnsureStream(ctx context.Context, js jetstream.JetStream, name, prefix string, extra ...string) (jetstream.Stream, error) {
	want := wantSubjects(prefix, extra...)
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, newStreamConfig(name, want))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code == 400 {
			// For example subjects that overlap another stream's.
			if why := overlapProblem(ctx, js, want); why != "" {
				return nil, &StreamConfigError{fmt.Errorf("create stream %q with subjects %v: %w: %s", name, want, err, why)}
			}
			return nil, &StreamConfigError{fmt.Errorf("create stream %q with subjects %v: %w", name, want, err)}
		}
		if err != nil {
			return nil, fmt.Errorf("create stream %q with subjects %v: %w", name, want, err)
		}
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %q: %w", name, explainJetStream(err))
	}
	c := st.CachedInfo().Config
	if len(c.Sources) > 0 {
		return nil, &StreamConfigError{errors.New(sourcesProblem(name, c.Sources))}
	}
	have := c.Subjects
	for _, s := range want {
		if !Covers(have, s) {
			return nil, &StreamConfigError{errors.New(notCoveredProblem(name, have, s))}
		}
	}
	return st, nil
}

// wantSubjects returns the subjects the relay's stream must capture:
// "<prefix>.>" and each extra subject that does not cover already.
func wantSubjects(prefix string, extra ...string) []string {
	want := []string{prefix + ".>"}
	for _, s := range extra {
		if s != "" && !Covers(want, s) {
			want = append(want, s)
		}
	}
	return want
}

// newStreamConfig is the stream the relay creates when it is missing.
func newStreamConfig(name string, subjects []string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: "Outbox events published by outboxrelay",
		Subjects:    subjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
	}
}

// The texts of the stream problems below are shared by run and check (see
// Preflight), so a user meets the same words either way.

func notCoveredProblem(name string, have []string, s string) string {
	return fmt.Sprintf("stream %q has subjects %v, which do not cover %q: add %q to the stream's subjects, or point nats.stream at another stream", name, have, s, s)
}

// sourcesProblem is why the relay cannot use a stream that sources others:
// JetStream writes the sourced messages into it, between the relay's own.
func sourcesProblem(name string, sources []*jetstream.StreamSource) string {
	var names []string
	for _, src := range sources {
		names = append(names, src.Name)
	}
	return fmt.Sprintf("stream %q sources streams %v, so JetStream writes their messages into it, and the relay must be its stream's only writer: "+
		"remove the sources from stream %q and put them on a stream of their own that sources it too (docs/fan-in.md), or point nats.stream at another stream", name, names, name)
}

// ownPosition is the position of the relay's event in msg, the message at
// seq of stream name, or an ErrSharedStream error when msg is not the
// relay's: it lacks the position headers, or JetStream copied it from
// another stream (Nats-Stream-Source), whose positions are another
// database's.
func ownPosition(name string, seq uint64, msg *jetstream.RawStreamMsg) (Position, error) {
	pos, err := parsePosition(msg.Header.Get(HeaderCommitLSN), msg.Header.Get(HeaderTxSeq))
	if err != nil {
		return Position{}, fmt.Errorf("stream %q, sequence %d, subject %q: %w: it has no valid %s/%s headers; the relay must be the stream's only writer: give it its own stream (nats.stream), and use JetStream sources or mirrors to combine streams", name, seq, msg.Subject, ErrSharedStream, HeaderCommitLSN, HeaderTxSeq)
	}
	if src := msg.Header.Get(headerStreamSource); src != "" {
		return Position{}, fmt.Errorf("stream %q, sequence %d, subject %q: %w: JetStream copied it from another stream (%s: %s); the relay must be the stream's only writer: give it its own stream (nats.stream), and source it from the stream that combines them", name, seq, msg.Subject, ErrSharedStream, headerStreamSource, src)
	}
	return pos, nil
}

// headerStreamSource is set by JetStream on each message a stream copies
// from one of its sources.
const headerStreamSource = "Nats-Stream-Source"

// overlapProblem names another stream whose subjects overlap want, and the
// fix; "" when there is none.
func overlapProblem(ctx context.Context, js jetstream.JetStream, want []string) string {
	lister := js.ListStreams(ctx)
	for si := range lister.Info() {
		for _, w := range want {
			for _, h := range si.Config.Subjects {
				if overlap(w, h) && !strings.ContainsAny(w, "*>") {
					// The one literal subject the relay's stream takes: two
					// relays (a fan-in) must not share the default.
					return fmt.Sprintf("its dead-letter subject %q overlaps subject %q of stream %q: give each relay a dead-letter subject of its own (errors.dead_letter_subject, e.g. %q), or point nats.stream at stream %q if it is the relay's", w, h, si.Config.Name, strings.TrimSuffix(want[0], ">")+"dead_letter", si.Config.Name)
				}
				if overlap(w, h) {
					return fmt.Sprintf("its subject %q overlaps subject %q of stream %q: change the subject templates (nats.subject) or that stream's subjects, or point nats.stream at stream %q if it is the relay's", w, h, si.Config.Name, si.Config.Name)
				}
			}
		}
	}
	return ""
}

// overlap reports whether some subject matches both filters a and b.
func overlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(at) || i == len(bt):
			return len(at) == len(bt)
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] == "*" || bt[i] == "*" || at[i] == bt[i]:
		default:
			return false
		}
	}
}

const (
	fixJetStreamServer  = "JetStream is not enabled on the NATS server: start nats-server with -js, or add a jetstream {} block to its configuration"
	fixJetStreamAccount = "JetStream is not enabled for this NATS account: enable it in the account's configuration (jetstream: enabled, or JetStream limits on the account's JWT)"
)

// explainJetStream adds the fix to the errors of an account without
// JetStream.
func explainJetStream(err error) error {
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("%w: %s", err, fixJetStreamAccount)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, nats.ErrNoResponders):
		// Nothing answers the JetStream API: no server of the cluster runs it.
		return fmt.Errorf("%w: %s", err, fixJetStreamServer)
	}
	return err
}

// Covers reports whether the subject filters in filters together match every
// subject that filter subj matches. It handles the cases that matter here: subj
// is covered when one filter alone covers it.
func Covers(filters []string, subj string) bool {
	for _, f := range filters {
		if subsetOf(subj, f) {
			return true
		}
	}
	return false
}

// subsetOf reports whether every subject matching a also matches b.
func subsetOf(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, t := range bt {
		if t == ">" {
			return len(at) > i
		}
		if i >= len(at) {
			return false
		}
		switch {
		case at[i] == ">":
			return false
		case t == "*":
		case t != at[i]:
			return false
		}
	}
	return len(at) == len(bt)
}

// lastPosition reads the stream's last sequence and the position of the
// event stored there. found is false for an empty stream.
func lastPosition(ctx context.Context, st jetstream.Stream) (seq uint64, pos Position, found bool, maxMsgSize int, err error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, Position{}, false, 0, fmt.Errorf("read stream info: %w", err)
	}
	if len(info.Config.Sources) > 0 {
		// Sources added while the relay runs: the sourced messages take
		// sequences the chain predicted for the relay's own.
		return 0, Position{}, false, 0, fmt.Errorf("%w: %s", ErrSharedStream, sourcesProblem(info.Config.Name, info.Config.Sources))
	}
	seq, maxMsgSize = info.State.LastSeq, int(info.Config.MaxMsgSize)
	if seq == 0 {
		return 0, Position{}, false, maxMsgSize, nil
	}
	msg, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Consumed under WorkQueue or Interest retention, or purged: the
		// position is unknown and only the duplicate window protects.
		return seq, Position{}, false, maxMsgSize, nil
	}
	if err != nil {
		return 0, Position{}, false, 0, fmt.Errorf("read last message (sequence %d): %w", seq, err)
	}
	if pos, err = ownPosition(info.Config.Name, seq, msg); err != nil {
		return 0, Position{}, false, 0, err
	}
	return seq, pos, true, maxMsgSize, nil
}

func parsePosition(lsn, seq string) (Position, error) {
	l, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		return Position{}, err
	}
	s, err := strconv.ParseUint(seq, 10, 32)
	if err != nil || s == 0 {
		return Position{}, fmt.Errorf("bad %s %q", HeaderTxSeq, seq)
	}
	return Position{CommitLSN: l, TxSeq: uint32(s)}, nil
}

// StreamConfigError means the stream cannot be used as configured; retrying
// will not help.
type StreamConfigError struct{ Err error }

func (e *StreamConfigError) Error() string { return e.Err.Error() }
func (e *StreamConfigError) Unwrap() error { return e.Err }
