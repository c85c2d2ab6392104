// Package abi binds the C ABI of ffi/tandem.h. Exactly one file per link mode knows the mode
// (abi_cgo.go for cgo); this file holds what both share: the Go mirrors of the C structs, the
// status codes and the errors.
//
// The structs below have the memory layout of their C counterparts (checked by
// TestLayoutMatchesHeader), so both modes pass pointers to them straight to the library.
package abi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Version is the ABI version this package was built against (TANDEM_ABI_VERSION).
const Version uint32 = 6

// expectedVersion is what Load requires of the library; a variable so tests can pretend to
// be built against another version.
var expectedVersion = Version

// Status codes of ffi/tandem.h.
const (
	statusOK          int32 = 0
	statusInvalidArg  int32 = 1
	statusABIMismatch int32 = 2
	statusState       int32 = 3
	statusPanic       int32 = 4
	statusIO          int32 = 5
	statusInit        int32 = 6
	statusTooSmall    int32 = 7
)

// Descriptor kinds and outcomes of ffi/tandem.h.
const (
	SQEEvent          uint32 = 1
	SQERelease        uint32 = 2
	SQEReply          uint32 = 3
	SQECancel         uint32 = 4
	OutcomeAck        uint32 = 0
	OutcomeRetry      uint32 = 1
	OutcomeTerm       uint32 = 2
	OutcomeInProgress uint32 = 3
	CQEEmit           uint32 = 4
	CQELog            uint32 = 5
	CQECall           uint32 = 6
	CQECallCancel     uint32 = 7
	NoSlot            uint32 = ^uint32(0)
)

// Config mirrors tandem_config.
type Config struct {
	ABIVersion  uint32
	Workers     uint32
	SQCapacity  uint32
	CQCapacity  uint32
	ReqSlotSize uint32
	ReqSlots    uint32
	RepSlotSize uint32
	RepSlots    uint32
	SpinNs      uint64
}

// Layout mirrors tandem_layout. Base points into memory the runtime owns.
type Layout struct {
	Base        unsafe.Pointer
	Size        uint64
	SQHeader    uint64
	SQCells     uint64
	CQHeader    uint64
	CQCells     uint64
	ReqArena    uint64
	RepArena    uint64
	ReqStride   uint64
	RepStride   uint64
	SQCapacity  uint32
	CQCapacity  uint32
	ReqSlotSize uint32
	ReqSlots    uint32
	RepSlotSize uint32
	RepSlots    uint32
	WakeRustFd  int32
	WakeGoFd    int32
}

// Stats mirrors tandem_stats.
type Stats struct {
	Received        uint64
	Completed       uint64
	RequestsHeld    uint64
	RepliesLent     uint64
	Releases        uint64
	Violations      uint64
	Parks           uint64
	GoWakeups       uint64
	Panics          uint64
	Emitted         uint64
	LocalDispatched uint64
	LocalAcked      uint64
	LocalForwarded  uint64
	SQDepth         uint64
	CQDepth         uint64
	Handovers       uint64
	TaskWakes       uint64
	Rescues         uint64
	Calls           uint64
	CallsPending    uint64
	CallRepliesHeld uint64
	// Runs is events run on their submitter's thread by Run, past the submission ring
	// (counted in Received too).
	Runs uint64
}

// Errors returned by the bindings; the public package maps them to its own sentinels.
var (
	// ErrABIMismatch: the library implements another ABI version than this build.
	ErrABIMismatch = errors.New("ABI version mismatch")
	// ErrInit: a handler's init or warm-up failed.
	ErrInit = errors.New("handler failed to start")
	// ErrState: the call does not fit the runtime's state.
	ErrState = errors.New("wrong runtime state")
	// ErrInvalidArg: a value was rejected by the library.
	ErrInvalidArg = errors.New("invalid argument")
	// ErrPanic: a Rust panic was caught at the boundary.
	ErrPanic = errors.New("rust panic at the boundary")
	// ErrIO: the operating system refused a resource.
	ErrIO = errors.New("operating system error")
	// ErrTooSmall: an output buffer was too small.
	ErrTooSmall = errors.New("buffer too small")
)

// Errors of loading a library (purego mode).
var (
	// ErrLibraryNotFound: no library at the path, or dlopen refused it.
	ErrLibraryNotFound = errors.New("tandem library not found")
	// ErrMissingSymbol: the library lacks an export of this ABI.
	ErrMissingSymbol = errors.New("tandem library lacks an export")
)

// rebuild is what every error about a library of another version advises: the Go package and
// the Rust crate come from one module version, and a build of both from it agrees.
const rebuild = "rebuild the Rust library and the Go binary together from one tandem version: tandem build in your project, ./build.sh in a tandem clone"

// LibraryEnv is the environment variable naming the library file in the purego mode.
const LibraryEnv = "TANDEM_LIB"

// LibraryFile is the file name of the cdylib ./build.sh builds.
const LibraryFile = "libtandem_native.so"

// libraryFile is the cdylib a purego binary looks for beside itself: LibraryFile, or the
// user's handler crate's, set at link time by `tandem build -purego`
// (-X github.com/tandemrt/tandem/go/internal/abi.libraryFile=lib<crate>.so).
var libraryFile = LibraryFile

// LibraryPath picks the library file: the configured path, else $TANDEM_LIB, else the
// library file beside the executable (libtandem_native.so unless the build named another).
func LibraryPath(configured string) string {
	if configured != "" {
		return configured
	}
	if p := os.Getenv(LibraryEnv); p != "" {
		return p
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Join(filepath.Dir(exe), libraryFile)
	}
	return libraryFile
}

// LoadError says which library file failed to load, why, and what to do.
type LoadError struct {
	Path   string
	Symbol string // the missing export, with ErrMissingSymbol
	Err    error
	Hint   string
}

func (e *LoadError) Error() string {
	msg := fmt.Sprintf("loading %s: %v", e.Path, e.Err)
	if e.Symbol != "" {
		msg += " " + e.Symbol
	}
	if e.Hint != "" {
		msg += ": " + e.Hint
	}
	return msg
}

// Unwrap returns the sentinel.
func (e *LoadError) Unwrap() error { return e.Err }

// Error is a failed call: which export, its status, and the library's message.
type Error struct {
	Call    string
	Status  int32
	Message string
	kind    error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: %v (status %d)", e.Call, e.kind, e.Status)
	}
	return fmt.Sprintf("%s: %s", e.Call, e.Message)
}

// Unwrap returns the sentinel matching the status.
func (e *Error) Unwrap() error { return e.kind }

func statusError(call string, st int32, message string) error {
	if st == statusOK {
		return nil
	}
	kind := map[int32]error{
		statusInvalidArg:  ErrInvalidArg,
		statusABIMismatch: ErrABIMismatch,
		statusState:       ErrState,
		statusPanic:       ErrPanic,
		statusIO:          ErrIO,
		statusInit:        ErrInit,
		statusTooSmall:    ErrTooSmall,
	}[st]
	if kind == nil {
		kind = fmt.Errorf("unknown status %d", st)
	}
	return &Error{Call: call, Status: st, Message: message, kind: kind}
}

// calls counts every call into the library, so benchmarks can report FFI calls per event.
var calls atomic.Uint64

// Calls returns how many calls into the library this process has made, kicks aside (Kick).
func Calls() uint64 { return calls.Load() }

// Library is a loaded tandem library: in the cgo mode the one the binary links, in the
// purego mode a cdylib opened by Load. A Library is never unloaded; it is safe for
// concurrent use.
type Library struct {
	path string
	impl *library // the mode's bindings
}

// Path is the library's file ("" in the cgo mode: it is part of the binary).
func (l *Library) Path() string { return l.path }

// Handle is a live runtime in a library: an opaque pointer owned by the caller until Free,
// and the library that made it, whose exports every call on it goes through.
type Handle struct {
	p   unsafe.Pointer
	lib *Library
}

// CheckVersion compares the library's ABI version with this build's.
func (l *Library) CheckVersion() error {
	calls.Add(1)
	got := abiVersion(l)
	if got != expectedVersion {
		return &Error{
			Call:    "tandem_abi_version",
			Status:  statusABIMismatch,
			Message: fmt.Sprintf("library implements ABI version %d, this build needs %d: %s", got, expectedVersion, rebuild),
			kind:    ErrABIMismatch,
		}
	}
	return nil
}

// call runs one export and, on failure, reads the library's message for it. The message is
// thread-local in the library, so the goroutine stays on one OS thread for both calls.
func call(lib *Library, name string, f func() int32) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	calls.Add(1)
	st := f()
	if st == statusOK {
		return nil
	}
	return statusError(name, st, lastError(lib))
}

// Create makes a runtime in lib; the caller owns the handle until Free.
func Create(lib *Library, cfg *Config) (Handle, Layout, error) {
	h := Handle{lib: lib}
	var l Layout
	cfg.ABIVersion = expectedVersion
	if err := call(lib, "tandem_runtime_create", func() int32 { return create(lib, cfg, &h.p, &l) }); err != nil {
		return Handle{}, Layout{}, err
	}
	return h, l, nil
}

// Start starts tokio, initialises and warms every handler, then starts the poller.
func Start(h Handle) error {
	return call(h.lib, "tandem_runtime_start", func() int32 { return start(h) })
}

// Shutdown drains, cancels after grace, and stops the runtime's threads.
func Shutdown(h Handle, graceNs uint64) error {
	return call(h.lib, "tandem_runtime_shutdown", func() int32 { return shutdown(h, graceNs) })
}

// ReadStats returns the runtime's counters.
func ReadStats(h Handle) (Stats, error) {
	var s Stats
	err := call(h.lib, "tandem_runtime_stats", func() int32 { return stats(h, &s) })
	return s, err
}

// EventTypes returns the event types the library registered handlers for.
func EventTypes(h Handle) ([]string, error) {
	buf := make([]byte, 4096)
	for {
		var n uintptr
		err := call(h.lib, "tandem_event_types", func() int32 {
			var st int32
			n, st = eventTypes(h, buf)
			return st
		})
		if errors.Is(err, ErrTooSmall) {
			buf = make([]byte, n)
			continue
		}
		if err != nil {
			return nil, err
		}
		var out []string
		for _, t := range strings.Split(string(buf[:n]), "\n") {
			if t != "" {
				out = append(out, t)
			}
		}
		return out, nil
	}
}

// SetLogLevel sets the least severe Rust log level lib forwards (0 trace .. 4 error, 5 none).
func (l *Library) SetLogLevel(level uint32) {
	calls.Add(1)
	setLogLevel(l, level)
}

// LocalRoute is an event type whose emitted events stay in Rust, and the registered type of
// the Rust handler they go to ("" or Type: the handler registered under Type itself).
type LocalRoute struct {
	Type, Handler string
}

// SetLocalRoutes replaces the set of event types whose emitted events stay in Rust: one line
// per route, "type" or "type\thandler" (tandem_set_local_routes). Callable again while
// running; the last call wins.
func SetLocalRoutes(h Handle, routes []LocalRoute) error {
	var buf []byte
	for i, r := range routes {
		if i > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, r.Type...)
		if r.Handler != "" && r.Handler != r.Type {
			buf = append(buf, '\t')
			buf = append(buf, r.Handler...)
		}
	}
	return call(h.lib, "tandem_set_local_routes", func() int32 { return setLocalRoutes(h, buf) })
}

// Free releases the runtime, its shared region and its eventfds.
func Free(h Handle) {
	calls.Add(1)
	free(h)
}

// Offsets in tandem_desc and tandem_ring_header, shared with go/internal/ring and checked
// against the header by TestLayoutMatchesHeader.
const (
	DescSize       uintptr = 64
	DescSeq        uintptr = 0
	DescToken      uintptr = 8
	DescKind       uintptr = 16
	DescSlot       uintptr = 20
	DescLen        uintptr = 24
	DescFlags      uintptr = 28
	DescReplySlot  uintptr = 32
	DescReplyLen   uintptr = 36
	DescStartedNs  uintptr = 40
	DescFinishedNs uintptr = 48
	DescAux        uintptr = 56
	RingHeaderSize uintptr = 192
	RingTail       uintptr = 0
	RingHead       uintptr = 64
	RingParked     uintptr = 128
	RingHungry     uintptr = 132
)

// Offsets in tandem_delivery, the header at the start of every request slot: the facts of
// one delivery (its deadline and number), which Go writes before each publish, and the index
// of the envelope's fields (unchecked.Fields), which Go writes with the envelope. The envelope
// follows at DeliverySize and is never rewritten between deliveries.
const (
	DeliverySize       uintptr = 192
	DeliveryDeadlineNs uintptr = 0 // uint64, Unix ns; 0: none
	DeliveryAttempt    uintptr = 8 // uint32, from 1
	DeliveryFlags      uintptr = 12
	DeliveryFields     uintptr = 16 // tandem_fields: unchecked.Fields

	// DeliveryWaited is TANDEM_DELIVERY_WAITED, in the flags: the submitter blocks until the
	// outcome (a Call), so a crossing may run the handler on its thread, task handler or not.
	DeliveryWaited uint32 = 1
	// DeliveryTimed is TANDEM_DELIVERY_TIMED: Rust records the handler's start and end times
	// in the completion (started_ns, finished_ns); without it they are 0.
	DeliveryTimed uint32 = 2
	// DeliveryShadow is TANDEM_DELIVERY_SHADOW: a shadow's copy of an event; Rust discards
	// what its handler emits.
	DeliveryShadow uint32 = 8
	// DeliveryCancellable is TANDEM_DELIVERY_CANCELLABLE: Go may cancel the delivery with a
	// TANDEM_SQE_CANCEL (the callee of a Rust handler's call).
	DeliveryCancellable uint32 = 4
)

// KickGoWakeOwed is TANDEM_KICK_GO_WAKE_OWED: in Kick's result, the caller now holds the
// duty to consume the completion ring (its poller is parked and was not woken).
const KickGoWakeOwed int64 = 1 << 32

// KickFrequent is TANDEM_KICK_FREQUENT, Kick's flag: this crossing followed the previous
// one within the spin window.
const KickFrequent uint32 = 1

// KickHelp is TANDEM_KICK_HELP, Kick's flag: the caller won no wake-up duty but another
// crossing is in progress; the call drains what it can and re-arms nothing.
const KickHelp uint32 = 2

// KickBatch is TANDEM_KICK_BATCH, Kick's flag: the records are one submitter's batch, not
// concurrent submitters.
const KickBatch uint32 = 4

// Kick runs the runtime's submission step on the calling thread (tandem_runtime_kick), for
// a submitter that won the submission ring's wake-up duty: drained counts the records it
// consumed; goWakeOwed says the caller must consume the completion ring itself. On an error
// (the runtime is not running) nothing ran: wake the poller by its eventfd instead.
// flags: KickFrequent, KickHelp, KickBatch.
//
// Calls does not count kicks: a runtime counts its own, once per event at idle, where only
// its own cores write (engine/fficalls.go), and adds them to Calls for the process's total.
func Kick(h Handle, flags uint32) (drained uint32, goWakeOwed bool, err error) {
	r := kick(h, flags)
	if r < 0 {
		return 0, false, statusError("tandem_runtime_kick", int32(-r), "")
	}
	return uint32(r), r&KickGoWakeOwed != 0, nil
}

// RunDone is TANDEM_RUN_DONE: in Run's result, the event's completion record is in the
// caller's cell, not in the completion ring.
const RunDone int64 = 1

// Cell is one ring cell's worth of memory (tandem_desc) in Go's heap, for a record the
// library writes into it rather than into a ring. Align 8, as the C struct's.
type Cell [DescSize / 8]uint64

// Run runs the event in request slot slot on the calling thread, past the submission ring
// (tandem_runtime_run), for a submitter that waits for its outcome: token and route are its
// descriptor's token and flags. done says the handler finished during the call and its
// completion record is in out (read it as a ring cell); otherwise the record comes through
// the completion ring. goWakeOwed as for Kick. On an error (the runtime is not running)
// nothing was taken: publish the event through the ring instead.
//
// Calls does not count runs, for Kick's reason.
func Run(h Handle, token uint64, slot, length, route uint32, out *Cell) (done, goWakeOwed bool, err error) {
	r := run(h, token, slot, length, route, out)
	if r < 0 {
		return false, false, statusError("tandem_runtime_run", int32(-r), "")
	}
	return r&RunDone != 0, r&KickGoWakeOwed != 0, nil
}

// PretendVersion makes CheckVersion and Create act as if this build needed ABI version v,
// until the returned function restores it. For tests of the refusal path only.
func PretendVersion(v uint32) (restore func()) {
	expectedVersion = v
	return func() { expectedVersion = Version }
}
