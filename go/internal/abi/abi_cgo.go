//go:build cgo && !tandem_purego

// This is the only file that imports "C": the cgo link mode. It links the Rust library the
// build names, never a path inside this module: a module in the module cache holds no build
// outputs. `tandem build` (README: "Your handlers, your binary") builds the user's handler
// crate as a staticlib and passes it in the environment:
//
//	CGO_CFLAGS=-DTANDEM_LINKED CGO_LDFLAGS="-L<dir> -l:lib<crate>.a"
//
// TANDEM_LINKED says the library was named: without it the build stops at the #error below,
// which says what to do, instead of failing in the linker on undefined tandem_* symbols.
// This repository's ./build.sh names target/release/libtandem_native.a the same way.

package abi

/*
#cgo CFLAGS: -I${SRCDIR}/../../../ffi
#cgo LDFLAGS: -lm -ldl -lpthread -lrt -lutil
#ifndef TANDEM_LINKED
#error "tandem: no Rust handler library to link. Build with `tandem build` (README: Your handlers, your binary), or name your staticlib yourself: CGO_CFLAGS=-DTANDEM_LINKED CGO_LDFLAGS='-L<dir> -l:lib<crate>.a'. In a tandem clone: ./build.sh, or eval \"$(./build.sh env)\" before go build or go test. To run the tandem command itself without a library: CGO_ENABLED=0 (the purego mode)."
#endif
#include <stdlib.h>
#include "tandem.h"
*/
import "C"

import (
	"unsafe"

	"github.com/tandemrt/tandem/go/internal/unchecked"
)

// Mode names the link mode of this build.
const Mode = "cgo"

// Load does nothing in the cgo mode: the library is linked into the binary. The path is
// ignored.
// library is empty in the cgo mode: the exports are linked, and there is one set of them.
type library struct{}

// linked is the library the binary links.
var linked = &Library{impl: &library{}}

// Load returns the linked library, whatever path names: the cgo mode holds the one it was
// built with (a new library is a new binary).
func Load(string) (*Library, error) { return linked, nil }

func abiVersion(*Library) uint32 { return uint32(C.tandem_abi_version()) }

func lastError(*Library) string {
	var buf [512]byte
	n := C.tandem_last_error((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if int(n) > len(buf) {
		n = C.size_t(len(buf))
	}
	return string(buf[:n])
}

func create(_ *Library, cfg *Config, out *unsafe.Pointer, layout *Layout) int32 {
	// Config and Layout hold no Go pointers and have the C layout (TestLayoutMatchesHeader);
	// the library only uses them during the call.
	return int32(C.tandem_runtime_create(
		(*C.tandem_config)(unsafe.Pointer(cfg)),
		(**C.tandem_runtime)(unsafe.Pointer(out)),
		(*C.tandem_layout)(unsafe.Pointer(layout)),
	))
}

func rt(h Handle) *C.tandem_runtime {
	// h holds a pointer the library allocated outside the Go heap.
	return (*C.tandem_runtime)(h.p)
}

func start(h Handle) int32 { return int32(C.tandem_runtime_start(rt(h))) }

func shutdown(h Handle, graceNs uint64) int32 {
	return int32(C.tandem_runtime_shutdown(rt(h), C.uint64_t(graceNs)))
}

func stats(h Handle, out *Stats) int32 {
	return int32(C.tandem_runtime_stats(rt(h), (*C.tandem_stats)(unsafe.Pointer(out))))
}

func eventTypes(h Handle, buf []byte) (uintptr, int32) {
	var n C.size_t
	st := C.tandem_event_types(rt(h), (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(buf))), C.size_t(len(buf)), &n)
	return uintptr(n), int32(st)
}

func kick(h Handle, flags uint32) int64 {
	return int64(C.tandem_runtime_kick(rt(h), C.uint32_t(flags)))
}

func run(h Handle, token uint64, slot, length, route uint32, out *Cell) int64 {
	// out is Go memory holding no Go pointers, written during the call only.
	return int64(C.tandem_runtime_run(rt(h), C.uint64_t(token), C.uint32_t(slot), C.uint32_t(length),
		C.uint32_t(route), (*C.tandem_desc)(unsafe.Pointer(out))))
}

func free(h Handle) { C.tandem_runtime_free(rt(h)) }

func setLogLevel(_ *Library, level uint32) { C.tandem_set_log_level(C.uint32_t(level)) }

func setLocalRoutes(h Handle, types []byte) int32 {
	return int32(C.tandem_set_local_routes(rt(h), (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(types))), C.size_t(len(types))))
}

// layoutMismatches compares the Go mirrors with the C structs; empty when they agree.
func layoutMismatches() []string {
	var bad []string
	check := func(name string, goVal, cVal uintptr) {
		if goVal != cVal {
			bad = append(bad, name)
		}
	}
	var gc Config
	var cc C.tandem_config
	check("sizeof(tandem_config)", unsafe.Sizeof(gc), unsafe.Sizeof(cc))
	check("tandem_config.spin_ns", unsafe.Offsetof(gc.SpinNs), unsafe.Offsetof(cc.spin_ns))
	check("tandem_config.rep_slots", unsafe.Offsetof(gc.RepSlots), unsafe.Offsetof(cc.rep_slots))
	var gl Layout
	var cl C.tandem_layout
	check("sizeof(tandem_layout)", unsafe.Sizeof(gl), unsafe.Sizeof(cl))
	check("tandem_layout.rep_stride", unsafe.Offsetof(gl.RepStride), unsafe.Offsetof(cl.rep_stride))
	check("tandem_layout.sq_capacity", unsafe.Offsetof(gl.SQCapacity), unsafe.Offsetof(cl.sq_capacity))
	check("tandem_layout.rep_slots", unsafe.Offsetof(gl.RepSlots), unsafe.Offsetof(cl.rep_slots))
	check("tandem_layout.wake_go_fd", unsafe.Offsetof(gl.WakeGoFd), unsafe.Offsetof(cl.wake_go_fd))
	var gs Stats
	var cs C.tandem_stats
	check("sizeof(tandem_stats)", unsafe.Sizeof(gs), unsafe.Sizeof(cs))
	check("tandem_stats.cq_depth", unsafe.Offsetof(gs.CQDepth), unsafe.Offsetof(cs.cq_depth))
	check("tandem_stats.handovers", unsafe.Offsetof(gs.Handovers), unsafe.Offsetof(cs.handovers))
	check("tandem_stats.task_wakes", unsafe.Offsetof(gs.TaskWakes), unsafe.Offsetof(cs.task_wakes))
	check("tandem_stats.rescues", unsafe.Offsetof(gs.Rescues), unsafe.Offsetof(cs.rescues))
	var cd C.tandem_desc
	check("sizeof(tandem_desc)", DescSize, unsafe.Sizeof(cd))
	check("tandem_desc.token", DescToken, unsafe.Offsetof(cd.token))
	check("tandem_desc.kind", DescKind, unsafe.Offsetof(cd.kind))
	check("tandem_desc.slot", DescSlot, unsafe.Offsetof(cd.slot))
	check("tandem_desc.len", DescLen, unsafe.Offsetof(cd.len))
	check("tandem_desc.reply_slot", DescReplySlot, unsafe.Offsetof(cd.reply_slot))
	check("tandem_desc.reply_len", DescReplyLen, unsafe.Offsetof(cd.reply_len))
	check("tandem_desc.started_ns", DescStartedNs, unsafe.Offsetof(cd.started_ns))
	check("tandem_desc.finished_ns", DescFinishedNs, unsafe.Offsetof(cd.finished_ns))
	check("tandem_desc.aux", DescAux, unsafe.Offsetof(cd.aux))
	var ch C.tandem_ring_header
	check("sizeof(tandem_ring_header)", RingHeaderSize, unsafe.Sizeof(ch))
	check("tandem_ring_header.head", RingHead, unsafe.Offsetof(ch.head))
	check("tandem_ring_header.parked", RingParked, unsafe.Offsetof(ch.parked))
	check("tandem_ring_header.hungry", RingHungry, unsafe.Offsetof(ch.hungry))
	var cv C.tandem_delivery
	check("sizeof(tandem_delivery)", DeliverySize, unsafe.Sizeof(cv))
	check("tandem_delivery.deadline_ns", DeliveryDeadlineNs, unsafe.Offsetof(cv.deadline_ns))
	check("tandem_delivery.attempt", DeliveryAttempt, unsafe.Offsetof(cv.attempt))
	check("tandem_delivery.flags", DeliveryFlags, unsafe.Offsetof(cv.flags))
	check("tandem_delivery.fields", DeliveryFields, unsafe.Offsetof(cv.fields))
	var gf unchecked.Fields
	var cf C.tandem_fields
	check("sizeof(tandem_fields)", unsafe.Sizeof(gf), unsafe.Sizeof(cf))
	check("tandem_fields.present", unsafe.Offsetof(gf.Present), unsafe.Offsetof(cf.present))
	check("tandem_fields.attempt", unsafe.Offsetof(gf.Attempt), unsafe.Offsetof(cf.attempt))
	check("tandem_fields.time", unsafe.Offsetof(gf.Time), unsafe.Offsetof(cf.time))
	check("tandem_fields.deadline", unsafe.Offsetof(gf.Deadline), unsafe.Offsetof(cf.deadline))
	check("tandem_fields.at", unsafe.Offsetof(gf.At), unsafe.Offsetof(cf.at))
	check("sizeof(tandem_span)", unsafe.Sizeof(gf.At[0]), unsafe.Sizeof(cf.at[0]))
	check("tandem_span.len", unsafe.Offsetof(gf.At[0].Len), unsafe.Offsetof(cf.at[0].len))
	check("TANDEM_ABI_VERSION", uintptr(Version), uintptr(C.TANDEM_ABI_VERSION))
	check("TANDEM_DELIVERY_WAITED", uintptr(DeliveryWaited), uintptr(C.TANDEM_DELIVERY_WAITED))
	check("TANDEM_DELIVERY_TIMED", uintptr(DeliveryTimed), uintptr(C.TANDEM_DELIVERY_TIMED))
	check("TANDEM_DELIVERY_SHADOW", uintptr(DeliveryShadow), uintptr(C.TANDEM_DELIVERY_SHADOW))
	check("TANDEM_DELIVERY_CANCELLABLE", uintptr(DeliveryCancellable), uintptr(C.TANDEM_DELIVERY_CANCELLABLE))
	check("TANDEM_SQE_REPLY", uintptr(SQEReply), uintptr(C.TANDEM_SQE_REPLY))
	check("TANDEM_SQE_CANCEL", uintptr(SQECancel), uintptr(C.TANDEM_SQE_CANCEL))
	check("TANDEM_CQE_CALL", uintptr(CQECall), uintptr(C.TANDEM_CQE_CALL))
	check("TANDEM_CQE_CALL_CANCEL", uintptr(CQECallCancel), uintptr(C.TANDEM_CQE_CALL_CANCEL))
	check("TANDEM_KICK_GO_WAKE_OWED", uintptr(KickGoWakeOwed), uintptr(C.TANDEM_KICK_GO_WAKE_OWED))
	check("TANDEM_KICK_FREQUENT", uintptr(KickFrequent), uintptr(C.TANDEM_KICK_FREQUENT))
	check("TANDEM_KICK_HELP", uintptr(KickHelp), uintptr(C.TANDEM_KICK_HELP))
	check("TANDEM_KICK_BATCH", uintptr(KickBatch), uintptr(C.TANDEM_KICK_BATCH))
	check("TANDEM_RUN_DONE", uintptr(RunDone), uintptr(C.TANDEM_RUN_DONE))
	return bad
}
