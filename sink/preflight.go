package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/report"
)

// Preflight checks, without changing anything, that a sink with cfg can
// publish on nc: the server's max payload, JetStream, and the stream (its
// subjects, retention, limits, and that the relay is its only writer), or
// that the stream can be created. A problem the sink would also meet at run
// time is reported with the same text as the sink's error.
func Preflight(ctx context.Context, nc *nats.Conn, cfg Config) []report.Finding {
	var found []report.Finding
	add := func(s report.Status, item, format string, args ...any) {
		found = append(found, report.Finding{Status: s, Item: item, Text: fmt.Sprintf(format, args...)})
	}
	// New compiles the templates exactly as run does, and sends nothing.
	s, err := New(nc, cfg, nil)
	if err != nil {
		add(report.Fail, "nats subjects", "%v", err)
		return found
	}
	want := wantSubjects(s.subject.Prefix, s.streamSubjects()...)

	const payload = "nats max_payload"
	maxPayload := nc.MaxPayload()
	if maxPayload < 1<<20 {
		add(report.Warn, payload, "%d bytes, below NATS's default of 1 MiB: an event whose payload and headers are larger %s: raise max_payload in the nats-server configuration if outbox payloads can be that large", maxPayload, tooLarge(cfg))
	} else {
		add(report.OK, payload, "%d bytes: an event whose payload and headers are larger %s", maxPayload, tooLarge(cfg))
	}

	const jsItem = "nats jetstream"
	ai, err := s.js.AccountInfo(ctx)
	if err != nil {
		add(report.Fail, jsItem, "read the account's JetStream info: %v", explainJetStream(err))
		return found
	}
	add(report.OK, jsItem, "enabled; the account has %d streams", ai.Streams)

	item := "nats stream " + cfg.Stream
	st, err := s.js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if why := cannotCreate(ctx, s.js, ai, want); why != "" {
			add(report.Fail, item, "does not exist, and the relay cannot create it: %s", why)
		} else {
			add(report.OK, item, "does not exist yet; the relay will create it with subjects %v, file storage and limits retention", want)
		}
		return found
	}
	if err != nil {
		add(report.Fail, item, "look up stream %q: %v", cfg.Stream, explainJetStream(err))
		return found
	}
	info := st.CachedInfo()
	c := info.Config
	bad := false
	fail := func(format string, args ...any) {
		add(report.Fail, item, format, args...)
		bad = true
	}
	for _, w := range want {
		if !Covers(c.Subjects, w) {
			fail("%s", notCoveredProblem(cfg.Stream, c.Subjects, w))
		}
	}
	switch {
	case c.Mirror != nil:
		fail("is a mirror, which cannot be published to: point nats.stream at a stream of its own for the relay")
	case len(c.Sources) > 0:
		fail("%s", sourcesProblem(cfg.Stream, c.Sources))
	case c.Sealed:
		fail("is sealed, so nothing can be added to it: point nats.stream at another stream")
	case c.NoAck:
		fail("has no_ack set, so publishes get no PubAck and the relay cannot confirm anything: point nats.stream at another stream, or create one without no_ack")
	}
	if bad {
		return found
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	lastSeq, pos, stored, _, err := lastPosition(qctx, st)
	cancel()
	if err != nil {
		add(report.Fail, item, "%v", err)
		return found
	}
	last := "empty"
	switch {
	case stored:
		last = fmt.Sprintf("last message (sequence %d) is the relay's, at %s", lastSeq, pos)
	case lastSeq > 0:
		last = fmt.Sprintf("last message (sequence %d) is gone", lastSeq)
	}
	add(report.OK, item, "subjects %v, %s retention, %s storage, %d replicas, duplicate window %s, max_msg_size %s, %d messages; %s",
		c.Subjects, c.Retention, c.Storage, max(c.Replicas, 1), c.Duplicates, limit(int64(c.MaxMsgSize), "bytes"), info.State.Msgs, last)

	if by := sourcedBy(ctx, s.js, cfg.Stream); len(by) > 0 {
		add(report.OK, item, "sourced by %s: JetStream copies its messages with their headers, except Nats-Expected-*, and each copy keeps the relay's order (docs/fan-in.md)", strings.Join(by, ", "))
	}
	if c.Retention != jetstream.LimitsPolicy {
		add(report.Warn, item, "has %s retention: consumed messages are removed, so after a restart the relay may not find its last message, and exactly-once then rests on the duplicate window (%s) alone: give the relay a stream with limits retention, and let consumers read it through their own consumers (or a WorkQueue stream that sources it)", c.Retention, c.Duplicates)
	} else if lastSeq > 0 && !stored {
		add(report.Warn, item, "its last message (sequence %d) is gone (a purge, or max_age/max_msgs limits): after a restart exactly-once rests on the duplicate window (%s) alone, until the relay publishes again", lastSeq, c.Duplicates)
	}
	if c.MaxMsgSize > 0 && int64(c.MaxMsgSize) < maxPayload {
		add(report.Warn, item, "max_msg_size is %d bytes, below the server's max_payload of %d: an event larger than that %s: raise the stream's max_msg_size", c.MaxMsgSize, maxPayload, tooLarge(cfg))
	}
	if c.Discard == jetstream.DiscardNew && (c.MaxMsgs > 0 || c.MaxBytes > 0 || c.MaxMsgsPerSubject > 0) {
		add(report.Warn, item, "discards new messages when full (discard: new, with max_msgs, max_bytes or max_msgs_per_subject set): when the stream fills up, the relay stops publishing until space is freed")
	} else if c.MaxMsgsPerSubject > 0 {
		add(report.Warn, item, "keeps only %d messages per subject (max_msgs_per_subject): older events of an aggregate are removed as new ones arrive", c.MaxMsgsPerSubject)
	}
	return found
}

// tooLarge says what the relay does with an event that cannot be stored.
func tooLarge(cfg Config) string {
	if cfg.DeadLetterSubject != "" {
		return "goes to the dead-letter subject " + cfg.DeadLetterSubject + " without its data"
	}
	return "halts the relay (errors.invalid_event: halt)"
}

func limit(n int64, unit string) string {
	if n <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d %s", n, unit)
}

// cannotCreate says why the stream could not be created, or "" when it can
// be as far as the account's limits and other streams' subjects tell.
func cannotCreate(ctx context.Context, js jetstream.JetStream, ai *jetstream.AccountInfo, want []string) string {
	l := ai.Limits
	switch {
	case l.MaxStreams > 0 && ai.Streams >= l.MaxStreams:
		return fmt.Sprintf("the account has %d of its %d streams (max_streams): raise the account's limit, or point nats.stream at an existing stream", ai.Streams, l.MaxStreams)
	case l.MaxBytesRequired:
		return fmt.Sprintf("the account requires max_bytes on every stream (max_bytes_required): create the stream yourself with subjects %v and a max_bytes that fits the account", want)
	}
	return overlapProblem(ctx, js, want)
}

// sourcedBy names the streams that source or mirror stream name, such as
// the aggregate stream of a fan-in, each as "stream X" or "mirror X".
func sourcedBy(ctx context.Context, js jetstream.JetStream, name string) []string {
	var by []string
	lister := js.ListStreams(ctx)
	for si := range lister.Info() {
		c := si.Config
		if c.Mirror != nil && c.Mirror.Name == name {
			by = append(by, fmt.Sprintf("mirror %q", c.Name))
		}
		for _, src := range c.Sources {
			if src.Name == name {
				by = append(by, fmt.Sprintf("stream %q", c.Name))
				break
			}
		}
	}
	return by
}
