package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/subject"
)

// env returns a lookup over vars, standing in for os.LookupEnv.
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// pg is the smallest valid configuration; tests append keys to it.
const pg = "postgres:\n  url: postgres://relay@localhost:5432/app\n"

func parse(t *testing.T, yaml string, vars map[string]string) (config.Config, error) {
	t.Helper()
	return config.ParseConfigEnv(strings.NewReader(yaml), env(vars))
}

func mustParse(t *testing.T, yaml string, vars map[string]string) config.Config {
	t.Helper()
	c, err := parse(t, yaml, vars)
	if err != nil {
		t.Fatalf("ParseConfig(%q): %v", yaml, err)
	}
	return c
}

func TestDefaultConfig(t *testing.T) {
	got := config.DefaultConfig()
	want := config.Config{
		Postgres: config.Postgres{Slot: "outboxrelay", Publication: "outboxrelay", FailoverSlot: "auto", ReceiveBuffer: 64 << 10},
		Outbox: config.Outbox{
			Table: "public.outbox",
			Columns: config.Columns{
				ID: "id", AggregateType: "aggregatetype", AggregateID: "aggregateid",
				Type: "type", Payload: "payload",
			},
			Tables: []config.Table{{
				Table: "public.outbox",
				Columns: config.Columns{
					ID: "id", AggregateType: "aggregatetype", AggregateID: "aggregateid",
					Type: "type", Payload: "payload",
				},
				Subject: "outbox.{aggregate_type}.{aggregate_id}",
			}},
			Messages: config.Messages{Subject: "outbox.{aggregate_type}.{aggregate_id}"},
		},
		NATS: config.NATS{
			URL:     "nats://127.0.0.1:4222",
			Stream:  "OUTBOX",
			Subject: "outbox.{aggregate_type}.{aggregate_id}",
			Format:  "native",
		},
		Errors: config.Errors{InvalidEvent: "halt", DeadLetterSubject: "outbox.dead_letter"},
		HTTP:   config.HTTP{Listen: "127.0.0.1:8080"},
		Log:    config.Log{Level: "info", Format: "text"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultConfig() =\n%+v\nwant\n%+v", got, want)
	}

	// The defaults are valid except for the one required key.
	err := got.Validate()
	if err == nil || err.Error() != "config: postgres.url: is required (for example postgres://relay:${PGPASSWORD}@db:5432/app)" {
		t.Errorf("DefaultConfig().Validate() = %v, want only postgres.url required", err)
	}
	got.Postgres.URL = "postgres://relay@localhost/app"
	if err := got.Validate(); err != nil {
		t.Errorf("Validate() with a URL = %v, want nil", err)
	}
}

func TestParseConfigMinimalIsDefaults(t *testing.T) {
	got := mustParse(t, pg, nil)
	want := config.DefaultConfig()
	want.Postgres.URL = "postgres://relay@localhost:5432/app"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestExampleFile(t *testing.T) {
	f, err := os.Open("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := config.ParseConfigEnv(f, env(map[string]string{"PGPASSWORD": "pw"}))
	if err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	// The example documents the defaults, so apart from the URL it must
	// be exactly them.
	want := config.DefaultConfig()
	want.Postgres.URL = "postgres://relay:pw@localhost:5432/app?sslmode=disable"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example =\n%+v\nwant the defaults\n%+v", got, want)
	}

	// Without PGPASSWORD the example is rejected, naming the variable.
	f.Seek(0, 0)
	_, err = config.ParseConfigEnv(f, env(nil))
	if err == nil || !strings.Contains(err.Error(), "postgres.url: environment variable PGPASSWORD is not set") {
		t.Errorf("example without PGPASSWORD: err = %v", err)
	}
}

func TestExampleFileHasEveryKey(t *testing.T) {
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, key := range []string{
		"postgres:", "url:", "slot:", "publication:", "failover_slot:", "receive_buffer:", "outbox:", "table:", "columns:",
		"id:", "aggregate_type:", "aggregate_id:", "type:", "payload:", "headers:",
		"nats:", "stream:", "subject:", "creds:", "nkey:", "user:", "password:", "token:",
		"tls:", "ca:", "cert:", "key:", "cloudevents:", "source:", "datacontenttype:", "errors:", "invalid_event:", "dead_letter_subject:",
		"http:", "listen:", "log:", "level:", "format:",
	} {
		if !strings.Contains(text, "\n  "+key) && !strings.Contains(text, "\n    "+key) && !strings.Contains(text, "\n"+key) {
			t.Errorf("config.example.yaml has no uncommented %q", key)
		}
	}
}

func TestParseConfigOverrides(t *testing.T) {
	c := mustParse(t, pg+`
outbox:
  table: events
  columns:
    id: event_id
  headers:
    tracingspancontext: Trace-Context
    tenant: Tenant
    actor: X-Actor
nats:
  url: " nats://n1:4222, tls://n2:4222 ,n3:4222"
  stream: EVENTS
  subject: "app.events.agg-{aggregate_id}.{type}"
  user: relay
  password: secret
  tls: {ca: /ca.pem, cert: /c.pem, key: /k.pem}
errors: {invalid_event: dead_letter, dead_letter_subject: app.dlq}
http: {listen: ""}
log: {level: debug, format: json}
`, nil)

	if got, want := c.Outbox.Table, "public.events"; got != want {
		t.Errorf("Table = %q, want %q (normalized)", got, want)
	}
	if s, n := c.Outbox.TableName(); s != "public" || n != "events" {
		t.Errorf("TableName() = %q, %q", s, n)
	}
	// A partial columns mapping keeps the other defaults.
	wantCols := config.DefaultConfig().Outbox.Columns
	wantCols.ID = "event_id"
	if c.Outbox.Columns != wantCols {
		t.Errorf("Columns = %+v, want %+v", c.Outbox.Columns, wantCols)
	}
	wantHeaders := []config.HeaderColumn{
		{Column: "tracingspancontext", Header: "Trace-Context"},
		{Column: "tenant", Header: "Tenant"},
		{Column: "actor", Header: "X-Actor"},
	}
	if !reflect.DeepEqual(c.Outbox.Headers, wantHeaders) {
		t.Errorf("Headers = %+v, want %+v (file order)", c.Outbox.Headers, wantHeaders)
	}
	if got, want := c.NATS.URLs(), []string{"nats://n1:4222", "tls://n2:4222", "n3:4222"}; !reflect.DeepEqual(got, want) {
		t.Errorf("URLs() = %q, want %q", got, want)
	}
	if subj, err := subject.Parse(c.NATS.Subject); err != nil || subj.Prefix != "app.events" {
		t.Errorf("accepted subject %q parses to %v, %v; want prefix app.events", c.NATS.Subject, subj, err)
	}
	if c.NATS.TLS != (config.TLS{CA: "/ca.pem", Cert: "/c.pem", Key: "/k.pem"}) {
		t.Errorf("TLS = %+v", c.NATS.TLS)
	}
	if c.Errors.InvalidEvent != config.InvalidEventDeadLetter || c.Errors.DeadLetterSubject != "app.dlq" {
		t.Errorf("Errors = %+v", c.Errors)
	}
	if c.HTTP.Listen != "" {
		t.Errorf("Listen = %q, want empty (disabled)", c.HTTP.Listen)
	}
	if c.Log.SlogLevel().String() != "DEBUG" || c.Log.Format != "json" {
		t.Errorf("Log = %+v", c.Log)
	}
}

func TestTableNameAndPrefix(t *testing.T) {
	for _, tc := range []struct{ table, schema, name string }{
		{"public.outbox", "public", "outbox"},
		{"outbox", "public", "outbox"},
		{"billing.Outbox_v2", "billing", "Outbox_v2"},
	} {
		s, n := config.Outbox{Table: tc.table}.TableName()
		if s != tc.schema || n != tc.name {
			t.Errorf("TableName(%q) = %q, %q, want %q, %q", tc.table, s, n, tc.schema, tc.name)
		}
	}
	for _, tc := range []struct{ subject, prefix string }{
		{"outbox.{aggregate_type}.{aggregate_id}", "outbox"},
		{"a.b.c.{aggregate_id}", "a.b.c"},
		{"a.x-{aggregate_id}.y", "a"},
	} {
		// Config accepts the template, and its prefix is what the stream captures.
		if _, err := parse(t, "postgres: {url: postgres://u@h/db}\nnats: {subject: '"+tc.subject+"'}\n", nil); err != nil {
			t.Errorf("config rejects %q: %v", tc.subject, err)
		}
		if subj, err := subject.Parse(tc.subject); err != nil || subj.Prefix != tc.prefix {
			t.Errorf("subject.Parse(%q) = %v, %v; want prefix %q", tc.subject, subj, err, tc.prefix)
		}
	}
}

func TestEmptyAndNullSections(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "---\n", "~\n"} {
		_, err := parse(t, in, nil)
		if err == nil || !strings.Contains(err.Error(), "config: postgres.url: is required") {
			t.Errorf("ParseConfig(%q) = %v, want postgres.url required", in, err)
		}
	}
	// Null sections keep their defaults.
	c := mustParse(t, pg+"outbox:\nnats:\nlog: ~\n", nil)
	if c.NATS.Stream != "OUTBOX" || c.Log.Level != "info" || c.Outbox.Table != "public.outbox" {
		t.Errorf("null sections changed defaults: %+v", c)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	write(pg + "  slot: relay_1\n")
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Postgres.Slot != "relay_1" {
		t.Errorf("Slot = %q", c.Postgres.Slot)
	}

	// Decode and validation errors name the file and the line.
	write(pg + "  slto: x\n")
	if _, err := config.Load(path); err == nil || err.Error() != "config: "+path+`:3: postgres.slto: unknown key (did you mean "slot"?)` {
		t.Errorf("Load unknown key: %v", err)
	}
	write(pg + "\n  slot: Bad-Slot\n")
	if _, err := config.Load(path); err == nil || !strings.HasPrefix(err.Error(), "config: "+path+":4: postgres.slot: ") {
		t.Errorf("Load bad slot: %v", err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	if _, err := config.Load(missing); err == nil || !strings.Contains(err.Error(), missing) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("Load missing file: %v", err)
	}
}
