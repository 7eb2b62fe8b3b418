// Package schema holds the outbox table's DDL, Debezium's column names that
// the relay reads with its default mapping, as the one copy every program,
// test and the compose setup creates the table from.
package schema

import _ "embed"

// Outbox is the contents of outbox.sql: CREATE TABLE IF NOT EXISTS
// public.outbox, plain SQL without psql meta-commands, so it can be run
// through any driver or by the postgres image's init scripts.
//
//go:embed outbox.sql
var Outbox string
