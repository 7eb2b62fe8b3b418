package e2e_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cleanupMarker precedes, on the line before its ```sql fence, every copy of
// the insert-then-delete cleanup a service is told to run.
const cleanupMarker = "<!-- cleanup-sql:"

// The documented block's event, and the subject the default template gives it.
const (
	tourEventID = "5f0c6d2e-8a1b-4c3d-9e7f-0a1b2c3d4e5f"
	tourSubject = "outbox.order.o-1001"
)

// singleStatementCleanup is the WITH form that once stood in the docs: its
// DELETE runs on the snapshot taken before the INSERT, so it deletes nothing.
const singleStatementCleanup = `BEGIN;
UPDATE orders SET status = 'paid' WHERE id = 'o-1001';
WITH e AS (
  INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
  VALUES ('order', 'o-1001', 'OrderPaid', '{"order_id": "o-1001"}') RETURNING id)
DELETE FROM outbox WHERE id IN (SELECT id FROM e);
COMMIT;
`

// withInsertDelete matches a CTE that inserts into an outbox table and a
// DELETE from it in the same statement (no semicolon between them).
var withInsertDelete = regexp.MustCompile(`(?i)\bWITH\s+\w+\s+AS\s*(?:NOT\s+)?(?:MATERIALIZED\s*)?\(\s*INSERT\s+INTO\s+[\w."]*outbox\b[^;]*?\bDELETE\s+FROM\s+[\w."]*outbox\b`)

// TestTourCleanupSQL runs the cleanup the docs recommend exactly as they
// print it: the row is gone after commit and its event is still published
// once. It also keeps every copy of that block identical, and the
// single-statement WITH form out of the repository.
func TestTourCleanupSQL(t *testing.T) {
	block := documentedCleanup(t, "..")

	t.Run("no single-statement cleanup", func(t *testing.T) {
		for _, hit := range singleStatementCleanups(t, "..") {
			t.Errorf("%s shows the single-statement WITH cleanup, which deletes nothing; use the block under %q in README.md", hit, cleanupMarker)
		}
	})

	e := newEnv(t)
	ctx := context.Background()
	if err := e.pg.Exec(ctx, `CREATE TABLE orders (id text PRIMARY KEY, status text);
INSERT INTO orders VALUES ('o-1001', 'new')`); err != nil {
		t.Fatal(err)
	}
	e.startRelay()
	js := e.js()

	t.Run("documented block", func(t *testing.T) {
		// No arguments: pgx sends the text with the simple protocol, which
		// runs it as psql would, statement by statement.
		if err := e.pg.Exec(ctx, block); err != nil {
			t.Fatalf("run the documented block: %v", err)
		}
		if n, err := e.rows(); err != nil || n != 0 {
			t.Errorf("after the documented block committed, the outbox holds %d rows (err %v), want 0", n, err)
		}
		if status := orderStatus(t, e, "o-1001"); status != "paid" {
			t.Errorf("order o-1001 has status %q, want %q", status, "paid")
		}

		e.waitStreamCount(js, 1, 30*time.Second)
		msgs := readStream(t, js)
		m := msgs[0]
		if got := m.Header.Get("Nats-Msg-Id"); got != tourEventID {
			t.Errorf("Nats-Msg-Id %q, want %q", got, tourEventID)
		}
		if got := m.Header.Get("Outbox-Event-Type"); got != "OrderPaid" {
			t.Errorf("Outbox-Event-Type %q, want %q", got, "OrderPaid")
		}
		if m.Subject != tourSubject {
			t.Errorf("subject %q, want %q", m.Subject, tourSubject)
		}
		if got, want := string(m.Data), `{"order_id": "o-1001"}`; got != want {
			t.Errorf("payload %s, want %s", got, want)
		}

		// A later event arrives after any second copy of the first would
		// have, since the relay publishes in commit order.
		const markerID = "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70"
		if err := e.pg.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
VALUES ('`+markerID+`', 'order', 'o-1001', 'Marker', '{}')`); err != nil {
			t.Fatal(err)
		}
		e.waitStreamCount(js, 2, 30*time.Second)
		msgs = readStream(t, js)
		var ids []string
		for _, m := range msgs {
			ids = append(ids, m.Header.Get("Nats-Msg-Id"))
		}
		if want := []string{tourEventID, markerID}; strings.Join(ids, " ") != strings.Join(want, " ") {
			t.Errorf("stream holds events %v, want %v", ids, want)
		}
	})

	t.Run("single WITH statement leaves the row", func(t *testing.T) {
		before, err := e.rows()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.pg.Exec(ctx, singleStatementCleanup); err != nil {
			t.Fatalf("run the WITH form: %v", err)
		}
		after, err := e.rows()
		if err != nil {
			t.Fatal(err)
		}
		if after-before != 1 {
			t.Errorf("the WITH form changed the outbox from %d to %d rows, want one row left behind", before, after)
		}
	})
}

// documentedCleanup returns the ```sql block under the cleanup marker, after
// checking that README.md has one and that every Markdown file's copy is the same.
func documentedCleanup(t *testing.T, root string) string {
	t.Helper()
	blocks := map[string]string{}
	walkRepo(t, root, func(path string) {
		if !strings.HasSuffix(path, ".md") {
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(b), "\n")
		for i, l := range lines {
			if !strings.HasPrefix(l, cleanupMarker) {
				continue
			}
			where := rel(root, path) + ":" + strconv.Itoa(i+1)
			sql, ok := fencedSQL(lines[i+1:])
			if !ok {
				t.Fatalf("%s: %q must be followed, on the next line, by a closed ```sql block", where, cleanupMarker)
			}
			blocks[where] = sql
		}
	})
	var readme, readmeAt string
	for where, sql := range blocks {
		if strings.HasPrefix(where, "README.md:") {
			readme, readmeAt = sql, where
		}
	}
	if readmeAt == "" {
		t.Fatalf("README.md has no %q marker above its cleanup block", cleanupMarker)
	}
	for where, sql := range blocks {
		if sql != readme {
			t.Errorf("the cleanup block at %s differs from the one at %s:\n%s\nwant:\n%s", where, readmeAt, sql, readme)
		}
	}
	return readme
}

// fencedSQL returns the body of the ```sql block that lines start with.
func fencedSQL(lines []string) (string, bool) {
	if len(lines) == 0 || strings.TrimRight(lines[0], "\r\n") != "```sql" {
		return "", false
	}
	var b strings.Builder
	for _, l := range lines[1:] {
		if strings.TrimRight(l, "\r\n") == "```" {
			return b.String(), true
		}
		b.WriteString(l)
	}
	return "", false
}

// singleStatementCleanups lists the files that show the WITH cleanup: any
// Markdown file, and any code or config file that is not a test.
func singleStatementCleanups(t *testing.T, root string) []string {
	t.Helper()
	var hits []string
	walkRepo(t, root, func(path string) {
		ext := filepath.Ext(path)
		switch {
		case ext == ".md":
		case strings.HasSuffix(path, "_test.go"):
			return
		case ext == ".go", ext == ".sh", ext == ".sql", ext == ".yaml", ext == ".yml":
		default:
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if withInsertDelete.Match(b) {
			hits = append(hits, rel(root, path))
		}
	})
	return hits
}

// walkRepo calls fn for every regular file under root, outside version
// control and the downloaded binaries.
func walkRepo(t *testing.T, root string, fn func(path string)) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			fn(path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func rel(root, path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

func orderStatus(t *testing.T, e *env, id string) string {
	t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var status string
	if err := conn.QueryRow(context.Background(), "SELECT status FROM orders WHERE id = $1", id).Scan(&status); err != nil {
		t.Fatalf("read order %s: %v", id, err)
	}
	return status
}
