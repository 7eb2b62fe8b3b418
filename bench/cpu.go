package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/outboxrelay/outboxrelay/internal/procstat"
)

// CPU accounting: where the machine's cores go during a drain. On a 2-core
// machine shared by Postgres, nats-server and the relay, the drain rate is
// bounded by the sum of their CPU per event, so the bench prints each
// one's share rather than the relay's alone.

// procCPU is one process's CPU time (user+system) in nanoseconds, and what
// it is.
type procCPU struct {
	role string
	ns   int64
}

// cpuSample is the CPU time of every process under the given roots, by pid.
type cpuSample map[int]procCPU

// nsPerTick is the length of a clock tick of /proc/stat and /proc/PID/stat.
const nsPerTick = 1e9 / procstat.TicksPerSecond

// sampleCPU reads /proc for the processes named by roots and all their
// descendants. role names each root's tree; a Postgres backend that is a
// walsender is counted as "walsender".
func sampleCPU(roots map[int]string) cpuSample {
	parent := map[int]int{} // pid: ppid
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if st, err := procstat.Read(pid); err == nil {
			parent[pid] = st.PPID
		}
	}
	out := cpuSample{}
	if steal, total, ok := machineTicks(); ok {
		out[pidSteal] = procCPU{"steal", steal * nsPerTick}
		out[pidMachine] = procCPU{"machine", total * nsPerTick}
	}
	for pid := range parent {
		// Walk up to a root; the tree is shallow (runuser, postmaster, backend).
		for anc, depth := pid, 0; anc > 1 && depth < 8; anc, depth = parent[anc], depth+1 {
			role, ok := roots[anc]
			if !ok {
				continue
			}
			if role == "postgres" && isWalsender(pid) {
				role = "walsender"
			}
			if ns, ok := procCPUNanos(pid); ok {
				out[pid] = procCPU{role, ns}
			}
			break
		}
	}
	return out
}

// A cpuSample also holds, under these pseudo-pids, the whole machine's CPU
// time (all cores, idle included) and the part of it stolen: time the
// hypervisor gave this VM's virtual cores to someone else. On the
// development VM steal reached a fifth of the machine during a paced run,
// and it makes a run's rates and tails worse without any process's own
// CPU showing why.
const (
	pidSteal   = -1
	pidMachine = -2
)

// machineTicks reads the time stolen from all cores, and their total time,
// in clock ticks from the first line of /proc/stat.
func machineTicks() (steal, total int64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i == 7 {
			steal = n
		}
	}
	return steal, total, true
}

// procCPUNanos reads a process's CPU time (user+system) in nanoseconds,
// from its threads' schedstat: /proc/PID/stat's clock ticks would make a
// drain's CPU per event up to 0.2 µs off at 100k events. ok is false once
// the process is gone.
func procCPUNanos(pid int) (ns int64, ok bool) {
	n, err := procstat.CPUNanos(pid)
	if err != nil {
		return 0, false
	}
	return int64(n), true
}

// backendCPU is the CPU time, in seconds, of the Postgres backends with
// these pids, read before they close: the latency runs' inserting backends
// start after the first sample and exit before the second.
func backendCPU(pids []uint32) float64 {
	var ns int64
	for _, pid := range pids {
		if n, ok := procCPUNanos(int(pid)); ok {
			ns += n
		}
	}
	return float64(ns) / 1e9
}

func isWalsender(pid int) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Contains(string(b), "walsender")
}

// cpuUse is CPU seconds by role between two samples. A process that started
// after the first sample counts from zero; one that exited before the second
// is lost (the bench's processes live through the whole drain).
func cpuUse(before, after cpuSample) map[string]float64 {
	use := map[string]float64{}
	for pid, a := range after {
		use[a.role] += float64(a.ns-before[pid].ns) / 1e9
	}
	return use
}

// cpuRoles is the order the bench prints roles in.
var cpuRoles = []string{"relay", "walsender", "postgres", "nats-server", "inserts"}

// formatCPU renders CPU use as microseconds per event by role, and the cores
// all of them used on average over secs.
func formatCPU(use map[string]float64, events int, secs float64) string {
	var parts []string
	total := 0.0
	for _, r := range cpuRoles {
		if _, ok := use[r]; !ok && r == "inserts" {
			continue // a drain's backlog was written before it
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", r, use[r]/float64(events)*1e6))
		total += use[r]
	}
	out := fmt.Sprintf("%s µs/event; %.2f cores busy", strings.Join(parts, ", "), total/secs)
	if use["machine"] > 0 {
		out += fmt.Sprintf("; steal %.1f%%", 100*use["steal"]/use["machine"])
	}
	return out
}
