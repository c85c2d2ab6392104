package deadletter

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/internal/cborx"
)

// candidatePayload returns n bytes in which every sixth byte starts a map head followed
// by key 0 and 1, the way a record starts, with a count that reaches far ahead over a run
// of small well-formed items: each such offset can be walked a long way before the walk
// fails. A payload like this, cut short in a torn record, made the torn-tail check
// quadratic.
func candidatePayload(n int) []byte {
	b := make([]byte, 0, n+6)
	for len(b) < n {
		b = append(b, 0x45, 0xba, 0x00, 0x01, 0x00, 0x00)
	}
	return b[:n]
}

func randomPayload(n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(1)).Read(b)
	return b
}

// tornFile writes two good letters and then all but the last byte of a letter whose
// envelope is payload. It returns the letters, the offset where the torn record starts,
// and the file's size.
func tornFile(t testing.TB, path string, payload []byte) (good []Record, tornAt, size int64) {
	good = sampleLetters(t)[:2]
	var file []byte
	for i := range good {
		rec, err := marshalRecord(&good[i], time.Now())
		if err != nil {
			t.Fatal(err)
		}
		file = append(file, rec...)
	}
	rec, err := marshalRecord(&Record{Reason: ReasonDecode, Time: time.Unix(1, 0), Envelope: payload}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tornAt = int64(len(file))
	file = append(file, rec[:len(rec)-1]...)
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	return good, tornAt, int64(len(file))
}

func TestReadFileLargeTornTail(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"random", randomPayload(1 << 20)},
		{"record-like heads", candidatePayload(1 << 20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dlq.cbor")
			good, tornAt, size := tornFile(t, path, tc.payload)
			got := readLetters(t, path)
			if !reflect.DeepEqual(got.Records, good) || got.TornBytes != size-tornAt {
				t.Fatalf("%d letters, %d torn bytes; want 2 and %d", len(got.Records), got.TornBytes, size-tornAt)
			}
			s, err := OpenFile(path)
			if err != nil {
				t.Fatalf("OpenFile on a torn file: %v", err)
			}
			if fi, _ := os.Stat(path); fi.Size() != tornAt {
				t.Errorf("after open the file is %d bytes, want the torn record cut to %d", fi.Size(), tornAt)
			}
			next := Record{Reason: ReasonTerm, EventID: "after", Time: time.Unix(2, 0).UTC()}
			if err := s.Write(context.Background(), &next); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if got := readLetters(t, path); got.TornBytes != 0 || !reflect.DeepEqual(got.Records, append(good, next)) {
				t.Fatalf("after a write: %d letters, %d torn bytes; want 3 and 0", len(got.Records), got.TornBytes)
			}
		})
	}
}

func TestCheckTornTail(t *testing.T) {
	rec := func(m map[uint64]any) []byte {
		b, err := cborx.Enc.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// A record with 24 pairs has a two-byte map head (0xb8 0x18).
	wide := map[uint64]any{keyV: 1, keyReason: "term", keyTime: 1}
	for k := uint64(10); len(wide) < 24; k++ {
		wide[k] = k
	}
	whole := rec(map[uint64]any{keyV: 1, keyReason: "term", keyTime: 7, keyEnvelope: []byte("xyz")})
	torn := []byte{0xa4, 0x00, 0x01, 0x01, 0x64, 't', 'e'} // the start of {0: 1, 1: "term", ...}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name    string
		tail    []byte
		corrupt bool
	}{
		{"empty", nil, false},
		{"map head only", []byte{0xa4}, false},
		{"cut in a two-byte map head", []byte{0xb8}, false},
		{"wide record cut short", rec(wide)[:10], false},
		{"record cut short", torn, false},
		{"not a map", []byte{0x5b, 0x00, 0x01}, true},
		{"indefinite map", []byte{0xbf, 0x00, 0x01}, true},
		{"key 0 holds 2", []byte{0xa4, 0x00, 0x02}, true},
		{"followed by a whole record", cat(torn, whole), true},
		{"followed by a record whose later pairs are unknown keys", cat(torn, rec(wide)), true},
		{"followed by a record cut short", cat(torn, whole[:len(whole)-1]), false},
		{"followed by a record without a time", cat(torn, rec(map[uint64]any{keyV: 1, keyReason: "term"})), false},
		{"followed by a record whose reason is bytes", cat(torn, rec(map[uint64]any{keyV: 1, keyReason: []byte("term"), keyTime: 1})), false},
		{"followed by a record of version 2", cat(torn, rec(map[uint64]any{keyV: 2, keyReason: "term", keyTime: 1})), false},
		{"followed by a record with keys out of order", cat(torn, []byte{0xa3, 0x00, 0x01, 0x08, 0x01, 0x01, 0x61, 'x'}), true},
		{"followed by a repeated key", cat(torn, []byte{0xa4, 0x00, 0x01, 0x01, 0x61, 'x', 0x01, 0x61, 'y', 0x08, 0x01}), false},
		{"followed by a first key other than 0", cat(torn, []byte{0xa3, 0x01, 0x61, 'x', 0x00, 0x01, 0x08, 0x01}), false},
		{"followed by a text key", cat(torn, []byte{0xa3, 0x00, 0x01, 0x61, 'x', 0x01, 0x08, 0x01}), false},
		{"followed by a long reason running past the end", cat(torn, []byte{0xa3, 0x00, 0x01, 0x01, 0x78, 0xff, 'x', 0x08, 0x01}), false},
		{"followed by record-like heads", cat(torn, candidatePayload(64<<10)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTornTail(tc.tail)
			if (err != nil) != tc.corrupt {
				t.Fatalf("checkTornTail(% x...) = %v, want corrupt %v", tc.tail[:min(len(tc.tail), 16)], err, tc.corrupt)
			}
		})
	}
}

// BenchmarkReadFileTornTail reads a file of two records and a torn one whose payload is
// size bytes: a random payload, and one crafted so that every sixth byte starts like a
// record. The time per byte should not grow with the size.
func BenchmarkReadFileTornTail(b *testing.B) {
	for _, payload := range []struct {
		name string
		make func(int) []byte
	}{{"random", randomPayload}, {"record-like", candidatePayload}} {
		for _, size := range []int{16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
			b.Run(fmt.Sprintf("%s/%dKiB", payload.name, size>>10), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "dlq.cbor")
				_, tornAt, fileSize := tornFile(b, path, payload.make(size))
				b.SetBytes(fileSize)
				b.ResetTimer()
				for range b.N {
					f, err := ReadFile(path)
					if err != nil {
						b.Fatal(err)
					}
					if f.TornBytes != fileSize-tornAt {
						b.Fatalf("TornBytes = %d, want %d", f.TornBytes, fileSize-tornAt)
					}
				}
			})
		}
	}
}
