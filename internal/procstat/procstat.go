// Package procstat reads /proc/<pid>/stat, the kernel's one-line summary of
// a process (proc(5)), for the tests and the bench that watch the processes
// they start: whether one still runs, its parent, the CPU time it used. For
// CPU time finer than Stat's clock ticks, CPUNanos reads each thread's
// schedstat.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Stat is the part of /proc/<pid>/stat this module uses.
type Stat struct {
	State     byte   // R running, S sleeping, T stopped, Z zombie, ...
	PPID      int    // the parent's pid
	UTime     uint64 // CPU time in user mode, in clock ticks
	STime     uint64 // CPU time in kernel mode, in clock ticks
	StartTime uint64 // when the process started, in clock ticks after boot
}

// TicksPerSecond is the clock tick of UTime and STime (USER_HZ, 100 on
// every Linux architecture Go supports).
const TicksPerSecond = 100

// Read reads and parses /proc/<pid>/stat.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	st, err := Parse(b)
	if err != nil {
		return Stat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// Parse parses the contents of a /proc/<pid>/stat file. The command name is
// in parentheses and may itself contain spaces and parentheses, so fields
// are counted from the last ')'.
func Parse(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errors.New("no ')' after the command name")
	}
	// f[0] is field 3 of proc(5) (state), f[1] field 4 (ppid), f[11] and
	// f[12] fields 14 and 15 (utime, stime), f[19] field 22 (starttime).
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("%d fields after the command name, want at least 20", len(f))
	}
	var st Stat
	var err error
	st.State = f[0][0]
	if st.PPID, err = strconv.Atoi(string(f[1])); err != nil {
		return Stat{}, fmt.Errorf("ppid: %w", err)
	}
	if st.UTime, err = strconv.ParseUint(string(f[11]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("utime: %w", err)
	}
	if st.STime, err = strconv.ParseUint(string(f[12]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("stime: %w", err)
	}
	if st.StartTime, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("starttime: %w", err)
	}
	return st, nil
}

// CPUNanos is the CPU time, in nanoseconds, of the threads of process pid
// that still run: the sum of the first field of /proc/<pid>/task/*/schedstat
// (the kernel's own count, not sampled by ticks). Stat's UTime and STime are
// the same time rounded down to 10 ms each, which over a drain of 100k events
// is up to 0.2 µs per event. Threads that ended are not counted, as they are
// in Stat: use it on processes whose threads live as long as they do (Go
// programs, Postgres backends).
func CPUNanos(pid int) (uint64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended since ReadDir
		}
		if err != nil {
			return 0, err
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			return 0, fmt.Errorf("%s/%s/schedstat is empty", dir, t.Name())
		}
		ns, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, t.Name(), err)
		}
		sum += ns
	}
	return sum, nil
}
