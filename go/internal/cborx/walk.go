package cborx

import (
	"errors"
	"fmt"
	"slices"
)

// The hand-written part of decoding: the rules of ffi/envelope.cddl that fxamacker's
// DecOptions cannot express, each named where it is checked. Decode runs two passes:
//
//  1. fxamacker's Wellformed with Dec: RFC 8949 well-formedness, no trailing bytes, no
//     indefinite-length item anywhere, container counts bounded by the input, nesting as
//     fxamacker counts it.
//  2. One walk of the map (walker) for the rest. Each known value it finds is handed to
//     the caller's set function, which decodes it with fxamacker (Dec.Unmarshal): its
//     type, its range (a u32 fits, a time fits int64), UTF-8, a nested map's duplicate
//     keys.
//
// The walk goes value by value, not the whole map into a struct, because fxamacker's
// struct decoder matches text keys to field names, ignores negative keys and cannot
// hold an unknown key above math.MaxInt64, all of which the format must judge.

// The decode error kinds only the walk gives (see Kind for the others).
const (
	KindNotMap             = "not_map"
	KindUnsupportedVersion = "unsupported_version"
	KindMissingField       = "missing_field"
)

// Error is a rejection with its kind from the shared vocabulary. Callers turn it into
// their own error type (envelope.DecodeError).
type Error struct {
	Kind string
	Err  error
}

func (e *Error) Error() string { return e.Kind + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

func errorf(kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// AsError returns err as an *Error: itself if it is one, or classified with Kind.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: Kind(err), Err: err}
}

// CBOR major types, already shifted into the initial byte.
const (
	majorUint   = 0 << 5
	majorNegInt = 1 << 5
	majorBytes  = 2 << 5
	majorText   = 3 << 5
	majorMap    = 5 << 5
	majorArray  = 4 << 5
	majorTag    = 6 << 5
)

// Shape is the CBOR type a known key must hold.
type Shape uint8

// The shapes.
const (
	Uint    Shape = iota + 1 // major type 0
	Int                      // major type 0 or 1
	Text                     // major type 3
	Bytes                    // major type 2
	TextMap                  // map of text to text
	UintMap                  // map with unsigned keys, walked with DecodeNested
)

// matches reports whether an item of the given major type is what s asks for.
// Rule (wrong_type): a known value has its CBOR type exactly. fxamacker decodes null and
// undefined into any field as its zero value and looks through tags, so neither is left
// to it.
func (s Shape) matches(major byte) bool {
	switch s {
	case Uint:
		return major == majorUint
	case Int:
		return major == majorUint || major == majorNegInt
	case Text:
		return major == majorText
	case Bytes:
		return major == majorBytes
	default:
		return major == majorMap
	}
}

// walker is the second pass. It runs only on input fxamacker found well-formed with
// definite lengths, so a head never runs past the end and every length fits.
type walker struct {
	b   []byte
	off int
	// version is unsupported_version, if met; content is the first content error. The
	// walk goes on past both, since too_deep anywhere still comes first.
	version, content *Error
}

func (w *walker) head() (major byte, arg uint64) {
	ib := w.b[w.off]
	w.off++
	major, ai := ib&0xe0, ib&0x1f
	if ai < 24 {
		return major, uint64(ai)
	}
	n := 1 << (ai - 24)
	for _, x := range w.b[w.off : w.off+n] {
		arg = arg<<8 | uint64(x)
	}
	w.off += n
	return major, arg
}

func (w *walker) fail(err *Error) {
	if w.content == nil {
		w.content = err
	}
}

// skip steps over one item whose enclosing container is at nesting level depth.
// Rule (too_deep): every array, map and tag is a level, at most MaxDepth. fxamacker's
// MaxNestedLevels does not count the first tag of a chain, so a tag one level too deep
// gets past it and is caught here.
func (w *walker) skip(depth int) *Error {
	major, n := w.head()
	switch major {
	case majorBytes, majorText:
		w.off += int(n)
	case majorArray, majorMap, majorTag:
		if depth+1 > MaxDepth {
			return errorf(KindTooDeep, "more than %d levels at offset %d", MaxDepth, w.off)
		}
		switch major {
		case majorMap:
			n *= 2
		case majorTag:
			n = 1
		}
		for range n {
			if err := w.skip(depth + 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// walkMap walks the map at w.off, at nesting level depth, whose known keys are those of
// shapes, handing each known value's bytes to set. It returns a bitmask of the known keys
// present, or a well-formedness error; content errors go to w.content.
//
// Rules checked here: keys are unsigned integers (wrong_type; fxamacker matches text keys
// to field names and ignores negative ones); no key repeats, unknown keys above
// math.MaxInt64 included (duplicate_key; fxamacker never sees these maps whole); in the
// top-level map, a first key 0 holding a version other than 1 is unsupported_version
// whatever else is wrong, since a later version may redefine every other field.
func (w *walker) walkMap(shapes []Shape, depth int, top bool, set func(key uint64, val []byte) error) (uint64, *Error) {
	_, pairs := w.head()
	var present uint64
	var stack [8]uint64
	unknown := stack[:0]
	for range pairs {
		kstart := w.off
		kmajor, key := w.head()
		if kmajor != majorUint {
			w.fail(errorf(KindWrongType, "key of major type %d at offset %d", kmajor>>5, kstart))
			w.off = kstart
			if err := w.skip(depth); err != nil { // the key
				return 0, err
			}
			if err := w.skip(depth); err != nil { // its value
				return 0, err
			}
			continue
		}
		if key >= uint64(len(shapes)) {
			unknown = append(unknown, key)
			if err := w.skip(depth); err != nil {
				return 0, err
			}
			continue
		}
		first := present&(1<<key) == 0
		if !first {
			w.fail(errorf(KindDuplicateKey, "key %d at offset %d", key, kstart))
		}
		present |= 1 << key
		vstart := w.off
		vmajor, v := w.head()
		if top && key == 0 && first && vmajor == majorUint && v != 1 && w.version == nil {
			w.version = errorf(KindUnsupportedVersion, "version %d", v)
		}
		shape := shapes[key]
		ok := shape.matches(vmajor)
		if !ok {
			w.fail(errorf(KindWrongType, "key %d holds major type %d at offset %d", key, vmajor>>5, vstart))
		}
		w.off = vstart
		if ok && shape == TextMap {
			w.checkTextMap()
		}
		if err := w.skip(depth); err != nil {
			return 0, err
		}
		if ok && !(top && key == 0) {
			if err := set(key, w.b[vstart:w.off]); err != nil {
				w.fail(AsError(err))
			}
		}
	}
	if len(unknown) > 1 {
		slices.Sort(unknown)
		for i := 1; i < len(unknown); i++ {
			if unknown[i] == unknown[i-1] {
				w.fail(errorf(KindDuplicateKey, "unknown key %d", unknown[i]))
				break
			}
		}
	}
	return present, nil
}

// checkTextMap checks, without moving w.off, that every key and value of the map at
// w.off is text. Rule (wrong_type): fxamacker would decode a null value as "".
func (w *walker) checkTextMap() {
	start := w.off
	defer func() { w.off = start }()
	_, pairs := w.head()
	for range pairs * 2 {
		istart := w.off
		major, n := w.head()
		if major != majorText {
			w.fail(errorf(KindWrongType, "map entry of major type %d at offset %d", major>>5, istart))
			return
		}
		w.off += int(n)
	}
}

// Decode checks b, a whole versioned map (key 0 holds the major version, 1), against
// the format's rules and hands set the bytes of each known value but key 0, which it
// judges itself. It returns a bitmask of the known keys present. Errors are *Error, in
// this order of precedence: well-formedness, not_map, unsupported_version, a content
// error (wrong_type, duplicate_key, invalid_utf8, or set's), missing_field for key 0.
func Decode(b []byte, shapes []Shape, set func(key uint64, val []byte) error) (uint64, error) {
	if err := Dec.Wellformed(b); err != nil {
		return 0, AsError(err)
	}
	w := walker{b: b}
	// Depth first, over the whole input, so that too_deep precedes not_map.
	if err := w.skip(0); err != nil {
		return 0, err
	}
	w.off = 0
	if major := b[0] & 0xe0; major != majorMap {
		return 0, errorf(KindNotMap, "top level is major type %d", major>>5)
	}
	present, err := w.walkMap(shapes, 1, true, set)
	switch {
	case err != nil:
		return 0, err
	case w.version != nil:
		return 0, w.version
	case w.content != nil:
		return 0, w.content
	case present&1 == 0:
		return 0, errorf(KindMissingField, "v (key 0)")
	}
	return present, nil
}

// DecodeNested walks val, a map of shape UintMap that Decode handed to set, at nesting
// level depth, handing set the bytes of each known value. Decode has checked its
// well-formedness and depth already.
func DecodeNested(val []byte, depth int, shapes []Shape, set func(key uint64, val []byte) error) (uint64, error) {
	w := walker{b: val}
	present, err := w.walkMap(shapes, depth, false, set)
	switch {
	case err != nil:
		return 0, err
	case w.content != nil:
		return 0, w.content
	}
	return present, nil
}
