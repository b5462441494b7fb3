package engine

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestLocalSet checks the per-packet local-address test against its
// definition (some prefix of Config.Local contains the address), for
// prefixes of every length in both families and addresses near them.
func TestLocalSet(t *testing.T) {
	pfx := []netip.Prefix{
		netip.MustParsePrefix("198.18.2.2/32"),
		netip.MustParsePrefix("198.19.0.0/16"),
		netip.MustParsePrefix("198.18.128.7/17"), // not masked: as given by a user
		netip.MustParsePrefix("fd00:198:18::2/128"),
		netip.MustParsePrefix("fd00:198:18:1::/64"),
		{}, // invalid: ignored
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, set := range [][]netip.Prefix{pfx, nil, {netip.MustParsePrefix("0.0.0.0/0")}, {netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("::/0")}} {
		s := newLocalSet(set)
		ref := func(a netip.Addr) bool {
			for _, p := range set {
				if p.IsValid() && p.Contains(a) {
					return true
				}
			}
			return false
		}
		in := 0
		for i := 0; i < 20000; i++ {
			var a netip.Addr
			switch i % 4 {
			case 0:
				a = netip.AddrFrom4([4]byte{198, byte(18 + r.IntN(2)), byte(r.IntN(256)), byte(r.IntN(4))})
			case 1:
				a = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
			case 2:
				a = netip.AddrFrom16([16]byte{0xfd, 0, 1, 0x98, 0, 0x18, 0, byte(r.IntN(2)), 15: byte(r.IntN(4))})
			default:
				a = netip.AddrFrom16(netip.AddrFrom4([4]byte{198, 18, 2, 2}).As16()) // 4in6: IPv6, not 198.18.2.2
			}
			got, want := s.contains(a), ref(a)
			if got != want {
				t.Fatalf("prefixes %v: contains(%v) = %v, want %v", set, a, got, want)
			}
			if got {
				in++
			}
		}
		if len(set) > 0 && in == 0 {
			t.Errorf("prefixes %v: no address drawn inside", set)
		}
	}
}
