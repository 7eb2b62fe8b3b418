package capture

// This file finds the publications that would lose a partitioned outbox
// table's events. pgoutput names the table a change was made in: without
// publish_via_partition_root that is the leaf partition, with it the
// topmost published ancestor. The decoder matches the configured table's
// name only, so a change named after any other table is ignored while the
// slot moves past it.

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// partitioning is a table's place in a partition tree.
type partitioning struct {
	partitioned bool     // relkind 'p': its rows live in its partitions
	ancestors   []string // "schema.name" of the tables it is a partition of, parent first
}

func readPartitioning(ctx context.Context, conn *pgconn.PgConn, table string) (partitioning, error) {
	schema, name := pgsql.SplitTable(table)
	rows, err := query(ctx, conn, `SELECT c.relkind = 'p', coalesce(an.nspname || '.' || ac.relname, '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN LATERAL pg_partition_ancestors(c.oid) WITH ORDINALITY a(relid, ord) ON a.relid <> c.oid
		LEFT JOIN pg_class ac ON ac.oid = a.relid LEFT JOIN pg_namespace an ON an.oid = ac.relnamespace
		WHERE n.nspname = `+pgsql.Literal(schema)+" AND c.relname = "+pgsql.Literal(name)+" ORDER BY a.ord")
	if err != nil {
		return partitioning{}, fmt.Errorf("read the partitions of outbox table %s: %w", table, err)
	}
	var p partitioning
	for _, r := range rows {
		p.partitioned = r[0] == "t"
		if r[1] != "" {
			p.ancestors = append(p.ancestors, r[1])
		}
	}
	return p, nil
}

// partitionProblems returns, for each table whose events pub would name
// after another table, the problem and its fix. A publication that does not
// exist yet is judged as the relay would create it.
func partitionProblems(ctx context.Context, conn *pgconn.PgConn, pubName string, pub publication, tables []string) ([]string, error) {
	if !pub.exists {
		pub = publication{exists: true, inserts: true, viaRoot: true, tables: map[string]bool{}}
		for _, t := range tables {
			pub.tables[t] = true
		}
	}
	var problems []string
	for _, t := range tables {
		part, err := readPartitioning(ctx, conn, t)
		if err != nil {
			return nil, err
		}
		if p := partitionProblem(pubName, pub, t, part); p != "" {
			problems = append(problems, p)
		}
	}
	return problems, nil
}

// partitionProblem says how pub would lose table's events, or "" if it
// would not.
func partitionProblem(pubName string, pub publication, table string, part partitioning) string {
	if part.partitioned && !pub.viaRoot {
		return partitionRootProblem(pubName, table)
	}
	if !pub.viaRoot {
		return "" // a partition's changes are named after the partition
	}
	// Via the root, a partition's changes are named after its topmost
	// ancestor in the publication (the root, in a FOR ALL TABLES one).
	as := ""
	for _, a := range part.ancestors {
		if pub.allTables || pub.tables[a] {
			as = a
		}
	}
	if as == "" {
		return ""
	}
	return partitionLeafProblem(pubName, table, as)
}
