package packet

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestAddrWords: the words are the big-endian halves of As16, and turn back
// into the same address, for IPv4, IPv6 and IPv4-mapped IPv6 addresses.
func TestAddrWords(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 30000; i++ {
		var b [16]byte
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		a := netip.AddrFrom16(b)
		switch i % 3 {
		case 0:
			a = netip.AddrFrom4([4]byte(b[:4]))
		case 1:
			a = netip.AddrFrom16(netip.AddrFrom4([4]byte(b[:4])).As16())
		}
		hi, lo := AddrWords(a)
		a16 := a.As16()
		var want [16]byte
		for j := 0; j < 8; j++ {
			want[j] = byte(hi >> (56 - 8*j))
			want[8+j] = byte(lo >> (56 - 8*j))
		}
		if want != a16 {
			t.Fatalf("AddrWords(%v) = %x %x, As16 %x", a, hi, lo, a16)
		}
		if back := AddrFromWords(hi, lo, a.Is4()); back != a {
			t.Fatalf("AddrFromWords(AddrWords(%v)) = %v", a, back)
		}
	}
}
