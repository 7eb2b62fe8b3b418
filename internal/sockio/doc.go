// Package sockio wraps a socket so that its reads and writes are made as
// raw system calls, outside the Go scheduler's system-call state.
//
// Go sockets are non-blocking: a read or write returns at once, with data or
// EAGAIN, and the net package then waits for the socket in its poller. Yet
// it makes each call through syscall.Syscall, which marks the goroutine as
// in a system call. With one P (the relay's GOMAXPROCS) the runtime's
// monitor thread, sysmon, is woken by the first such call after the process
// idled, polls every 20 µs while the P is busy, and hands the P to another
// thread when a call spans one of its ticks. On a VM where waking a thread
// costs microseconds, that was 12% of the relay's CPU in a drain
// (docs/performance.md, "Socket calls outside the scheduler"). A call that
// cannot block has no need of it: here each is made with syscall.RawSyscall
// inside the net package's own syscall.RawConn, which still waits in the
// poller on EAGAIN and keeps the connection's deadlines and its close.
package sockio

import "net"

// Wrap returns c with reads and writes made as raw system calls, or c itself
// when it is not a socket of the net package, or not on Linux.
func Wrap(c net.Conn) net.Conn { return wrap(c) }
