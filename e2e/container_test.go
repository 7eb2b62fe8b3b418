package e2e_test

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestContainerBinary builds the relay exactly as the Dockerfile does (its
// `go build` line, parsed, so the flags cannot drift), checks that the
// binary is static and stamped, and runs it the way docker-compose.yml does:
// with deploy/compose/relay.yaml (URLs from the environment) against a
// Postgres set up by schema/outbox.sql and deploy/compose/init.sql, so as the
// relay role with only the privileges that file grants. Events flow with the contract's headers,
// and `outboxrelay healthcheck` (the image's HEALTHCHECK) follows /readyz.
func TestContainerBinary(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := buildAsDockerfile(t, root, "container-test")
	checkStaticBinary(t, bin)
	out, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "outboxrelay container-test" {
		t.Fatalf("%s version = %q, %v; want the -X main.version stamp \"container-test\"", bin, out, err)
	}

	pg := testenv.StartPostgres(t)
	n := testenv.StartNATS(t)
	// In the order docker-compose.yml mounts them: the table, then the
	// role that owns it.
	testenv.CreateOutbox(t, pg)
	initSQL, err := os.ReadFile(filepath.Join(root, "deploy/compose/init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pg.Exec(ctx, string(initSQL)); err != nil {
		t.Fatalf("apply deploy/compose/init.sql: %v", err)
	}
	// Make Postgres check the relay role's password over TCP, as the
	// image's pg_hba does.
	if err := pg.Exec(ctx, "GRANT "+testenv.PasswordAuthRole+" TO relay"); err != nil {
		t.Fatal(err)
	}

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(root, "deploy/compose/relay.yaml")
	relayEnv := append(os.Environ(),
		"OUTBOXRELAY_POSTGRES_URL="+pg.URLFor("relay", "relay"),
		"OUTBOXRELAY_NATS_URL="+n.URL(),
		// A wildcard address, as in the container: the healthcheck must
		// turn it into loopback.
		"OUTBOXRELAY_HTTP_LISTEN=0.0.0.0:"+strconv.Itoa(port),
	)
	healthcheck := func() (int, string) {
		cmd := exec.Command(bin, "healthcheck", "-config", cfgPath)
		cmd.Env = relayEnv
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("run healthcheck: %v", err)
		}
		return cmd.ProcessState.ExitCode(), strings.TrimSpace(string(out))
	}
	if code, out := healthcheck(); code != 1 || !strings.Contains(out, "not ready") {
		t.Fatalf("healthcheck with no relay running: exit %d, %q; want exit 1 saying not ready", code, out)
	}

	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Env = relayEnv
	e := &env{t: t, pg: pg, nats: n, natsURL: n.URL(), bin: bin, cfgPath: cfgPath, httpAddr: "127.0.0.1:" + strconv.Itoa(port)}
	e.relay = testenv.StartCmd(t, cmd)
	testenv.WaitFor(t, 30*time.Second, "relay ready", func() (bool, error) {
		if e.relay.Exited() {
			return false, fmt.Errorf("relay exited:\n%s", e.relay.Output())
		}
		return e.ready()
	})
	if code, out := healthcheck(); code != 0 || !strings.HasPrefix(out, "ready") {
		t.Fatalf("healthcheck with the relay ready: exit %d, %q; want exit 0", code, out)
	}

	// The relay created its publication as the relay role: init.sql's
	// privileges are enough.
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var owner string
	if err := conn.QueryRow(ctx, "SELECT pubowner::regrole::text FROM pg_publication WHERE pubname = 'outboxrelay'").Scan(&owner); err != nil {
		t.Fatalf("read publication outboxrelay: %v", err)
	}
	if owner != "relay" {
		t.Fatalf("publication outboxrelay is owned by %q, want the relay role", owner)
	}

	w := workload{Writers: 2, Aggregates: 20, Events: 500, MaxTx: 10, Rollback: 0.1}.run(ctx, t, pg)
	js := e.js()
	e.waitStreamCount(js, w.Committed(), time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	verify(t, readStream(t, js), w)

	if err := e.relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := e.relay.Wait(45 * time.Second); err != nil || code != 0 {
		t.Fatalf("relay stopped with exit %d, %v; want 0 after SIGTERM:\n%s", code, err, e.relay.Output())
	}
}

// buildAsDockerfile runs the Dockerfile's `go build` command in the module
// at root, with VERSION as the build argument, and returns the binary.
func buildAsDockerfile(t *testing.T, root, version string) string {
	t.Helper()
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseDockerfileBuild(string(dockerfile), map[string]string{"VERSION": version})
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	// What the issue asks of the image's binary, so the Dockerfile cannot
	// quietly lose it.
	if !slices.Contains(b.Env, "CGO_ENABLED=0") {
		t.Fatalf("Dockerfile: the go build line sets %v, want CGO_ENABLED=0", b.Env)
	}
	if !slices.Contains(b.Args, "-trimpath") {
		t.Fatalf("Dockerfile: go %v lacks -trimpath", b.Args)
	}
	checkMakefileBuild(t, root, version, b)

	bin := filepath.Join(t.TempDir(), "outboxrelay")
	args := slices.Clone(b.Args)
	i := slices.Index(args, "-o")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("Dockerfile: go %v has no -o FILE", args)
	}
	args[i+1] = bin
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	// The build context has no .git (see .dockerignore), so no VCS stamp.
	cmd.Env = append(append(os.Environ(), "GOFLAGS=-buildvcs=false"), b.Env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s go %s: %v\n%s", strings.Join(b.Env, " "), strings.Join(args, " "), err, out)
	}
	return bin
}

// checkMakefileBuild checks that `make build` runs the Dockerfile's command
// (apart from the output file), with the same VERSION.
func checkMakefileBuild(t *testing.T, root, version string, docker goBuildCmd) {
	t.Helper()
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	ldflags := regexp.MustCompile(`(?m)^LDFLAGS\s*:=\s*(.*)$`).FindSubmatch(mk)
	recipe := regexp.MustCompile(`(?m)^build:.*\n\t(.*)$`).FindSubmatch(mk)
	if ldflags == nil || recipe == nil {
		t.Fatal("Makefile: no LDFLAGS := line or no build: recipe")
	}
	line := strings.ReplaceAll(string(recipe[1]), "$(LDFLAGS)", string(ldflags[1]))
	line = strings.NewReplacer("$(GO)", "go", "$(VERSION)", "${VERSION}").Replace(line)
	m, err := parseDockerfileBuild("RUN "+line, map[string]string{"VERSION": version})
	if err != nil {
		t.Fatalf("Makefile build recipe %q: %v", recipe[1], err)
	}
	if !slices.Equal(m.Env, docker.Env) || !slices.Equal(withoutOutput(m.Args), withoutOutput(docker.Args)) {
		t.Fatalf("make build runs %v go %v\nthe Dockerfile runs %v go %v\nkeep their flags the same", m.Env, m.Args, docker.Env, docker.Args)
	}
}

func withoutOutput(args []string) []string {
	if i := slices.Index(args, "-o"); i >= 0 && i+1 < len(args) {
		return slices.Delete(slices.Clone(args), i, i+2)
	}
	return args
}

// checkStaticBinary fails unless bin is a statically linked ELF file (no
// interpreter, no shared libraries) stripped of symbols and DWARF, which is
// what CGO_ENABLED=0 and -ldflags "-s -w" produce and distroless/static
// needs.
func checkStaticBinary(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has a program interpreter: it is dynamically linked", bin)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Fatalf("%s needs shared libraries %v (%v)", bin, libs, err)
	}
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Fatalf("%s has section %s: not built with -ldflags \"-s -w\"", bin, s.Name)
		}
	}
}

// goBuildCmd is a `go build` shell command from a Dockerfile RUN line.
type goBuildCmd struct {
	Env  []string // NAME=value assignments before `go`
	Args []string // the go command's arguments, build args expanded
}

// parseDockerfileBuild finds the one RUN instruction of dockerfile that
// runs `go build` and splits it into environment and arguments, expanding
// ${NAME} and $NAME from args. It refuses what it could not replicate
// faithfully: exec form, several commands, redirections, substitutions.
func parseDockerfileBuild(dockerfile string, args map[string]string) (goBuildCmd, error) {
	var found []string
	var cur strings.Builder
	for line := range strings.Lines(dockerfile) {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments, also within continued instructions
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		instr := cur.String()
		cur.Reset()
		kw, rest, _ := strings.Cut(instr, " ")
		if strings.EqualFold(kw, "RUN") && regexp.MustCompile(`\bgo build\b`).MatchString(rest) {
			found = append(found, instr)
		}
	}
	if len(found) != 1 {
		return goBuildCmd{}, fmt.Errorf("want exactly one RUN instruction with `go build`, found %d", len(found))
	}
	words, err := shellWords(strings.TrimSpace(found[0][len("RUN"):]), args)
	if err != nil {
		return goBuildCmd{}, fmt.Errorf("%s: %w", found[0], err)
	}
	for len(words) > 0 && strings.HasPrefix(words[0], "--") { // RUN --mount=... and such
		words = words[1:]
	}
	var b goBuildCmd
	for len(words) > 0 && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(words[0]) {
		b.Env = append(b.Env, words[0])
		words = words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		return goBuildCmd{}, fmt.Errorf("%s: want [NAME=value ...] go build ..., got %q", found[0], words)
	}
	b.Args = words[1:]
	return b, nil
}

// shellWords splits s into words as sh would for a simple command, with
// quotes and backslashes, expanding $NAME and ${NAME} outside single quotes.
func shellWords(s string, vars map[string]string) ([]string, error) {
	if strings.HasPrefix(s, "[") {
		return nil, errors.New("exec form; write the go build line in shell form")
	}
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	expand := func(i int) (int, error) { // s[i] == '$'
		rest := s[i+1:]
		var name string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return 0, errors.New("unclosed ${")
			}
			name = rest[1:end]
			i += end + 2
		default:
			name = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`).FindString(rest)
			if name == "" {
				return 0, fmt.Errorf("unsupported $ at %q", s[i:])
			}
			i += len(name) + 1
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("$%s is not a known build argument", name)
		}
		w.WriteString(v)
		inWord = true
		return i, nil
	}
	for i := 0; i < len(s); {
		c := rune(s[i])
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				w.WriteRune(c)
			}
			i++
		case quote == '"':
			switch c {
			case '"':
				quote = 0
				i++
			case '$':
				var err error
				if i, err = expand(i); err != nil {
					return nil, err
				}
			case '`':
				return nil, errors.New("command substitution")
			case '\\':
				if i+1 < len(s) && strings.ContainsRune(`$"\`+"`", rune(s[i+1])) {
					i++
				}
				w.WriteByte(s[i])
				i++
			default:
				w.WriteRune(c)
				i++
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
			i++
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
			i++
		case c == '$':
			var err error
			if i, err = expand(i); err != nil {
				return nil, err
			}
		case strings.ContainsRune(";&|<>()`", c):
			return nil, fmt.Errorf("shell operator %q: keep the go build line one plain command", c)
		case c == '\\':
			if i+1 < len(s) {
				i++
			}
			w.WriteByte(s[i])
			inWord = true
			i++
		default:
			w.WriteRune(c)
			inWord = true
			i++
		}
	}
	if quote != 0 {
		return nil, errors.New("unclosed quote")
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// TestParseDockerfileBuild checks the parser TestContainerBinary relies on,
// including that it refuses lines it could not replicate.
func TestParseDockerfileBuild(t *testing.T) {
	vars := map[string]string{"VERSION": "1.2.3"}
	got, err := parseDockerfileBuild(`FROM x AS build
# a comment
RUN go mod download
ARG VERSION
RUN --mount=type=cache,target=/root/.cache/go-build \
    # cached
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" -o '/out/a b' .
`, vars)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"CGO_ENABLED=0", "GOOS=linux"}; !slices.Equal(got.Env, want) {
		t.Errorf("env %q, want %q", got.Env, want)
	}
	if want := []string{"build", "-trimpath", "-ldflags", "-s -w -X main.version=1.2.3", "-o", "/out/a b", "."}; !slices.Equal(got.Args, want) {
		t.Errorf("args %q, want %q", got.Args, want)
	}
	for _, bad := range []string{
		"RUN go build -o /a . && strip /a",
		`RUN ["go", "build", "."]`,
		"RUN go build -ldflags \"-X main.version=$(git describe)\" .",
		"RUN go build -ldflags \"-X main.version=${REVISION}\" .",
		"RUN go build . > log",
		"FROM x\nRUN go build .\nRUN go build ./cmd/y",
		"FROM x\nRUN go test ./...",
	} {
		if _, err := parseDockerfileBuild(bad, vars); err == nil {
			t.Errorf("parseDockerfileBuild(%q) accepted it", bad)
		}
	}
}
