// Command echoer is a stand-in for the relay in testenv's own tests: it
// prints its arguments and "ready", then waits for SIGTERM, on which it
// prints "bye" and exits with status 3.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	fmt.Println("args:", strings.Join(os.Args[1:], " "))
	fmt.Fprintln(os.Stderr, "ready")
	<-sigs
	fmt.Println("bye")
	os.Exit(3)
}
