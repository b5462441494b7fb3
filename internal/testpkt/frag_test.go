package testpkt

import (
	"encoding/binary"
	"testing"
)

// TestFragmentUDP: the fragments cover the datagram in order, all but the
// last carry MF and a payload that is a multiple of 8, and every IPv4
// header checksum verifies (sums to 0xffff with its own field).
func TestFragmentUDP(t *testing.T) {
	for _, tc := range []struct{ n, mtu, want int }{{10, 1500, 1}, {3000, 1500, 3}, {1472, 1500, 1}, {1473, 1500, 2}} {
		frags := FragmentUDP(161, tc.n, tc.mtu, 7)
		if len(frags) != tc.want {
			t.Fatalf("n %d: %d fragments, want %d", tc.n, len(frags), tc.want)
		}
		off := 0
		for i, f := range frags {
			fo := binary.BigEndian.Uint16(f[6:])
			last := i == len(frags)-1
			if int(fo&0x1fff)*8 != off || (fo&0x2000 != 0) == last || len(f) > tc.mtu || (!last && (len(f)-20)%8 != 0) {
				t.Fatalf("n %d fragment %d: flags/offset %#x at %d, len %d", tc.n, i, fo, off, len(f))
			}
			if checksum(f[:20]) != 0 {
				t.Fatalf("n %d fragment %d: header checksum wrong", tc.n, i)
			}
			off += len(f) - 20
		}
		if off != 8+tc.n {
			t.Fatalf("n %d: fragments carry %d bytes, want %d", tc.n, off, 8+tc.n)
		}
	}
}
