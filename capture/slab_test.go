package capture

import (
	"bytes"
	"testing"
)

// Each copy holds its own bytes, whatever is copied or appended after it,
// and a copy bigger than a quarter block is not in a block.
func TestSlabCopies(t *testing.T) {
	var s slab
	var got [][]byte
	var want [][]byte
	for i := range 3000 {
		b := bytes.Repeat([]byte{byte(i)}, i%97+1)
		if i%1000 == 999 {
			b = bytes.Repeat([]byte{byte(i)}, slabSize/4+1)
		}
		c := s.copy(b)
		_ = append(c, 0xff) // must not write into the next copy
		b[0] ^= 0xff        // the caller's buffer is reused
		got, want = append(got, c), append(want, append(b[:0:0], b...))
		want[i][0] ^= 0xff
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("copy %d = %x, want %x", i, got[i], want[i])
		}
		if len(got[i]) <= slabSize/4 && cap(got[i]) != len(got[i]) {
			t.Fatalf("copy %d has capacity %d for %d bytes: an append would write into the next", i, cap(got[i]), len(got[i]))
		}
	}
}
