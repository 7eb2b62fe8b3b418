package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// pollInterval is how often Poll re-checks a condition.
const pollInterval = 50 * time.Millisecond

// ErrTimeout is returned (wrapped) by Poll and the Wait methods when the
// deadline passes first.
var ErrTimeout = errors.New("timed out")

// Poll calls cond every 50ms until it reports true, and returns nil then. If
// timeout passes first it returns an error wrapping ErrTimeout and the last
// error cond returned. An error from cond does not stop the polling: it is
// taken as "not yet".
func Poll(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("%w after %v: %w", ErrTimeout, timeout, err)
			}
			return fmt.Errorf("%w after %v", ErrTimeout, timeout)
		}
		<-ticker.C
	}
}

// WaitFor polls cond like Poll and fails the test if it does not become true
// within timeout, naming what it waited for and the last error.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may take it before the caller binds it; servers here retry once
// with a new port when that happens on their first start.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailFile returns the last n lines of the file at path, or a note saying why
// it could not be read.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return TailLines(string(b), n)
}

// TailLines returns the last n lines of s.
func TailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
