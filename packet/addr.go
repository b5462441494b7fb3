package packet

import (
	"encoding/binary"
	"net/netip"
)

// AddrWords returns a's 16-byte form (IPv4-mapped for an IPv4 address) as
// two big-endian words: a pointer-free form of an address for table keys
// (a netip.Addr holds a pointer, for its zone). Zones are dropped.
func AddrWords(a netip.Addr) (hi, lo uint64) {
	if a.Is4() {
		// Without As16's 16-byte array, which read back as words after
		// its two 8-byte stores stalls (store forwarding fails).
		b := a.As4()
		return 0, 0xffff<<32 | uint64(binary.BigEndian.Uint32(b[:]))
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// AddrFromWords is AddrWords' inverse: the 4-byte address when v4, else the
// 16-byte one.
func AddrFromWords(hi, lo uint64, v4 bool) netip.Addr {
	if v4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}
