// Package testenv starts real PostgreSQL and NATS JetStream servers, and the
// relay itself, as separate processes, so integration and fault tests can kill
// -9, freeze and restart them on the same data directories.
//
// Each server type has a core API that takes a directory and returns errors,
// usable from any program (the demo uses it), and a thin helper for tests
// that takes a testing.TB, fails the test on error, registers cleanup, and
// logs the server's log tail when the test fails:
//
//	NewPostgres(dir, opts) / StartPostgres(t, opts)   one Postgres cluster (initdb'd, wal_level=logical)
//	NewNATS(dir, opts) / StartNATS(t, opts)           one nats-server with JetStream
//	NewNATSCluster(dir, n) / StartNATSCluster(t, n)   n clustered nats-servers on loopback
//	Launch(cmd, logPath) / StartCmd(t, cmd)           any program, output captured (StartProcess(t, bin, args...) for short)
//	BuildBinary(pkg, name) / BuildRelay(t)            go build a main package of this module
//	Poll(timeout, cond) / WaitFor(t, timeout, what, cond)   poll a condition every 50ms until a deadline
//	CreateOutbox(t, pg)                               the outbox table of package schema
//	RunUntilCleanup(t, timeout, c.Run)                run a component until the test ends; fail unless it stops cleanly
//
// Servers listen on 127.0.0.1 on ports picked by FreePort and keep those
// ports across Kill/Stop and Start, so clients can reconnect to the same URL.
// Every child process gets SIGKILL if the process that started it dies, so an
// aborted test run does not leave servers behind.
//
// # Postgres
//
// Postgres is found through $PG_BINDIR, `pg_config --bindir`, or the highest
// /usr/lib/postgresql/*/bin. $PG_VERSION=N asks for major version N instead:
// $PG_BINDIR, /usr/lib/postgresql/N/bin or where `.ci/pgfetch N` unpacks it,
// and NewPostgres fails, saying how to fetch it, when none holds version N.
// Because Postgres refuses to run as root, when the
// caller is root initdb and postgres run as the OS user "postgres" (see
// PostgresOptions.RunAs) and the directory is chowned to it; that user must be
// able to reach the directory, so pass one under os.TempDir().
//
// Authentication: the unix socket and the superuser "postgres" over TCP are
// trusted. Roles that are members of PasswordAuthRole must send a password
// over TCP (scram-sha-256), so a test can check password handling:
//
//	CREATE ROLE relay LOGIN REPLICATION PASSWORD 'secret' IN ROLE password_auth
//
// Other roles are trusted too.
//
// Kill sends SIGKILL to the postmaster and every backend at once, like an OOM
// kill of the whole service, and returns when all of them are gone, so Start
// can run again on the same directory.
//
// # NATS
//
// nats-server is built once from the version pinned in go.mod (see
// NATSServerBinary) and run with JetStream storing under <dir>/js. Kill is
// SIGKILL, Stop is SIGTERM, Freeze and Thaw are SIGSTOP and SIGCONT. A
// Cluster's nodes can be killed and restarted one at a time on the same ports
// and store directories.
package testenv
