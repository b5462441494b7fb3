package engine

import (
	"encoding/binary"
	"net/netip"

	"github.com/filterd/filterd/packet"
)

// decodeFast decodes the common case by hand: a whole, unfragmented IPv4
// packet without options or an IPv6 packet without extension headers,
// carrying a whole TCP or UDP header. It sets every field of p but Meta
// exactly as Reset followed by the general path (decode4/decode6 through
// gopacket's DecodingLayerParser) would, without the cost of Reset and of
// saving and restoring Meta, and returns false without touching p for
// anything else, which then takes the general path. Every check happens
// before the first write to p.
//
// TestDecodeFastMatchesGeneral and FuzzDecode compare both paths field by
// field.
func (d *Decoder) decodeFast(data []byte, p *packet.Packet) bool {
	if d.noFast || len(data) < 20 {
		return false
	}
	var l3, l4 []byte
	var proto uint8
	v4 := data[0] == 0x45 // IPv4, IHL 5: no options
	if v4 {
		tot := int(binary.BigEndian.Uint16(data[2:4]))
		if tot < 20 || len(data) < tot ||
			binary.BigEndian.Uint16(data[6:8])&0x3fff != 0 || // MF or a fragment offset
			ipChecksum(data[:20]) != 0xffff {
			return false
		}
		l3 = data[:tot]
		l4 = l3[20:]
		proto = data[9]
	} else {
		if data[0]>>4 != 6 || len(data) < 40 {
			return false
		}
		tot := 40 + int(binary.BigEndian.Uint16(data[4:6]))
		if len(data) < tot {
			return false
		}
		l3 = data[:tot]
		l4 = l3[40:]
		proto = data[6]
	}
	var payload []byte
	switch proto {
	case packet.ProtoTCP:
		if len(l4) < 20 {
			return false
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || off > len(l4) {
			return false
		}
		payload = l4[off:]
	case packet.ProtoUDP:
		if len(l4) < 8 {
			return false
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:6]))
		if ulen < 8 || ulen > len(l4) {
			return false
		}
		l4 = l4[:ulen]
		payload = l4[8:]
	default:
		return false
	}

	// The packet is ours: fill p as Reset, decode4/decode6 and finishL4
	// do. Every field but Meta is assigned (TestDecodeFastSetsEveryField).
	p.L3 = l3
	p.Proto = proto
	p.Length = len(l3)
	if v4 {
		p.Family = packet.IPv4
		p.Src = netip.AddrFrom4([4]byte(l3[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(l3[16:20]))
		p.TOS = l3[1]
		p.TTL = l3[8]
		p.ID = uint32(binary.BigEndian.Uint16(l3[4:6]))
	} else {
		p.Family = packet.IPv6
		p.Src = netip.AddrFrom16([16]byte(l3[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(l3[24:40]))
		p.TOS = uint8(binary.BigEndian.Uint16(l3[0:2]) >> 4)
		p.TTL = l3[7]
		p.ID = 0
	}
	p.Fragment, p.FragOffset, p.MoreFrags, p.HasFragHdr = false, 0, false, false
	if cap(p.ExtHeaders) == 0 {
		p.ExtHeaders = make([]uint8, 0, maxExtHeaders) // once per Packet value
	}
	p.ExtHeaders = p.ExtHeaders[:0]
	p.RoutingType, p.SegsLeft = -1, 0
	p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	p.DstPort = binary.BigEndian.Uint16(l4[2:4])
	p.TCPOpt = packet.TCPOptions{WScale: -1}
	if proto == packet.ProtoTCP {
		p.Seq = binary.BigEndian.Uint32(l4[4:8])
		p.Ack = binary.BigEndian.Uint32(l4[8:12])
		p.TCPFlags = l4[13]
		p.Window = binary.BigEndian.Uint16(l4[14:16])
		off := len(l4) - len(payload)
		p.TCPDataOff = uint8(off)
		if off > 20 {
			parseTCPOptions(l4[20:off], &p.TCPOpt)
		}
	} else {
		p.Seq, p.Ack, p.TCPFlags, p.Window, p.TCPDataOff = 0, 0, 0, 0, 0
	}
	p.ICMPType, p.ICMPCode, p.ICMPID = 0, 0, 0
	p.Inner = packet.Embedded{}
	p.Payload = payload
	p.Checksum = packet.ChecksumUnknown
	if d.verifyCsum && !p.Local {
		p.Checksum = l4Checksum(p, l4)
	}
	p.CTState, p.CTDir = 0, packet.DirOriginal
	p.Truncated = false
	return true
}
