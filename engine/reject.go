package engine

import (
	"encoding/binary"
	"net/netip"

	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// RejectWouldReply reports whether the kernel's REJECT target would send a
// reply to p (nf_reject_ipv4.c / nf_reject_ipv6.c and icmp_send): no reply
// to non-first fragments, no RST in answer to a RST or to a segment with a
// bad checksum, no ICMP error in answer to an ICMP error, to a TCP/UDP packet
// with a bad checksum, or to a multicast/broadcast destination. (The kernel
// also rate-limits ICMP errors to remote hosts; that is not modelled here.)
func RejectWouldReply(p *packet.Packet, with ruleset.RejectWith) bool {
	if p.Fragment {
		return false
	}
	if with == ruleset.RejectTCPReset {
		return p.Proto == packet.ProtoTCP && p.TCPFlags&packet.TCPRst == 0 && p.Checksum != packet.ChecksumBad && !p.Truncated
	}
	if (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP) && p.Checksum == packet.ChecksumBad {
		return false
	}
	if p.Dst.IsMulticast() || p.Dst == broadcast4 {
		return false
	}
	switch p.Proto {
	case packet.ProtoICMP:
		// icmp_send answers only informational messages (echo, timestamp,
		// address mask, ...), never an error.
		switch p.ICMPType {
		case 3, 4, 5, 11, 12:
			return false
		}
	case packet.ProtoICMPv6:
		// ICMPv6 errors have types below 128.
		if p.ICMPType < 128 {
			return false
		}
	}
	return true
}

var broadcast4 = netipAddr4(255, 255, 255, 255)

func netipAddr4(a, b, c, d byte) netip.Addr { return netip.AddrFrom4([4]byte{a, b, c, d}) }

// Reply sizes and limits the kernel uses for REJECT replies.
const (
	// rejectTTL is the TTL / hop limit of the reply: ip4_dst_hoplimit and
	// ip6_dst_hoplimit with the default sysctls (net.ipv4.ip_default_ttl,
	// net.ipv6.conf.*.hop_limit).
	rejectTTL = 64
	// icmpQuoteMax is how much of the offending IPv4 packet icmp_send quotes:
	// the reply is at most 576 bytes (RFC 1812), less the IP and ICMP headers.
	icmpQuoteMax = 576 - 20 - 8
	// icmp6QuoteMax is icmp6_send's limit: IPV6_MIN_MTU (1280) less the IPv6
	// and ICMPv6 headers.
	icmp6QuoteMax = 1280 - 40 - 8
)

// ICMP codes for each REJECT type (xt_REJECT / ip6t_REJECT).
var rejectICMPCode = [...]uint8{
	ruleset.RejectICMPPortUnreachable:  3,  // ICMP_PORT_UNREACH
	ruleset.RejectICMPNetUnreachable:   0,  // ICMP_NET_UNREACH
	ruleset.RejectICMPHostUnreachable:  1,  // ICMP_HOST_UNREACH
	ruleset.RejectICMPProtoUnreachable: 2,  // ICMP_PROT_UNREACH
	ruleset.RejectICMPNetProhibited:    9,  // ICMP_NET_ANO
	ruleset.RejectICMPHostProhibited:   10, // ICMP_HOST_ANO
	ruleset.RejectICMPAdminProhibited:  13, // ICMP_PKT_FILTERED
	ruleset.RejectTCPReset:             0,
	ruleset.RejectICMP6NoRoute:         0, // ICMPV6_NOROUTE
	ruleset.RejectICMP6AdmProhibited:   1, // ICMPV6_ADM_PROHIBITED
	ruleset.RejectICMP6AddrUnreachable: 3, // ICMPV6_ADDR_UNREACH
	ruleset.RejectICMP6PortUnreachable: 4, // ICMPV6_PORT_UNREACH
}

// AppendReject appends to dst the reply the kernel's REJECT target sends for
// the packet orig (raw L3 bytes, decoded into p) and returns it, ready for a
// raw IPPROTO_RAW socket (IP header included). ok is false when the kernel
// would send nothing (RejectWouldReply) or the packet is too short.
//
// TCP resets follow nf_reject_ipv4.c / nf_reject_ipv6.c: addresses and ports
// swapped, TTL/hop limit 64, IPv4 ID 0 with DF, traffic class 0; if the
// offending segment had ACK set the RST carries seq = its ack_seq, otherwise
// RST|ACK with ack_seq = seq + SYN + FIN + payload length; window 0.
// ICMP errors follow icmp_send / icmp6_send: type destination unreachable
// with the REJECT type's code, quoting the offending packet from its IP
// header up to 576 (IPv4) or 1280 (IPv6) bytes in all; the IPv4 TOS is the
// original's TOS bits with precedence "internetwork control" (0xc0). The IP
// ID of an ICMPv4 error and the flow label of an ICMPv6 error are 0 here (the
// kernel picks them from its own generators).
func AppendReject(dst []byte, orig []byte, p *packet.Packet, with ruleset.RejectWith) (out []byte, ok bool) {
	if !RejectWouldReply(p, with) || len(orig) < 20 {
		return dst, false
	}
	v6 := orig[0]>>4 == 6
	if v6 && len(orig) < 40 {
		return dst, false
	}
	if with == ruleset.RejectTCPReset {
		return appendRST(dst, orig, p, v6)
	}
	if int(with) >= len(rejectICMPCode) {
		return dst, false
	}
	code := rejectICMPCode[with]
	if v6 {
		// An IPv4 REJECT type given to an IPv6 rule cannot happen (the
		// parser refuses it); map the default anyway.
		if with < ruleset.RejectICMP6NoRoute {
			code = 4
		}
		return appendICMP6Unreach(dst, orig, code)
	}
	if with >= ruleset.RejectICMP6NoRoute {
		code = 3
	}
	return appendICMPUnreach(dst, orig, code)
}

func appendRST(dst, orig []byte, p *packet.Packet, v6 bool) ([]byte, bool) {
	// The kernel measures the segment on the skb, trimmed to the IP length.
	if p.Length > 0 && p.Length < len(orig) {
		orig = orig[:p.Length]
	}
	var tcpOff int
	if v6 {
		// p.Payload is a slice of orig: its offset less the TCP header
		// length is where the TCP header starts (after any extension
		// headers).
		tcpOff = cap(orig) - cap(p.Payload) - int(p.TCPDataOff)
	} else {
		tcpOff = int(orig[0]&0x0f) * 4
	}
	if tcpOff < 20 || len(orig) < tcpOff+20 {
		return dst, false
	}
	oth := orig[tcpOff:]
	doff := int(oth[12]>>4) * 4
	if doff < 20 || tcpOff+doff > len(orig) {
		return dst, false
	}
	start := len(dst)
	var ipLen int
	if v6 {
		ipLen = 40
		dst = append(dst, 0x60, 0, 0, 0, 0, 20, 6, rejectTTL)
		dst = append(dst, orig[24:40]...) // src = original dst
		dst = append(dst, orig[8:24]...)  // dst = original src
	} else {
		ipLen = 20
		dst = append(dst, 0x45, 0, 0, 40, 0, 0, 0x40, 0, rejectTTL, 6, 0, 0)
		dst = append(dst, orig[16:20]...)
		dst = append(dst, orig[12:16]...)
	}
	th := len(dst)
	dst = append(dst, make([]byte, 20)...)
	t := dst[th:]
	copy(t[0:2], oth[2:4]) // source port = original destination port
	copy(t[2:4], oth[0:2])
	flags := oth[13]
	if flags&0x10 != 0 { // ACK: seq = its ack_seq
		copy(t[4:8], oth[8:12])
		t[13] = 0x04 // RST
	} else {
		seq := binary.BigEndian.Uint32(oth[4:8])
		n := uint32(len(orig) - tcpOff - doff)
		if flags&0x02 != 0 {
			n++
		}
		if flags&0x01 != 0 {
			n++
		}
		binary.BigEndian.PutUint32(t[8:12], seq+n)
		t[13] = 0x14 // RST|ACK
	}
	t[12] = 5 << 4
	ip := dst[start:th]
	binary.BigEndian.PutUint16(t[16:18], rejectL4Checksum(ip, v6, 6, t))
	if !v6 {
		binary.BigEndian.PutUint16(ip[10:12], Checksum(0, ip[:ipLen]))
	}
	return dst, true
}

func appendICMPUnreach(dst, orig []byte, code uint8) ([]byte, bool) {
	q := orig
	if tot := int(binary.BigEndian.Uint16(orig[2:4])); tot >= 20 && tot < len(q) {
		q = q[:tot]
	}
	if len(q) > icmpQuoteMax {
		q = q[:icmpQuoteMax]
	}
	start := len(dst)
	total := 20 + 8 + len(q)
	tos := orig[1]&0x1e | 0xc0
	dst = append(dst, 0x45, tos, byte(total>>8), byte(total), 0, 0, 0, 0, rejectTTL, 1, 0, 0)
	dst = append(dst, orig[16:20]...)
	dst = append(dst, orig[12:16]...)
	dst = append(dst, 3, code, 0, 0, 0, 0, 0, 0)
	dst = append(dst, q...)
	ip := dst[start : start+20]
	binary.BigEndian.PutUint16(ip[10:12], Checksum(0, ip))
	icmp := dst[start+20:]
	binary.BigEndian.PutUint16(icmp[2:4], Checksum(0, icmp))
	return dst, true
}

func appendICMP6Unreach(dst, orig []byte, code uint8) ([]byte, bool) {
	q := orig
	if pl := int(binary.BigEndian.Uint16(orig[4:6])); pl != 0 && 40+pl < len(q) {
		q = q[:40+pl]
	}
	if len(q) > icmp6QuoteMax {
		q = q[:icmp6QuoteMax]
	}
	start := len(dst)
	plen := 8 + len(q)
	dst = append(dst, 0x60, 0, 0, 0, byte(plen>>8), byte(plen), 58, rejectTTL)
	dst = append(dst, orig[24:40]...)
	dst = append(dst, orig[8:24]...)
	dst = append(dst, 1, code, 0, 0, 0, 0, 0, 0)
	dst = append(dst, q...)
	ip := dst[start : start+40]
	icmp := dst[start+40:]
	binary.BigEndian.PutUint16(icmp[2:4], rejectL4Checksum(ip, true, 58, icmp))
	return dst, true
}

// rejectL4Checksum is the TCP/UDP/ICMPv6 checksum of seg over the pseudo-header
// taken from the IP header ip.
func rejectL4Checksum(ip []byte, v6 bool, proto uint8, seg []byte) uint16 {
	var sum uint64
	if v6 {
		sum = csumAdd(0, ip[8:40])
	} else {
		sum = csumAdd(0, ip[12:20])
	}
	var ph [8]byte // upper-layer length (32 bits), zero, next header
	binary.BigEndian.PutUint32(ph[0:4], uint32(len(seg)))
	ph[7] = proto
	return Checksum(csumAdd(sum, ph[:]), seg)
}
