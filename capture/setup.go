package capture

// This file creates the publication and the slot when they are missing,
// and checks that existing ones fit.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// setup is the part of a session's setup that Recreate shares: it checks
// the server and the tables, creates the publication when it is missing
// or checks that it fits, and reads the slot. A check added here holds for
// both.
func setup(ctx context.Context, conn *pgconn.PgConn, cfg Config) (server, slotState, error) {
	srv, err := readServer(ctx, conn)
	if err != nil {
		return srv, slotState{}, err
	}
	if srv.walLevel != "logical" {
		return srv, slotState{}, errors.New(walLevelProblem(srv.walLevel))
	}
	if cfg.Messages && srv.version < 140000 {
		return srv, slotState{}, &PermanentError{errors.New(messagesVersionProblem(srv.versionText))}
	}
	for _, t := range cfg.Tables {
		ok, err := tableExists(ctx, conn, t)
		if err != nil {
			return srv, slotState{}, err
		}
		if !ok {
			return srv, slotState{}, errors.New(tableMissingProblem(t))
		}
	}
	if err := ensurePublication(ctx, conn, cfg); err != nil {
		return srv, slotState{}, err
	}
	st, err := readSlot(ctx, conn, cfg.Slot)
	return srv, st, err
}

// ensure creates the publication and the slot when they are missing and
// checks that existing ones fit. It returns the slot's state, or an error
// with the same words as the preflight's (see Preflight) for the problems
// both find.
func ensure(ctx context.Context, conn *pgconn.PgConn, cfg Config) (slotState, error) {
	srv, st, err := setup(ctx, conn, cfg)
	if err != nil {
		return st, err
	}
	if st.exists && st.active {
		return st, fmt.Errorf("%s: %w", slotActiveText(cfg.Slot, st), ErrSlotActive)
	}
	facts, err := readFacts(ctx, conn, cfg, srv.version, st)
	if err != nil {
		return st, err
	}
	st.facts, st.version = facts, srv.version
	if cfg.Verify != nil {
		// Before the slot is created or read from: a missing slot is
		// created only for a first start (I7).
		if err := cfg.Verify(ctx, facts); err != nil {
			return st, err
		}
	}
	if st.exists {
		if st.invalid != "" {
			return slotState{}, &PermanentError{errors.New(slotLostProblem(cfg.Slot))}
		}
		return st, makeFailover(ctx, conn, cfg, st, srv.version, srv.versionText)
	}
	if srv.slotsUsed >= srv.maxSlots {
		return slotState{}, errors.New(slotsFullProblem(cfg.Slot, srv.slotsUsed, srv.maxSlots))
	}
	if err := createSlot(ctx, conn, cfg, srv); err != nil {
		return slotState{}, err
	}
	st, err = readSlot(ctx, conn, cfg.Slot)
	st.facts, st.version = facts, srv.version
	return st, err
}

// preSlotCap bounds the count of rows that came before the slot.
const preSlotCap = 10000

// createSlot creates the slot, unless a peer does so first. Logical
// replication starts where its slot is created, so the relay never
// publishes a row committed before that. createSlot warns of such rows,
// counted in the slot's own snapshot: exactly what came before it, not
// what commits meanwhile.
func createSlot(ctx context.Context, conn *pgconn.PgConn, cfg Config, srv server) error {
	// CREATE_REPLICATION_SLOT ... USE_SNAPSHOT must come first in a
	// read-only REPEATABLE READ transaction. A slot is not transactional:
	// it stays whether this transaction commits or not.
	if _, err := query(ctx, conn, "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ"); err != nil {
		return fmt.Errorf("create replication slot %q: %w", cfg.Slot, explain(err))
	}
	defer func() { _, _ = query(context.Background(), conn, "ROLLBACK") }()
	_, err := createLogicalSlot(ctx, conn, cfg, srv.version, srv.versionText)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created meanwhile by a peer
		return nil
	}
	if err != nil {
		return fmt.Errorf("create replication slot %q: %w", cfg.Slot, explain(err))
	}
	cfg.Logger.Info("created replication slot")
	for _, t := range cfg.Tables {
		rows, err := query(ctx, conn, fmt.Sprintf("SELECT count(*) FROM (SELECT FROM %s LIMIT %d) r", pgsql.Qualified(t), preSlotCap+1))
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

func ensurePublication(ctx context.Context, conn *pgconn.PgConn, cfg Config) error {
	pub, err := readPublication(ctx, conn, cfg.Publication)
	if err != nil {
		return err
	}
	// Checked before the tables are: without publish_via_partition_root,
	// pg_publication_tables lists a partitioned table's partitions, not it.
	problems, err := partitionProblems(ctx, conn, cfg.Publication, pub, cfg.Tables)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return errors.New(problems[0])
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

func createPublicationSQL(pub string, tables []string) string {
	if len(tables) == 0 {
		// Only logical decoding messages: they need a publication to
		// stream, but not one with tables.
		return "CREATE PUBLICATION " + pgsql.Ident(pub) + viaRoot
	}
	idents := make([]string, len(tables))
	for i, t := range tables {
		idents[i] = pgsql.Qualified(t)
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pgsql.Ident(pub), strings.Join(idents, ", ")) + viaRoot
}

// viaRoot makes pgoutput name a partitioned table's changes after the
// table, not after the partition they are stored in; see partition.go.
const viaRoot = " WITH (publish_via_partition_root = true)"
