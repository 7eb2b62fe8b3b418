package e2e_test

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestPostgresVersion names the PostgreSQL server the e2e tests run
// against (go test -v prints it, so make test-pg's log shows each version)
// and, with PG_VERSION set, fails unless the server is that major version.
func TestPostgresVersion(t *testing.T) {
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var version string
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version'), current_setting('server_version_num')::int").Scan(&version, &num); err != nil {
		t.Fatalf("read the server version: %v", err)
	}
	t.Logf("PostgreSQL %s (server_version_num %d)", version, num)
	if want := os.Getenv("PG_VERSION"); want != "" && strconv.Itoa(num/10000) != want {
		t.Errorf("PG_VERSION=%s, but the server is PostgreSQL %s", want, version)
	}
}
