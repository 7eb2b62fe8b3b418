package testenv

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a program started by Launch, typically the relay, with its
// stdout and stderr captured both to a file and in memory.
type Process struct {
	name    string
	logPath string
	proc    *child
	out     *SyncBuffer
	logf    *os.File
}

// SyncBuffer is a bytes.Buffer safe for one writer and many readers, for
// collecting the output or log of something a test runs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Launch starts cmd (set its Env and Dir as needed) with stdout and stderr
// going to the file at logPath, which is created or truncated, and to memory
// for Output. The process runs in its own process group and gets SIGKILL if
// the caller dies.
func Launch(cmd *exec.Cmd, logPath string) (*Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", cmd.Path, err)
	}
	p := &Process{name: filepath.Base(cmd.Path), logPath: logPath, out: &SyncBuffer{}, logf: logf}
	w := io.MultiWriter(logf, p.out)
	cmd.Stdout, cmd.Stderr = w, w
	// If the program leaves a child holding the output pipe, do not let
	// that child keep Wait from returning.
	cmd.WaitDelay = 2 * time.Second
	if p.proc, err = startChild(cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go func() {
		<-p.proc.done
		logf.Close()
	}()
	return p, nil
}

// Signal sends sig (a syscall.Signal such as syscall.SIGTERM) to the process.
func (p *Process) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal %s: %v is not a syscall.Signal", p.name, sig)
	}
	return p.proc.signal(s)
}

// Kill sends SIGKILL to the process and anything in its process group, and
// waits for the process to exit.
func (p *Process) Kill() error {
	if p.proc.exited() {
		return fmt.Errorf("kill %s: %w", p.name, os.ErrProcessDone)
	}
	if err := syscall.Kill(-p.proc.pid(), syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	_, err := p.proc.wait(30 * time.Second)
	return err
}

// Wait waits up to timeout for the process to exit and returns its exit
// code: -1 if a signal killed it. The error is non-nil only when the
// timeout passes first (wrapping ErrTimeout); the process keeps running.
func (p *Process) Wait(timeout time.Duration) (exitCode int, err error) {
	st, err := p.proc.wait(timeout)
	if err != nil {
		return 0, fmt.Errorf("wait for %s: %w", p.name, err)
	}
	return st.ExitCode(), nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.proc.exited() }

// WaitForOutput polls until the output contains substr, and fails early if
// the process exits without printing it.
func (p *Process) WaitForOutput(substr string, timeout time.Duration) error {
	err := Poll(timeout, func() (bool, error) {
		return strings.Contains(p.Output(), substr) || p.Exited(), nil
	})
	if strings.Contains(p.Output(), substr) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("%s exited", p.name)
	}
	return fmt.Errorf("wait for %q in the output of %s: %w; output:\n%s", substr, p.name, err, TailLines(p.Output(), 50))
}

// Output returns everything the process has written to stdout and stderr
// so far, interleaved as written.
func (p *Process) Output() string { return p.out.String() }

// Pid returns the process id.
func (p *Process) Pid() int { return p.proc.pid() }

// LogFile returns the path of the file holding the output.
func (p *Process) LogFile() string { return p.logPath }

// RelayReady reports whether the relay serving HTTP at addr (host:port)
// answers 200 on /readyz: it streams from its slot and can publish.
func RelayReady(addr string) (bool, error) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
