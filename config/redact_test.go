package config_test

import (
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/config"
)

// TestErrorsNeverShowPasswords feeds configurations whose secrets make
// validation fail in different ways (I6: no secrets in output).
func TestErrorsNeverShowPasswords(t *testing.T) {
	// Every password below contains "s3cr3t"; those a malformed URL may
	// split also contain "PWX".
	const secret = "s3cr3t"
	pgURL := func(u string) string { return "postgres:\n  url: '" + u + "'\n" }
	cases := []string{
		pgURL("postgres://relay:s3cr3t-pw@localhost:99999/app"),
		pgURL("postgres://relay:s3cr3t-pw@localhost:5432/app?sslmode=bogus"),
		pgURL("postgres://relay:s3cr3t-pw@[::1/app"),
		pgURL("postgres://relay:s3cr3t-pw%zz@localhost/app"),
		pgURL("postgres://relay:s3cr3t-pw@localhost:5432/app?connect_timeout=-1"),
		pgURL("postgres://relay:s3cr3t-pw@localhost:5432/app?target_session_attrs=weird"),
		pgURL("postgres://relay:s3cr3t-pw@localhost:5432/app?min_protocol_version=9"),
		pgURL("postgres://relay:s3cr3t-pw@localhost:5432/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
		pgURL("postgres://relay:s3cr3t/PWX@local host:x/app"),
		pgURL("postgres://relay:s3cr3t PWX@localhost/app"),
		pgURL("postgres://relay:s3cr3t?PWX@localhost:x/app"),
		pgURL("postgres://relay:s3cr3t#PWX@localhost:x/app"),
		pgURL("host=localhost password s3cr3t-pw"),
		pgURL("postgres://relay:s3cr3t-pw@h1:5432,h2/app?port=1,2,3"),
		pgURL("postgres://relay@localhost/app?password=s3cr3t-pw&sslmode=nope"),
		pgURL("postgresql://relay:s3cr3t-pw@localhost:5432/app?channel_binding=maybe"),
		pgURL("host=localhost port=abc password=s3cr3t-pw"),
		pgURL("host=localhost password='s3cr3t-pw sslmode=disable"),
		pgURL("host=localhost password=s3cr3t-pw sslmode=bogus"),
		pgURL("mysql://relay:s3cr3t-pw@localhost/app"),
		pgURL("postgres://relay:s3cr3t-pw$x@localhost/app"),
		"postgres:\n  url: ${PGURL}\n",
		pg + "  slot: Bad\nnats:\n  url: 'http://relay:s3cr3t-pw@localhost:4222'\n",
		pg + "nats:\n  url: 'nats://relay:s3cr3t-pw@local host:4222'\n",
		pg + "nats:\n  url: 'nats://s3cr3t-pw@localhost:99999'\n",
		pg + "nats:\n  url: 'nats://a:4222,relay:s3cr3t-pw@b:4222x'\n",
		pg + "nats:\n  url: 'nats://relay:s3cr3t-pw@localhost:4222'\n  token: s3cr3t-tok\n",
		pg + "nats:\n  password: s3cr3t-pw\n",
		pg + "nats:\n  user: relay\n  password: s3cr3t-pw\n  token: s3cr3t-tok\n",
		pg + "nats:\n  token: s3cr3t-pw$\n",
		pg + "nats:\n  token: [s3cr3t-pw]\n",
		pg + "nats:\n  password: {s3cr3t-pw: 1}\n",
	}
	vars := map[string]string{"PGURL": "postgres://relay:s3cr3t-pw@localhost:5432/app?sslmode=bogus"}
	for _, in := range cases {
		_, err := parse(t, in, vars)
		if err == nil {
			t.Errorf("ParseConfig(%q) = nil error, want one", in)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "PWX") {
			t.Errorf("ParseConfig(%q) error shows the secret:\n%v", in, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://relay:s3cr3t@localhost:5432/app?sslmode=disable", "postgres://relay:xxxxx@localhost:5432/app?sslmode=disable"},
		{"postgresql://relay@localhost/app", "postgresql://relay@localhost/app"},
		{"postgres://localhost/app", "postgres://localhost/app"},
		{"postgres://relay:p%40ss@h1:5432,h2:5433/app", "postgres://relay:xxxxx@h1:5432,h2:5433/app"},
		{"postgres://relay@localhost/app?sslmode=disable&password=s3cr3t&x=1", "postgres://relay@localhost/app?sslmode=disable&password=xxxxx&x=1"},
		{"postgres://relay@localhost/app?sslpassword=s3cr3t", "postgres://relay@localhost/app?sslpassword=xxxxx"},
		{"postgres://relay:s3c/r3t@localhost/app", "postgres://xxxxx@localhost/app"},
		{"host=db user=relay password=s3cr3t sslmode=disable", "host=db user=relay password=xxxxx sslmode=disable"},
		{"host=db password = 's3 cr\\'3t' dbname=app", "host=db password = xxxxx dbname=app"},
		{"host=db user=a@b password=s3cr3t", "host=db user=a@b password=xxxxx"},
		{"nats://relay:s3cr3t@localhost:4222", "nats://relay:xxxxx@localhost:4222"},
		{"nats://s3cr3t-token@localhost:4222", "nats://xxxxx@localhost:4222"},
		{"tls://localhost:4222", "tls://localhost:4222"},
		{"relay:s3cr3t@localhost:4222", "relay:xxxxx@localhost:4222"},
		{"localhost:4222", "localhost:4222"},
		{"", ""},
	} {
		if got := config.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRedacted(t *testing.T) {
	c := mustParse(t, "postgres: {url: 'postgres://relay:s3cr3t@db/app'}\n"+
		"nats: {url: 'nats://a:4222,nats://u:s3cr3t@b:4222'}\n", nil)
	r := c.Redacted()
	if r.Postgres.URL != "postgres://relay:xxxxx@db/app" {
		t.Errorf("Postgres.URL = %q", r.Postgres.URL)
	}
	if r.NATS.URL != "nats://a:4222,nats://u:xxxxx@b:4222" {
		t.Errorf("NATS.URL = %q", r.NATS.URL)
	}
	if c.Postgres.URL != "postgres://relay:s3cr3t@db/app" {
		t.Errorf("Redacted changed the original: %q", c.Postgres.URL)
	}

	c = mustParse(t, pg+"nats: {user: u, password: s3cr3t}\n", nil)
	if r := c.Redacted(); r.NATS.Password != "xxxxx" || r.NATS.User != "u" {
		t.Errorf("NATS = %+v", r.NATS)
	}
	c = mustParse(t, pg+"nats: {token: s3cr3t}\n", nil)
	if r := c.Redacted(); r.NATS.Token != "xxxxx" {
		t.Errorf("NATS.Token = %q", r.NATS.Token)
	}
}
