// Package procstat reads /proc/<pid>/stat, the kernel's one-line summary of
// a process (proc(5)), for the tests and the bench that watch the processes
// they start: whether one still runs, its parent, the CPU time it used.
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
