package testenv

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// TestProxyFreeze: a frozen link forwards nothing either way and resets
// nothing; a connection made while frozen waits; Thaw delivers what was
// held.
func TestProxyFreeze(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo server
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						c.Close()
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	p := StartProxy(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(msg string, wait time.Duration) (string, error) {
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		return r.ReadString('\n')
	}
	if got, err := roundTrip("a", 5*time.Second); err != nil || got != "a\n" {
		t.Fatalf("before the freeze: %q, %v", got, err)
	}
	p.Freeze()
	if got, err := roundTrip("b", time.Second); err == nil {
		t.Fatalf("a frozen link forwarded %q", got)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("a frozen link: %v, want a timeout (no reset)", err)
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("c\n"))
	_ = c2.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := bufio.NewReader(c2).ReadString('\n'); err == nil {
		t.Fatal("a connection made while frozen was forwarded")
	}
	p.Thaw()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "b\n" {
		t.Fatalf("after the thaw: %q, %v; want the held b", got, err)
	}
}
