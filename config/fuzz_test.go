package config_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/subject"
)

// FuzzParseConfig checks that no input makes ParseConfig panic, that every
// error it returns is a "config: " error, and that whatever it accepts is
// valid and has a usable subject prefix.
func FuzzParseConfig(f *testing.F) {
	example, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(pg))
	for _, tc := range badConfigs {
		f.Add([]byte(tc.yaml))
	}
	f.Add([]byte(pg + "  slot: &a [*a]\n"))
	f.Add([]byte(pg + "outbox:\n  headers: {a: ${HDR:-X-A}, b: $$B}\n"))
	f.Add([]byte("postgres: {url: 'postgres://u:${PGPASSWORD}@h/db'}\nnats: {url: 'nats://a,b:1', subject: 'a.b-{aggregate_id}-c.{partition}'}\n"))

	lookup := env(map[string]string{"PGPASSWORD": "pw", "HDR": "X-Hdr", "EMPTY": ""})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.ParseConfigEnv(bytes.NewReader(data), lookup)
		if err != nil {
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if !strings.HasPrefix(line, "config: ") {
					t.Fatalf("error line %q lacks the config: prefix", line)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config that Validate rejects: %v", err)
		}
		// What config accepts must parse with a literal prefix for the
		// stream.
		for _, tmpl := range subjects(c) {
			if subj, err := subject.Parse(tmpl); err != nil || subj.Prefix == "" {
				t.Fatalf("config accepted subject %q, which parses to %v, %v", tmpl, subj, err)
			}
		}
		if len(c.NATS.URLs()) == 0 {
			t.Fatalf("accepted nats.url %q has no URLs", c.NATS.URL)
		}
		for _, tb := range c.Outbox.Tables {
			if s, n := tb.TableName(); s == "" || n == "" {
				t.Fatalf("accepted table %q splits into %q, %q", tb.Table, s, n)
			}
		}
		_ = c.Redacted()
	})
}

// subjects returns every subject template c uses.
func subjects(c config.Config) []string {
	all := []string{c.NATS.Subject}
	for _, t := range c.Outbox.Tables {
		all = append(all, t.Subject)
	}
	if c.Outbox.Messages.Prefix != "" {
		all = append(all, c.Outbox.Messages.Subject)
	}
	return all
}
