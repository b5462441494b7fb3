package engine

import (
	"encoding/binary"
	"net/netip"
	"strconv"

	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// AppendLogLine appends the text the kernel's LOG target (nf_log_syslog.c)
// writes for packet p to dst and returns the extended buffer: the prefix,
// IN=/OUT=, MAC= when the packet came in on an interface, then the IPv4 or
// IPv6 header fields, the transport fields and, for ICMP errors, the quoted
// packet in brackets. l2 is the packet's link-layer header (dst MAC, src MAC,
// EtherType for Ethernet), or nil when unknown. The line has no newline and,
// like the kernel's, ends in a space. It does not allocate when dst has room.
func AppendLogLine(dst []byte, p *packet.Packet, o *ruleset.LogOptions, l2 []byte) []byte {
	dst = append(dst, o.Prefix...)
	dst = append(dst, "IN="...)
	dst = append(dst, p.InIface...)
	dst = append(dst, " OUT="...)
	dst = append(dst, p.OutIface...)
	dst = append(dst, ' ')
	if p.InIface != "" {
		if o.MACDecode && len(l2) >= 14 {
			dst = append(dst, "MACSRC="...)
			dst = appendMAC(dst, l2[6:12])
			dst = append(dst, " MACDST="...)
			dst = appendMAC(dst, l2[0:6])
			dst = append(dst, " MACPROTO="...)
			dst = appendHex(dst, uint64(binary.BigEndian.Uint16(l2[12:14])), 4, false)
			dst = append(dst, ' ')
		} else {
			dst = append(dst, "MAC="...)
			dst = appendMAC(dst, l2)
			dst = append(dst, ' ')
		}
	}
	if p.Family == packet.IPv6 {
		return appendIPv6(dst, p, o, p.L3, true)
	}
	return appendIPv4(dst, p, o, p.L3, true)
}

func appendMAC(dst, b []byte) []byte {
	for i, c := range b {
		if i > 0 {
			dst = append(dst, ':')
		}
		dst = appendHex(dst, uint64(c), 2, false)
	}
	return dst
}

const hexLower, hexUpper = "0123456789abcdef", "0123456789ABCDEF"

// appendHex appends v in hex with at least width digits.
func appendHex(dst []byte, v uint64, width int, upper bool) []byte {
	digits := hexLower
	if upper {
		digits = hexUpper
	}
	var buf [16]byte
	i := len(buf)
	for v > 0 || len(buf)-i < width {
		i--
		buf[i] = digits[v&0xf]
		v >>= 4
	}
	return append(dst, buf[i:]...)
}

func appendKV(dst []byte, key string, v uint64) []byte {
	dst = append(dst, key...)
	dst = strconv.AppendUint(dst, v, 10)
	return append(dst, ' ')
}

func appendAddr(dst []byte, key string, b []byte) []byte {
	dst = append(dst, key...)
	if a, ok := netip.AddrFromSlice(b); ok {
		dst = a.AppendTo(dst)
	}
	return append(dst, ' ')
}

func appendIncomplete(dst []byte, n int) []byte {
	dst = append(dst, "INCOMPLETE ["...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, " bytes] "...)
}

// appendIPv4 follows dump_ipv4_packet; outer is false for the packet quoted
// in an ICMP error (the kernel recurses once).
func appendIPv4(dst []byte, p *packet.Packet, o *ruleset.LogOptions, b []byte, outer bool) []byte {
	if len(b) < 20 {
		return append(dst, "TRUNCATED"...)
	}
	ihl := int(b[0]&0x0f) * 4
	dst = appendAddr(dst, "SRC=", b[12:16])
	dst = appendAddr(dst, "DST=", b[16:20])
	dst = appendKV(dst, "LEN=", uint64(binary.BigEndian.Uint16(b[2:4])))
	dst = append(dst, "TOS=0x"...)
	dst = appendHex(dst, uint64(b[1]&0x1e), 2, true)
	dst = append(dst, " PREC=0x"...)
	dst = appendHex(dst, uint64(b[1]&0xe0), 2, true)
	dst = append(dst, ' ')
	dst = appendKV(dst, "TTL=", uint64(b[8]))
	dst = appendKV(dst, "ID=", uint64(binary.BigEndian.Uint16(b[4:6])))
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&0x8000 != 0 {
		dst = append(dst, "CE "...)
	}
	if frag&0x4000 != 0 {
		dst = append(dst, "DF "...)
	}
	if frag&0x2000 != 0 {
		dst = append(dst, "MF "...)
	}
	off := frag & 0x1fff
	if off != 0 {
		dst = append(dst, "FRAG:"...)
		dst = strconv.AppendUint(dst, uint64(off), 10)
		dst = append(dst, ' ')
	}
	if o.IPOptions && ihl > 20 {
		if len(b) < ihl {
			return append(dst, "TRUNCATED"...)
		}
		dst = append(dst, "OPT ("...)
		for _, c := range b[20:ihl] {
			dst = appendHex(dst, uint64(c), 2, true)
		}
		dst = append(dst, ") "...)
	}
	if ihl < 20 || ihl > len(b) {
		ihl = min(max(ihl, 20), len(b))
	}
	l4 := b[ihl:]
	switch proto := b[9]; proto {
	case packet.ProtoTCP:
		var stop bool
		if dst, stop = appendTCP(dst, l4, off != 0, o); stop {
			return dst
		}
	case packet.ProtoUDP, packet.ProtoUDPLite:
		var stop bool
		if dst, stop = appendUDP(dst, l4, proto, off != 0); stop {
			return dst
		}
	case packet.ProtoICMP:
		dst = append(dst, "PROTO=ICMP "...)
		if off != 0 {
			break
		}
		if len(l4) < 4 {
			dst = appendIncomplete(dst, len(l4))
			break
		}
		typ, code := l4[0], l4[1]
		dst = appendKV(dst, "TYPE=", uint64(typ))
		dst = appendKV(dst, "CODE=", uint64(code))
		if need := icmpRequiredLen(typ); need > 0 && len(l4) < need {
			dst = appendIncomplete(dst, len(l4))
			break
		}
		switch typ {
		case 0, 8:
			dst = appendKV(dst, "ID=", uint64(binary.BigEndian.Uint16(l4[4:6])))
			dst = appendKV(dst, "SEQ=", uint64(binary.BigEndian.Uint16(l4[6:8])))
		case 12:
			dst = appendKV(dst, "PARAMETER=", uint64(l4[4]))
		case 5, 3, 4, 11:
			if typ == 5 {
				dst = appendAddr(dst, "GATEWAY=", l4[4:8])
			}
			if outer {
				dst = append(dst, '[')
				dst = appendIPv4(dst, p, o, l4[8:], false)
				dst = append(dst, "] "...)
			}
			if typ == 3 && code == 4 {
				dst = appendKV(dst, "MTU=", uint64(binary.BigEndian.Uint16(l4[6:8])))
			}
		}
	case packet.ProtoAH:
		if off != 0 {
			break
		}
		dst = append(dst, "PROTO=AH "...)
		if len(l4) < 12 {
			dst = appendIncomplete(dst, len(l4))
			break
		}
		dst = append(dst, "SPI=0x"...)
		dst = appendHex(dst, uint64(binary.BigEndian.Uint32(l4[4:8])), 1, false)
		dst = append(dst, ' ')
	case packet.ProtoESP:
		dst = append(dst, "PROTO=ESP "...)
		if off != 0 {
			break
		}
		if len(l4) < 8 {
			dst = appendIncomplete(dst, len(l4))
			break
		}
		dst = append(dst, "SPI=0x"...)
		dst = appendHex(dst, uint64(binary.BigEndian.Uint32(l4[0:4])), 1, false)
		dst = append(dst, ' ')
	default:
		dst = appendKV(dst, "PROTO=", uint64(proto))
	}
	if outer {
		dst = appendTail(dst, p, o)
	}
	return dst
}

func icmpRequiredLen(t uint8) int {
	switch t {
	case 0, 8:
		return 4
	case 3, 4, 5, 11, 12:
		return 8 + 20
	case 13, 14:
		return 20
	case 17, 18:
		return 12
	}
	return 0
}

func appendTail(dst []byte, p *packet.Packet, o *ruleset.LogOptions) []byte {
	if o.UID && p.HasOwner {
		dst = appendKV(dst, "UID=", uint64(p.UID))
		dst = appendKV(dst, "GID=", uint64(p.GID))
	}
	if p.Mark != 0 {
		dst = append(dst, "MARK=0x"...)
		dst = appendHex(dst, uint64(p.Mark), 1, false)
		dst = append(dst, ' ')
	}
	return dst
}

// appendTCP follows nf_log_dump_tcp_header; stop reports that the kernel
// returns early (truncated header), skipping UID and MARK.
func appendTCP(dst []byte, l4 []byte, fragment bool, o *ruleset.LogOptions) ([]byte, bool) {
	dst = append(dst, "PROTO=TCP "...)
	if fragment {
		return dst, false
	}
	if len(l4) < 20 {
		return appendIncomplete(dst, len(l4)), true
	}
	dst = appendKV(dst, "SPT=", uint64(binary.BigEndian.Uint16(l4[0:2])))
	dst = appendKV(dst, "DPT=", uint64(binary.BigEndian.Uint16(l4[2:4])))
	if o.TCPSequence {
		dst = appendKV(dst, "SEQ=", uint64(binary.BigEndian.Uint32(l4[4:8])))
		dst = appendKV(dst, "ACK=", uint64(binary.BigEndian.Uint32(l4[8:12])))
	}
	dst = appendKV(dst, "WINDOW=", uint64(binary.BigEndian.Uint16(l4[14:16])))
	dst = append(dst, "RES=0x"...)
	// TCP_RESERVED_BITS (0x0F000000 of the flag word) >> 22: the three
	// reserved bits below the data offset, as the kernel prints them.
	word := binary.BigEndian.Uint32(l4[12:16])
	dst = appendHex(dst, uint64(uint8((word&0x0f000000)>>22)), 2, false)
	dst = append(dst, ' ')
	flags := l4[13]
	if l4[12]&0x01 != 0 {
		dst = append(dst, "AE "...)
	}
	for _, f := range [...]struct {
		bit  uint8
		name string
	}{{packet.TCPCwr, "CWR "}, {packet.TCPEce, "ECE "}, {packet.TCPUrg, "URG "}, {packet.TCPAck, "ACK "}, {packet.TCPPsh, "PSH "}, {packet.TCPRst, "RST "}, {packet.TCPSyn, "SYN "}, {packet.TCPFin, "FIN "}} {
		if flags&f.bit != 0 {
			dst = append(dst, f.name...)
		}
	}
	dst = appendKV(dst, "URGP=", uint64(binary.BigEndian.Uint16(l4[18:20])))
	doff := int(l4[12]>>4) * 4
	if o.TCPOptions && doff > 20 {
		if len(l4) < doff {
			return append(dst, "OPT (TRUNCATED)"...), true
		}
		dst = append(dst, "OPT ("...)
		for _, c := range l4[20:doff] {
			dst = appendHex(dst, uint64(c), 2, true)
		}
		dst = append(dst, ") "...)
	}
	return dst, false
}

func appendUDP(dst []byte, l4 []byte, proto uint8, fragment bool) ([]byte, bool) {
	if proto == packet.ProtoUDP {
		dst = append(dst, "PROTO=UDP "...)
	} else {
		dst = append(dst, "PROTO=UDPLITE "...)
	}
	if fragment {
		return dst, false
	}
	if len(l4) < 8 {
		return appendIncomplete(dst, len(l4)), true
	}
	dst = appendKV(dst, "SPT=", uint64(binary.BigEndian.Uint16(l4[0:2])))
	dst = appendKV(dst, "DPT=", uint64(binary.BigEndian.Uint16(l4[2:4])))
	dst = appendKV(dst, "LEN=", uint64(binary.BigEndian.Uint16(l4[4:6])))
	return dst, false
}

// appendIPv6 follows dump_ipv6_packet.
func appendIPv6(dst []byte, p *packet.Packet, o *ruleset.LogOptions, b []byte, outer bool) []byte {
	if len(b) < 40 {
		return append(dst, "TRUNCATED"...)
	}
	dst = appendAddr(dst, "SRC=", b[8:24])
	dst = appendAddr(dst, "DST=", b[24:40])
	first := binary.BigEndian.Uint32(b[0:4])
	dst = appendKV(dst, "LEN=", uint64(binary.BigEndian.Uint16(b[4:6]))+40)
	dst = appendKV(dst, "TC=", uint64((first&0x0ff00000)>>20))
	dst = appendKV(dst, "HOPLIMIT=", uint64(b[7]))
	dst = appendKV(dst, "FLOWLBL=", uint64(first&0x000fffff))
	fragment := false
	ptr := 40
	hdr := b[6]
	for hdr != 59 && isIPv6Ext(hdr) {
		if len(b) < ptr+2 {
			return append(dst, "TRUNCATED"...)
		}
		if o.IPOptions {
			dst = append(dst, "OPT ( "...)
		}
		var hdrlen int
		switch hdr {
		case 44:
			dst = append(dst, "FRAG:"...)
			if len(b) < ptr+8 {
				return append(dst, "TRUNCATED "...)
			}
			fo := binary.BigEndian.Uint16(b[ptr+2 : ptr+4])
			dst = strconv.AppendUint(dst, uint64(fo&0xfff8), 10)
			dst = append(dst, ' ')
			if fo&1 != 0 {
				dst = append(dst, "INCOMPLETE "...)
			}
			dst = append(dst, "ID:"...)
			dst = appendHex(dst, uint64(binary.BigEndian.Uint32(b[ptr+4:ptr+8])), 8, false)
			dst = append(dst, ' ')
			if fo&0xfff8 != 0 {
				fragment = true
			}
			hdrlen = 8
		case 0, 43, 60:
			if fragment {
				if o.IPOptions {
					dst = append(dst, ')')
				}
				return dst
			}
			hdrlen = (int(b[ptr+1]) + 1) * 8
		case 51:
			if o.IPOptions {
				dst = append(dst, "AH "...)
				if fragment {
					return append(dst, ')')
				}
				if len(b) < ptr+12 {
					dst = append(dst, "INCOMPLETE ["...)
					dst = strconv.AppendInt(dst, int64(len(b)-ptr), 10)
					return append(dst, " bytes] )"...)
				}
				dst = append(dst, "SPI=0x"...)
				dst = appendHex(dst, uint64(binary.BigEndian.Uint32(b[ptr+4:ptr+8])), 1, false)
				dst = append(dst, ' ')
			}
			hdrlen = (int(b[ptr+1]) + 2) * 4
		case 50:
			if o.IPOptions {
				dst = append(dst, "ESP "...)
				if fragment {
					return append(dst, ')')
				}
				if len(b) < ptr+8 {
					dst = append(dst, "INCOMPLETE ["...)
					dst = strconv.AppendInt(dst, int64(len(b)-ptr), 10)
					return append(dst, " bytes] )"...)
				}
				dst = append(dst, "SPI=0x"...)
				dst = appendHex(dst, uint64(binary.BigEndian.Uint32(b[ptr:ptr+4])), 1, false)
				dst = append(dst, " )"...)
			}
			return dst
		default:
			dst = append(dst, "Unknown Ext Hdr "...)
			return strconv.AppendUint(dst, uint64(hdr), 10)
		}
		if o.IPOptions {
			dst = append(dst, ") "...)
		}
		hdr = b[ptr]
		ptr += hdrlen
	}
	var l4 []byte
	if ptr <= len(b) {
		l4 = b[ptr:]
	}
	switch hdr {
	case packet.ProtoTCP:
		var stop bool
		if dst, stop = appendTCP(dst, l4, fragment, o); stop {
			return dst
		}
	case packet.ProtoUDP, packet.ProtoUDPLite:
		var stop bool
		if dst, stop = appendUDP(dst, l4, hdr, fragment); stop {
			return dst
		}
	case packet.ProtoICMPv6:
		dst = append(dst, "PROTO=ICMPv6 "...)
		if fragment {
			break
		}
		if len(l4) < 8 {
			return appendIncomplete(dst, len(l4))
		}
		typ := l4[0]
		dst = appendKV(dst, "TYPE=", uint64(typ))
		dst = appendKV(dst, "CODE=", uint64(l4[1]))
		switch typ {
		case 128, 129:
			dst = appendKV(dst, "ID=", uint64(binary.BigEndian.Uint16(l4[4:6])))
			dst = appendKV(dst, "SEQ=", uint64(binary.BigEndian.Uint16(l4[6:8])))
		case 130, 131, 132:
		case 4, 1, 2, 3:
			if typ == 4 {
				dst = append(dst, "POINTER="...)
				dst = appendHex(dst, uint64(binary.BigEndian.Uint32(l4[4:8])), 8, false)
				dst = append(dst, ' ')
			}
			if outer {
				dst = append(dst, '[')
				dst = appendIPv6(dst, p, o, l4[8:], false)
				dst = append(dst, "] "...)
			}
			if typ == 2 {
				dst = appendKV(dst, "MTU=", uint64(binary.BigEndian.Uint32(l4[4:8])))
			}
		}
	default:
		dst = appendKV(dst, "PROTO=", uint64(hdr))
	}
	if outer {
		dst = appendTail(dst, p, o)
	}
	return dst
}

// isIPv6Ext is the kernel's nf_ip6_ext_hdr: hop-by-hop, routing, fragment,
// ESP, AH, no-next-header and destination options.
func isIPv6Ext(h uint8) bool {
	switch h {
	case 0, 43, 44, 50, 51, 59, 60:
		return true
	}
	return false
}
