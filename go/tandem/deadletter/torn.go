package deadletter

import (
	"errors"
	"fmt"

	"github.com/tandemrt/tandem/go/internal/cborx"
)

// Telling a torn last record from a corrupt length, in time linear in the tail.

// CBOR major types in an initial byte, besides majorMap (record.go).
const (
	majorUint   = 0 << 5
	majorNegInt = 1 << 5
	majorBytes  = 2 << 5
	majorText   = 3 << 5
)

// checkTornTail reports whether tail, the bytes after the last complete record, can be
// what a crash in the middle of one write leaves: a proper prefix of a single record.
// Every record starts with a definite-length map head and key 0 holding 1.
//
// A corrupt length in the middle of the file also makes the last item run to the end,
// and skipping it would hide (and OpenFile would truncate) the good records it swallowed.
// So a tail in which a later offset starts what looks like a complete record
// (recordShaped) is corruption. The test there is the record's leading known fields, at
// most ten heads whatever the record's size, never a decode of the whole record: decoding
// from every offset made a megabyte of crafted payload in a torn record take seconds.
// It errs towards corruption, which stops the reader with an error; a torn tail taken for
// corruption by mistake needs a payload holding a record's fields, byte for byte.
func checkTornTail(tail []byte) error {
	if len(tail) == 0 {
		return nil
	}
	if !recordPrefix(tail) {
		return errors.New("incomplete item that does not start like a record")
	}
	for i := 1; i < len(tail); i++ {
		if tail[i]&0xe0 == majorMap && recordShaped(tail[i:]) {
			return fmt.Errorf("incomplete item followed by a complete record at offset +%d: a corrupt length, not a torn write", i)
		}
	}
	return nil
}

// recordPrefix reports whether b, an item cut short, can start a record: a definite
// map head, then key 0 and the value 1, as far as b goes.
func recordPrefix(b []byte) bool {
	if b[0]&0xe0 != majorMap || b[0]&0x1f > 27 {
		return false
	}
	_, _, off, ok := readHead(b, 0)
	if !ok {
		return true // cut inside the map head
	}
	rest := b[off:]
	return (len(rest) < 1 || rest[0] == keyV) && (len(rest) < 2 || rest[1] == recordVersion)
}

// recordShaped reports whether b starts with what a record writer lays down first, whole:
// a definite map head; key 0 holding 1; then known keys (1 to 9), none twice, each holding
// the CBOR type the format gives it and ending within b; up to the end of the map or its
// first unknown key (a later minor version's, which canonical order sorts after every
// known one); with the required reason (1) and time (8) among them. Since no known key
// may repeat, it reads at most ten pairs of heads, skipping string contents by their
// lengths.
func recordShaped(b []byte) bool {
	major, pairs, off, ok := readHead(b, 0)
	if !ok || major != majorMap {
		return false
	}
	var present uint16
	for p := uint64(0); p < pairs; p++ {
		var kmajor byte
		var key uint64
		if kmajor, key, off, ok = readHead(b, off); !ok || kmajor != majorUint {
			return false
		}
		if key >= uint64(len(recordShapes)) {
			break
		}
		if present&(1<<key) != 0 || (p == 0 && key != keyV) {
			return false
		}
		var vmajor byte
		var v uint64
		if vmajor, v, off, ok = readHead(b, off); !ok || !shapeHolds(recordShapes[key], vmajor) {
			return false
		}
		switch {
		case key == keyV && v != recordVersion:
			return false
		case vmajor == majorBytes || vmajor == majorText:
			if v > uint64(len(b)-off) {
				return false
			}
			off += int(v)
		}
		present |= 1 << key
	}
	const required = 1<<keyV | 1<<keyReason | 1<<keyTime
	return present&required == required
}

// shapeHolds reports whether an item of the given major type is what shape asks for.
func shapeHolds(shape cborx.Shape, major byte) bool {
	switch shape {
	case cborx.Uint:
		return major == majorUint
	case cborx.Int:
		return major == majorUint || major == majorNegInt
	case cborx.Text:
		return major == majorText
	case cborx.Bytes:
		return major == majorBytes
	}
	return false
}

// readHead reads the CBOR head at b[off:]: its major type, its argument and the offset
// just past it. ok is false when the head is cut short by the end of b, or its additional
// information is reserved (28 to 30) or indefinite (31), which no record holds.
func readHead(b []byte, off int) (major byte, arg uint64, next int, ok bool) {
	if off >= len(b) {
		return 0, 0, off, false
	}
	ib := b[off]
	major, ai := ib&0xe0, ib&0x1f
	off++
	switch {
	case ai < 24:
		return major, uint64(ai), off, true
	case ai > 27:
		return major, 0, off, false
	}
	n := 1 << (ai - 24)
	if n > len(b)-off {
		return major, 0, off, false
	}
	for _, x := range b[off : off+n] {
		arg = arg<<8 | uint64(x)
	}
	return major, arg, off + n, true
}
