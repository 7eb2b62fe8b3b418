// Package config reads the relay's YAML configuration: it applies the
// documented defaults, expands ${VAR} references from the environment, and
// validates every key, reporting problems by their key path
// ("config: nats.stream: ..."). It builds on gopkg.in/yaml.v3 for parsing
// and pgconn for checking the Postgres connection string. The YAML tags live
// only here; the rest of the program receives plain values.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Values of Errors.InvalidEvent.
const (
	// InvalidEventHalt stops the relay at the first event that cannot be
	// published, without confirming its position.
	InvalidEventHalt = "halt"
	// InvalidEventDeadLetter publishes such an event to
	// Errors.DeadLetterSubject, with the reason in its headers.
	InvalidEventDeadLetter = "dead_letter"
)

// Config is the whole relay configuration.
type Config struct {
	Postgres Postgres `yaml:"postgres"`
	Outbox   Outbox   `yaml:"outbox"`
	NATS     NATS     `yaml:"nats"`
	Errors   Errors   `yaml:"errors"`
	HTTP     HTTP     `yaml:"http"`
	Log      Log      `yaml:"log"`
}

// Postgres says where the outbox lives and which replication objects the
// relay uses.
type Postgres struct {
	// URL is a libpq connection string (URL or keyword/value form). It is
	// required. It may carry a password: log it only through Redact.
	URL string `yaml:"url"`
	// Slot is the logical replication slot, created if missing.
	Slot string `yaml:"slot"`
	// Publication is created if missing, FOR TABLE the outbox table.
	Publication string `yaml:"publication"`
	// FailoverSlot is "auto" (the default: a failover slot from PostgreSQL
	// 17), "on" or "off".
	FailoverSlot string `yaml:"failover_slot"`
	// ReceiveBuffer is the replication connection's socket receive buffer
	// (SO_RCVBUF) in bytes, over TCP; 0 leaves it to the kernel's
	// autotuning. Default DefaultReceiveBuffer.
	ReceiveBuffer int `yaml:"receive_buffer"`
}

// DefaultReceiveBuffer is postgres.receive_buffer's default, 64 KiB. A
// small buffer fills while the relay gathers a read, so the walsender's
// messages wait in its own socket and go out together, instead of one TCP
// segment each (docs/performance.md, "A small receive buffer").
const DefaultReceiveBuffer = 64 << 10

// Outbox describes where events come from: outbox tables, logical
// decoding messages, or both.
type Outbox struct {
	// Table is "schema.name"; ParseConfig adds the schema "public" when it
	// is left out. Names are exact (case-sensitive), as pgoutput reports
	// them. Table, Columns and Headers are the one-table short form of
	// Tables; after ParseConfig, Tables holds every table either way.
	Table   string  `yaml:"table"`
	Columns Columns `yaml:"columns"`
	// Headers are extra columns copied to message headers, in the order
	// they appear in the file.
	Headers []HeaderColumn `yaml:"headers"`

	// Tables lists several outbox tables, each with its own column mapping
	// and subject template, sharing one slot and one stream.
	Tables []Table `yaml:"tables"`

	// Messages accepts events written with pg_logical_emit_message.
	Messages Messages `yaml:"messages"`

	// Cleanup deletes rows whose events are confirmed.
	Cleanup Cleanup `yaml:"cleanup"`

	// Backfill is BackfillNone or BackfillExisting: whether the rows
	// already in the tables when the relay first creates its slot are
	// published.
	Backfill string `yaml:"backfill"`
}

const (
	// BackfillNone publishes only rows committed after the slot exists.
	BackfillNone = "none"
	// BackfillExisting also publishes, once and first, the rows already in
	// the outbox tables when the relay creates its slot on a first start.
	BackfillExisting = "existing"
)

// Table is one outbox table and how its rows become events.
type Table struct {
	// Table is "schema.name" (the schema defaults to public).
	Table   string         `yaml:"table"`
	Columns Columns        `yaml:"columns"`
	Headers []HeaderColumn `yaml:"headers"`
	// Subject is the table's subject template; ParseConfig fills in
	// nats.subject when it is empty.
	Subject string `yaml:"subject"`
}

// TableName returns the table's schema and name.
func (t Table) TableName() (schema, name string) {
	return Outbox{Table: t.Table}.TableName()
}

// Messages configures events written with
// pg_logical_emit_message(true, prefix, json).
type Messages struct {
	// Prefix is the message prefix to accept; empty turns messages off.
	Prefix string `yaml:"prefix"`
	// Subject is the subject template for message events; ParseConfig
	// fills in nats.subject when it is empty.
	Subject string `yaml:"subject"`
}

// Cleanup configures the deletion of outbox rows whose events are
// confirmed, for services that do not delete them themselves.
type Cleanup struct {
	// After is how long a confirmed row is kept; 0 turns cleanup off.
	After time.Duration `yaml:"after"`
}

// Columns names the outbox columns that make up an event. The defaults are
// Debezium's outbox column names.
type Columns struct {
	ID            string `yaml:"id"`
	AggregateType string `yaml:"aggregate_type"`
	AggregateID   string `yaml:"aggregate_id"`
	Type          string `yaml:"type"`
	Payload       string `yaml:"payload"`
}

// HeaderColumn copies the value of Column into the message header Header.
// In YAML it is one entry of the outbox.headers mapping (column: Header).
type HeaderColumn struct {
	Column string
	Header string
}

// Errors is the policy for events that cannot be published.
type Errors struct {
	// InvalidEvent is InvalidEventHalt or InvalidEventDeadLetter.
	InvalidEvent      string `yaml:"invalid_event"`
	DeadLetterSubject string `yaml:"dead_letter_subject"`
}

// HTTP configures the health and metrics server.
type HTTP struct {
	// Listen is host:port; empty disables the server.
	Listen string `yaml:"listen"`
}

// Log configures the process log.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // text or json
}

// DefaultConfig returns the configuration used for every key the file
// leaves out. Postgres.URL has no default.
func DefaultConfig() Config {
	c := defaults()
	c.resolveOutbox(nil)
	return c
}

func defaults() Config {
	return Config{
		Postgres: Postgres{
			Slot:          "outboxrelay",
			Publication:   "outboxrelay",
			FailoverSlot:  "auto",
			ReceiveBuffer: DefaultReceiveBuffer,
		},
		Outbox: Outbox{
			Table: "public.outbox",
			Columns: Columns{
				ID:            "id",
				AggregateType: "aggregatetype",
				AggregateID:   "aggregateid",
				Type:          "type",
				Payload:       "payload",
			},
		},
		NATS: NATS{
			URL:     "nats://127.0.0.1:4222",
			Stream:  "OUTBOX",
			Subject: "outbox.{aggregate_type}.{aggregate_id}",
			Format:  FormatNative,
		},
		Errors: Errors{
			InvalidEvent:      InvalidEventHalt,
			DeadLetterSubject: "outbox.dead_letter",
		},
		HTTP: HTTP{Listen: "127.0.0.1:8080"},
		Log:  Log{Level: "info", Format: "text"},
	}
}

// Error is one problem with a configuration. Its message never contains a
// password or token.
type Error struct {
	File string // set by Load
	Line int    // 1-based line in File, 0 when unknown
	Key  string // dotted key path, e.g. "nats.stream"; empty for the whole document
	Msg  string
}

// Error formats e as "config: [file:line: ]key: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Key == "" && e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	// One line per error: a value quoted in Msg may hold a line break.
	b.WriteString(strings.ReplaceAll(e.Msg, "\n", `\n`))
	return b.String()
}

// ParseConfig reads a YAML configuration from r: it starts from
// DefaultConfig, applies the keys present in the YAML, expands ${VAR} and
// ${VAR:-default} in the values from the process environment, and
// validates the result. Expansion works on the parsed values, so a value
// from the environment cannot change the YAML structure. All problems found
// are returned together (joined), each as an *Error, with a zero Config.
func ParseConfig(r io.Reader) (Config, error) {
	return ParseConfigEnv(r, os.LookupEnv)
}

// ParseConfigEnv is ParseConfig with lookup in place of os.LookupEnv.
func ParseConfigEnv(r io.Reader, lookup func(string) (string, bool)) (Config, error) {
	return parse(r, lookup, "")
}

// Load reads and parses the configuration file at path. Its errors name the
// file (and the line, when known).
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return parse(bytes.NewReader(b), os.LookupEnv, path)
}

func parse(r io.Reader, lookup func(string) (string, bool), file string) (Config, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("config: read: %w", err)
	}
	c := defaults()
	d := decoder{lookup: lookup, lines: make(map[string]int)}
	d.document(b, &c)
	errs := d.errs
	if len(errs) == 0 {
		errs = c.resolveOutbox(d.lines)
	}
	if len(errs) == 0 {
		errs = c.validate()
		for _, e := range errs {
			e.Line = d.lines[e.Key]
		}
	}
	if len(errs) > 0 {
		for _, e := range errs {
			e.File = file
		}
		return Config{}, joinErrors(errs)
	}
	return c, nil
}

// Validate checks every key and returns all problems found (joined), each
// as an *Error. ParseConfig and Load call it.
func (c Config) Validate() error {
	return joinErrors(c.validate())
}

func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

// URLs returns the server URLs of the comma-separated URL, trimmed, without
// empty entries.
func (n NATS) URLs() []string {
	var urls []string
	for u := range strings.SplitSeq(n.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// TableName returns the outbox table's schema and name; the schema is
// "public" when Table has none.
func (o Outbox) TableName() (schema, name string) {
	if s, n, ok := strings.Cut(o.Table, "."); ok {
		return s, n
	}
	return "public", o.Table
}

// resolveOutbox turns the one-table short form into Tables, fills in the
// default subject templates, and normalizes table names. present holds the
// keys the file set.
func (c *Config) resolveOutbox(present map[string]int) []*Error {
	o := &c.Outbox
	short := present["outbox.table"] > 0 || present["outbox.columns"] > 0 || present["outbox.headers"] > 0
	if line := present["outbox.tables"]; line > 0 {
		if short {
			return []*Error{{Key: "outbox.tables", Line: line, Msg: "use either outbox.table (with outbox.columns and outbox.headers) for one table, or outbox.tables for several, not both"}}
		}
		if len(o.Tables) == 0 {
			return []*Error{{Key: "outbox.tables", Line: line, Msg: "must list at least one table, e.g. [{table: public.outbox}]"}}
		}
	} else if short || o.Messages.Prefix == "" {
		// The short form; a file that configures only messages has no
		// table.
		o.Tables = []Table{{Table: o.Table, Columns: o.Columns, Headers: o.Headers}}
	} else {
		o.Tables = nil
	}
	o.Table = normalizeTable(o.Table)
	for i := range o.Tables {
		t := &o.Tables[i]
		t.Table = normalizeTable(t.Table)
		if t.Subject == "" {
			t.Subject = c.NATS.Subject
		}
	}
	if len(o.Tables) != 1 || present["outbox.tables"] > 0 {
		o.Table = "" // not the short form: Tables is the only truth
	}
	if present["outbox.messages.subject"] == 0 {
		o.Messages.Subject = c.NATS.Subject
	}
	return nil
}

// DefaultColumns returns the Debezium-compatible default column mapping.
func DefaultColumns() Columns { return defaults().Outbox.Columns }

func normalizeTable(t string) string {
	if t == "" || strings.Contains(t, ".") {
		return t
	}
	return "public." + t
}

// SlogLevel returns the slog level named by Level (info when unknown).
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Redacted returns a copy of c that is safe to print: passwords in the
// URLs, nats.password and nats.token are replaced by "xxxxx".
func (c Config) Redacted() Config {
	c.Postgres.URL = Redact(c.Postgres.URL)
	c.NATS.URL = redactList(c.NATS.URL)
	if c.NATS.Password != "" {
		c.NATS.Password = mask
	}
	if c.NATS.Token != "" {
		c.NATS.Token = mask
	}
	c.Outbox.Headers = append([]HeaderColumn(nil), c.Outbox.Headers...)
	tables := make([]Table, len(c.Outbox.Tables))
	for i, t := range c.Outbox.Tables {
		t.Headers = append([]HeaderColumn(nil), t.Headers...)
		tables[i] = t
	}
	if c.Outbox.Tables == nil {
		tables = nil
	}
	c.Outbox.Tables = tables
	return c
}
