package engine

import (
	"encoding/binary"
	"strconv"
	"time"

	"github.com/filterd/filterd/packet"
)

// LinkType is a pcap LINKTYPE_* number. (gopacket's layers.LinkType is a
// uint8 and cannot hold LINKTYPE_LINUX_SLL2 = 276, so filterd keeps its own.)
type LinkType uint32

// Link types that packet sources understand.
const (
	LinkTypeNull     LinkType = 0   // BSD loopback, host-order AF_ family
	LinkTypeEthernet LinkType = 1   // Ethernet, with 802.1Q / 802.1ad tags
	LinkTypeRaw      LinkType = 101 // raw IPv4 or IPv6
	LinkTypeLoop     LinkType = 108 // OpenBSD loopback, network-order AF_ family
	LinkTypeSLL      LinkType = 113 // Linux cooked capture v1
	LinkTypeIPv4     LinkType = 228 // raw IPv4
	LinkTypeIPv6     LinkType = 229 // raw IPv6
	LinkTypeSLL2     LinkType = 276 // Linux cooked capture v2

	linkTypeRawDLT12 LinkType = 12 // DLT_RAW as some BSDs number it
	linkTypeRawDLT14 LinkType = 14 // DLT_RAW on OpenBSD
)

// String returns the libpcap DLT name (without the DLT_ prefix).
func (l LinkType) String() string {
	switch l {
	case LinkTypeNull:
		return "NULL"
	case LinkTypeEthernet:
		return "EN10MB"
	case LinkTypeRaw, linkTypeRawDLT12, linkTypeRawDLT14:
		return "RAW"
	case LinkTypeLoop:
		return "LOOP"
	case LinkTypeSLL:
		return "LINUX_SLL"
	case LinkTypeIPv4:
		return "IPV4"
	case LinkTypeIPv6:
		return "IPV6"
	case LinkTypeSLL2:
		return "LINUX_SLL2"
	}
	return "LINKTYPE_" + strconv.Itoa(int(l))
}

// SkipReason says why a frame carries no IP packet. The engine counts skipped
// frames by reason; they are not errors.
type SkipReason uint8

// Reasons to skip a frame.
const (
	SkipNone        SkipReason = iota // the frame carries an IP packet
	SkipNonIP                         // ARP, STP, LLDP, other EtherTypes or address families
	SkipLinkShort                     // the frame is shorter than its link-layer header
	SkipUnknownLink                   // a link type this source does not decode
)

// String names the reason as the engine's counters print it.
func (s SkipReason) String() string {
	switch s {
	case SkipNone:
		return "ip"
	case SkipNonIP:
		return "non-ip"
	case SkipLinkShort:
		return "short-link-header"
	case SkipUnknownLink:
		return "unknown-link-type"
	}
	return "skip?"
}

// LinkInfo is what the link layer says about a frame.
type LinkInfo struct {
	SrcMAC    [6]byte
	HasMAC    bool
	PktType   packet.PktType
	EtherType uint16 // protocol of the payload (after VLAN tags), 0 when none
	VLANs     uint8  // number of 802.1Q/802.1ad tags
	VLAN      uint16 // VLAN id of the outermost tag
}

// Frame is one captured frame. The source owns Data and L3: they are valid
// until the next call to Next.
type Frame struct {
	Num      int       // packet number in the capture, 1-based
	Time     time.Time // capture timestamp
	LinkType LinkType
	CapLen   int    // captured length (len(Data))
	OrigLen  int    // length on the wire
	Data     []byte // the whole captured frame, link header included
	L3       []byte // the IP packet inside Data; nil when Skip != SkipNone
	Link     LinkInfo
	Skip     SkipReason
}

// FillMeta copies what the frame knows into a packet's metadata: time,
// source MAC and link-layer packet type.
func (f *Frame) FillMeta(m *packet.Meta) {
	m.Time = f.Time
	m.SrcMAC = f.Link.SrcMAC
	m.HasMAC = f.Link.HasMAC
	m.PktType = f.Link.PktType
}

const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	etherTypeQinQ2 = 0x9100
)

// parseLink finds the IP packet in a frame of the given link type and fills
// f.L3, f.Link and f.Skip. It allocates nothing.
func parseLink(lt LinkType, data []byte, f *Frame) {
	f.L3 = nil
	f.Link = LinkInfo{}
	f.Skip = SkipNone
	switch lt {
	case LinkTypeEthernet:
		if len(data) < 14 {
			f.Skip = SkipLinkShort
			return
		}
		dst := data[0:6]
		copy(f.Link.SrcMAC[:], data[6:12])
		f.Link.HasMAC = true
		switch {
		case dst[0] == 0xff && dst[1] == 0xff && dst[2] == 0xff && dst[3] == 0xff && dst[4] == 0xff && dst[5] == 0xff:
			f.Link.PktType = packet.PktBroadcast
		case dst[0]&1 != 0:
			f.Link.PktType = packet.PktMulticast
		}
		etherPayload(binary.BigEndian.Uint16(data[12:14]), data[14:], f)
	case LinkTypeSLL:
		// pkttype(2) hatype(2) halen(2) addr(8) protocol(2)
		if len(data) < 16 {
			f.Skip = SkipLinkShort
			return
		}
		sllPktType(binary.BigEndian.Uint16(data[0:2]), f)
		if binary.BigEndian.Uint16(data[2:4]) == 1 && binary.BigEndian.Uint16(data[4:6]) == 6 {
			copy(f.Link.SrcMAC[:], data[6:12])
			f.Link.HasMAC = true
		}
		etherPayload(binary.BigEndian.Uint16(data[14:16]), data[16:], f)
	case LinkTypeSLL2:
		// protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
		if len(data) < 20 {
			f.Skip = SkipLinkShort
			return
		}
		sllPktType(uint16(data[10]), f)
		if binary.BigEndian.Uint16(data[8:10]) == 1 && data[11] == 6 {
			copy(f.Link.SrcMAC[:], data[12:18])
			f.Link.HasMAC = true
		}
		etherPayload(binary.BigEndian.Uint16(data[0:2]), data[20:], f)
	case LinkTypeNull, LinkTypeLoop:
		if len(data) < 4 {
			f.Skip = SkipLinkShort
			return
		}
		var fam uint32
		if lt == LinkTypeLoop {
			fam = binary.BigEndian.Uint32(data[0:4])
		} else {
			// host byte order of the capturing machine: guess it
			fam = binary.LittleEndian.Uint32(data[0:4])
			if fam > 0xffff {
				fam = binary.BigEndian.Uint32(data[0:4])
			}
		}
		switch fam {
		case 2: // AF_INET everywhere
			f.Link.EtherType = etherTypeIPv4
		case 10, 24, 28, 30: // AF_INET6: Linux, NetBSD/OpenBSD, FreeBSD, Darwin
			f.Link.EtherType = etherTypeIPv6
		default:
			f.Skip = SkipNonIP
			return
		}
		ipPayload(data[4:], f)
	case LinkTypeRaw, linkTypeRawDLT12, linkTypeRawDLT14, LinkTypeIPv4, LinkTypeIPv6:
		// The decoder judges a packet whose version nibble is neither 4
		// nor 6 (or not what LINKTYPE_IPV4/IPV6 promise) as malformed.
		ipPayload(data, f)
	default:
		f.Skip = SkipUnknownLink
	}
}

func sllPktType(t uint16, f *Frame) {
	switch t {
	case 1: // PACKET_BROADCAST
		f.Link.PktType = packet.PktBroadcast
	case 2: // PACKET_MULTICAST
		f.Link.PktType = packet.PktMulticast
	}
}

// etherPayload strips 802.1Q/802.1ad tags and keeps IPv4/IPv6 payloads.
func etherPayload(et uint16, b []byte, f *Frame) {
	for et == etherTypeVLAN || et == etherTypeQinQ || et == etherTypeQinQ2 {
		if len(b) < 4 {
			f.Skip = SkipLinkShort
			return
		}
		if f.Link.VLANs == 0 {
			f.Link.VLAN = binary.BigEndian.Uint16(b[0:2]) & 0x0fff
		}
		if f.Link.VLANs < 255 {
			f.Link.VLANs++
		}
		et = binary.BigEndian.Uint16(b[2:4])
		b = b[4:]
	}
	f.Link.EtherType = et
	if et != etherTypeIPv4 && et != etherTypeIPv6 {
		f.Skip = SkipNonIP
		return
	}
	f.L3 = b
}

// ipPayload takes b as an IP packet (raw link types, loopback).
func ipPayload(b []byte, f *Frame) {
	if len(b) == 0 {
		f.Skip = SkipLinkShort
		return
	}
	switch b[0] >> 4 {
	case 4:
		f.Link.EtherType = etherTypeIPv4
	case 6:
		f.Link.EtherType = etherTypeIPv6
	}
	f.L3 = b
}
