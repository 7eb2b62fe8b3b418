// Package report holds the result type of the preflight checks, shared by
// capture (Postgres) and sink (NATS), which must not import each other.
package report

// Status is the outcome of one preflight item.
type Status uint8

const (
	OK   Status = iota // ready
	Warn               // the relay runs, but the user should know
	Fail               // the relay cannot run until this is fixed
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	}
	return "FAIL"
}

// Finding is one preflight result: the item checked (e.g. "postgres
// wal_level"), what was found and, unless it is OK, the fix.
type Finding struct {
	Status Status
	Item   string
	Text   string
}
