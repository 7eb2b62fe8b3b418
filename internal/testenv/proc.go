package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/procstat"
)

// child is a running child process started by this package: the exec.Cmd
// plus a channel closed once it has been reaped.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	state  *os.ProcessState
	waitEr error
}

// spawner runs functions on one OS thread that never exits. The kernel
// sends the parent-death signal when the thread that forked a child exits,
// not the process, and Go ends a thread when a goroutine locked to it
// returns; forking from this thread keeps children alive until the process
// dies.
var spawner struct {
	once sync.Once
	ch   chan func()
}

func onSpawnerThread(f func()) {
	spawner.once.Do(func() {
		spawner.ch = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawner.ch {
				f()
			}
		}()
	})
	done := make(chan struct{})
	spawner.ch <- func() { defer close(done); f() }
	<-done
}

// startChild starts cmd in its own process group, so a terminal's Ctrl-C
// reaches only the program that owns it, and with SIGKILL as its parent-death
// signal, so it does not outlive an aborted test binary. Go sets the death
// signal after switching credentials, so it survives SysProcAttr.Credential.
func startChild(cmd *exec.Cmd) (*child, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	var err error
	onSpawnerThread(func() { err = cmd.Start() })
	if err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.state, c.waitEr = cmd.ProcessState, err
		c.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// pid returns the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has exited and been reaped.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the child to exit and returns its state.
func (c *child) wait(timeout time.Duration) (*os.ProcessState, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-timer.C:
		return nil, fmt.Errorf("process %d did not exit: %w after %v", c.pid(), ErrTimeout, timeout)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, nil
}

// signal sends sig to the child unless it has already been reaped (after
// which its pid may belong to someone else).
func (c *child) signal(sig syscall.Signal) error {
	if c.exited() {
		return fmt.Errorf("send %v to process %d: %w", sig, c.pid(), os.ErrProcessDone)
	}
	if err := syscall.Kill(c.pid(), sig); err != nil {
		return fmt.Errorf("send %v to process %d: %w", sig, c.pid(), err)
	}
	return nil
}

// procID names a process by pid and start time, so a reused pid is not
// mistaken for the original process.
type procID struct {
	pid   int
	start uint64
}

// childrenOf lists the live children of pid.
func childrenOf(pid int) ([]procID, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []procID
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procstat.Read(p)
		if err != nil || st.PPID != pid || st.State == 'Z' {
			continue
		}
		out = append(out, procID{pid: p, start: st.StartTime})
	}
	return out, nil
}

// alive reports whether p still runs. A zombie counts as gone: it holds no
// memory, sockets or files, and may never be reaped if init does not reap.
func (p procID) alive() bool {
	st, err := procstat.Read(p.pid)
	if err != nil {
		return false
	}
	return st.StartTime == p.start && st.State != 'Z' && st.State != 'X'
}

// waitGone polls until none of procs is alive.
func waitGone(procs []procID, timeout time.Duration) error {
	return Poll(timeout, func() (bool, error) {
		for _, p := range procs {
			if p.alive() {
				return false, fmt.Errorf("process %d still running", p.pid)
			}
		}
		return true, nil
	})
}

// waitState polls until pid is in one of the given /proc states, for example
// 'T' (stopped by a signal).
func waitState(pid int, timeout time.Duration, states string) error {
	return Poll(timeout, func() (bool, error) {
		st, err := procstat.Read(pid)
		if err != nil {
			return false, err
		}
		if strings.IndexByte(states, st.State) < 0 {
			return false, fmt.Errorf("process %d is in state %c", pid, st.State)
		}
		return true, nil
	})
}

// killTree stops c so it cannot fork, lists its children, then SIGKILLs the
// children and c together and waits until all of them are gone.
func killTree(c *child, timeout time.Duration) error {
	if err := c.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	// SIGSTOP is delivered asynchronously; once stopped, no fork is in flight.
	if err := waitState(c.pid(), timeout, "Tt"); err != nil && !c.exited() {
		return fmt.Errorf("stop process %d before killing it: %w", c.pid(), err)
	}
	kids, err := childrenOf(c.pid())
	if err != nil {
		return err
	}
	for _, k := range kids {
		_ = syscall.Kill(k.pid, syscall.SIGKILL) // it may have exited already
	}
	if err := c.signal(syscall.SIGKILL); err != nil && !c.exited() {
		return err
	}
	if _, err := c.wait(timeout); err != nil {
		return err
	}
	if err := waitGone(kids, timeout); err != nil {
		return fmt.Errorf("wait for children of process %d to exit: %w", c.pid(), err)
	}
	return nil
}
