package capture

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// connect opens a replication connection (replication=database), which also
// accepts simple SQL queries. With readWait above 0 its reads coalesce (see
// readCoalesce).
func connect(ctx context.Context, url string, readWait time.Duration) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres.url: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	if readWait > 0 {
		coalesceReads(cfg, readWait)
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "outboxrelay"
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(cfg, err)
	}
	return conn, nil
}

// connectError says why a connection failed and what to do, separating a
// server that cannot be reached from one that refuses the role.
func connectError(cfg *pgconn.Config, err error) error {
	return fmt.Errorf("connect to postgres at %s:%d: %w", cfg.Host, cfg.Port, explainConnect(err, cfg.User))
}

func explainConnect(err error, user string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		var hostErr x509.HostnameError
		var caErr x509.UnknownAuthorityError
		switch {
		case errors.As(err, &hostErr):
			return fmt.Errorf("%w: the server's certificate does not list the host in postgres.url: use a host name it lists, or sslmode=verify-ca to check only the CA", err)
		case errors.As(err, &caErr):
			return fmt.Errorf("%w: set sslrootcert in postgres.url to the CA that signed the server's certificate", err)
		}
		var netErr net.Error
		if errors.As(err, &netErr) || pgconn.Timeout(err) {
			return fmt.Errorf("%w: %s", err, fixUnreachable)
		}
		return err
	}
	switch {
	case pgErr.Code == "42501" && isWALSenderDenied(pgErr.Message):
		return fmt.Errorf("%w: %s", err, noReplicationProblem(user))
	case pgErr.Code == "53300" && strings.Contains(pgErr.Message, "max_wal_senders"):
		return fmt.Errorf("%w: %s", err, fixWALSenders)
	}
	return explain(err)
}

// isWALSenderDenied reports whether a 42501 at connect time is about the
// REPLICATION attribute ("must be superuser or replication role to start
// walsender"; "permission denied to start WAL sender" from Postgres 16).
func isWALSenderDenied(msg string) bool {
	return strings.Contains(msg, "walsender") || strings.Contains(msg, "WAL sender") || strings.Contains(msg, "replication")
}

// explain adds the fix to the Postgres errors users meet while setting up.
func explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == "55000" && strings.Contains(pgErr.Message, "wal_level"):
		return fmt.Errorf("%w: %s", err, fixWALLevel)
	case pgErr.Code == "42501" && strings.Contains(pgErr.Message, "replication"):
		return fmt.Errorf("%w: grant it with ALTER ROLE <role> WITH REPLICATION", err)
	case pgErr.Code == "28000" || pgErr.Code == "28P01":
		return fmt.Errorf("%w: %s", err, fixAuth)
	case pgErr.Code == "53400":
		return fmt.Errorf("%w: %s", err, fixSlots)
	}
	return err
}

// slotState is what pg_replication_slots says about the slot.
type slotState struct {
	exists    bool
	active    bool
	activePID string
	holder    string // who streams it, from pg_stat_replication
	confirmed pglogrepl.LSN
	lag       string // bytes of WAL behind the server's position
	walStatus string // reserved, extended, unreserved or lost
	safeSize  string // bytes that can still be written before the slot is at risk
}

// ensure creates the publication and the slot when they are missing and
// checks that existing ones fit. It returns the slot's state, or an error
// with the same words as the preflight's (see Preflight) for the problems
// both find.
func ensure(ctx context.Context, conn *pgconn.PgConn, cfg Config) (slotState, error) {
	srv, err := readServer(ctx, conn)
	if err != nil {
		return slotState{}, err
	}
	if srv.walLevel != "logical" {
		return slotState{}, errors.New(walLevelProblem(srv.walLevel))
	}
	if cfg.Messages && srv.version < 140000 {
		return slotState{}, &PermanentError{errors.New(messagesVersionProblem(srv.versionText))}
	}
	for _, t := range cfg.Tables {
		ok, err := tableExists(ctx, conn, t)
		if err != nil {
			return slotState{}, err
		}
		if !ok {
			return slotState{}, errors.New(tableMissingProblem(t))
		}
	}
	if err := ensurePublication(ctx, conn, cfg); err != nil {
		return slotState{}, err
	}
	st, err := readSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return st, err
	}
	if st.exists {
		switch {
		case st.walStatus == "lost":
			return slotState{}, &PermanentError{errors.New(slotLostProblem(cfg.Slot))}
		case st.active:
			return st, fmt.Errorf("%s: %w", slotActiveText(cfg.Slot, st), ErrSlotActive)
		}
		return st, nil
	}
	if srv.slotsUsed >= srv.maxSlots {
		return slotState{}, errors.New(slotsFullProblem(cfg.Slot, srv.slotsUsed, srv.maxSlots))
	}
	if err := createSlot(ctx, conn, cfg); err != nil {
		return slotState{}, err
	}
	return readSlot(ctx, conn, cfg.Slot)
}

// preSlotCap bounds the count of rows that came before the slot.
const preSlotCap = 10000

// createSlot creates the slot, unless a peer does so first. Logical
// replication starts where its slot is created, so the relay never
// publishes a row committed before that. createSlot warns of such rows,
// counted in the slot's own snapshot: exactly what came before it, not
// what commits meanwhile.
func createSlot(ctx context.Context, conn *pgconn.PgConn, cfg Config) error {
	// CREATE_REPLICATION_SLOT ... USE_SNAPSHOT must come first in a
	// read-only REPEATABLE READ transaction. A slot is not transactional:
	// it stays whether this transaction commits or not.
	if _, err := query(ctx, conn, "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ"); err != nil {
		return fmt.Errorf("create replication slot %q: %w", cfg.Slot, explain(err))
	}
	defer func() { _, _ = query(context.Background(), conn, "ROLLBACK") }()
	_, err := pglogrepl.CreateReplicationSlot(ctx, conn, cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "USE_SNAPSHOT"})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created meanwhile by a peer
		return nil
	}
	if err != nil {
		return fmt.Errorf("create replication slot %q: %w", cfg.Slot, explain(err))
	}
	cfg.Logger.Info("created replication slot")
	for _, t := range cfg.Tables {
		rows, err := query(ctx, conn, fmt.Sprintf("SELECT count(*) FROM (SELECT FROM %s LIMIT %d) r", qualified(t), preSlotCap+1))
		if err != nil {
			cfg.Logger.Warn("could not count the rows committed before the slot was created; the relay does not publish those", "table", t, "err", err)
			return nil // the transaction is aborted; the slot stands
		}
		if n, _ := strconv.Atoi(rows[0][0]); n > 0 {
			count := strconv.Itoa(n) + " rows"
			switch {
			case n == 1:
				count = "1 row"
			case n > preSlotCap:
				count = fmt.Sprintf("more than %d rows", preSlotCap)
			}
			cfg.Logger.Warn(preSlotRowsProblem(t, count, cfg.Slot), "table", t)
		}
	}
	return nil
}

// preSlotRowsProblem says that rows came before the slot, and what to do.
func preSlotRowsProblem(table, count, slot string) string {
	return fmt.Sprintf("outbox table %s held %s when slot %q was created: logical replication starts at its slot, so the relay will not publish them; "+
		"if they are events still to publish, insert them again (with new ids) now that the slot exists", table, count, slot)
}

// server is what the relay needs to know about the server's settings.
type server struct {
	walLevel    string
	version     int    // server_version_num, e.g. 150004
	versionText string // server_version, e.g. "15.4"
	maxSlots    int    // max_replication_slots
	slotsUsed   int
	maxSenders  int // max_wal_senders
	sendersUsed int
	keepSize    string // max_slot_wal_keep_size in MB; "-1" is unlimited
}

func readServer(ctx context.Context, conn *pgconn.PgConn) (server, error) {
	rows, err := query(ctx, conn, `SELECT current_setting('wal_level'), current_setting('server_version_num'), current_setting('server_version'),
		current_setting('max_replication_slots'), (SELECT count(*) FROM pg_replication_slots),
		current_setting('max_wal_senders'), (SELECT count(*) FROM pg_stat_replication),
		coalesce(current_setting('max_slot_wal_keep_size', true), '-1')`)
	if err != nil {
		return server{}, fmt.Errorf("read server settings: %w", err)
	}
	if len(rows) != 1 || len(rows[0]) != 8 {
		return server{}, fmt.Errorf("read server settings: got %d rows", len(rows))
	}
	r := rows[0]
	s := server{walLevel: r[0], versionText: r[2], keepSize: r[7]}
	for i, p := range []*int{nil, &s.version, nil, &s.maxSlots, &s.slotsUsed, &s.maxSenders, &s.sendersUsed} {
		if p == nil {
			continue
		}
		if *p, err = strconv.Atoi(r[i]); err != nil {
			return server{}, fmt.Errorf("read server settings: %q: %w", r[i], err)
		}
	}
	return s, nil
}

func tableExists(ctx context.Context, conn *pgconn.PgConn, table string) (bool, error) {
	schema, name := splitTable(table)
	rows, err := query(ctx, conn, "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "+literal(schema)+" AND c.relname = "+literal(name))
	if err != nil {
		return false, fmt.Errorf("look up outbox table %s: %w", table, err)
	}
	return len(rows) > 0, nil
}

func ensurePublication(ctx context.Context, conn *pgconn.PgConn, cfg Config) error {
	pub, err := readPublication(ctx, conn, cfg.Publication)
	if err != nil {
		return err
	}
	if !pub.exists {
		sql := createPublicationSQL(cfg.Publication, cfg.Tables)
		if _, err := query(ctx, conn, sql); err != nil {
			return fmt.Errorf("create publication %q for %s: %w (or create it yourself as a superuser: %s)", cfg.Publication, strings.Join(cfg.Tables, ", "), explain(err), sql)
		}
		cfg.Logger.Info("created publication", "publication", cfg.Publication, "tables", cfg.Tables)
		return nil
	}
	if !pub.inserts {
		return errors.New(publicationNoInsertProblem(cfg.Publication))
	}
	for _, t := range cfg.Tables {
		if !pub.covers(t) {
			return errors.New(publicationMissingTableProblem(cfg.Publication, t))
		}
	}
	return nil
}

// publication is what pg_publication says about the publication.
type publication struct {
	exists, allTables, inserts bool
	tables                     map[string]bool // "schema.name"
}

func (p publication) covers(table string) bool { return p.allTables || p.tables[table] }

func readPublication(ctx context.Context, conn *pgconn.PgConn, name string) (publication, error) {
	rows, err := query(ctx, conn, "SELECT puballtables, pubinsert FROM pg_publication WHERE pubname = "+literal(name))
	if err != nil {
		return publication{}, fmt.Errorf("read publication %q: %w", name, err)
	}
	if len(rows) == 0 {
		return publication{}, nil
	}
	p := publication{exists: true, allTables: rows[0][0] == "t", inserts: rows[0][1] == "t", tables: map[string]bool{}}
	rows, err = query(ctx, conn, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = "+literal(name))
	if err != nil {
		return publication{}, fmt.Errorf("read publication %q: %w", name, err)
	}
	for _, r := range rows {
		p.tables[r[0]] = true
	}
	return p, nil
}

func createPublicationSQL(pub string, tables []string) string {
	if len(tables) == 0 {
		// Only logical decoding messages: they need a publication to
		// stream, but not one with tables.
		return "CREATE PUBLICATION " + ident(pub)
	}
	idents := make([]string, len(tables))
	for i, t := range tables {
		idents[i] = qualified(t)
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", ident(pub), strings.Join(idents, ", "))
}

func readSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotState, error) {
	rows, err := query(ctx, conn, `SELECT coalesce(s.plugin, ''), s.database IS NOT DISTINCT FROM current_database(), s.active, coalesce(s.active_pid::text, ''),
		coalesce(s.confirmed_flush_lsn::text, '0/0'), coalesce((pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint::text, ''),
		coalesce(s.wal_status, ''), coalesce(s.safe_wal_size::text, ''),
		coalesce(r.application_name, ''), coalesce(host(r.client_addr), ''), coalesce(s.database, '')
		FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = `+literal(slot))
	if err != nil {
		return slotState{}, fmt.Errorf("read replication slot %q: %w", slot, err)
	}
	if len(rows) == 0 {
		return slotState{}, nil
	}
	r := rows[0]
	if r[0] != "pgoutput" {
		return slotState{}, &PermanentError{errors.New(slotPluginProblem(slot, r[0]))}
	}
	if r[1] != "t" {
		return slotState{}, &PermanentError{errors.New(slotDatabaseProblem(slot, r[10]))}
	}
	lsn, err := pglogrepl.ParseLSN(r[4])
	if err != nil {
		return slotState{}, fmt.Errorf("replication slot %q: confirmed_flush_lsn %q: %w", slot, r[4], err)
	}
	st := slotState{exists: true, active: r[2] == "t", activePID: r[3], confirmed: lsn, lag: r[5], walStatus: r[6], safeSize: r[7]}
	st.holder = "PID " + st.activePID
	if r[8] != "" || r[9] != "" {
		st.holder += fmt.Sprintf(" (application_name %q, client %s)", r[8], orUnknown(r[9], "local socket"))
	}
	return st, nil
}

func orUnknown(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// query runs one simple-protocol statement (the only kind a replication
// connection accepts) and returns its rows as text.
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, res := range results {
		for _, row := range res.Rows {
			r := make([]string, len(row))
			for i, v := range row {
				r[i] = string(v)
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// qualified quotes "schema.name" as "schema"."name".
func qualified(table string) string {
	schema, name, ok := strings.Cut(table, ".")
	if !ok {
		return ident(table)
	}
	return ident(schema) + "." + ident(name)
}

// splitTable splits "schema.name"; the schema defaults to public.
func splitTable(table string) (schema, name string) {
	if s, n, ok := strings.Cut(table, "."); ok {
		return s, n
	}
	return "public", table
}

// The texts of the setup problems below are shared by run and check: the
// relay returns them as errors (wrapped with what it was doing), and the
// preflight prints them, so a user meets the same words either way.
const (
	fixUnreachable = "Postgres is not reachable: check that it is running and that postgres.url names the right host and port"
	fixAuth        = "Postgres refused the login: check the user and password in postgres.url, and that pg_hba.conf allows this role both ordinary and replication connections"
	fixWALLevel    = "set wal_level = logical in postgresql.conf (or run ALTER SYSTEM SET wal_level = logical) and restart Postgres"
	fixSlots       = "raise max_replication_slots in postgresql.conf and restart Postgres, or drop a slot nobody uses with SELECT pg_drop_replication_slot('<name>')"
	fixWALSenders  = "raise max_wal_senders in postgresql.conf and restart Postgres, or stop a replication client that is not needed"
)

func walLevelProblem(level string) string {
	return fmt.Sprintf("wal_level is %s, logical decoding needs logical: %s", level, fixWALLevel)
}

func noReplicationProblem(role string) string {
	return fmt.Sprintf("role %s may not start logical replication: run ALTER ROLE %s WITH REPLICATION as a superuser (on Amazon RDS or Aurora: GRANT rds_replication TO %s)", ident(role), ident(role), ident(role))
}

func slotsFullProblem(slot string, used, max int) string {
	return fmt.Sprintf("all replication slots are in use (%d of max_replication_slots = %d) and slot %q does not exist yet: %s", used, max, slot, fixSlots)
}

func walSendersProblem(used, max int) string {
	return fmt.Sprintf("all WAL senders are in use (%d of max_wal_senders = %d): %s", used, max, fixWALSenders)
}

func messagesVersionProblem(version string) string {
	return fmt.Sprintf("outbox.messages needs PostgreSQL 14 or later (pgoutput's messages option), and this server is %s: upgrade Postgres, or remove outbox.messages", version)
}

func tableMissingProblem(table string) string {
	return fmt.Sprintf("outbox table %s does not exist: create it, or correct the table name in the config (schema.name; names are case-sensitive)", table)
}

func publicationMissingTableProblem(pub, table string) string {
	return fmt.Sprintf("publication %q does not include table %s: run ALTER PUBLICATION %s ADD TABLE %s (or point postgres.publication at another publication)", pub, table, ident(pub), qualified(table))
}

func publicationNoInsertProblem(pub string) string {
	return fmt.Sprintf("publication %q does not publish inserts, so no outbox row would reach the relay: run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')", pub, ident(pub))
}

func slotPluginProblem(slot, plugin string) string {
	if plugin == "" {
		return fmt.Sprintf("replication slot %q is a physical slot, not a logical one with pgoutput: set postgres.slot to another name", slot)
	}
	return fmt.Sprintf("replication slot %q uses plugin %q, not pgoutput: set postgres.slot to another name, or drop the slot with SELECT pg_drop_replication_slot('%s')", slot, plugin, slot)
}

func slotDatabaseProblem(slot, db string) string {
	return fmt.Sprintf("replication slot %q belongs to database %q, not the one in postgres.url: set postgres.slot to another name", slot, db)
}

func slotLostProblem(slot string) string {
	return fmt.Sprintf("replication slot %q is lost (wal_status = lost): Postgres removed WAL it still needed, past max_slot_wal_keep_size, and the events in it are gone: drop the slot with SELECT pg_drop_replication_slot('%s') and restart the relay, which creates a new one from now; then republish what was missed from the outbox table", slot, slot)
}

func slotActiveText(slot string, st slotState) string {
	return fmt.Sprintf("replication slot %q is active: %s streams it; a relay started now waits as a standby and takes over when that process stops", slot, st.holder)
}
