package capture

// This file holds the texts of the setup problems, shared by run and check:
// the relay returns them as errors (wrapped with what it was doing), and
// the preflight prints them, so a user meets the same words either way.

import (
	"fmt"

	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// preSlotRowsProblem says that rows came before the slot, and what to do.
func preSlotRowsProblem(table, count, slot string) string {
	return fmt.Sprintf("outbox table %s held %s when slot %q was created: logical replication starts at its slot, so the relay will not publish them; "+
		"if they are events still to publish, insert them again (with new ids) now that the slot exists", table, count, slot)
}

// The fixes that several problems share.
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
	return fmt.Sprintf("role %s may not start logical replication: run ALTER ROLE %s WITH REPLICATION as a superuser (on Amazon RDS or Aurora: GRANT rds_replication TO %s)", pgsql.Ident(role), pgsql.Ident(role), pgsql.Ident(role))
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
	return fmt.Sprintf("publication %q does not include table %s: run ALTER PUBLICATION %s ADD TABLE %s (or point postgres.publication at another publication)", pub, table, pgsql.Ident(pub), pgsql.Qualified(table))
}

func publicationNoInsertProblem(pub string) string {
	return fmt.Sprintf("publication %q does not publish inserts, so no outbox row would reach the relay: run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')", pub, pgsql.Ident(pub))
}

func partitionRootProblem(pub, table string) string {
	return fmt.Sprintf("outbox table %s is partitioned and publication %q does not publish via the partition root, so pgoutput would name each partition instead of %s and the relay would ignore every event: run ALTER PUBLICATION %s SET (publish_via_partition_root = true)", table, pub, table, pgsql.Ident(pub))
}

func partitionLeafProblem(pub, table, root string) string {
	return fmt.Sprintf("outbox table %s is a partition of %s, and publication %q publishes its rows under the name %s (publish_via_partition_root = true), so the relay would ignore every event: configure the partitioned table %s as the outbox table instead, or point postgres.publication at a publication that includes %s and none of the tables it is a partition of", table, root, pub, root, root, table)
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
	return fmt.Sprintf("replication slot %q is lost (wal_status = lost): Postgres removed WAL it still needed, past max_slot_wal_keep_size, and the events in it are gone: run outboxrelay recover -config FILE, which creates the slot again and publishes the outbox rows still in the table that the stream lacks", slot)
}

func slotActiveText(slot string, st slotState) string {
	return fmt.Sprintf("replication slot %q is active: %s streams it; a relay started now waits as a standby and takes over when that process stops", slot, st.holder)
}
