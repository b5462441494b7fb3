package conntrack

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"github.com/filterd/filterd/packet"
)

// randKey returns a key from a small space so that equal, inverse and
// nearly-equal keys occur often.
func randKey(r *rand.Rand) Key {
	protos := []uint8{packet.ProtoTCP, packet.ProtoUDP, packet.ProtoICMP, packet.ProtoICMPv6, packet.ProtoGRE}
	icmpTypes := []uint8{0, 3, 8, 13, 14, 15, 16, 17, 18, 128, 129, 130, 139, 140}
	k := Key{Proto: protos[r.IntN(len(protos))], Family: packet.IPv4}
	addrs4 := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.19.255.255")}
	addrs6 := []netip.Addr{netip.MustParseAddr("fd00:198:18::1"), netip.MustParseAddr("fd00:198:18::2"), netip.MustParseAddr("::ffff:198.18.0.1")}
	as := addrs4
	if r.IntN(2) == 0 {
		k.Family, as = packet.IPv6, addrs6
	}
	k.Src, k.Dst = as[r.IntN(len(as))], as[r.IntN(len(as))]
	ports := []uint16{0, 1, 80, 0x0800, 0x8000, 40000}
	k.SrcPort, k.DstPort = ports[r.IntN(len(ports))], ports[r.IntN(len(ports))]
	if isICMP(k.Proto) {
		k.DstPort = uint16(icmpTypes[r.IntN(len(icmpTypes))])<<8 | uint16(r.IntN(2))
	}
	return k
}

// TestKeyCompare checks the lookup's comparisons against their definitions:
// tuples are equal when their Keys are, a tuple isInverseOf(o) when
// o.Invert() == (k, true), invertible is Invert's ok, and a tuple turns
// back into its Key.
func TestKeyCompare(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	inverse, equal := 0, 0
	for i := 0; i < 200000; i++ {
		a, b := randKey(r), randKey(r)
		if i%3 == 0 {
			if inv, ok := a.Invert(); ok {
				b = inv // make inverse pairs common
			}
		}
		inv, ok := b.Invert()
		at, bt := a.tuple(), b.tuple()
		if got, want := at == bt, a == b; got != want {
			t.Fatalf("%+v tuple == %+v = %v, want %v", a, b, got, want)
		}
		if got, want := at.isInverseOf(&bt), ok && inv == a; got != want {
			t.Fatalf("%+v isInverseOf %+v = %v, want %v", a, b, got, want)
		}
		if back := at.key(); back != a {
			t.Fatalf("tuple of %+v back to %+v", a, back)
		}
		if got := b.invertible(); got != ok {
			t.Fatalf("%+v invertible = %v, want %v", b, got, ok)
		}
		if a == b {
			equal++
		}
		if ok && inv == a {
			inverse++
		}
	}
	if inverse < 1000 || equal < 100 {
		t.Errorf("only %d inverse and %d equal pairs drawn", inverse, equal)
	}
}

// TestHashSymmetric checks that a flow's two directions hash alike (so they
// meet in one bucket) and that the hash spreads distinct flows: over 100,000
// random IPv4 and IPv6 tuples, no bucket of 1024 gets more than twice its
// share.
func TestHashSymmetric(t *testing.T) {
	tab := New(Config{HashSeed: 9})
	r := rand.New(rand.NewPCG(5, 6))
	for _, fam := range []packet.Family{packet.IPv4, packet.IPv6} {
		var buckets [1024]int
		const n = 100000
		for i := 0; i < n; i++ {
			k := Key{Family: fam, Proto: packet.ProtoTCP, SrcPort: uint16(r.Uint32()), DstPort: uint16(r.Uint32())}
			if i%2 == 0 {
				k.Proto = packet.ProtoICMP
				k.DstPort = 8 << 8
			}
			var b16 [16]byte
			binary.LittleEndian.PutUint64(b16[:8], r.Uint64())
			binary.LittleEndian.PutUint64(b16[8:], r.Uint64())
			if fam == packet.IPv4 {
				k.Src, k.Dst = netip.AddrFrom4([4]byte(b16[:4])), netip.AddrFrom4([4]byte(b16[4:8]))
			} else {
				k.Src, k.Dst = netip.AddrFrom16(b16), netip.AddrFrom16([16]byte(append(b16[8:], b16[:8]...)))
			}
			inv, ok := k.Invert()
			if !ok {
				t.Fatalf("%+v: not invertible", k)
			}
			if a, b := tab.hash(&k), tab.hash(&inv); a != b {
				t.Fatalf("hash(%+v) = %x, hash of its inverse = %x", k, a, b)
			}
			buckets[tab.hash(&k)&1023]++
		}
		for i, c := range buckets {
			if c > 2*n/len(buckets) {
				t.Errorf("%v: bucket %d holds %d of %d keys (share %d)", fam, i, c, n, n/len(buckets))
			}
		}
	}
}

// TestEntryHasNoPointers: the table's entry blocks must be memory the
// garbage collector does not scan (a table of a million flows is hundreds
// of MiB), so an entry holds no pointer of any kind.
func TestEntryHasNoPointers(t *testing.T) {
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		switch ty.Kind() {
		case reflect.Pointer, reflect.UnsafePointer, reflect.Slice, reflect.Map, reflect.Chan, reflect.Func, reflect.Interface, reflect.String:
			t.Errorf("%s is a %s", path, ty.Kind())
		case reflect.Array:
			walk(ty.Elem(), path+"[]")
		case reflect.Struct:
			for i := 0; i < ty.NumField(); i++ {
				f := ty.Field(i)
				walk(f.Type, path+"."+f.Name)
			}
		}
	}
	walk(reflect.TypeOf(entry{}), "entry")
	t.Logf("entry: %d bytes", reflect.TypeOf(entry{}).Size())
}
