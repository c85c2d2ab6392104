package chaos_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/chaos"
)

func TestReadTrace(t *testing.T) {
	got, err := chaos.ReadTrace(strings.NewReader("# a recorded burst\n0\n1.5ms\n\n0.002\n2ms\n1s\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{0, 1500 * time.Microsecond, 2 * time.Millisecond, 2 * time.Millisecond, time.Second}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestReadTraceRefusesMalformedLines(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "abc\n", "-1ms\n", "2ms\n1ms\n", "NaN\n"} {
		_, err := chaos.ReadTrace(strings.NewReader(in))
		if !errors.Is(err, chaos.ErrTrace) {
			t.Errorf("ReadTrace(%q) = %v, want ErrTrace", in, err)
		}
	}
	_, err := chaos.ReadTrace(strings.NewReader("1ms\nsoon\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("the error does not name the line: %v", err)
	}
}
