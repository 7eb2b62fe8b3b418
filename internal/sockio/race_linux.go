//go:build race

package sockio

import (
	"runtime"
	"unsafe"
)

// ioSync is what the race detector sees a write to a socket happen before a
// read from one through: the syscall package's own annotations, which raw
// calls skip.
var ioSync int64

// raceRead tells the race detector that a read filled p.
func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
	runtime.RaceAcquire(unsafe.Pointer(&ioSync))
}

// raceWrite tells the race detector that a write is about to read p.
func raceWrite(p []byte) {
	runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync))
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}
