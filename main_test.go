package main

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestExitCodes checks the contract's exit codes for usage and
// configuration mistakes, and that each message names what to fix.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	typo := write("typo.yaml", "postgres:\n  url: postgres://u@h/db\n  slto: x\n")
	badStream := write("stream.yaml", "postgres:\n  url: postgres://u@h/db\nnats:\n  stream: a.b\n")
	partition := write("partition.yaml", "postgres:\n  url: postgres://u@h/db\nnats:\n  subject: outbox.{aggregate_type}.{partition}\n")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, exitUsage, "no command"},
		{"unknown command", []string{"serve"}, exitUsage, `unknown command "serve"`},
		{"run without config", []string{"run"}, exitUsage, "-config FILE"},
		{"missing file", []string{"run", "-config", filepath.Join(dir, "nope.yaml")}, exitUsage, "nope.yaml"},
		{"unknown key", []string{"run", "-config", typo}, exitUsage, `postgres.slto: unknown key (did you mean "slot"?)`},
		{"bad value", []string{"check", "-config", badStream}, exitUsage, "nats.stream"},
		{"partition without partitions", []string{"run", "-config", partition}, exitUsage, "nats.partitions: must be set"},
		{"version", []string{"version"}, exitOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if got := exitCode(err, &stderr); got != tc.code {
				t.Fatalf("exit code %d, want %d (err %v)", got, tc.code, err)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not contain %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if got := stdout.String(); !strings.HasPrefix(got, "outboxrelay ") {
		t.Fatalf("version printed %q", got)
	}
}

// The relay sets its GC target and soft memory limit unless the operator
// set GOGC or GOMEMLIMIT (docs/performance.md, "The collector's settings").
func TestCollectorSettings(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))

	t.Setenv("GOGC", "") // restored after the test
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOGC")
	os.Unsetenv("GOMEMLIMIT")
	collectorSettings()
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("with GOGC unset, the GC target is %d after collectorSettings, want %d", got, gcPercent)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != memoryLimit {
		t.Errorf("with GOMEMLIMIT unset, the memory limit is %d after collectorSettings, want %d", got, memoryLimit)
	}
	if memoryLimit != 56<<20 {
		t.Errorf("memory limit %d MiB; docs/performance.md and docs/design.md say 56 MiB", memoryLimit>>20)
	}

	// The operator's settings stand; the runtime read them at start.
	t.Setenv("GOGC", "50")
	t.Setenv("GOMEMLIMIT", "100MiB")
	collectorSettings()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, the GC target is %d after collectorSettings, want it left at 100", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set, the memory limit is %d after collectorSettings, want it left alone", got)
	}
}

// The relay runs on one P unless the operator set GOMAXPROCS
// (docs/performance.md, "One P").
func TestOneProc(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	t.Setenv("GOMAXPROCS", "") // restored after the test
	os.Unsetenv("GOMAXPROCS")
	runtime.GOMAXPROCS(4)
	oneProc()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("with GOMAXPROCS unset, GOMAXPROCS = %d after oneProc, want 1", got)
	}

	t.Setenv("GOMAXPROCS", "3")
	runtime.GOMAXPROCS(3)
	oneProc()
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("with GOMAXPROCS=3 set, GOMAXPROCS = %d after oneProc, want 3 (the operator's choice)", got)
	}
}

// The relay is built with profile-guided optimization from default.pgo
// (docs/performance.md, "Profile-guided optimization"). go build and go
// test use the main package's default.pgo unless told otherwise, so this
// test binary was built as make build and the Dockerfile build the relay.
func TestBuiltWithTheProfile(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build information")
	}
	for _, s := range bi.Settings {
		if s.Key == "-pgo" {
			if filepath.Base(s.Value) != "default.pgo" {
				t.Fatalf("built with the profile %s; want default.pgo", s.Value)
			}
			return
		}
	}
	t.Fatal("built without profile-guided optimization: default.pgo is missing from the relay's directory (make pgo makes it), or the build was given -pgo=off")
}
