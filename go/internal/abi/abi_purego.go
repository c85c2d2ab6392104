//go:build !cgo || tandem_purego

// This is the only file that knows the purego link mode: no C toolchain at Go build time.
// The cdylib built from rust/tandem-native (libtandem_native.so) is opened with dlopen when
// the first runtime is created, its ABI version checked before anything else, then every
// export bound with purego.RegisterFunc. No callback is ever created, and the per-event hot
// path makes no call at all, so purego's call overhead only touches start and shutdown.

package abi

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Mode names the link mode of this build.
const Mode = "purego"

// library is one opened library with its exports bound.
type library struct {
	path   string
	handle uintptr

	abiVersion func() uint32
	lastError  func(buf unsafe.Pointer, n uintptr) uintptr
	create     func(cfg unsafe.Pointer, out unsafe.Pointer, layout unsafe.Pointer) int32
	start      func(h unsafe.Pointer) int32
	shutdown   func(h unsafe.Pointer, graceNs uint64) int32
	stats      func(h unsafe.Pointer, out unsafe.Pointer) int32
	eventTypes func(h unsafe.Pointer, buf unsafe.Pointer, n uintptr, outLen unsafe.Pointer) int32
	free       func(h unsafe.Pointer)
	// kick is called per crossing (on the hot path at idle), so through SyscallN, which
	// does not allocate, rather than a RegisterFunc wrapper, which does.
	kick     uintptr
	run      uintptr
	setLocal func(h unsafe.Pointer, types unsafe.Pointer, n uintptr) int32
	logLevel func(level uint32)
}

var (
	libMu sync.Mutex
	libs  = map[string]*Library{} // by path; opened once, never closed
)

// Load opens the library at path (see LibraryPath), checks its ABI version, and binds its
// exports. Loading the same path again returns the same Library; another path opens another
// library beside it (dlopen with RTLD_LOCAL: each has its own statics, its own tokio),
// which is how a process moves to a new version of its handlers without a restart. A file
// dlopen has loaded already under another path (the same inode) is the same library.
func Load(path string) (*Library, error) {
	libMu.Lock()
	defer libMu.Unlock()
	if l, ok := libs[path]; ok {
		return l, nil
	}
	impl, err := open(path)
	if err != nil {
		return nil, err
	}
	l := &Library{path: path, impl: impl}
	libs[path] = l
	return l, nil
}

// open dlopens path, checks the ABI version first, then binds every export; on any failure
// it closes the library again and says which file failed, why and what to do.
func open(path string) (*library, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, &LoadError{Path: path, Err: ErrLibraryNotFound,
			Hint: "build it (tandem build -purego puts it beside the binary; ./build.sh in a tandem clone), or point Config.Library or " + LibraryEnv + " at it"}
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, &LoadError{Path: path, Err: ErrLibraryNotFound, Hint: "dlopen failed: " + err.Error()}
	}
	l := &library{path: path, handle: h}
	bind := func(fptr any, name string) error {
		sym, err := purego.Dlsym(h, name)
		if err != nil || sym == 0 {
			return &LoadError{Path: path, Symbol: name, Err: ErrMissingSymbol,
				Hint: "not a tandem library of this version: " + rebuild}
		}
		purego.RegisterFunc(fptr, sym)
		return nil
	}
	fail := func(err error) (*library, error) {
		_ = purego.Dlclose(h)
		return nil, err
	}
	// The version first: a library of another ABI may lack or change any other export.
	if err := bind(&l.abiVersion, "tandem_abi_version"); err != nil {
		return fail(err)
	}
	if got := l.abiVersion(); got != expectedVersion {
		return fail(&LoadError{Path: path, Err: ErrABIMismatch,
			Hint: fmt.Sprintf("the library implements ABI version %d, this build needs %d: %s", got, expectedVersion, rebuild)})
	}
	for _, s := range []struct {
		fptr any
		name string
	}{
		{&l.lastError, "tandem_last_error"},
		{&l.create, "tandem_runtime_create"},
		{&l.start, "tandem_runtime_start"},
		{&l.shutdown, "tandem_runtime_shutdown"},
		{&l.stats, "tandem_runtime_stats"},
		{&l.eventTypes, "tandem_event_types"},
		{&l.free, "tandem_runtime_free"},
		{&l.setLocal, "tandem_set_local_routes"},
		{&l.logLevel, "tandem_set_log_level"},
	} {
		if err := bind(s.fptr, s.name); err != nil {
			return fail(err)
		}
	}
	sym, err := purego.Dlsym(h, "tandem_runtime_kick")
	if err != nil || sym == 0 {
		return fail(&LoadError{Path: path, Symbol: "tandem_runtime_kick", Err: ErrMissingSymbol,
			Hint: "not a tandem library of this version: " + rebuild})
	}
	l.kick = sym
	sym, err = purego.Dlsym(h, "tandem_runtime_run")
	if err != nil || sym == 0 {
		return fail(&LoadError{Path: path, Symbol: "tandem_runtime_run", Err: ErrMissingSymbol,
			Hint: "not a tandem library of this version: " + rebuild})
	}
	l.run = sym
	return l, nil
}

func abiVersion(l *Library) uint32 { return l.impl.abiVersion() }

func lastError(l *Library) string {
	var buf [512]byte
	n := l.impl.lastError(unsafe.Pointer(&buf[0]), uintptr(len(buf)))
	return string(buf[:min(int(n), len(buf))])
}

func create(l *Library, cfg *Config, out *unsafe.Pointer, layout *Layout) int32 {
	return l.impl.create(unsafe.Pointer(cfg), unsafe.Pointer(out), unsafe.Pointer(layout))
}

func start(h Handle) int32 { return h.lib.impl.start(h.p) }

func shutdown(h Handle, graceNs uint64) int32 {
	return h.lib.impl.shutdown(h.p, graceNs)
}

func stats(h Handle, out *Stats) int32 {
	return h.lib.impl.stats(h.p, unsafe.Pointer(out))
}

func eventTypes(h Handle, buf []byte) (uintptr, int32) {
	var n uintptr
	st := h.lib.impl.eventTypes(h.p, unsafe.Pointer(unsafe.SliceData(buf)), uintptr(len(buf)), unsafe.Pointer(&n))
	return n, st
}

// kickArgs holds SyscallN's argument slice, whose backing array would otherwise escape to
// the heap on every crossing. The handle points into C memory: a uintptr keeps nothing alive
// that the garbage collector manages.
var kickArgs = sync.Pool{New: func() any { return new([2]uintptr) }}

func kick(h Handle, flags uint32) int64 {
	args := kickArgs.Get().(*[2]uintptr)
	args[0], args[1] = uintptr(h.p), uintptr(flags)
	r, _, _ := purego.SyscallN(h.lib.impl.kick, args[:]...)
	kickArgs.Put(args)
	return int64(r)
}

// runArgs is kickArgs for run. out is Go heap memory, which the collector does not move; the
// caller keeps it alive across the call.
var runArgs = sync.Pool{New: func() any { return new([6]uintptr) }}

func run(h Handle, token uint64, slot, length, route uint32, out *Cell) int64 {
	args := runArgs.Get().(*[6]uintptr)
	args[0], args[1], args[2], args[3], args[4], args[5] = uintptr(h.p), uintptr(token), uintptr(slot),
		uintptr(length), uintptr(route), uintptr(unsafe.Pointer(out))
	r, _, _ := purego.SyscallN(h.lib.impl.run, args[:]...)
	runArgs.Put(args)
	runtime.KeepAlive(out)
	return int64(r)
}

func free(h Handle) { h.lib.impl.free(h.p) }

func setLogLevel(l *Library, level uint32) { l.impl.logLevel(level) }

func setLocalRoutes(h Handle, types []byte) int32 {
	return h.lib.impl.setLocal(h.p, unsafe.Pointer(unsafe.SliceData(types)), uintptr(len(types)))
}
