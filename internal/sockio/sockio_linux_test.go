package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/trace"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	xtrace "golang.org/x/exp/trace"
)

// Each behaviour is checked on the net package's own socket and on the
// wrapped one: the wrap must change how the calls are made, never what a
// caller sees.
var kinds = []struct {
	name string
	wrap func(net.Conn) net.Conn
}{
	{"net", func(c net.Conn) net.Conn { return c }},
	{"sockio", Wrap},
}

// pair returns two connected sockets of network ("tcp" or "unix"), the
// first one wrapped by wrap.
func pair(t *testing.T, network string, wrap func(net.Conn) net.Conn) (net.Conn, net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.FailNow()
	}
	w := wrap(c)
	t.Cleanup(func() { w.Close(); peer.Close() })
	return w, peer
}

func TestWrapMakesRawConn(t *testing.T) {
	c, _ := pair(t, "tcp", Wrap)
	if _, ok := c.(*conn); !ok {
		t.Fatalf("Wrap(TCP socket) = %T, want *sockio.conn", c)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe) = %T, want the pipe itself", got)
	}
}

// Many megabytes each way, more than the kernel buffers hold, so that
// writes find the socket full and reads find it empty, and both wait in the
// poller between raw calls.
func TestLargeTransfersBothWays(t *testing.T) {
	const size = 16 << 20
	want := make([]byte, size)
	rand.Read(want)
	for _, network := range []string{"tcp", "unix"} {
		for _, k := range kinds {
			t.Run(network+"/"+k.name, func(t *testing.T) {
				c, peer := pair(t, network, k.wrap)
				var wg sync.WaitGroup
				wg.Add(2)
				var gotByPeer, gotByC []byte
				go func() { // the peer echoes nothing: it reads all, then writes all
					defer wg.Done()
					time.Sleep(50 * time.Millisecond) // let c's writes fill the buffers
					gotByPeer = readN(t, peer, size)
					if _, err := peer.Write(want); err != nil {
						t.Error("peer write:", err)
					}
				}()
				go func() {
					defer wg.Done()
					n, err := c.Write(want)
					if n != size || err != nil {
						t.Errorf("Write = %d, %v; want %d, nil", n, err, size)
					}
					gotByC = readN(t, c, size) // in small reads, as pgx and nats.go read
				}()
				wg.Wait()
				if !bytes.Equal(gotByPeer, want) || !bytes.Equal(gotByC, want) {
					t.Fatal("the bytes read differ from the bytes written")
				}
			})
		}
	}
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	out := make([]byte, 0, n)
	buf := make([]byte, 8192)
	for len(out) < n {
		k, err := c.Read(buf)
		out = append(out, buf[:k]...)
		if err != nil {
			t.Errorf("read after %d bytes: %v", len(out), err)
			return out
		}
	}
	return out
}

func TestReadDeadline(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			c, _ := pair(t, "tcp", k.wrap)
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			n, err := c.Read(make([]byte, 10))
			checkTimeout(t, n, err)
			// A deadline in the past fails the read at once.
			c.SetReadDeadline(time.Now().Add(-time.Second))
			n, err = c.Read(make([]byte, 10))
			checkTimeout(t, n, err)
		})
	}
}

func TestWriteDeadline(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			c, _ := pair(t, "tcp", k.wrap) // the peer never reads
			big := make([]byte, 64<<20)    // first: touching it may take longer than the deadline
			for i := range big {
				big[i] = byte(i)
			}
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := c.Write(big)
			if n == 0 || n == len(big) {
				t.Errorf("wrote %d of %d bytes before the deadline; want some, not all", n, len(big))
			}
			if err == nil {
				t.Fatal("Write past its deadline returned no error")
			}
			checkTimeout(t, 0, err)
		})
	}
}

func checkTimeout(t *testing.T, n int, err error) {
	t.Helper()
	var ne net.Error
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %d, %v; want 0 and a timeout (os.ErrDeadlineExceeded, net.Error.Timeout)", n, err)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("%v is not a *net.OpError", err)
	}
}

func TestEOFAfterData(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			c, peer := pair(t, "tcp", k.wrap)
			peer.Write([]byte("last words"))
			peer.Close()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "last words" {
				t.Fatalf("ReadAll = %q, %v; want the data, then EOF", got, err)
			}
			n, err := c.Read(make([]byte, 10))
			if n != 0 || err != io.EOF {
				t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
			}
		})
	}
}

func TestReset(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			c, peer := pair(t, "tcp", k.wrap)
			peer.(*net.TCPConn).SetLinger(0) // close with a RST
			peer.Close()
			time.Sleep(20 * time.Millisecond)
			_, err := c.Read(make([]byte, 10))
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("Read after the peer's reset = %v; want ECONNRESET", err)
			}
			var op *net.OpError
			if !errors.As(err, &op) || op.Op != "read" {
				t.Fatalf("%v is not a read *net.OpError", err)
			}
			_, err = c.Write([]byte("x"))
			for i := 0; err == nil && i < 10; i++ { // the first write after a reset may be taken
				_, err = c.Write([]byte("x"))
			}
			if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("Write to a reset connection = %v; want EPIPE or ECONNRESET", err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			c, _ := pair(t, "tcp", k.wrap)
			// A read waiting in the poller returns when the socket is closed.
			done := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 10))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			c.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("waiting Read after Close = %v; want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a waiting Read did not return after Close")
			}
			if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after Close = %v; want net.ErrClosed", err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
			}
		})
	}
}

// The point of the package: the wrapped socket's reads and writes never put
// the goroutine into the scheduler's system-call state. The execution
// trace records every such entry; the net package's own socket is the
// control that shows the test can see them.
func TestNoSchedulerSyscalls(t *testing.T) {
	counts := map[string]int{}
	for _, k := range kinds {
		c, peer := pair(t, "tcp", k.wrap)
		go io.Copy(peer, peer) // echo
		var buf bytes.Buffer
		if err := trace.Start(&buf); err != nil {
			t.Fatal(err)
		}
		msg := []byte(strings.Repeat("m", 100))
		got := make([]byte, len(msg))
		for range 200 {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
		}
		trace.Stop()
		counts[k.name] = syscallsFrom(t, &buf, "sockio.TestNoSchedulerSyscalls")
	}
	if counts["net"] < 200 {
		t.Fatalf("the trace shows %d system calls from the net package's socket in 200 round trips; the test cannot see them", counts["net"])
	}
	if counts["sockio"] != 0 {
		t.Fatalf("the wrapped socket entered the scheduler's system-call state %d times in 200 round trips; want 0", counts["sockio"])
	}
}

// syscallsFrom counts the goroutine transitions into a system call whose
// stack passes through a function named fn.
func syscallsFrom(t *testing.T, r io.Reader, fn string) int {
	t.Helper()
	tr, err := xtrace.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind() != xtrace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != xtrace.ResourceGoroutine {
			continue
		}
		if _, to := st.Goroutine(); to != xtrace.GoSyscall {
			continue
		}
		for f := range st.Stack.Frames() {
			if strings.Contains(f.Func, fn) {
				n++
				break
			}
		}
	}
}

// Under -race (as make test runs), a write to memory before a socket write
// happens before a read of it after the peer's socket read, as the syscall
// package tells the race detector for its own calls. Without the wrapper's
// annotations the detector reports this test as a race.
func TestRaceSeesSocketOrder(t *testing.T) {
	a, b := pair(t, "tcp", Wrap)
	b = Wrap(b)
	var x int
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := io.ReadFull(b, make([]byte, 1)); err != nil {
			t.Error(err)
			return
		}
		if x != 42 {
			t.Errorf("x = %d after the socket read; want 42", x)
		}
	}()
	x = 42
	if _, err := a.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	<-done
}
