package engine

import (
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
