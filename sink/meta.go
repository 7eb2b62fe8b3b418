package sink

// This file reads the end of the stream and the origin the relay records
// in the stream's metadata, for the continuity check (package continuity).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/continuity"
)

// The stream metadata keys of the origin (docs/design.md, "The database's
// lifecycle").
const (
	MetaSystemID    = "outboxrelay_system_id"
	MetaDatabase    = "outboxrelay_database"
	MetaPublication = "outboxrelay_publication"
	// MetaRecovering is "true" from before a recovery (or backfill) drops
	// the slot until it has published every row: a stop in between leaves
	// rows unpublished that the new slot will never deliver.
	MetaRecovering = "outboxrelay_recovering"
)

// End reads what the stream holds: its last message's position and the
// recorded origin. It creates the stream when it does not exist yet.
func (s *Sink) End(ctx context.Context) (continuity.End, error) {
	st, err := s.ensure(ctx)
	if err != nil {
		return continuity.End{}, err
	}
	return ReadEnd(ctx, st)
}

// ReadEnd reads what st holds: its last message's position and the
// recorded origin.
func ReadEnd(ctx context.Context, st jetstream.Stream) (continuity.End, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return continuity.End{}, fmt.Errorf("read stream info: %w", err)
	}
	e := continuity.End{Stream: info.Config.Name, LastSeq: info.State.LastSeq}
	e.Recovering = info.Config.Metadata[MetaRecovering] == "true"
	if md := info.Config.Metadata; md[MetaSystemID] != "" {
		e.HasOrigin = true
		e.Origin = continuity.Origin{SystemID: md[MetaSystemID], Database: md[MetaDatabase], Publication: md[MetaPublication]}
	}
	if e.LastSeq == 0 {
		return e, nil
	}
	msg, err := st.GetMsg(ctx, e.LastSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return e, nil // consumed or purged: only the sequence is known
	}
	if err != nil {
		return continuity.End{}, fmt.Errorf("read last message (sequence %d): %w", e.LastSeq, err)
	}
	pos, err := ownPosition(e.Stream, e.LastSeq, msg)
	if err != nil {
		return continuity.End{}, err
	}
	e.Found, e.CommitLSN, e.EventID = true, pos.CommitLSN, msg.Header.Get(HeaderEventID)
	e.CommitTime, _ = time.Parse(time.RFC3339Nano, msg.Header.Get(HeaderCommitTime))
	return e, nil
}

// RecordOrigin records o in the stream's metadata, keeping every other key
// and setting. It is the only change the relay makes to an existing stream.
func (s *Sink) RecordOrigin(ctx context.Context, o continuity.Origin) error {
	if _, err := s.ensure(ctx); err != nil {
		return err
	}
	return RecordOrigin(ctx, s.js, s.cfg.Stream, o)
}

// RecordOrigin records o in stream's metadata, and that no recovery is
// under way.
func RecordOrigin(ctx context.Context, js jetstream.JetStream, stream string, o continuity.Origin) error {
	return writeMeta(ctx, js, stream, func(md map[string]string) {
		md[MetaSystemID], md[MetaDatabase], md[MetaPublication] = o.SystemID, o.Database, o.Publication
		delete(md, MetaRecovering)
	})
}

// MarkRecovering records in stream's metadata that a recovery is under way.
func MarkRecovering(ctx context.Context, js jetstream.JetStream, stream string) error {
	return writeMeta(ctx, js, stream, func(md map[string]string) { md[MetaRecovering] = "true" })
}

func writeMeta(ctx context.Context, js jetstream.JetStream, stream string, edit func(map[string]string)) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %q: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream info: %w", err)
	}
	cfg := info.Config
	cfg.Metadata = maps.Clone(cfg.Metadata)
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	edit(cfg.Metadata)
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("update stream %q's metadata: %w", stream, explainJetStream(err))
	}
	return nil
}

// ensure returns the stream, creating it when it does not exist yet.
func (s *Sink) ensure(ctx context.Context) (jetstream.Stream, error) {
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return EnsureStream(ectx, s.js, s.cfg.Stream, s.subject.Prefix, s.streamSubjects()...)
}
