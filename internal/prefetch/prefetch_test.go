package prefetch

import (
	"testing"
	"unsafe"
)

// TestLineChangesNothing: a prefetch of any address (nil included) neither
// faults nor changes memory.
func TestLineChangesNothing(t *testing.T) {
	b := make([]uint64, 1024)
	for i := range b {
		b[i] = uint64(i) * 7
	}
	for i := range b {
		Line(unsafe.Pointer(&b[i]))
	}
	Line(nil)
	for i := range b {
		if b[i] != uint64(i)*7 {
			t.Fatalf("b[%d] = %d, want %d", i, b[i], uint64(i)*7)
		}
	}
}
