package testenv_test

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

func buildEchoer(t *testing.T) string {
	t.Helper()
	bin, err := testenv.BuildBinary("./internal/testenv/testdata/echoer", "echoer")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestProcessSignalAndWait(t *testing.T) {
	t.Parallel()
	p := testenv.StartProcess(t, buildEchoer(t), "a", "b")
	if err := p.WaitForOutput("ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(100 * time.Millisecond); !errors.Is(err, testenv.ErrTimeout) {
		t.Errorf("Wait on a running process: err = %v, want ErrTimeout", err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Errorf("exit code = %d, want 3", code)
	}
	out := p.Output()
	for _, want := range []string{"args: a b\n", "ready\n", "bye\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	file, err := os.ReadFile(p.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != out {
		t.Errorf("log file holds %q, Output() = %q", file, out)
	}
}

func TestProcessKill(t *testing.T) {
	t.Parallel()
	p := testenv.StartProcess(t, buildEchoer(t))
	if err := p.WaitForOutput("ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != -1 {
		t.Errorf("exit code after SIGKILL = %d, want -1", code)
	}
	if err := syscall.Kill(p.Pid(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Kill: %v", p.Pid(), err)
	}
	if err := p.WaitForOutput("never printed", time.Second); err == nil {
		t.Error("WaitForOutput succeeded for text the process never printed")
	}
}

func TestPoll(t *testing.T) {
	calls := 0
	err := testenv.Poll(200*time.Millisecond, func() (bool, error) {
		calls++
		return false, errors.New("not yet")
	})
	if !errors.Is(err, testenv.ErrTimeout) || !strings.Contains(err.Error(), "not yet") {
		t.Errorf("Poll error = %v, want ErrTimeout with the last error", err)
	}
	if calls < 2 {
		t.Errorf("cond called %d times, want several", calls)
	}
	n := 0
	if err := testenv.Poll(time.Second, func() (bool, error) { n++; return n == 3, nil }); err != nil {
		t.Errorf("Poll = %v, want nil", err)
	}
}

func TestFreePort(t *testing.T) {
	p, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if p <= 0 || p > 65535 {
		t.Errorf("FreePort() = %d", p)
	}
}
