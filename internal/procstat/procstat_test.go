package procstat_test

import (
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/procstat"
)

func TestParse(t *testing.T) {
	// A command name with a space and a ')' in it: fields are counted from
	// the last ')'.
	line := "4242 (post gres) x) S 17 4242 4242 0 -1 4194560 1200 0 0 0 731 95 0 0 20 0 1 0 88123 219000000 4000 18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0\n"
	got, err := procstat.Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procstat.Stat{State: 'S', PPID: 17, UTime: 731, STime: 95, StartTime: 88123}
	if got != want {
		t.Errorf("Parse = %+v, want %+v", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	for name, line := range map[string]string{
		"no command name": "4242 postgres S 17",
		"too few fields":  "4242 (postgres) S 17 4242 4242 0 -1",
		"bad ppid":        "4242 (postgres) S x 4242 4242 0 -1 4194560 1200 0 0 0 731 95 0 0 20 0 1 0 88123 1",
	} {
		if st, err := procstat.Parse([]byte(line)); err == nil {
			t.Errorf("%s: Parse(%q) = %+v, want an error", name, line, st)
		}
	}
}

func TestReadSelf(t *testing.T) {
	st, err := procstat.Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != os.Getppid() || st.State != 'R' && st.State != 'S' {
		t.Errorf("Read(self) = %+v, want ppid %d and state R or S", st, os.Getppid())
	}
}

// CPUNanos must count what the kernel counts for the process: measured
// around 200 ms of spinning on two goroutines, its change must agree with
// getrusage's (µs, every thread) to within a few ms, where Stat's ticks
// can be 20 ms off.
func TestCPUNanosAgreesWithRusage(t *testing.T) {
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	nanos := func() time.Duration {
		ns, err := procstat.CPUNanos(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(ns)
	}
	spin := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { spin(100 * time.Millisecond) }) // start the threads before the first reading
	wg.Go(func() { spin(100 * time.Millisecond) })
	wg.Wait()
	r0, n0 := rusage(), nanos()
	wg.Go(func() { spin(200 * time.Millisecond) })
	wg.Go(func() { spin(200 * time.Millisecond) })
	wg.Wait()
	r1, n1 := rusage(), nanos()
	dr, dn := r1-r0, n1-n0
	if dr < 100*time.Millisecond {
		t.Fatalf("getrusage counted %s for 2×200ms of spinning; is the machine that busy?", dr)
	}
	if diff := (dn - dr).Abs(); diff > 5*time.Millisecond {
		t.Errorf("CPUNanos counted %s, getrusage %s: %s apart", dn, dr, diff)
	}
}
