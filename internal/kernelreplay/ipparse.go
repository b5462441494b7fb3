package kernelreplay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// ipHdr locates the fields of one IP header that the rewrite and the
// checksum code need. Offsets are relative to the start of the buffer given
// to parseIP.
type ipHdr struct {
	v6      bool
	hlen    int   // IPv4 header length (IHL*4); 40 for IPv6
	srcOff  int   // source address
	dstOff  int   // destination address
	alen    int   // 4 or 16
	proto   uint8 // transport protocol (after IPv6 extension headers)
	l4      int   // transport header offset
	end     int   // end of the packet: min(IP total length, captured bytes)
	full    bool  // the whole packet (by its length field) was captured
	frag    bool  // a fragment (IPv4 MF/offset, or an IPv6 Fragment header)
	first   bool  // not a fragment, or the first fragment (offset 0)
	l4Known bool  // the transport header offset is known (IPv6 chain parsed)
}

func (h ipHdr) src(b []byte) netip.Addr { return addrAt(b, h.srcOff, h.alen) }
func (h ipHdr) dst(b []byte) netip.Addr { return addrAt(b, h.dstOff, h.alen) }

func addrAt(b []byte, off, n int) netip.Addr {
	if n == 4 {
		return netip.AddrFrom4([4]byte(b[off : off+4]))
	}
	return netip.AddrFrom16([16]byte(b[off : off+16]))
}

// parseIP parses the IP header at the start of b. Only the addresses need to
// be present; everything after them may be cut off (as inside ICMP errors).
func parseIP(b []byte) (ipHdr, error) {
	if len(b) < 1 {
		return ipHdr{}, fmt.Errorf("empty IP packet")
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return ipHdr{}, fmt.Errorf("IPv4 header truncated: %d bytes, want at least 20", len(b))
		}
		h := ipHdr{hlen: int(b[0]&0x0f) * 4, srcOff: 12, dstOff: 16, alen: 4, proto: b[9]}
		if h.hlen < 20 {
			return ipHdr{}, fmt.Errorf("IPv4 header length %d, want at least 20", h.hlen)
		}
		tot := int(binary.BigEndian.Uint16(b[2:]))
		h.end, h.full = min(tot, len(b)), tot <= len(b)
		fo := binary.BigEndian.Uint16(b[6:])
		h.frag = fo&0x3fff != 0
		h.first = fo&0x1fff == 0
		h.l4, h.l4Known = h.hlen, true
		return h, nil
	case 6:
		if len(b) < 40 {
			return ipHdr{}, fmt.Errorf("IPv6 header truncated: %d bytes, want 40", len(b))
		}
		h := ipHdr{v6: true, hlen: 40, srcOff: 8, dstOff: 24, alen: 16, first: true}
		tot := 40 + int(binary.BigEndian.Uint16(b[4:]))
		h.end, h.full = min(tot, len(b)), tot <= len(b)
		nh, off := b[6], 40
		for i := 0; i < 16; i++ {
			switch nh {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+2 > h.end {
					return h, nil
				}
				nh, off = b[off], off+(int(b[off+1])+1)*8
				continue
			case 51: // AH
				if off+2 > h.end {
					return h, nil
				}
				nh, off = b[off], off+(int(b[off+1])+2)*4
				continue
			case 44: // fragment
				if off+8 > h.end {
					return h, nil
				}
				fo := binary.BigEndian.Uint16(b[off+2:])
				h.frag = true
				h.first = fo>>3 == 0
				nh, off = b[off], off+8
				continue
			}
			break
		}
		h.proto, h.l4, h.l4Known = nh, off, true
		return h, nil
	}
	return ipHdr{}, fmt.Errorf("IP version %d, want 4 or 6", b[0]>>4)
}

// csumOff is the offset of the transport checksum inside the transport
// header, and whether the checksum covers a pseudo-header.
func csumOff(proto uint8) (off int, pseudo bool, ok bool) {
	switch proto {
	case 6:
		return 16, true, true
	case 17:
		return 6, true, true
	case 58:
		return 2, true, true
	case 1:
		return 2, false, true
	}
	return 0, false, false
}

// isICMPError reports whether an ICMP / ICMPv6 message of that type carries
// the offending packet's IP header (at offset 8).
func isICMPError(v6 bool, typ byte) bool {
	if v6 {
		return typ >= 1 && typ <= 4
	}
	switch typ {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}
