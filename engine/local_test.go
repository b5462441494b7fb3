package engine

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
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

// TestSetMetaCopiesEveryField: setMeta (Process's field-by-field copy of the
// packet's metadata) copies every field of packet.Meta, also fields added
// later: each field is set to a non-zero value by reflection in turn.
func TestSetMetaCopiesEveryField(t *testing.T) {
	typ := reflect.TypeOf(packet.Meta{})
	for i := 0; i < typ.NumField(); i++ {
		var src packet.Meta
		f := reflect.ValueOf(&src).Elem().Field(i)
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(7)
		case reflect.String:
			f.SetString("eth7")
		case reflect.Slice:
			f.Set(reflect.ValueOf([]byte{1, 2, 3}))
		case reflect.Array:
			f.Index(0).SetUint(9)
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Unix(1700000000, 5)))
		default:
			t.Fatalf("field %s: kind %s not covered by this test", typ.Field(i).Name, f.Kind())
		}
		if typ.Field(i).Name == "SrcMAC" {
			src.HasMAC = true // SrcMAC is valid, and copied, only with HasMAC
		}
		var dst packet.Meta
		setMeta(&dst, &src)
		if !reflect.DeepEqual(dst, src) {
			t.Errorf("field %s not copied: %+v", typ.Field(i).Name, dst)
		}
	}
	// Without HasMAC the previous packet's SrcMAC does not survive.
	dst := packet.Meta{SrcMAC: [6]byte{1, 2, 3, 4, 5, 6}, HasMAC: true}
	src := packet.Meta{SrcMAC: [6]byte{9, 9, 9, 9, 9, 9}}
	setMeta(&dst, &src)
	if dst.HasMAC || dst.SrcMAC != ([6]byte{}) {
		t.Errorf("without HasMAC: SrcMAC %v HasMAC %v, want zero, false", dst.SrcMAC, dst.HasMAC)
	}
}
