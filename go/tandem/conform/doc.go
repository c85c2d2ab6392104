// Package conform runs conformance vectors: files of cases, each an event and the outcome
// its handler must give it (ack with a reply, retry or term with an error code), against a
// route of a running tandem.Runtime, so against a handler in either runtime. The same file
// runs in Rust's cargo test through the tandem crate's conform module (feature "conform"),
// without Go: one file proves a Go handler and its Rust twin identical.
//
// The format is JSON Lines, written by hand and read in review (docs/conformance.md): a
// header line, then one case a line; blank lines and lines starting with # are skipped.
//
//	{"format": "tandem.conformance", "version": 1, "description": "demo.upper"}
//	{"case": "ascii", "event": {"data": "hello"}, "expect": {"outcome": "ack", "reply": "HELLO"}}
//	{"case": "not utf-8", "event": {"data": {"hex": "ff61"}}, "expect": {"outcome": "ack", "reply": {"hex": "ff41"}}}
//	{"case": "large", "event": {"data": {"text": "a", "repeat": 65000}}, "expect": {"outcome": "ack", "reply": {"text": "A", "repeat": 65000}}}
//
// In a Go test, Run makes each case a subtest:
//
//	conform.Run(t, rt, "demo.upper", "testdata/upper.jsonl")
//
// Check returns a Report instead, for programs (the tandem conform command).
package conform
