package config_test

import (
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/config"
)

func TestEnvExpansion(t *testing.T) {
	vars := map[string]string{
		"PGPASSWORD": "pw",
		"EMPTY":      "",
		"SLOT":       "from_env",
		"TRICKY":     "abc # not a comment: {x: [y]} 'q' \"dq\"",
		"NESTED":     "${SLOT}",
		"HOST":       "db",
		"PORT":       "6432",
	}
	for _, tc := range []struct {
		name, yaml string
		get        func(t *testing.T, yaml string) string
		want       string
	}{
		{
			name: "plain", want: "postgres://relay:pw@db:6432/app",
			yaml: "postgres:\n  url: postgres://relay:${PGPASSWORD}@${HOST}:${PORT}/app\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).Postgres.URL },
		},
		{
			name: "default used when unset", want: "fallback_slot",
			yaml: pg + "  slot: ${UNSET_SLOT:-fallback_slot}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).Postgres.Slot },
		},
		{
			name: "default used when empty", want: "fallback_slot",
			yaml: pg + "  slot: ${EMPTY:-fallback_slot}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).Postgres.Slot },
		},
		{
			name: "default ignored when set", want: "from_env",
			yaml: pg + "  slot: ${SLOT:-fallback_slot}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).Postgres.Slot },
		},
		{
			name: "empty default", want: "",
			yaml: pg + "nats:\n  token: ${UNSET_TOKEN:-}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).NATS.Token },
		},
		{
			name: "set but empty", want: "",
			yaml: pg + "nats:\n  token: ${EMPTY}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).NATS.Token },
		},
		{
			name: "dollar dollar", want: "pa$word$$",
			yaml: pg + "nats:\n  user: relay\n  password: pa$$word$$$$\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).NATS.Password },
		},
		{
			name: "dollar dollar before a brace is not a reference", want: "${SLOT}",
			yaml: pg + "nats:\n  token: $${SLOT}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).NATS.Token },
		},
		{
			// The value carries '#', ": ", braces and quotes; it must stay
			// one scalar, not become a comment or a mapping.
			name: "YAML syntax from env stays a scalar", want: vars["TRICKY"],
			yaml: pg + "nats:\n  token: ${TRICKY}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).NATS.Token },
		},
		{
			name: "YAML syntax from env, quoted in the file", want: "<" + vars["TRICKY"] + ">",
			yaml: pg + "nats:\n  token: \"<${TRICKY}>\"\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).NATS.Token },
		},
		{
			name: "env values are not expanded again", want: "${SLOT}",
			yaml: pg + "nats:\n  token: ${NESTED}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).NATS.Token },
		},
		{
			name: "header value", want: "Trace-Context",
			yaml: pg + "outbox:\n  headers:\n    trace: ${HDR:-Trace-Context}\n",
			get:  func(t *testing.T, y string) string { return mustParse(t, y, vars).Outbox.Headers[0].Header },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.get(t, tc.yaml); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseConfigUsesProcessEnv(t *testing.T) {
	t.Setenv("OUTBOXRELAY_TEST_PW", "from process")
	c, err := config.ParseConfig(strings.NewReader(pg + "nats: {user: u, password: '${OUTBOXRELAY_TEST_PW}'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.Password != "from process" {
		t.Errorf("Password = %q, want %q", c.NATS.Password, "from process")
	}
}

func TestEnvExpansionErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{
			name: "unset",
			yaml: "postgres:\n  url: postgres://relay:${PGPASSWORD}@db/app\n",
			want: "config: postgres.url: environment variable PGPASSWORD is not set (use ${PGPASSWORD:-} to allow empty)",
		},
		{
			name: "unset in a header",
			yaml: pg + "outbox:\n  headers:\n    trace: ${HDR}\n",
			want: "config: outbox.headers.trace: environment variable HDR is not set (use ${HDR:-} to allow empty)",
		},
		{
			name: "lone dollar",
			yaml: pg + "nats:\n  user: u\n  password: pa$word\n",
			want: "config: nats.password: '$' at character 3 is not followed by '{' or '$'",
		},
		{
			name: "trailing dollar",
			yaml: pg + "nats:\n  token: abc$\n",
			want: "config: nats.token: '$' at character 4 is not followed",
		},
		{
			name: "unterminated",
			yaml: pg + "nats:\n  token: ${TOKEN\n",
			want: "config: nats.token: '${' at character 1 has no closing '}'",
		},
		{
			name: "bad name",
			yaml: pg + "nats:\n  token: ${1TOKEN}\n",
			want: "config: nats.token: '${' at character 1 does not start a valid reference",
		},
		{
			name: "empty name",
			yaml: pg + "nats:\n  token: ${:-x}\n",
			want: "config: nats.token: '${' at character 1 does not start a valid reference",
		},
		{
			name: "keys are not expanded",
			yaml: pg + "nats:\n  ${KEY}: x\n",
			want: "config: nats.${KEY}: unknown key",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.yaml, map[string]string{"KEY": "token"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
