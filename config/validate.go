package config

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/subject"
)

type validator struct{ errs []*Error }

func (v *validator) fail(key, format string, args ...any) {
	v.errs = append(v.errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// validate returns every problem in c. Values of secret keys (passwords,
// tokens, the user name) are never quoted; URLs only redacted.
func (c Config) validate() []*Error {
	var v validator
	v.postgres(c.Postgres)
	v.outbox(c)
	v.nats(c.NATS)
	v.errors(c.Errors)
	v.http(c.HTTP)
	v.log(c.Log)
	return v.errs
}

var (
	slotRE       = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	tableIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)
)

func (v *validator) postgres(p Postgres) {
	if p.URL == "" {
		v.fail("postgres.url", "is required (for example postgres://relay:${PGPASSWORD}@db:5432/app)")
	} else if _, err := pgconn.ParseConfig(p.URL); err != nil {
		msg := pgParseMessage(p.URL, err)
		if strings.Contains(p.URL, "://") && (strings.Contains(msg, "as URL") || strings.Contains(msg, "invalid port")) {
			msg += "; in a URL, percent-encode special characters of the user name and password ('@' as %40, '/' as %2F, ':' as %3A, ' ' as %20)"
		}
		v.fail("postgres.url", "invalid connection string: %s", msg)
	}
	if !slotRE.MatchString(p.Slot) {
		v.fail("postgres.slot", "must be 1 to 63 lower-case letters, digits or '_', which Postgres requires of a replication slot name; got %q: use %q", p.Slot, slotName(p.Slot))
	}
	switch p.FailoverSlot {
	case "", "auto", "on", "off":
	default:
		v.fail("postgres.failover_slot", "must be auto, on or off; got %q", p.FailoverSlot)
	}
	if b := p.ReceiveBuffer; b != 0 && (b < minReceiveBuffer || b > maxReceiveBuffer) {
		v.fail("postgres.receive_buffer", "must be 0 (the kernel's autotuning) or %d to %d bytes; got %d", minReceiveBuffer, maxReceiveBuffer, b)
	}
	// Any publication name works, the relay quotes it everywhere; Postgres
	// would silently truncate a longer one, and cannot store a NUL.
	if n := len(p.Publication); n == 0 || n > 63 || strings.ContainsRune(p.Publication, 0) {
		v.fail("postgres.publication", "must be 1 to 63 bytes (a Postgres identifier, without NUL); got %q", p.Publication)
	}
}

// The bounds of postgres.receive_buffer: below 4 KiB the kernel rounds it
// up anyway, and above 64 MiB it is surely a unit mistake (the kernel caps
// it at net.core.rmem_max in any case).
const (
	minReceiveBuffer = 4 << 10
	maxReceiveBuffer = 64 << 20
)

// slotName is the slot name closest to s that Postgres accepts: lower case,
// other characters as '_', at most 63 bytes.
func slotName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	if len(b) == 0 {
		return "outboxrelay"
	}
	return string(b)
}

func (v *validator) outbox(c Config) {
	o := c.Outbox
	tables, short := o.Tables, o.Table != ""
	if len(tables) == 0 && o.Messages.Prefix == "" { // a Config built in code
		tables = []Table{{Table: o.Table, Columns: o.Columns, Headers: o.Headers}}
		short = true
	}
	if len(tables) == 0 && o.Messages.Prefix == "" {
		v.fail("outbox", "configures no source of events: set outbox.table, outbox.tables or outbox.messages.prefix")
	}
	templates := []string{c.NATS.Subject}
	seen := make(map[string]int) // table -> index
	for i, t := range tables {
		key := func(k string) string {
			if short {
				return "outbox." + k
			}
			return fmt.Sprintf("outbox.tables[%d].%s", i, k)
		}
		v.table(key, t)
		if c.NATS.Format == FormatCloudEvents {
			for _, h := range t.Headers {
				if len(h.Header) >= 3 && strings.EqualFold(h.Header[:3], "ce-") {
					v.fail(key("headers")+"."+h.Column, "header name %q is a CloudEvents attribute's, which the relay sets with nats.format: cloudevents: choose another name", h.Header)
				}
			}
		}
		if first, dup := seen[t.Table]; dup {
			v.fail(key("table"), "%q is already listed as outbox.tables[%d]; list each table once", t.Table, first)
		}
		seen[t.Table] = i
		if t.Subject != "" && t.Subject != c.NATS.Subject {
			templates = append(templates, t.Subject)
			if _, err := parseSubjectTemplate(t.Subject); err != nil {
				v.fail(key("subject"), "%s", err)
			}
		}
	}

	if m := o.Messages; m.Prefix != "" {
		if strings.ContainsRune(m.Prefix, 0) {
			v.fail("outbox.messages.prefix", "must not contain a NUL byte")
		}
		if m.Subject != "" && m.Subject != c.NATS.Subject {
			templates = append(templates, m.Subject)
			if _, err := parseSubjectTemplate(m.Subject); err != nil {
				v.fail("outbox.messages.subject", "%s", err)
			}
		}
	}

	if after := o.Cleanup.After; after != 0 {
		switch {
		case len(tables) == 0:
			v.fail("outbox.cleanup.after", "needs an outbox table; events written with pg_logical_emit_message leave no rows to delete")
		case after < time.Second:
			v.fail("outbox.cleanup.after", "must be 0 (off) or at least 1s; got %s", after)
		}
	}

	switch o.Backfill {
	case "", BackfillNone:
	case BackfillExisting:
		if len(tables) == 0 {
			v.fail("outbox.backfill", "needs an outbox table; events written with pg_logical_emit_message leave no rows to read")
		}
	default:
		v.fail("outbox.backfill", "must be %q or %q; got %q", BackfillNone, BackfillExisting, o.Backfill)
	}

	partition := false
	for _, t := range templates {
		partition = partition || strings.Contains(t, "{partition}")
	}
	switch n := c.NATS.Partitions; {
	case n < 0 || n > maxPartitions:
		v.fail("nats.partitions", "must be between 1 and %d; got %d", maxPartitions, n)
	case partition && n == 0:
		v.fail("nats.partitions", "must be set (for example 16) when a subject template uses {partition}: it is the number of partitions")
	case !partition && n != 0:
		v.fail("nats.partitions", "is set but no subject template uses {partition}; add {partition} to nats.subject (e.g. \"outbox.{partition}.{aggregate_type}.{aggregate_id}\") or remove nats.partitions")
	}
}

// maxPartitions bounds nats.partitions: each partition is a consumer's
// filter subject, and more than this many is a mistake.
const maxPartitions = 1 << 16

func (v *validator) table(key func(string) string, t Table) {
	parts := strings.Split(t.Table, ".")
	ok := len(parts) <= 2
	for _, p := range parts {
		ok = ok && tableIdentRE.MatchString(p)
	}
	if !ok {
		v.fail(key("table"), "must be name or schema.name, each an unquoted identifier (letters, digits, '_' or '$', not starting with a digit, at most 63 bytes); got %q", t.Table)
	}

	cols := reflect.ValueOf(t.Columns)
	for i := range cols.NumField() {
		k := key("columns." + yamlKey(cols.Type().Field(i)))
		switch name := cols.Field(i).String(); {
		case name == "":
			v.fail(k, "must not be empty")
		case len(name) > 63 || strings.ContainsRune(name, 0):
			v.fail(k, "is not a valid column name (at most 63 bytes, no NUL)")
		}
	}

	seen := make(map[string]string) // lower-case header -> column
	for _, h := range t.Headers {
		k := key("headers." + quoteKey(h.Column))
		if h.Column == "" {
			v.fail(key("headers"), "a column name must not be empty")
			continue
		}
		if err := checkHeaderName(h.Header); err != "" {
			v.fail(k, "%s", err)
			continue
		}
		lower := strings.ToLower(h.Header)
		if prev, dup := seen[lower]; dup {
			v.fail(k, "header %q is already set from column %q", h.Header, prev)
			continue
		}
		seen[lower] = h.Column
	}
}

func checkHeaderName(h string) string {
	if h == "" {
		return "header name must not be empty"
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] > '~' || h[i] == ':' {
			return fmt.Sprintf("header name %q is not valid: use printable ASCII without ':' or whitespace", h)
		}
	}
	// The reserved names are the decoder's rule, the same for messages.
	if problem := decode.HeaderNameProblem(h); problem != "" {
		return fmt.Sprintf("header name %q %s", h, problem)
	}
	return ""
}

var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

func (v *validator) nats(n NATS) {
	urlAuth := v.natsURLs(n.URL)

	switch {
	case n.Stream == "":
		v.fail("nats.stream", "is required")
	case strings.IndexFunc(n.Stream, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(".*>/\\", r)
	}) >= 0:
		v.fail("nats.stream", "must not contain spaces, '.', '*', '>', '/' or '\\'; got %q", n.Stream)
	}

	if _, err := parseSubjectTemplate(n.Subject); err != nil {
		v.fail("nats.subject", "%s", err)
	}
	switch n.Format {
	case FormatNative:
		if n.CloudEvents != (CloudEvents{}) {
			v.fail("nats.cloudevents", "is set but nats.format is %q: set nats.format: %s, or remove nats.cloudevents", n.Format, FormatCloudEvents)
		}
	case FormatCloudEvents:
		v.cloudEvents(n.CloudEvents)
	default:
		v.fail("nats.format", "must be %q or %q; got %q", FormatNative, FormatCloudEvents, n.Format)
	}

	// At most one authentication method, so it is never ambiguous which
	// one the server sees.
	methods := []struct {
		key string
		set bool
	}{
		{"nats.url", urlAuth},
		{"nats.creds", n.Creds != ""},
		{"nats.nkey", n.NKey != ""},
		{"nats.user", n.User != "" || n.Password != ""},
		{"nats.token", n.Token != ""},
	}
	first := ""
	for _, m := range methods {
		switch {
		case !m.set:
		case first == "":
			first = m.key
		default:
			other := first
			if first == "nats.url" {
				other = "credentials in nats.url"
			}
			v.fail(m.key, "cannot be combined with %s: use only one authentication method (creds, nkey, user and password, or token)", other)
		}
	}
	if n.User != "" && n.Password == "" {
		v.fail("nats.password", "is required when nats.user is set")
	}
	if n.Password != "" && n.User == "" {
		v.fail("nats.user", "is required when nats.password is set")
	}
	if n.TLS.Cert != "" && n.TLS.Key == "" {
		v.fail("nats.tls.key", "is required when nats.tls.cert is set (the client certificate's private key)")
	}
	if n.TLS.Key != "" && n.TLS.Cert == "" {
		v.fail("nats.tls.cert", "is required when nats.tls.key is set (the client certificate)")
	}
}

// natsURLs checks the comma-separated server list and reports whether any
// URL carries credentials.
func (v *validator) natsURLs(list string) (hasAuth bool) {
	if strings.TrimSpace(list) == "" {
		v.fail("nats.url", "is required (for example nats://127.0.0.1:4222)")
		return false
	}
	entries := strings.Split(list, ",")
	for i, raw := range entries {
		raw = strings.TrimSpace(raw)
		which := "the URL"
		if len(entries) > 1 {
			which = fmt.Sprintf("entry %d", i+1)
		}
		if raw == "" {
			v.fail("nats.url", "%s is empty (separate server URLs with single commas)", which)
			continue
		}
		s := raw
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil {
			// url.Parse's error quotes the URL, password included.
			v.fail("nats.url", "%s is not a valid URL (use nats://host:port, tls://, ws:// or wss://, or host:port)", which)
			continue
		}
		shown := Redact(raw)
		switch {
		case !natsSchemes[u.Scheme]:
			v.fail("nats.url", "%s (%s): scheme %q is not supported (use nats, tls, ws or wss)", which, shown, u.Scheme)
		case u.Hostname() == "":
			v.fail("nats.url", "%s (%s) has no host", which, shown)
		case u.Port() != "" && !validPort(u.Port(), false):
			v.fail("nats.url", "%s (%s) has an invalid port", which, shown)
		}
		if u.User != nil {
			hasAuth = true
		}
	}
	return hasAuth
}

func validPort(p string, zeroOK bool) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n <= 65535 && (n > 0 || zeroOK && n == 0) && p[0] != '+' && p[0] != '-'
}

func (v *validator) errors(e Errors) {
	switch e.InvalidEvent {
	case InvalidEventHalt, InvalidEventDeadLetter:
	default:
		v.fail("errors.invalid_event", "must be %q or %q; got %q", InvalidEventHalt, InvalidEventDeadLetter, e.InvalidEvent)
	}
	if e.DeadLetterSubject == "" {
		v.fail("errors.dead_letter_subject", "is required")
	} else if err := checkLiteralSubject(e.DeadLetterSubject); err != "" {
		v.fail("errors.dead_letter_subject", "%s", err)
	}
}

func checkLiteralSubject(s string) string {
	for i, tok := range strings.Split(s, ".") {
		if tok == "" {
			return fmt.Sprintf("token %d is empty; a subject is non-empty tokens separated by single '.'", i+1)
		}
		if r, bad := subject.BadRune(tok); bad {
			return fmt.Sprintf("contains %q; it must be a literal subject without whitespace or wildcards ('*', '>')", r)
		}
		if strings.ContainsAny(tok, "{}") {
			return "must be a literal subject: placeholders such as {aggregate_id} are not expanded here"
		}
	}
	return ""
}

func (v *validator) http(h HTTP) {
	if h.Listen == "" {
		return
	}
	if _, port, err := net.SplitHostPort(h.Listen); err != nil || !validPort(port, true) {
		v.fail("http.listen", "must be host:port, for example 127.0.0.1:8080 or :8080 (or empty to disable the HTTP server); got %q", h.Listen)
	}
}

func (v *validator) log(l Log) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "must be debug, info, warn or error; got %q", l.Level)
	}
	switch l.Format {
	case "text", "json":
	default:
		v.fail("log.format", "must be text or json; got %q", l.Format)
	}
}
