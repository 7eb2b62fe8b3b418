// Command demo runs outboxrelay end to end on local defaults: a throwaway
// Postgres (its data under the system's temporary directory) and
// nats-server (under ./.demo), the outbox table, the relay with a config
// derived from config.example.yaml, a few sample order events written in
// transactions, and a JetStream consumer that prints each event as it
// arrives. Ctrl-C stops everything and removes what it made. Run it with
// `make demo`; `make demo FORMAT=cloudevents` sets nats.format, and the
// events show the CloudEvents ce- headers too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/schema"
)

const (
	dir      = ".demo"
	pgPort   = 54329
	natsPort = 4222
	httpAddr = "127.0.0.1:8080"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	format := flag.String("format", "native", "the relay's nats.format: native, or cloudevents for the CloudEvents ce- headers too")
	flag.Parse()
	if err := run(ctx, *format); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, format string) (err error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	// World-traversable: when run as root, Postgres runs as the postgres user.
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	defer func() {
		if rmErr := os.RemoveAll(root); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	// Postgres's data goes under the temporary directory, not ./.demo: as
	// root, Postgres runs as the postgres user, who cannot reach a clone in
	// a private directory such as /root.
	pgRoot, err := os.MkdirTemp("", "outboxrelay-demo-")
	if err != nil {
		return err
	}
	defer func() {
		if rmErr := os.RemoveAll(pgRoot); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	step("starting Postgres (wal_level=logical) on 127.0.0.1:%d, data in %s", pgPort, pgRoot)
	pg, err := testenv.NewPostgres(pgRoot, testenv.PostgresOptions{Port: pgPort})
	if err != nil {
		return err
	}
	if err := pg.Start(); err != nil {
		return fmt.Errorf("%w (is port %d taken? stop what uses it)", err, pgPort)
	}
	defer pg.Stop("fast")

	step("starting nats-server with JetStream on 127.0.0.1:%d", natsPort)
	ns, err := testenv.NewNATS(filepath.Join(root, "nats"), testenv.NATSOptions{Port: natsPort, ServerName: "demo"})
	if err != nil {
		return err
	}
	if err := ns.Start(); err != nil {
		return fmt.Errorf("%w (is port %d taken? stop what uses it)", err, natsPort)
	}
	defer ns.Stop()

	step("creating the outbox table (schema/outbox.sql) and an orders table")
	if err := pg.Exec(ctx, schema.Outbox+";CREATE TABLE orders (id text PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL, status text NOT NULL)"); err != nil {
		return err
	}

	cfgPath := filepath.Join(root, "outboxrelay.yaml")
	if err := writeConfig(cfgPath, pg.URL(), ns.URL(), format); err != nil {
		return err
	}
	logPath := filepath.Join(root, "relay.log")
	step("starting the relay: bin/outboxrelay run -config %s (log: %s)", filepath.Join(dir, "outboxrelay.yaml"), filepath.Join(dir, "relay.log"))
	relay, err := testenv.Launch(exec.Command("bin/outboxrelay", "run", "-config", cfgPath), logPath)
	if err != nil {
		return fmt.Errorf("start the relay (run `make build` first): %w", err)
	}
	defer func() {
		relay.Signal(syscall.SIGTERM)
		if code, _ := relay.Wait(30 * time.Second); code != 0 {
			fmt.Fprintf(os.Stderr, "relay exited %d; its log:\n%s", code, relay.Output())
		}
	}()
	if err := testenv.Poll(30*time.Second, func() (bool, error) {
		if relay.Exited() {
			return false, errors.New("the relay exited:\n" + relay.Output())
		}
		return testenv.RelayReady(httpAddr)
	}); err != nil {
		return fmt.Errorf("relay not ready: %w", err)
	}

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, "OUTBOX", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(printMessage)
	if err != nil {
		return err
	}
	defer cc.Stop()

	step("writing sample orders: each business row and its outbox row in one transaction")
	if err := writeSamples(ctx, pg); err != nil {
		return err
	}
	fmt.Printf(`
The relay keeps running. Try, in another terminal:
  nats sub --stream OUTBOX 'outbox.>'          # or: nats stream view OUTBOX
  psql "%s" -c "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-42', 'OrderCreated', '{\"total\": 42}')"
  curl -s %s/metrics | grep ^outboxrelay_
Press Ctrl-C to stop everything and remove %s.
`, pg.URL(), "http://"+httpAddr, dir)
	<-ctx.Done()
	fmt.Println("\nstopping")
	return nil
}

// writeConfig derives the demo's config from config.example.yaml: the same
// file with the demo's Postgres and NATS URLs, and nats.format.
func writeConfig(path, pgURL, natsURL, format string) error {
	b, err := os.ReadFile("config.example.yaml")
	if err != nil {
		return err
	}
	s := string(b)
	edits := map[string]string{
		"url: postgres://relay:${PGPASSWORD}@localhost:5432/app?sslmode=disable": "url: " + pgURL,
		"url: nats://127.0.0.1:4222": "url: " + natsURL,
	}
	if format != "native" {
		edits["  format: native"] = "  format: " + format // the relay refuses an unknown one
	}
	for old, repl := range edits {
		if !strings.Contains(s, old) {
			return fmt.Errorf("config.example.yaml no longer contains %q; update demo/main.go", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	return os.WriteFile(path, []byte(s), 0o600)
}

func writeSamples(ctx context.Context, pg *testenv.Postgres) error {
	conn, err := pg.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	orders := []struct{ id, customer, total, event, status string }{
		{"o-1001", "ada", "42.50", "OrderCreated", "created"},
		{"o-1002", "grace", "17.00", "OrderCreated", "created"},
		{"o-1001", "ada", "42.50", "OrderPaid", "paid"},
		{"o-1003", "linus", "99.99", "OrderCreated", "created"},
		{"o-1002", "grace", "17.00", "OrderCancelled", "cancelled"},
	}
	for _, o := range orders {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO orders (id, customer, total, status) VALUES ($1, $2, $3, $4)
				ON CONFLICT (id) DO UPDATE SET status = excluded.status`, o.id, o.customer, o.total, o.status); err != nil {
				return err
			}
			payload := fmt.Sprintf(`{"order_id": %q, "customer": %q, "total": %s, "status": %q}`, o.id, o.customer, o.total, o.status)
			_, err := tx.Exec(ctx, `INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', $1, $2, $3)`, o.id, o.event, payload)
			return err
		})
		if err != nil {
			return fmt.Errorf("write %s %s: %w", o.event, o.id, err)
		}
	}
	return nil
}

func printMessage(m jetstream.Msg) {
	md, _ := m.Metadata()
	seq := uint64(0)
	if md != nil {
		seq = md.Sequence.Stream
	}
	fmt.Printf("\n\u25b6 %s  (stream sequence %d)\n", m.Subject(), seq)
	h := m.Headers()
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Printf("    %-28s %s\n", k+":", h.Get(k))
	}
	fmt.Printf("    %-28s %s\n", "data:", m.Data())
}

func step(format string, args ...any) {
	fmt.Printf("\u2022 "+format+"\n", args...)
}
