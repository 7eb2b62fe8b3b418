package e2e_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// standbyLine is what a relay logs while another one holds the slot.
const standbyLine = "slot is held by another process; waiting as a standby"

// TestStandbyTakeover (I2 across a fail-over between relays): relay B, on
// the same slot and stream as relay A, waits as a standby, polling the slot
// every few seconds, and is not ready while A streams. When A is killed
// with -9 in the middle of a load, while it drains a burst of 60,000
// events, B takes over within seconds, and the stream holds every committed
// event exactly once, in commit order.
func TestStandbyTakeover(t *testing.T) {
	e := newEnv(t)
	js := e.js()
	createOutboxStream(t, js, 1)
	a := e.startRelay()
	ctx := context.Background()
	// Some events before B starts, so that B finds a stream A writes to.
	first := workload{Writers: 2, Aggregates: 20, FirstAgg: 1000, Events: 500, MaxTx: 10}.run(ctx, t, e.pg)
	e.waitStreamCount(js, first.Committed(), time.Minute)

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addrB := "127.0.0.1:" + strconv.Itoa(port)
	cfgB := filepath.Join(t.TempDir(), "relay-b.yaml")
	e.writeConfigTo(cfgB, addrB, "")
	b := testenv.StartProcess(t, e.bin, "run", "-config", cfgB)
	testenv.WaitFor(t, 30*time.Second, "relay B serving HTTP", func() (bool, error) {
		if b.Exited() {
			t.Fatalf("relay B exited:\n%s", b.Output())
		}
		_, err := readyzCode(addrB)
		return err == nil, err
	})
	// B must say why it is not streaming.
	if err := b.WaitForOutput(standbyLine, 15*time.Second); err != nil {
		t.Errorf("relay B does not say it waits as a standby: %v", err)
	}
	// B must stay unready while A streams: sample it for a few seconds,
	// long enough that an uncapped retry backoff would show in its log.
	expectUnready(t, addrB, 6*time.Second)
	// /readyz?standby=ok (Kubernetes' readiness probe in the Helm chart)
	// counts a healthy standby as ready, and the active relay too.
	for _, addr := range []string{addrB, e.httpAddr} {
		if code, body, err := get("http://" + addr + "/readyz?standby=ok"); err != nil || code != http.StatusOK {
			t.Errorf("%s/readyz?standby=ok = %d %q (%v), want 200", addr, code, body, err)
		} else if addr == addrB && !strings.HasPrefix(body, "standby: ") {
			t.Errorf("the standby's /readyz?standby=ok says %q, want it to start with \"standby: \"", body)
		}
	}

	bg := workload{Writers: 4, Aggregates: 200, Events: 20_000, MaxTx: 20, Rollback: 0.05, Hot: 0.3, Pace: 55 * time.Millisecond}.start(ctx, e.pg)
	start := time.Now()
	waitStreamAtLeast(t, js, 3000, time.Minute)
	expectUnready(t, addrB, time.Second) // not even under load
	if ok, err := testenv.RelayReady(e.httpAddr); !ok {
		t.Fatalf("relay A is not ready under load: %v", err)
	}

	if strings.Contains(b.Output(), "msg=streaming") {
		t.Fatalf("relay B streamed while relay A held the slot:\n%s", b.Output())
	}
	if bg.finished() {
		t.Fatal("the load finished before the kill: the fail-over would test nothing; slow the load down")
	}
	// Kill A while it drains a burst, with its publish window full: B must
	// publish what A had not, and nothing A had. The kill comes a while
	// into the burst, after A has had the chance to confirm its position
	// to Postgres at least once: a confirmation past what is stored would
	// lose the rest of the burst.
	const burstSize = 120_000
	from, err := streamCountWithin(js, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	big := burst(t, e, 10_000, 100, burstSize)
	waitStreamAtLeast(t, js, from+2000, time.Minute)
	time.Sleep(700 * time.Millisecond) // spaces the kill from the burst's start, while the load's transactions keep being confirmed
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	atKill, _ := streamCountWithin(js, 2*time.Second)
	t.Logf("killed relay A with -9 at %s, %d events into a burst of %d; the stream held %d", killed.Sub(start).Round(time.Millisecond), atKill-from, burstSize, atKill)
	if atKill > from+burstSize-4096 {
		t.Fatalf("relay A had published nearly all the burst before the kill (%d of %d): make the burst bigger", atKill-from, burstSize)
	}
	const maxFailover = 15 * time.Second
	err = testenv.Poll(maxFailover, func() (bool, error) {
		code, err := readyzCode(addrB)
		return code == http.StatusOK, err
	})
	failover := time.Since(killed)
	if err != nil {
		// Find out whether B takes over at all, to report how late it is.
		late := testenv.Poll(time.Minute, func() (bool, error) {
			code, err := readyzCode(addrB)
			return code == http.StatusOK, err
		})
		t.Errorf("relay B not ready within %s of the kill (ready after %s; still unready after a further minute: %v)", maxFailover, time.Since(killed).Round(time.Millisecond), late != nil)
		if late != nil {
			t.FailNow()
		}
	} else {
		t.Logf("fail-over: relay B ready %s after the kill of relay A", failover.Round(time.Millisecond))
	}
	if bg.finished() {
		t.Logf("note: the load finished before relay B took over")
	}
	// One fail-over time depends on where B was in its wait when A died;
	// the gaps between B's attempts bound every fail-over. The relay caps
	// a standby's wait at 2s; 3s leaves room for the attempt itself.
	if gap, n := maxStandbyGap(b.Output()); n >= 2 {
		t.Logf("relay B tried the slot %d times as a standby, at most %s apart", n, gap.Round(time.Millisecond))
		if gap > 3*time.Second {
			t.Errorf("relay B waited %s between attempts at the slot: a fail-over can take that long, not seconds", gap.Round(time.Millisecond))
		}
	}

	during, err := bg.wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load of %d committed events took %s", during.Committed(), time.Since(start).Round(time.Millisecond))
	w := merge(first, big, during)
	e.waitStreamCount(js, w.Committed(), 2*time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	logRelayEvents(t, b)
	verify(t, readStream(t, js), w)
}

// readyzCode returns the status of /readyz of the relay serving HTTP at addr.
// get returns the status code and body of a GET of url.
func get(url string) (int, string, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func readyzCode(addr string) (int, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// expectUnready samples /readyz at addr for d and fails unless every
// answer is 503.
func expectUnready(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for samples := 0; time.Now().Before(deadline); samples++ {
		code, err := readyzCode(addr)
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("after %d samples: the standby's /readyz is %d (%v), want 503 while another relay streams", samples, code, err)
		}
		time.Sleep(100 * time.Millisecond) // sampling an invariant over time, not waiting for a condition
	}
}

// maxStandbyGap returns the longest time between consecutive standby lines
// in a relay's log (slog text format), and how many there were.
func maxStandbyGap(out string) (gap time.Duration, n int) {
	var last time.Time
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, standbyLine) || !strings.HasPrefix(l, "time=") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		if n > 0 {
			gap = max(gap, at.Sub(last))
		}
		last = at
		n++
	}
	return gap, n
}
