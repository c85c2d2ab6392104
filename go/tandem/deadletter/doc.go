// Package deadletter is where events go that tandem gives up on: the Record of one
// dead-lettered event, the Sink interface the runtime writes records to, FileSink (the
// default: an fsync'd, append-only file of CBOR records) with its reader ReadFile, and
// MemorySink for tests. docs/deadletters.md describes the file and the reasons.
//
// A record keeps the event's envelope byte for byte as submitted, so `tandem dlq replay`
// can submit it again, and the error envelope of its last failure in the envelope's own
// encoding (package envelope).
//
// # Concurrency
//
// Sinks are safe for concurrent use, and the runtime calls Write from its own goroutine;
// a Write returns only once the record is stored (FileSink: durable on disk). Records
// are plain values: a sink keeps no part of one it is given, and ReadFile and
// MemorySink.Records return copies.
package deadletter
