package kernelreplay

import "encoding/binary"

// CsumState is whether a checksum was checked, and its outcome.
type CsumState uint8

// Checksum states.
const (
	CsumNA      CsumState = iota // not checkable: absent, fragment, truncated, UDP checksum 0
	CsumValid                    // verifies
	CsumInvalid                  // does not verify
)

// String returns "valid", "invalid" or "n/a".
func (s CsumState) String() string {
	switch s {
	case CsumValid:
		return "valid"
	case CsumInvalid:
		return "invalid"
	}
	return "n/a"
}

// sum adds b to a ones'-complement running sum (odd tail padded with zero).
func sum(b []byte, s uint32) uint32 {
	n := len(b) &^ 1
	for i := 0; i < n; i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)&1 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Checksums recomputes the IPv4 header checksum and the transport checksum
// (TCP, UDP, ICMP, ICMPv6) of an IP packet in full and reports whether each
// verifies. It is the oracle of the rewrite's tests and a diagnostic.
func Checksums(l3 []byte) (ip, l4 CsumState) {
	h, err := parseIP(l3)
	if err != nil {
		return CsumNA, CsumNA
	}
	if !h.v6 && len(l3) >= h.hlen {
		ip = CsumInvalid
		if fold(sum(l3[:h.hlen], 0)) == 0xffff {
			ip = CsumValid
		}
	}
	off, pseudo, ok := csumOff(h.proto)
	if !ok || !h.l4Known || h.frag || !h.full || h.l4+off+2 > h.end {
		return ip, CsumNA
	}
	if h.proto == 17 && !h.v6 && binary.BigEndian.Uint16(l3[h.l4+off:]) == 0 {
		return ip, CsumNA
	}
	if h.proto == 1 && h.v6 || h.proto == 58 && !h.v6 {
		return ip, CsumNA
	}
	var s uint32
	if pseudo {
		s = sum(l3[h.srcOff:h.srcOff+h.alen], s)
		s = sum(l3[h.dstOff:h.dstOff+h.alen], s)
		s += uint32(h.proto) + uint32(h.end-h.l4)
	}
	s = sum(l3[h.l4:h.end], s)
	if fold(s) == 0xffff {
		return ip, CsumValid
	}
	return ip, CsumInvalid
}

// adjust applies the change old→new of the covered bytes to a checksum field
// incrementally (RFC 1624, eqn. 3): a checksum that verified before verifies
// after, and one that was wrong stays wrong by the same amount. old and new
// are equally long and start at the same 16-bit alignment.
func adjust(field []byte, old, new []byte) {
	hc := binary.BigEndian.Uint16(field)
	s := uint32(^hc)
	n := len(old) &^ 1
	for i := 0; i < n; i += 2 {
		o, w := binary.BigEndian.Uint16(old[i:]), binary.BigEndian.Uint16(new[i:])
		if o != w {
			s += uint32(^o) + uint32(w)
		}
	}
	if len(old)&1 == 1 {
		o, w := uint16(old[len(old)-1])<<8, uint16(new[len(new)-1])<<8
		if o != w {
			s += uint32(^o) + uint32(w)
		}
	}
	binary.BigEndian.PutUint16(field, ^fold(s))
}
