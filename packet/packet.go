// Package packet holds the decoded, parse-once view of one IP packet that
// the connection tracker and the rule matcher both read.
//
// A Packet is a plain value: the engine owns one per worker and refills it for
// every packet, so nothing here allocates per packet. Addresses are
// netip.Addr values; byte slices (L3, Payload) point into the caller's buffer
// and are only valid until the next packet.
package packet

import (
	"net/netip"
	"time"
)

// Family is the IP version of a packet or rule: 4 or 6.
type Family uint8

// Address families.
const (
	FamilyAny Family = 0
	IPv4      Family = 4
	IPv6      Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return "any"
}

// IP protocol numbers used throughout filterd.
const (
	ProtoICMP    uint8 = 1
	ProtoIGMP    uint8 = 2
	ProtoTCP     uint8 = 6
	ProtoUDP     uint8 = 17
	ProtoGRE     uint8 = 47
	ProtoESP     uint8 = 50
	ProtoAH      uint8 = 51
	ProtoICMPv6  uint8 = 58
	ProtoSCTP    uint8 = 132
	ProtoUDPLite uint8 = 136
)

// TCP flag bits as they appear in byte 13 of the TCP header.
const (
	TCPFin uint8 = 0x01
	TCPSyn uint8 = 0x02
	TCPRst uint8 = 0x04
	TCPPsh uint8 = 0x08
	TCPAck uint8 = 0x10
	TCPUrg uint8 = 0x20
	TCPEce uint8 = 0x40
	TCPCwr uint8 = 0x80
)

// Hook is a netfilter hook, named as the kernel names them.
type Hook uint8

// Netfilter hooks (NF_INET_*).
const (
	HookPreRouting Hook = iota
	HookInput
	HookForward
	HookOutput
	HookPostRouting
	NumHooks
)

var hookNames = [NumHooks]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

func (h Hook) String() string {
	if h < NumHooks {
		return hookNames[h]
	}
	return "HOOK?"
}

// ParseHook returns the hook with the given kernel chain name.
func ParseHook(s string) (Hook, bool) {
	for i, n := range hookNames {
		if n == s {
			return Hook(i), true
		}
	}
	return 0, false
}

// CTState is a bit set of conntrack states as seen by -m state / -m conntrack.
// The bit values follow the kernel's XT_STATE_BIT layout.
type CTState uint8

// Conntrack states.
const (
	CTInvalid     CTState = 1 << 0
	CTEstablished CTState = 1 << 1
	CTRelated     CTState = 1 << 2
	CTNew         CTState = 1 << 3
	CTUntracked   CTState = 1 << 4
)

// String returns the state in iptables' comma-separated spelling.
func (s CTState) String() string {
	if s == 0 {
		return "NONE"
	}
	out := make([]byte, 0, 40)
	for _, n := range [...]struct {
		b CTState
		s string
	}{{CTInvalid, "INVALID"}, {CTNew, "NEW"}, {CTRelated, "RELATED"}, {CTEstablished, "ESTABLISHED"}, {CTUntracked, "UNTRACKED"}} {
		if s&n.b != 0 {
			if len(out) > 0 {
				out = append(out, ',')
			}
			out = append(out, n.s...)
		}
	}
	return string(out)
}

// CTDir is the direction of a packet relative to its conntrack entry.
type CTDir uint8

// Conntrack directions.
const (
	DirOriginal CTDir = 0
	DirReply    CTDir = 1
)

// Checksum says what is known about a packet's L4 checksum.
type Checksum uint8

// Checksum verdicts.
const (
	ChecksumUnknown Checksum = iota // not verified (e.g. offloaded, or locally generated)
	ChecksumGood
	ChecksumBad
)

// PktType is the link-layer packet type (-m pkttype).
type PktType uint8

// Link-layer packet types.
const (
	PktUnicast PktType = iota
	PktBroadcast
	PktMulticast
)

// Meta carries what the packet source knows about a packet besides its bytes.
type Meta struct {
	Time     time.Time // arrival time; in pcap replay the capture timestamp
	Hook     Hook      // netfilter hook the packet traverses
	InIface  string    // input interface ("" when none, e.g. OUTPUT)
	OutIface string    // output interface ("" when none, e.g. INPUT)
	Mark     uint32    // nfmark
	UID, GID uint32    // socket owner, valid when HasOwner
	HasOwner bool
	SrcMAC   [6]byte // link-layer source, valid when HasMAC
	HasMAC   bool
	// L2 is the link-layer header (for Ethernet: destination MAC, source MAC,
	// EtherType), when known; LOG prints it as MAC=. It points into the
	// caller's buffer.
	L2      []byte
	PktType PktType
	// Local is true for packets the host itself sent (their checksums are not
	// judged, as with the kernel's conntrack on LOCAL_OUT).
	Local bool
}

// Embedded is the header of the packet quoted inside an ICMP/ICMPv6 error.
type Embedded struct {
	Valid            bool
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // TCP/UDP ports, or ICMP id in SrcPort for echo
	ICMPType         uint8
	ICMPCode         uint8
	Seq              uint32 // TCP sequence number of the quoted segment
}

// TCPOptions are the TCP options conntrack needs.
type TCPOptions struct {
	WScale   int8 // window scale shift, -1 when absent
	SACKPerm bool
	MSS      uint16
}

// Packet is the decoded view of one IP packet (IPv4 or IPv6) plus its metadata.
type Packet struct {
	Meta

	Family   Family
	Src, Dst netip.Addr
	Proto    uint8  // transport protocol (after IPv6 extension headers)
	Length   int    // L3 length in bytes (IPv4 total length, IPv6 40+payload)
	TTL      uint8  // IPv4 TTL or IPv6 hop limit
	TOS      uint8  // IPv4 TOS or IPv6 traffic class
	ID       uint32 // IPv4 identification or IPv6 fragment id
	// Fragment is true for a non-first fragment (-f); FragOffset and MoreFrags
	// describe any fragment. After reassembly both are false/zero.
	Fragment    bool
	FragOffset  uint16 // in 8-byte units
	MoreFrags   bool
	HasFragHdr  bool    // IPv6 packet carried a Fragment header
	ExtHeaders  []uint8 // IPv6 extension header types seen, in order (slice into a fixed array)
	RoutingType int16   // IPv6 routing header type, -1 when absent
	SegsLeft    uint8

	// Transport header. Ports are zero for protocols without them.
	SrcPort, DstPort uint16
	TCPFlags         uint8
	Seq, Ack         uint32
	Window           uint16
	TCPDataOff       uint8 // TCP header length in bytes
	TCPOpt           TCPOptions
	ICMPType         uint8
	ICMPCode         uint8
	ICMPID           uint16 // echo/timestamp/info id
	Inner            Embedded

	// L4 checksum state.
	Checksum Checksum

	// L3 is the whole IP packet; Payload is the transport payload. Both point
	// into the caller's buffer.
	L3      []byte
	Payload []byte

	// CTState and CTDir are filled in by the connection tracker.
	CTState CTState
	CTDir   CTDir

	// Truncated is set when the packet is shorter than its headers claim; such
	// a packet is INVALID to conntrack.
	Truncated bool
}

// HasPorts reports whether the transport protocol carries 16-bit ports.
func (p *Packet) HasPorts() bool {
	switch p.Proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP, ProtoUDPLite:
		return true
	}
	return false
}

// IsICMP reports whether the packet is ICMP (v4) or ICMPv6.
func (p *Packet) IsICMP() bool {
	return p.Proto == ProtoICMP || p.Proto == ProtoICMPv6
}

// Reset clears the packet for reuse, keeping the backing of ExtHeaders.
func (p *Packet) Reset() {
	ext := p.ExtHeaders[:0]
	*p = Packet{}
	p.ExtHeaders = ext
	p.RoutingType = -1
	p.TCPOpt.WScale = -1
}
