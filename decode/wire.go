package decode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error about a message that is truncated,
// has impossible lengths or carries bytes the protocol does not allow. It
// means the stream is corrupt or is not pgoutput protocol version 1.
var ErrMalformed = errors.New("malformed pgoutput message")

// reader walks one pgoutput message. A failed read marks the reader bad and
// moves it to the end, so every later read fails too and returns zero values:
// parsers then read like the protocol tables and check once, in done.
type reader struct {
	b      []byte
	off    int
	bad    bool
	failAt int
}

func (r *reader) fail() {
	if !r.bad {
		r.bad = true
		r.failAt = r.off
	}
	r.off = len(r.b)
}

func (r *reader) u8() byte {
	if r.off >= len(r.b) {
		r.fail()
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) u16() uint16 {
	if len(r.b)-r.off < 2 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b)-r.off < 4 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b)-r.off < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

// count reads an Int16 or Int32 count/length field: the protocol declares
// them signed, and a negative one can only come from a corrupt stream.
func (r *reader) count16() int {
	n := int16(r.u16())
	if n < 0 {
		r.fail()
		return 0
	}
	return int(n)
}

func (r *reader) count32() int {
	n := int32(r.u32())
	if n < 0 {
		r.fail()
		return 0
	}
	return int(n)
}

// cstring returns a NUL-terminated string without the NUL, aliasing the
// message.
func (r *reader) cstring() []byte {
	i := bytes.IndexByte(r.b[r.off:], 0)
	if i < 0 {
		r.fail()
		return nil
	}
	s := r.b[r.off : r.off+i : r.off+i]
	r.off += i + 1
	return s
}

// bytes returns the next n bytes, aliasing the message. The capacity is
// clipped so that an append by a consumer cannot overwrite the bytes that
// follow in the caller's buffer.
func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.b)-r.off {
		r.fail()
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

// done reports whether the whole message was read, and nothing more.
// Trailing bytes are an error: they mean the framing or the protocol version
// is not what the parser assumed.
func (r *reader) done(what string) error {
	if r.bad {
		return fmt.Errorf("%w: %s message of %d bytes is truncated or has a bad length at byte %d",
			ErrMalformed, what, len(r.b), r.failAt)
	}
	if r.off != len(r.b) {
		return fmt.Errorf("%w: %s message has %d unexpected trailing bytes",
			ErrMalformed, what, len(r.b)-r.off)
	}
	return nil
}

// Column kinds in TupleData.
const (
	colNull      = 'n'
	colUnchanged = 'u' // unchanged TOASTed value: its bytes are not sent
	colText      = 't'
	colBinary    = 'b'
	// colMissing is no wire kind: it stands for a configured column the
	// relation lacks. It reads as empty and adds no reason of its own, the
	// mapping's reason covers it.
	colMissing = 0
)

// value is one TupleData column. data aliases the message.
type value struct {
	kind byte
	data []byte
}

// tuple reads TupleData into dst[:0], growing it only when a relation has
// more columns than any seen before, so steady-state decoding does not
// allocate.
func (r *reader) tuple(dst []value) []value {
	n := r.count16()
	dst = dst[:0]
	for i := 0; i < n && !r.bad; i++ {
		v := value{kind: r.u8()}
		switch v.kind {
		case colNull, colUnchanged:
		case colText, colBinary:
			v.data = r.bytes(r.count32())
		default:
			r.fail()
		}
		dst = append(dst, v)
	}
	return dst
}

// skipTuple validates TupleData without keeping it.
func (r *reader) skipTuple() {
	n := r.count16()
	for i := 0; i < n && !r.bad; i++ {
		switch r.u8() {
		case colNull, colUnchanged:
		case colText, colBinary:
			r.bytes(r.count32())
		default:
			r.fail()
		}
	}
}
