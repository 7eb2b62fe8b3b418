package main

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/cleanup"
	"github.com/outboxrelay/outboxrelay/pipeline"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the Prometheus metrics of the contract, all prefixed
// outboxrelay_. Most read the components' counters at scrape time.
type metrics struct {
	reg     *prometheus.Registry
	latency prometheus.Histogram
	lag     atomic.Int64
	slot    atomic.Pointer[capture.SlotStatus] // nil while unknown
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "outboxrelay_publish_latency_seconds",
		Help:    "Time from the transaction's commit to the event's PubAck.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	m.lag.Store(-1)
	m.reg.MustRegister(m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), slotCollector{&m.slot})
	return m
}

func (m *metrics) observeLatency(d time.Duration) { m.latency.Observe(d.Seconds()) }

// register adds the metrics that read the components' state at scrape
// time; ready is the relay's readiness, as /readyz reports it.
func (m *metrics) register(cp *capture.Capture, sk *sink.Sink, tr *checkpoint.Tracker, p *pipeline.Pipeline, ready func() readyState, nc *nats.Conn) {
	counter := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	counter("outboxrelay_events_published_total", "Events stored in the stream (dead letters included).",
		func() float64 { return float64(sk.Stats().Published) })
	counter("outboxrelay_events_dead_lettered_total", "Events published to the dead-letter subject.",
		func() float64 { return float64(sk.Stats().DeadLettered) })
	gauge("outboxrelay_events_in_flight", "Events handed to JetStream and not yet acknowledged.",
		func() float64 { return float64(tr.InFlight()) })
	gauge("outboxrelay_confirmed_lsn", "WAL position last confirmed to Postgres, as a number.",
		func() float64 { return float64(cp.Stats().Confirmed) })
	gauge("outboxrelay_replication_lag_bytes", "WAL held back by the slot: pg_current_wal_lsn() - confirmed_flush_lsn (-1 when unknown).",
		func() float64 { return float64(m.lag.Load()) })
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "outboxrelay_reconnects_total", Help: "Reconnects, by side.", ConstLabels: prometheus.Labels{"side": "postgres"},
	}, func() float64 { return float64(cp.Stats().Reconnects) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "outboxrelay_reconnects_total", Help: "Reconnects, by side.", ConstLabels: prometheus.Labels{"side": "nats"},
	}, func() float64 { return float64(nc.Stats().Reconnects) }))
	counter("outboxrelay_chain_resumes_total", "Times the publish chain was resumed from the stream's last message.",
		func() float64 { return float64(sk.Stats().Resumes) })
	gauge("outboxrelay_ready", "1 while the relay holds the slot and is streaming.",
		func() float64 { return b2f(ready().ready) })
	gauge("outboxrelay_halted", "1 when the relay stopped at an event it cannot publish, or because continuity with its stream is lost (see the log).",
		func() float64 { return b2f(p.Halted() != nil || cp.Halted() != nil) })
	gauge("outboxrelay_continuity_lost", "1 when the relay stopped because it cannot prove that its slot continues where its stream ends; run outboxrelay recover (see the log).",
		func() float64 { return b2f(cp.Halted() != nil) })
	m.reg.MustRegister(haltCollector{func() *sink.InvalidEventError {
		if h := p.Halted(); h != nil {
			return h.Event()
		}
		return nil
	}})
}

// registerCleanup adds the cleanup counter.
func (m *metrics) registerCleanup(cl *cleanup.Cleaner) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "outboxrelay_cleanup_deleted_rows_total", Help: "Outbox rows deleted by outbox.cleanup after their events were confirmed.",
	}, func() float64 { return float64(cl.Deleted()) }))
}

var haltDesc = prometheus.NewDesc("outboxrelay_halted_event_info",
	"The event the relay halted at (present only while halted): its id, table, commit LSN, position in its transaction, why, and the fix.",
	[]string{"event_id", "table", "commit_lsn", "tx_seq", "reason", "fix"}, nil)

// haltCollector exports the halted-at event as labels, so an alert can
// name it.
type haltCollector struct {
	event func() *sink.InvalidEventError
}

func (c haltCollector) Describe(ch chan<- *prometheus.Desc) { ch <- haltDesc }

func (c haltCollector) Collect(ch chan<- prometheus.Metric) {
	inv := c.event()
	if inv == nil {
		return
	}
	ev := inv.Event
	ch <- prometheus.MustNewConstMetric(haltDesc, prometheus.GaugeValue, 1,
		ev.ID, ev.Table, ev.CommitLSN.String(), strconv.FormatUint(uint64(ev.TxSeq), 10), inv.Reason, inv.Fix)
}

// pollLag refreshes the slot's lag and status every 10 seconds until ctx
// ends.
func (m *metrics) pollLag(ctx context.Context, url, slot string, log *slog.Logger) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := capture.ReadSlotStatus(qctx, url, slot)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.lag.Store(-1)
			m.slot.Store(nil)
			log.Debug("read slot status", "err", err)
		} else {
			m.lag.Store(st.Lag)
			m.slot.Store(&st)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

var (
	slotActiveDesc = prometheus.NewDesc("outboxrelay_slot_active",
		"1 while a process (this relay or another) streams from the slot, 0 when none does; absent while unknown.", nil, nil)
	slotWALStatusDesc = prometheus.NewDesc("outboxrelay_slot_wal_status",
		"1 for the slot's wal_status (reserved, extended, unreserved, lost), 0 for the others; absent while unknown. unreserved: the next checkpoint may remove WAL the slot needs; lost: it did.",
		[]string{"status"}, nil)
	slotSafeWALDesc = prometheus.NewDesc("outboxrelay_slot_safe_wal_size_bytes",
		"Bytes of WAL that can still be written before the slot is past max_slot_wal_keep_size and may lose its WAL; absent without a limit (max_slot_wal_keep_size = -1) or while unknown.", nil, nil)
	keepSizeDesc = prometheus.NewDesc("outboxrelay_postgres_max_slot_wal_keep_size_bytes",
		"Postgres's max_slot_wal_keep_size, the WAL a slot may hold back before Postgres may remove it; absent without a limit (-1) or while unknown.", nil, nil)
	walStatuses = []string{"reserved", "extended", "unreserved", "lost"}
)

// slotCollector exports the slot's status as last polled, only what is
// known: an alert on a missing series does not fire on a guess.
type slotCollector struct {
	st *atomic.Pointer[capture.SlotStatus]
}

func (c slotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- slotActiveDesc
	ch <- slotWALStatusDesc
	ch <- slotSafeWALDesc
	ch <- keepSizeDesc
}

func (c slotCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.st.Load()
	if st == nil {
		return
	}
	active := 0.0
	if st.Active {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(slotActiveDesc, prometheus.GaugeValue, active)
	if st.WALStatus != "" {
		for _, s := range walStatuses {
			v := 0.0
			if s == st.WALStatus {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(slotWALStatusDesc, prometheus.GaugeValue, v, s)
		}
	}
	if st.SafeWALSizeKnown {
		ch <- prometheus.MustNewConstMetric(slotSafeWALDesc, prometheus.GaugeValue, float64(st.SafeWALSize))
	}
	if st.KeepSize >= 0 {
		ch <- prometheus.MustNewConstMetric(keepSizeDesc, prometheus.GaugeValue, float64(st.KeepSize))
	}
}
