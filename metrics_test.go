package main

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// TestSlotCollector checks the slot metrics for each kind of status: only
// what is known is served, so an alert never fires on a guess.
// e2e TestMonitoring and TestSlotInvalidated check them against a real
// slot.
func TestSlotCollector(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   *capture.SlotStatus
		want string
	}{
		{"unknown", nil, ""},
		{"streaming, with a limit", &capture.SlotStatus{Active: true, WALStatus: "reserved", SafeWALSize: 900, SafeWALSizeKnown: true, KeepSize: 1000}, `
outboxrelay_postgres_max_slot_wal_keep_size_bytes 1000
outboxrelay_slot_active 1
outboxrelay_slot_safe_wal_size_bytes 900
outboxrelay_slot_wal_status{status="extended"} 0
outboxrelay_slot_wal_status{status="lost"} 0
outboxrelay_slot_wal_status{status="reserved"} 1
outboxrelay_slot_wal_status{status="unreserved"} 0
`},
		// Without a limit safe_wal_size is NULL: no series, not NaN or 0,
		// which a "< threshold" alert would take for a full disk.
		{"idle, no limit", &capture.SlotStatus{WALStatus: "extended", KeepSize: -1}, `
outboxrelay_slot_active 0
outboxrelay_slot_wal_status{status="extended"} 1
outboxrelay_slot_wal_status{status="lost"} 0
outboxrelay_slot_wal_status{status="reserved"} 0
outboxrelay_slot_wal_status{status="unreserved"} 0
`},
		{"lost", &capture.SlotStatus{WALStatus: "lost", KeepSize: 1 << 20}, `
outboxrelay_postgres_max_slot_wal_keep_size_bytes 1.048576e+06
outboxrelay_slot_active 0
outboxrelay_slot_wal_status{status="extended"} 0
outboxrelay_slot_wal_status{status="lost"} 1
outboxrelay_slot_wal_status{status="reserved"} 0
outboxrelay_slot_wal_status{status="unreserved"} 0
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p atomic.Pointer[capture.SlotStatus]
			p.Store(tc.st)
			got := lines(t, slotCollector{&p})
			if got != strings.TrimPrefix(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", got, strings.TrimPrefix(tc.want, "\n"))
			}
		})
	}
}

// lines is what c serves in the text format, without HELP and TYPE.
func lines(t *testing.T, c slotCollector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b, out strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out.WriteString(l)
		}
	}
	return out.String()
}
