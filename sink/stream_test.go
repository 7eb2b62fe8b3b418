package sink_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

func TestCovers(t *testing.T) {
	tests := []struct {
		filters []string
		subj    string
		want    bool
	}{
		{[]string{"outbox.a.b"}, "outbox.a.b", true},
		{[]string{"outbox.a.b"}, "outbox.a.c", false},
		{[]string{"outbox"}, "outbox", true},
		{[]string{"outbox.>"}, "outbox.>", true},
		{[]string{"outbox.>"}, "outbox.dead_letter", true},
		{[]string{"outbox.>"}, "outbox.Order.42", true},
		{[]string{"outbox.>"}, "outbox.*", true},
		{[]string{"outbox.>"}, "outbox.*.>", true},
		{[]string{"outbox.>"}, "outbox", false},             // '>' needs at least one more token
		{[]string{"outbox.>"}, "other.a", false},            // different literal
		{[]string{"outbox.>"}, "outboxes.a", false},         // a token is not a string prefix
		{[]string{"outbox"}, "outbox.>", false},             // filter shorter than the subject
		{[]string{"outbox"}, "outbox.a", false},             // filter shorter than the subject
		{[]string{"outbox.a.b"}, "outbox.a", false},         // filter longer than the subject
		{[]string{"outbox.a.>"}, "outbox.a", false},         // filter longer than the subject
		{[]string{"outbox.*"}, "outbox.a", true},            // '*' covers one literal token
		{[]string{"outbox.*"}, "outbox.*", true},            // and a '*'
		{[]string{"outbox.*"}, "outbox.>", false},           // but not '>', which spans tokens
		{[]string{"outbox.*"}, "outbox.a.b", false},         // nor two tokens
		{[]string{"outbox.a"}, "outbox.*", false},           // a literal does not cover '*'
		{[]string{"outbox.*.b"}, "outbox.a.b", true},        // '*' in the middle
		{[]string{"outbox.*.b"}, "outbox.a.c", false},       // '*' in the middle, last token differs
		{[]string{"outbox.*.*"}, "outbox.*.>", false},       // '*' does not cover '>'
		{[]string{"a.>"}, "a.*.>", true},                    // '>' covers '*' then '>'
		{[]string{">"}, ">", true},                          // '>' covers everything
		{[]string{">"}, "a", true},                          // '>' covers everything
		{[]string{">"}, "outbox.a.b.c", true},               // '>' covers everything
		{[]string{">"}, "*.>", true},                        // '>' covers everything
		{[]string{"*.>"}, "outbox.>", true},                 // two or more tokens
		{[]string{"*.>"}, "outbox.a", true},                 // two or more tokens
		{[]string{"*.>"}, "outbox", false},                  // one token only
		{[]string{"*.>"}, ">", false},                       // '>' alone matches one-token subjects
		{[]string{"*"}, ">", false},                         // '>' spans more than '*'
		{[]string{"*"}, "outbox", true},                     // one token
		{[]string{"other.>", "outbox.>"}, "outbox.x", true}, // any one filter is enough
		{[]string{"other.>", "outbox.a"}, "outbox.>", false},
		{nil, "outbox.>", false},
	}
	for _, tt := range tests {
		if got := sink.Covers(tt.filters, tt.subj); got != tt.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.filters, tt.subj, got, tt.want)
		}
	}
}

func TestPositionLess(t *testing.T) {
	p := func(lsn uint64, seq uint32) sink.Position {
		return sink.Position{CommitLSN: pglogrepl.LSN(lsn), TxSeq: seq}
	}
	tests := []struct {
		a, b sink.Position
		want bool
	}{
		{p(100, 1), p(100, 2), true},
		{p(100, 2), p(100, 1), false},
		{p(100, 1), p(100, 1), false},
		{p(100, 9), p(101, 1), true},  // commit LSN first
		{p(101, 1), p(100, 9), false}, // commit LSN first
		{p(0, 0), p(0, 1), true},
		{p(0, 0), p(0, 0), false},
		{p(1<<32, 1), p(1<<32+1, 1), true},
		{p(0xFFFF_FFFF, 5), p(1<<32, 1), true}, // across the 32-bit boundary
		{p(1<<63, 1), p(1<<63, 1<<31), true},
	}
	for _, tt := range tests {
		if got := tt.a.Less(tt.b); got != tt.want {
			t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestEnsureStream(t *testing.T) {
	n := testenv.StartNATS(t)
	js := newJS(t, connect(t, n.URL()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("creates a missing stream", func(t *testing.T) {
		st, err := sink.EnsureStream(ctx, js, "CREATED", "created", "created.dead_letter", "dead.letters", "")
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := info.Config
		// An extra subject under the prefix is not added again.
		if want := []string{"created.>", "dead.letters"}; !slices.Equal(cfg.Subjects, want) {
			t.Errorf("subjects = %q, want %q", cfg.Subjects, want)
		}
		if cfg.Storage != jetstream.FileStorage {
			t.Errorf("storage = %v, want file", cfg.Storage)
		}
		if cfg.Retention != jetstream.LimitsPolicy {
			t.Errorf("retention = %v, want limits (the stream's last message must stay)", cfg.Retention)
		}
		// A second call validates the stream it finds.
		if _, err := sink.EnsureStream(ctx, js, "CREATED", "created", "dead.letters"); err != nil {
			t.Errorf("EnsureStream on the stream it created: %v", err)
		}
	})

	t.Run("accepts a stream whose subjects cover the template", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WIDE", Subjects: []string{"wide.*.>", "dl"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := sink.EnsureStream(ctx, js, "WIDE", "wide.events", "dl"); err != nil {
			t.Errorf("EnsureStream: %v", err)
		}
	})

	missing := []struct {
		name, stream string
		subjects     []string
		prefix       string
		extra        []string
		missing      string
	}{
		{"template not covered", "NARROW", []string{"events.>"}, "outbox", nil, "outbox.>"},
		{"only some aggregates covered", "PART", []string{"part.Order.*"}, "part", nil, "part.>"},
		{"dead-letter subject not covered", "NODL", []string{"nodl.>"}, "nodl", []string{"dead.letters"}, "dead.letters"},
	}
	for _, tt := range missing {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: tt.stream, Subjects: tt.subjects}); err != nil {
				t.Fatal(err)
			}
			_, err := sink.EnsureStream(ctx, js, tt.stream, tt.prefix, tt.extra...)
			var cfgErr *sink.StreamConfigError
			if !errors.As(err, &cfgErr) {
				t.Fatalf("EnsureStream = %v, want a *StreamConfigError", err)
			}
			if !strings.Contains(err.Error(), `"`+tt.missing+`"`) {
				t.Errorf("error %q does not name the missing subject %q", err, tt.missing)
			}
			if !strings.Contains(err.Error(), tt.stream) {
				t.Errorf("error %q does not name the stream %s", err, tt.stream)
			}
			// Validated, never modified.
			st, err := js.Stream(ctx, tt.stream)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.Subjects; !slices.Equal(got, tt.subjects) {
				t.Errorf("stream subjects after EnsureStream = %q, want them unchanged: %q", got, tt.subjects)
			}
		})
	}

	t.Run("subjects taken by another stream", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OWNER", Subjects: []string{"taken.>"}}); err != nil {
			t.Fatal(err)
		}
		_, err := sink.EnsureStream(ctx, js, "SECOND", "taken")
		var cfgErr *sink.StreamConfigError
		if !errors.As(err, &cfgErr) {
			t.Fatalf("EnsureStream = %v, want a *StreamConfigError", err)
		}
		if !strings.Contains(err.Error(), "taken.>") {
			t.Errorf("error %q does not name the subjects", err)
		}
	})
}

// A sink pointed at an existing stream that does not capture its subjects
// stops for good, names the missing subject, and leaves the stream alone.
func TestSinkStreamConfigError(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: testStream, Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}
	a := newAcker()
	s := startSink(t, nc, sink.Config{}, a)
	err := waitStopped(t, s, "the sink to stop", 10*time.Second)
	var cfgErr *sink.StreamConfigError
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Halted() = %v, want a *StreamConfigError", err)
	}
	if !strings.Contains(err.Error(), `"outbox.>"`) {
		t.Errorf("Halted() = %q, want it to name the missing subject \"outbox.>\"", err)
	}
	if ok, why := s.Healthy(); ok || why != err.Error() {
		t.Errorf("Healthy() = %v, %q; want false, %q", ok, why, err)
	}
	if perr := s.Publish(ctx, makeEvents(1, 1)[0]); !errors.As(perr, &cfgErr) {
		t.Errorf("Publish after the stop = %v, want the *StreamConfigError", perr)
	}
	if a.Total() != 0 {
		t.Errorf("acker got %d acks, want 0", a.Total())
	}
	st, err := js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Subjects; !slices.Equal(got, []string{"events.>"}) {
		t.Errorf("stream subjects = %q, want them unchanged", got)
	}
}
