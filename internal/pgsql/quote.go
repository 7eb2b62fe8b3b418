// Package pgsql quotes names and values for SQL sent on the simple
// protocol, the only one a replication connection accepts, so statements
// are built as text. capture and recovery share it.
package pgsql

import "strings"

// Literal quotes s as a string literal.
func Literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Ident quotes s as an identifier.
func Ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Qualified quotes "schema.name" as "schema"."name"; a bare name is in
// public, as in config.
func Qualified(table string) string {
	schema, name := SplitTable(table)
	return Ident(schema) + "." + Ident(name)
}

// SplitTable splits "schema.name"; the schema defaults to public.
func SplitTable(table string) (schema, name string) {
	if s, n, ok := strings.Cut(table, "."); ok {
		return s, n
	}
	return "public", table
}
