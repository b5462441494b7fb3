package engine

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// sameSlice reports whether a and b are the same window of the same memory
// (or both nil).
func sameSlice(a, b []byte) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) || cap(a) != cap(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0]
}

// diffDecode returns how the packets and errors of the fast and the general
// decode path differ ("" when they are identical, field for field).
func diffDecode(pf, ps *packet.Packet, ef, es error) string {
	if (ef == nil) != (es == nil) || (ef != nil && ef.Error() != es.Error()) {
		return fmt.Sprintf("error %v, general path %v", ef, es)
	}
	if !sameSlice(pf.L3, ps.L3) || !sameSlice(pf.Payload, ps.Payload) || !sameSlice(pf.Meta.L2, ps.Meta.L2) {
		return fmt.Sprintf("L3/Payload/L2 windows differ: %d/%d/%d vs %d/%d/%d",
			len(pf.L3), len(pf.Payload), len(pf.L2), len(ps.L3), len(ps.Payload), len(ps.L2))
	}
	if !reflect.DeepEqual(pf.ExtHeaders, ps.ExtHeaders) || cap(pf.ExtHeaders) != cap(ps.ExtHeaders) {
		return fmt.Sprintf("ExtHeaders %v (cap %d), general path %v (cap %d)", pf.ExtHeaders, cap(pf.ExtHeaders), ps.ExtHeaders, cap(ps.ExtHeaders))
	}
	a, b := *pf, *ps
	a.L3, a.Payload, a.ExtHeaders, a.L2 = nil, nil, nil, nil
	b.L3, b.Payload, b.ExtHeaders, b.L2 = nil, nil, nil, nil
	if !reflect.DeepEqual(a, b) {
		return fmt.Sprintf("\n fast    %+v\n general %+v", a, b)
	}
	return ""
}

// fastVariants returns b and damaged or altered copies of it that probe the
// edges of the fast path: cut short, padded, a payload bit flipped (bad
// checksum), a zero UDP checksum, IPv4 options, a fragment, a bad IPv4
// header checksum, a TCP data offset out of range, a bad UDP length.
func fastVariants(b []byte) [][]byte {
	cp := func(x []byte) []byte { return append([]byte(nil), x...) }
	out := [][]byte{b}
	for _, n := range []int{len(b) - 1, 60, 40, 39, 28, 21, 20, 19, 1, 0} {
		if n >= 0 && n < len(b) {
			out = append(out, b[:n])
		}
	}
	out = append(out, append(cp(b), 0, 0, 0, 0, 0, 0)) // link-layer padding
	if len(b) > 0 {
		x := cp(b)
		x[len(x)-1] ^= 0x40 // bad L4 checksum (or a header field)
		out = append(out, x)
	}
	if len(b) < 20 {
		return out
	}
	l4, proto := 0, uint8(0)
	switch b[0] >> 4 {
	case 4:
		l4, proto = int(b[0]&0x0f)*4, b[9]
		if l4 < 20 || len(b) < l4 {
			return out
		}
		x := cp(b)
		x[10] ^= 1 // bad header checksum
		out = append(out, x)
		x = cp(b)
		x[7] |= 8 // a fragment at offset 8 (header checksum fixed)
		fixIPv4Checksum(x)
		out = append(out, x)
		x = cp(b)
		x[6] |= 0x20 // MF: a first fragment
		fixIPv4Checksum(x)
		out = append(out, x)
		if b[0] == 0x45 && len(b) >= 20 {
			// the same packet with 4 bytes of IPv4 options (NOP NOP NOP EOL)
			x = append(append(cp(b[:20]), 1, 1, 1, 0), b[20:]...)
			x[0] = 0x46
			binary.BigEndian.PutUint16(x[2:4], binary.BigEndian.Uint16(b[2:4])+4)
			fixIPv4Checksum(x)
			out = append(out, x)
		}
	case 6:
		if len(b) >= 40 {
			l4, proto = 40, b[6]
			x := cp(b)
			binary.BigEndian.PutUint16(x[4:6], 0) // payload length 0
			out = append(out, x)
		}
	}
	if l4 == 0 || len(b) < l4+8 {
		return out
	}
	switch proto {
	case packet.ProtoUDP:
		x := cp(b)
		x[l4+6], x[l4+7] = 0, 0 // no checksum
		out = append(out, x)
		for _, ulen := range []uint16{0, 7, 8, uint16(len(b) - l4 + 1)} {
			x = cp(b)
			binary.BigEndian.PutUint16(x[l4+4:], ulen)
			out = append(out, x)
		}
	case packet.ProtoTCP:
		if len(b) >= l4+20 {
			for _, off := range []byte{0x40, 0x50, 0x60, 0xf0} {
				x := cp(b)
				x[l4+12] = off | x[l4+12]&0x0f
				out = append(out, x)
			}
		}
	}
	return out
}

// TestDecodeFastMatchesGeneral decodes every IP packet of every testdata
// capture, and variants of each at the edges of the fast path, with the
// fast path on and off, and requires identical packets and errors. Each
// decode starts from the previous packet's leftovers, as in the engine.
func TestDecodeFastMatchesGeneral(t *testing.T) {
	var inputs [][]byte
	eachCapturedFrame(t, func(_ string, f *Frame) { inputs = append(inputs, append([]byte(nil), f.L3...)) })
	inputs = append(inputs, tcp4(t, []byte("hello")), tcp6(t, []byte("hello")), udp4(t, []byte("x")), udp6(t, nil),
		tcp4(t, nil), tcp6(t, nil), udp4(t, make([]byte, 1401)), ping4(t), ping6(t))
	fast, general := NewDecoder(), NewDecoder()
	general.noFast = true
	var pf, ps, scratch packet.Packet
	compared, viaFast := 0, 0
	for i, in := range inputs {
		for j, b := range fastVariants(in) {
			for _, cfg := range []struct{ verify, local bool }{{true, false}, {true, true}, {false, false}} {
				fast.SetVerifyChecksums(cfg.verify)
				general.SetVerifyChecksums(cfg.verify)
				meta := packet.Meta{Time: time.Unix(int64(i), 0), Local: cfg.local, InIface: "eth0", L2: in[:0]}
				pf.Meta, ps.Meta = meta, meta
				ef := fast.Decode(b, &pf)
				es := general.Decode(b, &ps)
				if d := diffDecode(&pf, &ps, ef, es); d != "" {
					t.Fatalf("input %d variant %d (%d bytes, verify %v local %v): %s", i, j, len(b), cfg.verify, cfg.local, d)
				}
				compared++
				scratch.Reset()
				scratch.Meta = meta
				if fast.decodeFast(b, &scratch) {
					viaFast++
				}
			}
		}
	}
	// Most testdata packets are plain TCP/UDP; the variants exercise both paths.
	if viaFast < len(inputs) || compared-viaFast < len(inputs) {
		t.Errorf("fast path took %d of %d decodes: both paths must be exercised", viaFast, compared)
	}
	t.Logf("%d decodes compared, %d through the fast path", compared, viaFast)
}

// TestDecodeFastNoAllocs checks the fast path itself allocates nothing.
func TestDecodeFastNoAllocs(t *testing.T) {
	d := NewDecoder()
	var p packet.Packet
	for _, b := range [][]byte{tcp4(t, make([]byte, 100)), tcp6(t, nil), udp4(t, []byte("x")), udp6(t, make([]byte, 33))} {
		if !d.decodeFast(b, &p) {
			t.Fatalf("%x: not decoded by the fast path", b)
		}
		if n := testing.AllocsPerRun(100, func() { _ = d.Decode(b, &p) }); n != 0 {
			t.Errorf("%d allocations per decode", int(n))
		}
	}
}

// dirty sets every field of v (recursively into structs) to a non-zero
// value. It fails on a field type it does not know, so that a new Packet
// field is noticed here.
func dirty(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	addrT := reflect.TypeOf(netip.Addr{})
	switch {
	case v.Type() == addrT:
		v.Set(reflect.ValueOf(netip.MustParseAddr("fd00:198:18::dead")))
		return
	case v.Type() == reflect.TypeOf(time.Time{}):
		v.Set(reflect.ValueOf(time.Unix(12345, 6789)))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			dirty(t, v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(0x5a)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(0x5a)
	case reflect.String:
		v.SetString("dirty")
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			t.Fatalf("%s: unhandled slice type %v", path, v.Type())
		}
		v.Set(reflect.ValueOf([]byte{0x5a, 0x5a, 0x5a}).Convert(v.Type()))
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			dirty(t, v.Index(i), path)
		}
	default:
		t.Fatalf("%s: unhandled field type %v", path, v.Type())
	}
}

// TestDecodeFastSetsEveryField: the fast path skips Reset, so it must assign
// every field but Meta. Decoding into a packet whose every field holds junk
// gives the same packet as decoding into a fresh one, and Meta is kept.
func TestDecodeFastSetsEveryField(t *testing.T) {
	d := NewDecoder()
	for _, b := range [][]byte{tcp4(t, make([]byte, 100)), tcp6(t, nil), udp4(t, []byte("x")), udp6(t, make([]byte, 33))} {
		for _, local := range []bool{false, true} {
			var fresh, junk packet.Packet
			if !d.decodeFast(b, &fresh) {
				t.Fatalf("%x: not decoded by the fast path", b)
			}
			dirty(t, reflect.ValueOf(&junk).Elem(), "Packet")
			junk.ExtHeaders = make([]uint8, 3, maxExtHeaders)
			junk.Local = local
			meta := junk.Meta
			fresh = packet.Packet{Meta: meta}
			if err := d.Decode(b, &fresh); err != nil {
				t.Fatal(err)
			}
			if err := d.Decode(b, &junk); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(junk.Meta, meta) {
				t.Errorf("Meta changed: %+v, was %+v", junk.Meta, meta)
			}
			junk.ExtHeaders, fresh.ExtHeaders = junk.ExtHeaders[:0:0], fresh.ExtHeaders[:0:0]
			if !reflect.DeepEqual(junk, fresh) {
				t.Errorf("leftovers after decoding %x:\n junk  %+v\n fresh %+v", b, junk, fresh)
			}
		}
	}
}
