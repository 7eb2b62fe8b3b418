package sink

import (
	"runtime/debug"
	"strconv"
	_ "unsafe" // for go:linkname

	"github.com/nats-io/nats.go"
)

// The sink writes a message's header block itself, straight into NATS's
// wire form, and hands it to the function nats.go's PublishMsg ends in.
// PublishMsg encodes a nats.Header map instead: it walks the map twice (to
// size it, then to write it) and runs every value through a
// strings.Replacer, which was the largest part of the relay's own CPU per
// event (docs/performance.md, "Headers written once"). nats.go has no call
// that takes headers already encoded.
//
// natsPublish is nats.go's unexported (*Conn).publish: it checks the
// subject and the reply, then writes "HPUB subject [reply] hdrlen total",
// hdr and data under the connection's lock, exactly as PublishMsg does
// after encoding. An unexported signature can change in any release, and a
// wrong one would not fail to link, so TestLinkedNATSVersion fails when
// go.mod names a nats.go other than linkedNATS, the version whose publish
// was read.
//
//go:linkname natsPublish github.com/nats-io/nats%2ego.(*Conn).publish
func natsPublish(nc *nats.Conn, subj, reply string, validateReply bool, hdr, data []byte) error

// linkedNATS is the nats.go version whose (*Conn).publish natsPublish
// matches.
const linkedNATS = "v1.56.0"

// rawHeaders is whether send may call natsPublish. A binary built with
// another nats.go (go.mod changed without running the tests, or a replace)
// sends through PublishMsg instead. A test binary records no dependencies;
// there TestLinkedNATSVersion checks go.mod.
var rawHeaders = linkedNATSIs(debug.ReadBuildInfo())

func linkedNATSIs(bi *debug.BuildInfo, ok bool) bool {
	if !ok {
		return false
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/nats-io/nats.go" {
			return d.Version == linkedNATS && d.Replace == nil
		}
	}
	return len(bi.Deps) == 0 // a test binary
}

// headerLeads are what comes before each value of baseHeaders in the
// header block: the line ending of the one before (or "NATS/1.0" for the
// first), the key and ": ". Written as one piece each, the block is 9
// appends of constants and 9 of values, not 37 small ones.
var headerLeads = func() (leads [len(baseHeaders)]string) {
	for i, k := range baseHeaders {
		leads[i] = "\r\n" + k + ": "
	}
	leads[0] = "NATS/1.0" + leads[0]
	return leads
}()

// appendHeaders appends the header block of the base headers, with values
// vals (in baseHeaders order) but for the two numbers, lastSeq
// (Nats-Expected-Last-Sequence) and txSeq (Outbox-Tx-Seq), as nats.go would
// encode them: "NATS/1.0", a "Key: value" line for each, and a blank line.
// The values are representable (see Publish), so nats.go would send them
// as they are.
func appendHeaders(b []byte, vals *[len(baseHeaders)][]string, lastSeq uint64, txSeq uint32) []byte {
	for i, lead := range &headerLeads {
		b = append(b, lead...)
		switch i {
		case hdrExpectedSeq:
			b = strconv.AppendUint(b, lastSeq, 10)
		case hdrTxSeq:
			b = strconv.AppendUint(b, uint64(txSeq), 10)
		default:
			b = append(b, vals[i][0]...)
		}
	}
	return append(b, "\r\n\r\n"...)
}
