package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestMonitoring checks the shipped monitoring files against a running
// relay: deploy/prometheus/outboxrelay-rules.yaml parses with Prometheus's
// own rule parser, every runbook it names is a heading in docs/, and every
// metric named in a rule or in a panel of deploy/grafana/outboxrelay.json
// is on the relay's /metrics. It also checks the slot status metrics'
// values while the relay streams.
func TestMonitoring(t *testing.T) {
	root := filepath.Join("..")
	p := parser.NewParser(parser.Options{})
	rulesPath := filepath.Join(root, "deploy", "prometheus", "outboxrelay-rules.yaml")
	groups, errs := rulefmt.ParseFile(rulesPath, false, model.UTF8Validation, p, nil)
	if len(errs) > 0 {
		t.Fatalf("Prometheus cannot load %s: %v", rulesPath, errs)
	}
	names := map[string][]string{} // metric -> where it is named
	collect := func(where, expr string) {
		e, err := p.ParseExpr(expr)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", where, expr, err)
			return
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				names[vs.Name] = append(names[vs.Name], where)
			}
			return nil
		})
	}
	alerts := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			alerts++
			collect("rule "+r.Alert, r.Expr)
			if rb := r.Annotations["runbook"]; rb != "" {
				checkRunbook(t, root, r.Alert, rb)
			}
		}
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "outboxrelay.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/outboxrelay.json: %v", err)
	}
	for _, pn := range dash.Panels {
		for _, tg := range pn.Targets {
			collect("panel "+pn.Title, tg.Expr)
		}
	}
	if alerts < 5 || len(dash.Panels) < 5 || len(names) < 10 {
		t.Fatalf("%d alerts, %d panels, %d metrics: the files were not read", alerts, len(dash.Panels), len(names))
	}

	// A limit on the slot's WAL, so that safe_wal_size has a value, and
	// cleanup, so that its counter is served.
	n := testenv.StartNATS(t)
	e := newEnvWith(t, n, n.URL(), testenv.PostgresOptions{Settings: map[string]string{"max_slot_wal_keep_size": "1GB"}})
	e.writeConfig("outbox:\n  cleanup:\n    after: 1h\n")
	e.startRelay()
	w := workload{Writers: 2, Aggregates: 10, Events: 200, MaxTx: 5}.run(context.Background(), t, e.pg)
	e.waitStreamCount(e.js(), w.Committed(), time.Minute)
	var text string
	testenv.WaitFor(t, 30*time.Second, "the slot's status on /metrics", func() (bool, error) {
		text = e.metrics()
		return strings.Contains(text, "outboxrelay_slot_active "), nil
	})
	var missing []string
	for name, where := range names {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `[{ ]`).MatchString(text) {
			missing = append(missing, name+" (in "+strings.Join(where, ", ")+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics named in deploy/ but not on /metrics:\n%s", strings.Join(missing, "\n"))
	}
	for _, want := range []string{
		`outboxrelay_slot_active 1`,
		`outboxrelay_slot_wal_status{status="reserved"} 1`,
		`outboxrelay_slot_wal_status{status="lost"} 0`,
		`outboxrelay_postgres_max_slot_wal_keep_size_bytes 1.073741824e+09`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(text, "outboxrelay_slot"))
		}
	}
	if m := regexp.MustCompile(`(?m)^outboxrelay_slot_safe_wal_size_bytes (\S+)$`).FindStringSubmatch(text); m == nil || m[1] == "0" || strings.HasPrefix(m[1], "-") {
		t.Errorf("outboxrelay_slot_safe_wal_size_bytes is %v, want a positive size under a 1GB max_slot_wal_keep_size", m)
	}
}

// checkRunbook fails t unless runbook, "docs/FILE.md#anchor", names a
// heading of that file.
func checkRunbook(t *testing.T, root, alert, runbook string) {
	t.Helper()
	file, anchor, _ := strings.Cut(runbook, "#")
	b, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Errorf("alert %s: runbook %s: %v", alert, runbook, err)
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			slug := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(strings.TrimLeft(h, "#")), " ", "-"))
			if slug == anchor {
				return
			}
		}
	}
	t.Errorf("alert %s: runbook %s: no such heading in %s", alert, runbook, file)
}
