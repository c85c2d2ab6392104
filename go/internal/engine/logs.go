package engine

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tandemrt/tandem/go/internal/ring"
)

// Log lines of both runtimes use the same field names for an event: runtime (go|rust), route,
// handler, event_id, correlation_id, trace_id, attempt. Rust's records (written with the
// tracing crate) arrive in batches on the completion ring and are written by the same zap
// logger.

// rustLogRecord is one record of a batch (see TANDEM_CQE_LOG in ffi/tandem.h).
type rustLogRecord struct {
	Level   uint8             `cbor:"0,keyasint"`
	Target  string            `cbor:"1,keyasint"`
	Message string            `cbor:"2,keyasint"`
	Time    int64             `cbor:"3,keyasint"`
	Fields  map[string]string `cbor:"4,keyasint"`
}

// onLogs writes a batch of Rust log records with the runtime's logger.
func (e *Engine) onLogs(d *ring.Desc) {
	if !e.lend(d.ReplySlot, "log batch in a reply slot not lent to Go") {
		return
	}
	raw := bytes.Clone(e.replyBytes(d.ReplySlot, d.ReplyLen))
	e.releaseReply(d.ReplySlot)
	dec := cbor.NewDecoder(bytes.NewReader(raw))
	var dropped uint64
	if err := dec.Decode(&dropped); err != nil {
		e.log.Error("tandem: malformed batch of Rust log records", zap.Error(err))
		return
	}
	if dropped > 0 {
		e.log.Warn("tandem: Rust log records dropped: the queue was full", zap.String("runtime", "rust"), zap.Uint64("records", dropped))
	}
	for {
		var rec rustLogRecord
		if err := dec.Decode(&rec); err != nil {
			if !errors.Is(err, io.EOF) {
				e.log.Error("tandem: malformed Rust log record", zap.Error(err))
			}
			return
		}
		level := zapcore.DebugLevel
		switch rec.Level {
		case 2:
			level = zapcore.InfoLevel
		case 3:
			level = zapcore.WarnLevel
		case 4:
			level = zapcore.ErrorLevel
		}
		ce := e.log.Check(level, rec.Message)
		if ce == nil {
			continue
		}
		ce.Time = time.Unix(0, rec.Time)
		fields := make([]zap.Field, 0, len(rec.Fields)+2)
		if _, ok := rec.Fields["runtime"]; !ok {
			fields = append(fields, zap.String("runtime", "rust"))
		}
		fields = append(fields, zap.String("target", rec.Target))
		for k, v := range rec.Fields {
			fields = append(fields, zap.String(k, v))
		}
		ce.Write(fields...)
	}
}

// rustLogLevel is the least severe Rust level the logger writes (5: none).
func rustLogLevel(l *zap.Logger) uint32 {
	core := l.Core()
	switch {
	case core.Enabled(zapcore.DebugLevel):
		return 1
	case core.Enabled(zapcore.InfoLevel):
		return 2
	case core.Enabled(zapcore.WarnLevel):
		return 3
	case core.Enabled(zapcore.ErrorLevel):
		return 4
	}
	return 5
}

// followLogLevel keeps Rust's level in step with the logger's, checking once a second (a
// zap AtomicLevel can change at any time), until done closes.
func (e *Engine) followLogLevel(done <-chan struct{}) {
	level := rustLogLevel(e.log) // set by Start
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if l := rustLogLevel(e.log); l != level {
				level = l
				e.lib.SetLogLevel(level)
			}
		}
	}
}
