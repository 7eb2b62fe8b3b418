package capture

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
	"github.com/outboxrelay/outboxrelay/internal/report"
)

// OutboxTable names the columns the relay reads from one outbox table.
type OutboxTable struct {
	Table                                         string // "schema.name"
	ID, AggregateType, AggregateID, Type, Payload string
	Headers                                       []string // columns copied to headers
}

// PreflightConfig is what the preflight checks: the capture's own Config,
// the column mapping of every table in Config.Tables, and whether the relay
// deletes confirmed rows.
type PreflightConfig struct {
	Config
	Outbox  []OutboxTable
	Cleanup bool
}

// Preflight checks, without changing anything, that the relay can stream
// from Postgres as configured: the connection and login, wal_level, free
// replication slots and WAL senders, the role's privileges, the outbox
// tables and their columns, the publication and the slot. A problem the
// relay would also meet at run time is reported with the same text as the
// relay's error. It returns one Finding per item, in that order; after a
// failed connection there is nothing more to check.
func Preflight(ctx context.Context, cfg PreflightConfig) []report.Finding {
	p := &preflight{cfg: cfg}
	p.run(ctx)
	return p.found
}

type preflight struct {
	cfg   PreflightConfig
	conn  *pgconn.PgConn
	found []report.Finding
	role  string
	super bool
}

func (p *preflight) add(s report.Status, item, format string, args ...any) {
	p.found = append(p.found, report.Finding{Status: s, Item: item, Text: fmt.Sprintf(format, args...)})
}

func (p *preflight) run(ctx context.Context) {
	pc, err := pgconn.ParseConfig(p.cfg.URL)
	if err != nil {
		p.add(report.Fail, "postgres", "postgres.url: %v", err)
		return
	}
	if pc.ConnectTimeout == 0 || pc.ConnectTimeout > 10*time.Second {
		pc.ConnectTimeout = 10 * time.Second
	}
	pc.RuntimeParams["application_name"] = "outboxrelay check"
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		p.add(report.Fail, "postgres", "%v", connectError(pc, err))
		return
	}
	defer conn.Close(context.Background())
	p.conn = conn

	srv, err := readServer(ctx, conn)
	if err != nil {
		p.add(report.Fail, "postgres", "%v", err)
		return
	}
	db, err := p.one(ctx, "SELECT current_database()")
	if err != nil {
		p.add(report.Fail, "postgres", "%v", err)
		return
	}
	p.add(report.OK, "postgres", "connected to %s:%d, database %q, as role %q; PostgreSQL %s", pc.Host, pc.Port, db, pc.User, srv.versionText)

	if p.cfg.Messages && srv.version < 140000 {
		p.add(report.Fail, "postgres version", "%s", messagesVersionProblem(srv.versionText))
	}
	if srv.walLevel == "logical" {
		p.add(report.OK, "postgres wal_level", "logical")
	} else {
		p.add(report.Fail, "postgres wal_level", "%s", walLevelProblem(srv.walLevel))
	}
	replOK := p.checkRole(ctx)
	slot, slotErr := readSlot(ctx, conn, p.cfg.Slot)
	p.checkCapacity(srv, slot.exists)
	if replOK && srv.sendersUsed < srv.maxSenders {
		p.checkReplicationConnection(ctx)
	}
	tables := p.checkTables(ctx)
	p.checkPublication(ctx, tables)
	p.checkSlot(srv, slot, slotErr, replOK)
	p.checkFailover(ctx, srv, slot, slotErr)
}

// one runs a query that returns one value.
func (p *preflight) one(ctx context.Context, sql string) (string, error) {
	rows, err := query(ctx, p.conn, sql)
	if err != nil {
		return "", fmt.Errorf("%s: %w", sql, err)
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return "", fmt.Errorf("%s: got %d rows", sql, len(rows))
	}
	return rows[0][0], nil
}

// checkRole reports whether the role may start logical replication.
func (p *preflight) checkRole(ctx context.Context) bool {
	rows, err := query(ctx, p.conn, `SELECT current_user, r.rolsuper, r.rolreplication,
		CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication') THEN pg_has_role('rds_replication', 'MEMBER') ELSE false END
		FROM pg_roles r WHERE r.rolname = current_user`)
	if err != nil || len(rows) != 1 {
		p.add(report.Fail, "postgres role", "read the role's attributes: %v", err)
		return false
	}
	r := rows[0]
	p.role, p.super = r[0], r[1] == "t"
	switch {
	case p.super:
		p.add(report.OK, "postgres role", "%q is a superuser", p.role)
	case r[2] == "t":
		p.add(report.OK, "postgres role", "%q has REPLICATION", p.role)
	case r[3] == "t":
		p.add(report.OK, "postgres role", "%q is a member of rds_replication", p.role)
	default:
		p.add(report.Fail, "postgres role", "%s", noReplicationProblem(p.role))
		return false
	}
	return true
}

// checkCapacity checks for a free replication slot (unless the relay's slot
// exists already) and a free WAL sender.
func (p *preflight) checkCapacity(srv server, slotExists bool) {
	const item = "postgres replication slots"
	switch {
	case slotExists:
		p.add(report.OK, item, "%d of max_replication_slots = %d in use, the relay's among them", srv.slotsUsed, srv.maxSlots)
	case srv.slotsUsed >= srv.maxSlots:
		p.add(report.Fail, item, "%s", slotsFullProblem(p.cfg.Slot, srv.slotsUsed, srv.maxSlots))
	default:
		p.add(report.OK, item, "%d of max_replication_slots = %d in use; the relay needs 1 more", srv.slotsUsed, srv.maxSlots)
	}
	const senders = "postgres wal senders"
	if srv.sendersUsed >= srv.maxSenders {
		p.add(report.Fail, senders, "%s", walSendersProblem(srv.sendersUsed, srv.maxSenders))
	} else {
		p.add(report.OK, senders, "%d of max_wal_senders = %d in use; the relay needs 1", srv.sendersUsed, srv.maxSenders)
	}
}

// checkReplicationConnection opens the connection the relay streams on:
// pg_hba.conf may allow ordinary connections and not replication ones.
func (p *preflight) checkReplicationConnection(ctx context.Context) {
	conn, err := connect(ctx, p.cfg.URL, 0, 0)
	if err != nil {
		p.add(report.Fail, "postgres replication connection", "%v", err)
		return
	}
	conn.Close(context.Background())
	p.add(report.OK, "postgres replication connection", "accepted")
}

// tableInfo is what the catalog says about one outbox table.
type tableInfo struct {
	name      string
	exists    bool
	owned     bool // the role may add it to a publication
	canSelect bool
}

func (p *preflight) checkTables(ctx context.Context) []tableInfo {
	var infos []tableInfo
	for _, t := range p.cfg.Outbox {
		infos = append(infos, p.checkTable(ctx, t))
	}
	return infos
}

func (p *preflight) checkTable(ctx context.Context, t OutboxTable) tableInfo {
	item := "postgres table " + t.Table
	info := tableInfo{name: t.Table}
	schema, name := pgsql.SplitTable(t.Table)
	rows, err := query(ctx, p.conn, `SELECT c.oid, c.relkind, has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'DELETE'), pg_has_role(c.relowner, 'USAGE')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = `+pgsql.Literal(schema)+" AND c.relname = "+pgsql.Literal(name))
	if err != nil {
		p.add(report.Fail, item, "look up outbox table %s: %v", t.Table, err)
		return info
	}
	if len(rows) == 0 {
		p.add(report.Fail, item, "%s", tableMissingProblem(t.Table))
		return info
	}
	r := rows[0]
	info.exists, info.canSelect, info.owned = true, r[2] == "t", r[4] == "t"
	if r[1] != "r" && r[1] != "p" {
		p.add(report.Fail, item, "%s is not a table (pg_class.relkind %q): only a table's inserts are published; point the config at the outbox table", t.Table, r[1])
		return info
	}
	cols, err := query(ctx, p.conn, "SELECT attname, atttypid::int, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "+r[0]+" AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
	if err != nil {
		p.add(report.Fail, item, "read the columns of %s: %v", t.Table, err)
		return info
	}
	if p.checkColumns(item, t, cols) {
		names := make([]string, len(cols))
		for i, c := range cols {
			names[i] = c[0] + " " + c[2]
		}
		p.add(report.OK, item, "has the configured columns (%s)", strings.Join(names, ", "))
	}
	switch {
	case !info.canSelect && p.cfg.Cleanup:
		p.add(report.Fail, item, "role %q has no SELECT on %s, which outbox.cleanup.after needs to find confirmed rows: run GRANT SELECT, DELETE ON %s TO %s", p.role, t.Table, pgsql.Qualified(t.Table), pgsql.Ident(p.role))
	case !info.canSelect:
		p.add(report.Warn, item, "role %q has no SELECT on %s: streaming does not need it, but outbox.cleanup.after and looking into a halted event's row do: run GRANT SELECT ON %s TO %s", p.role, t.Table, pgsql.Qualified(t.Table), pgsql.Ident(p.role))
	}
	if p.cfg.Cleanup && r[3] != "t" {
		p.add(report.Fail, item, "role %q has no DELETE on %s, which outbox.cleanup.after needs: run GRANT DELETE ON %s TO %s", p.role, t.Table, pgsql.Qualified(t.Table), pgsql.Ident(p.role))
	}
	return info
}

// textLike are the types whose text form makes a natural id, type or
// aggregate: text types, uuid and integers. The decoder takes any type's
// text form; other types get a warning.
var textLike = map[int]bool{
	19:   true, // name
	25:   true, // text
	1042: true, // bpchar
	1043: true, // varchar
	2950: true, // uuid
	20:   true, // int8
	21:   true, // int2
	23:   true, // int4
	1700: true, // numeric
}

// checkColumns checks the configured columns against the table's, with the
// decoder's words (decode/relation.go) for what the decoder rejects. It
// reports whether it found nothing to say.
func (p *preflight) checkColumns(item string, t OutboxTable, cols [][]string) bool {
	before := len(p.found)
	byName := map[string][]string{}
	for _, c := range cols {
		byName[c[0]] = c
	}
	type col struct{ key, name string }
	req := []col{{"id", t.ID}, {"aggregate_type", t.AggregateType}, {"aggregate_id", t.AggregateID}, {"type", t.Type}}
	missing := func(c col, key string) bool {
		if _, ok := byName[c.name]; ok {
			return false
		}
		p.add(report.Fail, item, "outbox table %s has no column %q (%s): add the column, or map %s to one of its columns (%s)", t.Table, c.name, key, key, columnNames(cols))
		return true
	}
	for _, c := range req {
		if missing(c, "outbox.columns."+c.key) {
			continue
		}
		oid, _ := strconv.Atoi(byName[c.name][1])
		if !textLike[oid] {
			p.add(report.Warn, item, "%s (column %q) has type %s: the relay uses its text form as the event's %s; a text, uuid or integer column is the usual choice", c.key, c.name, byName[c.name][2], c.key)
		}
	}
	pc := col{"payload", t.Payload}
	if !missing(pc, "outbox.columns.payload") {
		oid, _ := strconv.ParseUint(byName[t.Payload][1], 10, 32)
		if problem := decode.PayloadTypeProblem(t.Payload, uint32(oid)); problem != "" {
			p.add(report.Fail, item, "%s: the column is %s; change it with ALTER TABLE %s ALTER COLUMN %s TYPE jsonb USING ..., or map outbox.columns.payload to another column",
				problem, byName[t.Payload][2], pgsql.Qualified(t.Table), pgsql.Ident(t.Payload))
		}
	}
	for _, h := range t.Headers {
		missing(col{h, h}, "outbox.headers."+h)
	}
	return len(p.found) == before
}

func columnNames(cols [][]string) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c[0]
	}
	return strings.Join(names, ", ")
}

func (p *preflight) checkPublication(ctx context.Context, tables []tableInfo) {
	item := "postgres publication " + p.cfg.Publication
	pub, err := readPublication(ctx, p.conn, p.cfg.Publication)
	if err != nil {
		p.add(report.Fail, item, "%v", err)
		return
	}
	problems, err := partitionProblems(ctx, p.conn, p.cfg.Publication, pub, p.cfg.Tables)
	for _, pr := range problems {
		p.add(report.Fail, item, "%s", pr)
	}
	if err != nil {
		p.add(report.Fail, item, "%v", err)
	}
	if err != nil || len(problems) > 0 {
		return
	}
	if !pub.exists {
		var cannot []string
		for _, t := range tables {
			if t.exists && !t.owned {
				cannot = append(cannot, fmt.Sprintf("role %q does not own %s", p.role, t.name))
			}
		}
		createDB, err := p.one(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')")
		if err != nil {
			p.add(report.Fail, item, "%v", err)
			return
		}
		if createDB != "t" {
			cannot = append(cannot, fmt.Sprintf("role %q has no CREATE on the database", p.role))
		}
		sql := createPublicationSQL(p.cfg.Publication, p.cfg.Tables)
		if len(cannot) > 0 {
			p.add(report.Fail, item, "does not exist, and the relay cannot create it: %s: create it yourself as a superuser: %s", strings.Join(cannot, "; "), sql)
			return
		}
		p.add(report.OK, item, "does not exist yet; the relay will create it: %s", sql)
		return
	}
	if !pub.inserts {
		p.add(report.Fail, item, "%s", publicationNoInsertProblem(p.cfg.Publication))
		return
	}
	bad := false
	for _, t := range p.cfg.Tables {
		if !pub.covers(t) {
			p.add(report.Fail, item, "%s", publicationMissingTableProblem(p.cfg.Publication, t))
			bad = true
		}
	}
	if bad {
		return
	}
	if pub.allTables {
		p.add(report.OK, item, "exists, FOR ALL TABLES")
	} else {
		p.add(report.OK, item, "exists and includes %s", strings.Join(p.cfg.Tables, ", "))
	}
}

func (p *preflight) checkSlot(srv server, st slotState, err error, replOK bool) {
	item := "postgres slot " + p.cfg.Slot
	if err != nil {
		p.add(report.Fail, item, "%v", err)
		return
	}
	if !st.exists {
		if replOK && srv.slotsUsed < srv.maxSlots && srv.walLevel == "logical" {
			p.add(report.OK, item, "does not exist yet; the relay will create it (pgoutput), and events start from then on")
		} else {
			p.add(report.Fail, item, "does not exist yet, and the relay cannot create it until the problems above are fixed")
		}
	} else if st.walStatus == "lost" {
		p.add(report.Fail, item, "%s", slotLostProblem(p.cfg.Slot))
	} else {
		state := "inactive"
		if st.active {
			state = "active"
		}
		p.add(report.OK, item, "exists (pgoutput, this database), %s, confirmed up to %s, %s bytes of WAL behind, wal_status %s", state, st.confirmed, orUnknown(st.lag, "?"), orUnknown(st.walStatus, "unknown"))
		if st.walStatus == "unreserved" {
			p.add(report.Warn, item, "wal_status is unreserved: the slot is past max_slot_wal_keep_size, and the next checkpoint may remove WAL it needs, losing its events: start the relay now so it catches up, or raise max_slot_wal_keep_size")
		}
		if st.active {
			p.add(report.Warn, item, "%s", slotActiveText(p.cfg.Slot, st))
		}
	}
	const keep = "postgres max_slot_wal_keep_size"
	switch {
	case srv.keepSize == "-1":
		p.add(report.Warn, keep, "is -1 (unlimited): while the relay is down or halted its slot keeps all WAL, which can fill the disk and stop Postgres: set max_slot_wal_keep_size to the WAL you can afford to keep (past it Postgres drops the slot's WAL and its events are lost), and alert on outboxrelay_replication_lag_bytes")
	case st.exists && st.safeSize != "":
		p.add(report.OK, keep, "is %s; %s more bytes of WAL can be written before the slot loses WAL it needs", srv.keepSize, st.safeSize)
	default:
		p.add(report.OK, keep, "is %s: past it, Postgres drops WAL the slot needs and its events are lost; alert on outboxrelay_replication_lag_bytes well before", srv.keepSize)
	}
}
