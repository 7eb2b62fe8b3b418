// Command outboxrelay publishes committed transactional-outbox rows from
// Postgres logical replication to NATS JetStream, exactly once and in commit
// order, and confirms the WAL position only after JetStream stored them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/outboxrelay/outboxrelay/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = ""

// Exit codes of the contract.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a command-line or configuration mistake: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "outboxrelay:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

const usage = `usage:
  outboxrelay run -config FILE     relay until SIGINT/SIGTERM, then drain and exit 0
  outboxrelay check -config FILE   preflight: print what is wrong and how to fix it
  outboxrelay recover -config FILE [-accept-gap] [-chunk N]
                                   after a continuity stop: create the slot again and
                                   publish the outbox rows the stream lacks, then exit
  outboxrelay healthcheck [-config FILE] [-url URL]   exit 0 if /readyz says ready, else 1
  outboxrelay version              print the version`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("no command\n" + usage)}
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "outboxrelay", versionString())
		return nil
	case "run", "check", "recover":
	case "healthcheck":
		return healthcheck(ctx, args, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
	}

	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to the YAML configuration file")
	acceptGap, chunk := false, 0
	if cmd == "recover" {
		fs.BoolVar(&acceptGap, "accept-gap", false, "continue past events that may be lost for good (their rows were deleted)")
		fs.IntVar(&chunk, "chunk", 100_000, "event ids held at once; each chunk reads the stream's headers once")
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *path == "" || fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s needs -config FILE and no other arguments\n%s", cmd, usage)}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return usageError{err}
	}
	logger := newLogger(cfg.Log, stderr)
	switch cmd {
	case "check":
		return check(ctx, cfg, stdout)
	case "recover":
		return recoverStream(ctx, cfg, acceptGap, chunk, stdout, logger)
	}
	return relay(ctx, cfg, logger)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
