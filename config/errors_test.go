package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/config"
)

// badConfigs are invalid configurations and a substring of the error each
// must produce; every want starts with the key path. FuzzParseConfig uses
// them as seeds.
var badConfigs = []struct {
	name, yaml, want string
}{
	{"empty file", "", "config: postgres.url: is required"},
	{"postgres url bad port", "postgres: {url: 'postgres://relay@localhost:99999/app'}", "config: postgres.url: invalid connection string: "},
	{"postgres url bad sslmode", "postgres: {url: 'postgres://relay@localhost/app?sslmode=sometimes'}", "config: postgres.url: invalid connection string: failed to configure TLS (sslmode is invalid)"},
	{"slot upper case", pg + "  slot: Outbox-Relay\n", `config: postgres.slot: must be 1 to 63 lower-case letters, digits or '_', which Postgres requires of a replication slot name; got "Outbox-Relay": use "outbox_relay"`},
	{"slot with space", pg + "  slot: 'relay 1'\n", `config: postgres.slot: must be 1 to 63 lower-case letters, digits or '_', which Postgres requires of a replication slot name; got "relay 1": use "relay_1"`},
	{"slot too long", pg + "  slot: " + strings.Repeat("s", 64) + "\n", `config: postgres.slot: must be 1 to 63 lower-case letters, digits or '_', which Postgres requires of a replication slot name; got "` + strings.Repeat("s", 64) + `": use "` + strings.Repeat("s", 63) + `"`},
	{"slot empty", pg + "  slot: ''\n", `config: postgres.slot: must be 1 to 63 lower-case letters, digits or '_', which Postgres requires of a replication slot name; got "": use "outboxrelay"`},
	{"publication too long", pg + "  publication: " + strings.Repeat("p", 64) + "\n", `config: postgres.publication: must be 1 to 63 bytes (a Postgres identifier, without NUL); got "` + strings.Repeat("p", 64) + `"`},
	{"publication empty", pg + "  publication: ''\n", `config: postgres.publication: must be 1 to 63 bytes`},
	{"table three parts", pg + "outbox: {table: a.b.c}\n", `config: outbox.table: must be name or schema.name`},
	{"table quoted", pg + "outbox: {table: '\"Outbox\"'}\n", `config: outbox.table: `},
	{"table empty schema", pg + "outbox: {table: .outbox}\n", `config: outbox.table: `},
	{"column empty", pg + "outbox: {columns: {id: ''}}\n", "config: outbox.columns.id: must not be empty"},
	{"column null", pg + "outbox: {columns: {aggregate_id: ~}}\n", "config: outbox.columns.aggregate_id: must not be empty"},
	{"header reserved Nats-", pg + "outbox: {headers: {trace: Nats-Trace}}\n", `config: outbox.headers.trace: header name "Nats-Trace" is reserved`},
	{"header Status", pg + "outbox: {headers: {st: status}}\n", `config: outbox.headers.st: header name "status" is reserved: NATS uses Status and Description for control messages`},
	{"header Description", pg + "outbox: {headers: {d: Description}}\n", `config: outbox.headers.d: header name "Description" is reserved: NATS uses Status and Description`},
	{"header reserved Outbox-", pg + "outbox: {headers: {trace: outbox-trace}}\n", `config: outbox.headers.trace: header name "outbox-trace" is reserved`},
	{"header with space", pg + "outbox: {headers: {trace: Trace Context}}\n", `config: outbox.headers.trace: header name "Trace Context" is not valid`},
	{"header with colon", pg + "outbox: {headers: {trace: 'Trace:Context'}}\n", `config: outbox.headers.trace: header name "Trace:Context" is not valid`},
	{"header empty", pg + "outbox: {headers: {trace: ''}}\n", `config: outbox.headers.trace: header name must not be empty`},
	{"header twice", pg + "outbox: {headers: {a: X-Tenant, b: x-tenant}}\n", `config: outbox.headers.b: header "x-tenant" is already set from column "a"`},
	{"nats url scheme", pg + "nats: {url: 'http://localhost:4222'}\n", `config: nats.url: the URL (http://localhost:4222): scheme "http" is not supported`},
	{"nats url empty entry", pg + "nats: {url: 'nats://a:4222,,nats://b:4222'}\n", "config: nats.url: entry 2 is empty"},
	{"nats url bad port", pg + "nats: {url: 'nats://a:4222, nats://b:99999'}\n", "config: nats.url: entry 2 (nats://b:99999) has an invalid port"},
	{"nats url no host", pg + "nats: {url: 'nats://:4222'}\n", "config: nats.url: the URL (nats://:4222) has no host"},
	{"nats url empty", pg + "nats: {url: ''}\n", "config: nats.url: is required"},
	{"stream with dot", pg + "nats: {stream: OUT.BOX}\n", `config: nats.stream: must not contain spaces, '.', '*', '>', '/' or '\'`},
	{"stream with space", pg + "nats: {stream: 'OUT BOX'}\n", "config: nats.stream: must not contain"},
	{"stream empty", pg + "nats: {stream: ''}\n", "config: nats.stream: is required"},
	{"subject first token placeholder", pg + "nats: {subject: '{aggregate_type}.{aggregate_id}'}\n", "config: nats.subject: the first token must be literal"},
	{"subject unknown placeholder", pg + "nats: {subject: 'outbox.{aggregateid}'}\n", "config: nats.subject: unknown placeholder {aggregateid} (did you mean {aggregate_id}?)"},
	{"subject unknown placeholder far", pg + "nats: {subject: 'outbox.{tenant}.{aggregate_id}'}\n", "config: nats.subject: unknown placeholder {tenant} (known: "},
	{"subject without aggregate", pg + "nats: {subject: 'outbox.{type}'}\n", "config: nats.subject: must contain {aggregate_id} or {aggregate_type}"},
	{"subject empty token", pg + "nats: {subject: 'outbox..{aggregate_id}'}\n", "config: nats.subject: token 2 is empty"},
	{"subject trailing dot", pg + "nats: {subject: 'outbox.{aggregate_id}.'}\n", "config: nats.subject: token 3 is empty"},
	{"subject wildcard", pg + "nats: {subject: 'outbox.*.{aggregate_id}'}\n", `config: nats.subject: token 2 ("*") contains '*'`},
	{"subject two placeholders in a token", pg + "nats: {subject: 'outbox.{type}{aggregate_id}'}\n", "config: nats.subject: token 2 (\"{type}{aggregate_id}\") has more than one placeholder"},
	{"subject unbalanced", pg + "nats: {subject: 'outbox.aggregate_id}'}\n", "config: nats.subject: token 2 (\"aggregate_id}\") has an unbalanced brace"},
	{"subject space in prefix", pg + "nats: {subject: 'out box.{aggregate_id}'}\n", "config: nats.subject: token 1 (\"out box\") contains ' '"},
	{"invalid_event", pg + "errors: {invalid_event: skip}\n", `config: errors.invalid_event: must be "halt" or "dead_letter"; got "skip"`},
	{"dead letter wildcard", pg + "errors: {dead_letter_subject: 'outbox.>'}\n", "config: errors.dead_letter_subject: contains '>'"},
	{"dead letter placeholder", pg + "errors: {dead_letter_subject: 'dlq.{type}'}\n", "config: errors.dead_letter_subject: must be a literal subject"},
	{"dead letter empty", pg + "errors: {dead_letter_subject: ''}\n", "config: errors.dead_letter_subject: is required"},
	{"user without password", pg + "nats: {user: relay}\n", "config: nats.password: is required when nats.user is set"},
	{"password without user", pg + "nats: {password: pw}\n", "config: nats.user: is required when nats.password is set"},
	{"creds and token", pg + "nats: {creds: /r.creds, token: t}\n", "config: nats.token: cannot be combined with nats.creds"},
	{"nkey and user", pg + "nats: {nkey: /r.nk, user: u, password: p}\n", "config: nats.user: cannot be combined with nats.nkey"},
	{"url credentials and token", pg + "nats: {url: 'nats://u:p@localhost:4222', token: t}\n", "config: nats.token: cannot be combined with credentials in nats.url"},
	{"tls cert without key", pg + "nats: {tls: {cert: /c.pem}}\n", "config: nats.tls.key: is required when nats.tls.cert is set"},
	{"tls key without cert", pg + "nats: {tls: {key: /k.pem}}\n", "config: nats.tls.cert: is required when nats.tls.key is set"},
	{"listen without port", pg + "http: {listen: 8080}\n", `config: http.listen: must be host:port`},
	{"listen bad port", pg + "http: {listen: 'localhost:http'}\n", `config: http.listen: must be host:port`},
	{"log level", pg + "log: {level: verbose}\n", `config: log.level: must be debug, info, warn or error; got "verbose"`},
	{"log format", pg + "log: {format: xml}\n", `config: log.format: must be text or json; got "xml"`},
	{"nats format", pg + "nats: {format: cloudevent}\n", `config: nats.format: must be "native" or "cloudevents"; got "cloudevent"`},
	{"cloudevents without the format", pg + "nats: {cloudevents: {source: /orders}}\n", `config: nats.cloudevents: is set but nats.format is "native": set nats.format: cloudevents, or remove nats.cloudevents`},
	{"cloudevents source with a space", pg + "nats: {format: cloudevents, cloudevents: {source: '/orders eu'}}\n", `config: nats.cloudevents.source: must be a URI reference (RFC 3986), such as /orders or https://example.com/orders, with spaces and other characters outside URIs percent-encoded; got "/orders eu"`},
	{"cloudevents source not a URI", pg + "nats: {format: cloudevents, cloudevents: {source: 'http://[::1'}}\n", `config: nats.cloudevents.source: must be a URI reference (RFC 3986)`},
	{"cloudevents datacontenttype", pg + "nats: {format: cloudevents, cloudevents: {datacontenttype: json}}\n", `config: nats.cloudevents.datacontenttype: must be a media type (RFC 2046), type/subtype and parameters, such as application/json or text/plain; charset=utf-8; got "json"`},
	{"cloudevents datacontenttype parameter", pg + "nats: {format: cloudevents, cloudevents: {datacontenttype: 'text/plain; charset'}}\n", `config: nats.cloudevents.datacontenttype: must be a media type (RFC 2046)`},
	{"ce- header with cloudevents", pg + "nats: {format: cloudevents}\noutbox: {headers: {kind: CE-Type}}\n", `config: outbox.headers.kind: header name "CE-Type" is a CloudEvents attribute's, which the relay sets with nats.format: cloudevents: choose another name`},
	{"table and tables", pg + "outbox: {table: a, tables: [{table: b}]}\n", "config: outbox.tables: use either outbox.table"},
	{"tables empty", pg + "outbox: {tables: []}\n", "config: outbox.tables: must list at least one table"},
	{"tables not a list", pg + "outbox: {tables: {table: a}}\n", "config: outbox.tables: expected a list of tables"},
	{"tables twice", pg + "outbox: {tables: [{table: a}, {table: public.a}]}\n", `config: outbox.tables[1].table: "public.a" is already listed as outbox.tables[0]`},
	{"tables bad column", pg + "outbox: {tables: [{table: a}, {table: b, columns: {id: ''}}]}\n", "config: outbox.tables[1].columns.id: must not be empty"},
	{"tables unknown key", pg + "outbox: {tables: [{table: a, subjet: x}]}\n", `config: outbox.tables[0].subjet: unknown key (did you mean "subject"?)`},
	{"tables bad subject", pg + "outbox: {tables: [{table: a, subject: 'x.{type}'}]}\n", "config: outbox.tables[0].subject: must contain {aggregate_id} or {aggregate_type}"},
	{"messages subject", pg + "outbox: {messages: {prefix: p, subject: '{type}'}}\n", "config: outbox.messages.subject: the first token must be literal"},
	{"cleanup not a duration", pg + "outbox: {cleanup: {after: soon}}\n", `config: outbox.cleanup.after: expected a duration such as 30m, 1h or 24h, got "soon"`},
	{"cleanup negative", pg + "outbox: {cleanup: {after: -1h}}\n", `config: outbox.cleanup.after: expected a duration`},
	{"cleanup too short", pg + "outbox: {cleanup: {after: 10ms}}\n", "config: outbox.cleanup.after: must be 0 (off) or at least 1s"},
	{"cleanup without table", pg + "outbox: {messages: {prefix: p}, cleanup: {after: 1h}}\n", "config: outbox.cleanup.after: needs an outbox table"},
	{"partition without partitions", pg + "nats: {subject: 'outbox.{partition}.{aggregate_id}'}\n", "config: nats.partitions: must be set (for example 16) when a subject template uses {partition}"},
	{"partitions without partition", pg + "nats: {partitions: 8}\n", "config: nats.partitions: is set but no subject template uses {partition}"},
	{"receive buffer too small", "postgres: {url: 'postgres://x@h/db', receive_buffer: 512}\n", "config: postgres.receive_buffer: must be 0 (the kernel's autotuning) or 4096 to 67108864 bytes; got 512"},
	{"receive buffer negative", "postgres: {url: 'postgres://x@h/db', receive_buffer: -1}\n", "config: postgres.receive_buffer: must be 0 (the kernel's autotuning) or 4096 to 67108864 bytes; got -1"},
	{"receive buffer with a unit", "postgres: {url: 'postgres://x@h/db', receive_buffer: 64KiB}\n", `config: postgres.receive_buffer: expected a whole number, got "64KiB"`},
	{"partitions not a number", pg + "nats: {partitions: many, subject: 'outbox.{partition}.{aggregate_id}'}\n", `config: nats.partitions: expected a whole number, got "many"`},
	{"partitions negative", pg + "nats: {partitions: -2, subject: 'outbox.{partition}.{aggregate_id}'}\n", "config: nats.partitions: must be between 1 and 65536; got -2"},
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range badConfigs {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(t, tc.yaml, nil)
			if err == nil {
				t.Fatalf("ParseConfig accepted it: %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Errorf("err is not a *config.Error: %T", err)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", pg + "  slto: x\n", `config: postgres.slto: unknown key (did you mean "slot"?)`},
		{"unknown key upper case", pg + "  Slot: x\n", `config: postgres.Slot: unknown key (did you mean "slot"?)`},
		{"unknown top-level key", pg + "nat: {}\n", `config: nat: unknown key (did you mean "nats"?)`},
		{"unknown nested key", pg + "outbox: {columns: {aggregate_idd: x}}\n", `config: outbox.columns.aggregate_idd: unknown key (did you mean "aggregate_id"?)`},
		{"key in the wrong section", pg + "  stream: X\n", `config: postgres.stream: unknown key (did you mean "nats.stream"?)`},
		{"key in several sections", pg + "log: {url: x}\n", `config: log.url: unknown key (did you mean "nats.url" or "postgres.url"?)`},
		{"unknown key, nothing close", pg + "http: {port: 80}\n", `config: http.port: unknown key (known keys: listen)`},
		{"merge key", pg + "nats: {<<: {stream: X}}\n", `config: nats.<<: unknown key`},
		{"duplicate key", pg + "  slot: a\n  slot: b\n", "config: postgres.slot: duplicate key (first set on line 3)"},
		{"duplicate section", pg + "postgres: {slot: a}\n", "config: postgres: duplicate key (first set on line 1)"},
		{"duplicate header column", pg + "outbox:\n  headers:\n    a: X-A\n    a: X-B\n", "config: outbox.headers.a: duplicate key (first set on line 5)"},
		{"list for a string", pg + "nats:\n  url: [nats://a:4222, nats://b:4222]\n", "config: nats.url: expected a string, got a list"},
		{"mapping for a string", pg + "nats:\n  url: {host: a}\n", "config: nats.url: expected a string, got a mapping"},
		{"string for a section", "postgres: postgres://x\n", "config: postgres: expected a mapping with keys url, slot, publication, failover_slot, receive_buffer, got a string"},
		{"list for a section", pg + "log: [info]\n", "config: log: expected a mapping with keys level, format, got a list"},
		{"list for headers", pg + "outbox: {headers: [a, b]}\n", "config: outbox.headers: expected a mapping of column name to header name, got a list"},
		{"mapping for a header", pg + "outbox: {headers: {a: {b: c}}}\n", "config: outbox.headers.a: expected a string, got a mapping"},
		{"list at top level", "- postgres\n", "config: line 1: expected a mapping with keys postgres, outbox, nats, errors, http, log, got a list"},
		{"scalar at top level", "hello\n", "config: line 1: expected a mapping with keys postgres, outbox, nats, errors, http, log, got a string"},
		{"mapping as a key", pg + "nats: {? {a: b} : c}\n", "config: nats: keys must be plain names, got a mapping"},
		{"syntax error", "postgres:\n  url: [\n", "config: line 2: invalid YAML: "},
		{"tab indentation", "postgres:\n\turl: x\n", "config: line 2: invalid YAML: "},
		{"two documents", pg + "---\nlog: {level: debug}\n", "config: line 3: invalid YAML: a second document starts here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.yaml, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNumbersAndBooleansAreText(t *testing.T) {
	c := mustParse(t, pg+"nats: {user: 1234, password: 0755, token: ~}\nlog: {level: info}\n", nil)
	if c.NATS.User != "1234" || c.NATS.Password != "0755" {
		t.Errorf("user, password = %q, %q; want the literal text", c.NATS.User, c.NATS.Password)
	}
}

func TestAliases(t *testing.T) {
	c := mustParse(t, pg+"  slot: &s relay_2\n  publication: *s\n", nil)
	if c.Postgres.Publication != "relay_2" {
		t.Errorf("Publication = %q, want the aliased value", c.Postgres.Publication)
	}
}

func TestAllErrorsReported(t *testing.T) {
	_, err := parse(t, pg+"  slot: BAD\nnats: {stream: 'a.b'}\nlog: {level: loud}\n", nil)
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"config: postgres.slot: ", "config: nats.stream: ", "config: log.level: "}
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

// TestPublicationNames: any publication name Postgres can store is
// accepted, since the relay quotes it; upper case, spaces, commas and
// quotes included (pgoutput would fold or split them unquoted).
func TestPublicationNames(t *testing.T) {
	for _, name := range []string{"MyPub", "Outbox Events, v2", `say "hi"`, "1pub", strings.Repeat("p", 63)} {
		c := mustParse(t, pg+"  publication: '"+name+"'\n", nil)
		if c.Postgres.Publication != name {
			t.Errorf("publication %q parsed as %q", name, c.Postgres.Publication)
		}
	}
}
