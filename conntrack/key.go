package conntrack

import (
	"math/bits"
	"net/netip"

	"github.com/filterd/filterd/packet"
)

// Key is a conntrack tuple: one direction of a flow. It is comparable and
// usable as a map key. For TCP, UDP, UDP-Lite and SCTP the ports are the
// transport ports. For ICMP and ICMPv6 query messages (echo, timestamp,
// info, ...) SrcPort holds the identifier and DstPort holds type<<8|code,
// as the kernel's tuple keeps src.u.icmp.id and dst.u.icmp.{type,code}.
// Other protocols have zero ports (the kernel's generic tracker).
type Key struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Family           packet.Family
	Proto            uint8
}

// ICMPType returns the ICMP type of an ICMP/ICMPv6 key.
func (k Key) ICMPType() uint8 { return uint8(k.DstPort >> 8) }

// ICMPCode returns the ICMP code of an ICMP/ICMPv6 key.
func (k Key) ICMPCode() uint8 { return uint8(k.DstPort) }

// ICMPID returns the ICMP identifier of an ICMP/ICMPv6 key.
func (k Key) ICMPID() uint16 { return k.SrcPort }

func isICMP(proto uint8) bool { return proto == packet.ProtoICMP || proto == packet.ProtoICMPv6 }

// hasPorts reports whether the kernel keys this protocol by 16-bit ports.
func hasPorts(proto uint8) bool {
	switch proto {
	case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoUDPLite, packet.ProtoSCTP:
		return true
	}
	return false
}

// ICMP (v4) query types and their inverses (invmap[] in
// nf_conntrack_proto_icmp.c).
func icmpInvert(t uint8) (uint8, bool) {
	switch t {
	case 8:
		return 0, true // echo -> echo reply
	case 0:
		return 8, true
	case 13:
		return 14, true // timestamp
	case 14:
		return 13, true
	case 15:
		return 16, true // info request
	case 16:
		return 15, true
	case 17:
		return 18, true // address mask
	case 18:
		return 17, true
	}
	return 0, false
}

// icmpValidNew: types that may create a new ICMP "connection" (valid_new[]).
func icmpValidNew(t uint8) bool { return t == 8 || t == 13 || t == 15 || t == 17 }

// ICMPv6 query types and their inverses (invmap[] in nf_conntrack_proto_icmpv6.c).
func icmpv6Invert(t uint8) (uint8, bool) {
	switch t {
	case 128:
		return 129, true // echo request -> reply
	case 129:
		return 128, true
	case 139:
		return 140, true // node information query -> reply
	case 140:
		return 139, true
	}
	return 0, false
}

func icmpv6ValidNew(t uint8) bool { return t == 128 || t == 139 }

// icmpv6NoTrack: types that conntrack marks UNTRACKED (noct_valid_new[]):
// MLD and neighbour discovery.
func icmpv6NoTrack(t uint8) bool {
	switch t {
	case 130, 131, 132, 133, 134, 135, 136, 143, 151, 152:
		return true
	}
	return false
}

// icmpIsError is icmp_is_err(): destination unreachable, source quench,
// redirect, time exceeded, parameter problem.
func icmpIsError(t uint8) bool {
	switch t {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// Invert returns the tuple of the other direction (nf_ct_invert_tuple). It
// fails for ICMP types that have no reply type.
func (k Key) Invert() (Key, bool) {
	r := Key{Family: k.Family, Proto: k.Proto, Src: k.Dst, Dst: k.Src}
	switch k.Proto {
	case packet.ProtoICMP:
		t, ok := icmpInvert(k.ICMPType())
		if !ok {
			return Key{}, false
		}
		r.SrcPort = k.SrcPort
		r.DstPort = uint16(t)<<8 | uint16(k.ICMPCode())
	case packet.ProtoICMPv6:
		t, ok := icmpv6Invert(k.ICMPType())
		if !ok {
			return Key{}, false
		}
		r.SrcPort = k.SrcPort
		r.DstPort = uint16(t)<<8 | uint16(k.ICMPCode())
	default:
		r.SrcPort, r.DstPort = k.DstPort, k.SrcPort
	}
	return r, true
}

// invertible reports whether k has an inverse (Invert succeeds).
func (k *Key) invertible() bool {
	switch k.Proto {
	case packet.ProtoICMP:
		_, ok := icmpInvert(k.ICMPType())
		return ok
	case packet.ProtoICMPv6:
		_, ok := icmpv6Invert(k.ICMPType())
		return ok
	}
	return true
}

// KeyOf returns the tuple of a decoded packet in its own direction.
func KeyOf(p *packet.Packet) Key {
	sp, dp := portsOf(p)
	return Key{Src: p.Src, Dst: p.Dst, SrcPort: sp, DstPort: dp, Family: p.Family, Proto: p.Proto}
}

// portsOf returns the tuple's port fields of p: the ports, for ICMP the id
// and type<<8|code, else zero.
func portsOf(p *packet.Packet) (sport, dport uint16) {
	switch {
	case isICMP(p.Proto):
		return p.ICMPID, uint16(p.ICMPType)<<8 | uint16(p.ICMPCode)
	case hasPorts(p.Proto):
		return p.SrcPort, p.DstPort
	}
	return 0, 0
}

// tuple is a Key as entries store it: without pointers (a netip.Addr holds
// one, for its zone), so that the table's entry blocks are memory the
// garbage collector never scans, and 16 bytes smaller. Addresses are their
// 16-byte form (IPv4 mapped) as two big-endian words, which the family
// turns back into a netip.Addr.
type tuple struct {
	src, dst     addr128
	sport, dport uint16
	family       packet.Family
	proto        uint8
}

// addr128 is an address as its 16-byte form's two big-endian halves.
type addr128 struct{ hi, lo uint64 }

func addr128Of(a netip.Addr) addr128 {
	hi, lo := packet.AddrWords(a)
	return addr128{hi, lo}
}

func (a addr128) addr(f packet.Family) netip.Addr {
	return packet.AddrFromWords(a.hi, a.lo, f == packet.IPv4)
}

func (k *Key) tuple() tuple {
	return tuple{src: addr128Of(k.Src), dst: addr128Of(k.Dst), sport: k.SrcPort, dport: k.DstPort, family: k.Family, proto: k.Proto}
}

// set makes k the tuple of p (KeyOf's, without building the Key).
func (k *tuple) set(p *packet.Packet) {
	k.src, k.dst = addr128Of(p.Src), addr128Of(p.Dst)
	k.family, k.proto = p.Family, p.Proto
	k.sport, k.dport = portsOf(p)
}

// key returns the tuple as a Key.
func (t *tuple) key() Key {
	return Key{Src: t.src.addr(t.family), Dst: t.dst.addr(t.family), SrcPort: t.sport, DstPort: t.dport, Family: t.family, Proto: t.proto}
}

func (t *tuple) icmpType() uint8 { return uint8(t.dport >> 8) }

// isInverseOf is Key.isInverseOf for tuples.
func (t *tuple) isInverseOf(o *tuple) bool {
	switch o.proto {
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if t.sport != o.sport || t.dport&0xff != o.dport&0xff {
			return false
		}
		var ty uint8
		var ok bool
		if o.proto == packet.ProtoICMP {
			ty, ok = icmpInvert(o.icmpType())
		} else {
			ty, ok = icmpv6Invert(o.icmpType())
		}
		if !ok || t.icmpType() != ty {
			return false
		}
	default:
		if t.sport != o.dport || t.dport != o.sport {
			return false
		}
	}
	return t.proto == o.proto && t.family == o.family && t.src == o.dst && t.dst == o.src
}

// innerKey returns the tuple of the packet quoted in an ICMP error.
func innerKey(p *packet.Packet) Key {
	in := &p.Inner
	k := Key{Family: p.Family, Proto: in.Proto, Src: in.Src, Dst: in.Dst}
	switch {
	case isICMP(in.Proto):
		k.SrcPort = in.SrcPort
		k.DstPort = uint16(in.ICMPType)<<8 | uint16(in.ICMPCode)
	case hasPorts(in.Proto):
		k.SrcPort, k.DstPort = in.SrcPort, in.DstPort
	}
	return k
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash is symmetric in the two endpoints, so both directions of a flow land
// in the same shard and bucket. It is seeded per table so that remote hosts
// cannot aim at one bucket.
func (t *Table) hash(k *Key) uint64 {
	kt := k.tuple()
	return t.hashTuple(&kt)
}

// hashTuple is hash of a tuple.
func (t *Table) hashTuple(k *tuple) uint64 {
	sp, dp := k.sport, k.dport
	if isICMP(k.proto) {
		dp = sp // type differs between directions; hash on the id only
	}
	tail := (uint64(k.proto)<<8 | uint64(k.family)) << 48
	if k.family == packet.IPv4 {
		// IPv4: each endpoint (address, port) fits in 48 bits; ordering
		// the two makes the hash symmetric with a single multiply.
		e1 := (k.src.lo&0xffffffff)<<16 | uint64(sp)
		e2 := (k.dst.lo&0xffffffff)<<16 | uint64(dp)
		if e1 > e2 {
			e1, e2 = e2, e1
		}
		return mix(e1^t.seed[0], e2^tail^t.seed[1])
	}
	h := t.epHash(k.src, sp) + t.epHash(k.dst, dp)
	return mix(h^t.seed[2], tail>>48^t.seed[3])
}

func (t *Table) epHash(a addr128, port uint16) uint64 {
	return mix(a.hi^t.seed[0], a.lo^t.seed[1]^uint64(port)<<17)
}
