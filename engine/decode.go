// Package engine ties packet sources, decoding, defragmentation, connection
// tracking and rule matching together.
//
// This file holds the L3 decoder: raw IPv4/IPv6 bytes into a packet.Packet,
// using gopacket's DecodingLayerParser with preallocated layers and no
// allocation per packet.
package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/packet"
)

// Decode error kinds. Every error returned by Decoder.Decode matches exactly
// one of them with errors.Is.
var (
	// ErrTruncated: the packet is shorter than its headers claim (a snaplen
	// cut or a damaged packet). p.Truncated is set.
	ErrTruncated = errors.New("truncated")
	// ErrMalformed: a header field is impossible (bad version, length,
	// header checksum, data offset, option length, ...).
	ErrMalformed = errors.New("malformed")
	// ErrUnsupported: valid but not handled (IPv6 jumbograms).
	ErrUnsupported = errors.New("unsupported")
)

// DecodeError describes why a packet could not be decoded. The Decoder owns
// and reuses the value it returns (so that a flood of bad packets does not
// allocate): it is valid until the next Decode call. Copy it (or call
// Error()) to keep it.
type DecodeError struct {
	// Layer is where the problem is: "ip" (no version), "ipv4", "ipv6",
	// an IPv6 extension header ("ipv6-hbh", "ipv6-route", "ipv6-frag",
	// "ipv6-dstopts", "ipv6-ah"), or the transport: "tcp", "udp", "icmp",
	// "icmpv6".
	Layer string
	Kind  error  // ErrTruncated, ErrMalformed or ErrUnsupported
	What  string // what was wrong or expected
	Got   int    // the offending value or available length, when Want >= 0
	Want  int    // the expected value or needed length; -1 when not applicable
	Err   error  // underlying gopacket error, if any
}

// Error implements error.
func (e *DecodeError) Error() string {
	s := e.Layer + ": " + e.Kind.Error() + ": " + e.What
	if e.Want >= 0 {
		s += fmt.Sprintf(" (got %d, want %d)", e.Got, e.Want)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// IPHeader reports whether the fault is one the kernel's IP layer catches
// before the netfilter hooks (ip_rcv_core, ip6_rcv_core, which also parses
// the hop-by-hop header): such a packet reaches neither conntrack nor the
// rules. Faults further in (other extension headers, the transport header)
// are for conntrack to judge (INVALID).
func (e *DecodeError) IPHeader() bool {
	switch e.Layer {
	case "ip", "ipv4", "ipv6", "ipv6-hbh":
		return true
	}
	return false
}

// Is reports whether target is the error's kind.
func (e *DecodeError) Is(target error) bool { return target == e.Kind }

// Unwrap returns the underlying gopacket error, if any.
func (e *DecodeError) Unwrap() error { return e.Err }

// maxExtHeaders is how many IPv6 extension header types a Packet records.
const maxExtHeaders = 8

// Decoder decodes raw L3 packets. It is not safe for concurrent use; each
// worker owns one. The zero value is not usable: call NewDecoder.
type Decoder struct {
	ip4   ipv4Layer
	ip6   ipv6Layer
	ext   [5]ipv6ExtLayer // hop-by-hop, routing, fragment, destination, AH
	tcp   tcpLayer
	udp   udpLayer
	icmp4 icmp4Layer
	icmp6 icmp6Layer
	pay   gopacket.Payload

	p4, p6  *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType

	// per-packet state filled by the IPv6 extension layers
	extTypes   [maxExtHeaders]uint8
	nExt       int
	hasFrag    bool
	fragOff    uint16
	fragMF     bool
	fragID     uint32
	rtType     int16
	segsLeft   uint8
	l4Proto    uint8 // IPv6 upper-layer protocol after extension headers
	err        DecodeError
	verifyCsum bool
	noFast     bool // tests: always take the general (DecodingLayerParser) path

	// transport header pre-check (see checkL4)
	fragPkt bool // the datagram is a fragment (first or not)
	truncIP bool // the IP datagram is cut short
	l4Bad   bool
	l4Layer string
	l4Kind  error
	l4What  string
	l4Got   int
	l4Want  int
}

// NewDecoder returns a Decoder with its layers preallocated.
func NewDecoder() *Decoder {
	d := &Decoder{verifyCsum: true}
	d.ip6.d = d
	d.ip4.d = d
	for i, e := range [...]struct {
		t     gopacket.LayerType
		proto uint8
		name  string
	}{
		{layers.LayerTypeIPv6HopByHop, 0, "ipv6-hbh"},
		{layers.LayerTypeIPv6Routing, 43, "ipv6-route"},
		{layers.LayerTypeIPv6Fragment, 44, "ipv6-frag"},
		{layers.LayerTypeIPv6Destination, 60, "ipv6-dstopts"},
		{layers.LayerTypeIPSecAH, 51, "ipv6-ah"},
	} {
		d.ext[i] = ipv6ExtLayer{d: d, typ: e.t, proto: e.proto, name: e.name}
	}
	common := []gopacket.DecodingLayer{&d.tcp, &d.udp, &d.icmp4, &d.icmp6, &d.pay}
	d.p4 = newParser(layers.LayerTypeIPv4, append([]gopacket.DecodingLayer{&d.ip4}, common...))
	l6 := []gopacket.DecodingLayer{&d.ip6}
	for i := range d.ext {
		l6 = append(l6, &d.ext[i])
	}
	d.p6 = newParser(layers.LayerTypeIPv6, append(l6, common...))
	d.decoded = make([]gopacket.LayerType, 0, 16)
	return d
}

func newParser(first gopacket.LayerType, ls []gopacket.DecodingLayer) *gopacket.DecodingLayerParser {
	p := gopacket.NewDecodingLayerParser(first)
	var dlc gopacket.DecodingLayerContainer = gopacket.DecodingLayerSparse(nil)
	for _, l := range ls {
		dlc = dlc.Put(l)
	}
	p.SetDecodingLayerContainer(dlc)
	// Every layer's NextLayerType only names layers registered here (or
	// LayerTypeZero to stop), so an UnsupportedLayerType error is a bug and
	// must surface: IgnoreUnsupported stays false.
	return p
}

// SetVerifyChecksums turns L4 checksum verification on (the default) or off.
// When off, p.Checksum stays ChecksumUnknown.
func (d *Decoder) SetVerifyChecksums(on bool) { d.verifyCsum = on }

func (d *Decoder) fail(p *packet.Packet, layer string, kind error, what string, got, want int, err error) error {
	if kind == ErrTruncated && p != nil {
		p.Truncated = true
	}
	d.err = DecodeError{Layer: layer, Kind: kind, What: what, Got: got, Want: want, Err: err}
	return &d.err
}

// Decode decodes the IPv4 or IPv6 packet in data into p. p.Meta is kept;
// every other field is reset and refilled. p.L3 and p.Payload point into
// data. On error p holds whatever was decoded before the problem and the
// error is a *DecodeError (owned by the Decoder) matching ErrTruncated,
// ErrMalformed or ErrUnsupported. The L4 checksum is verified unless the
// packet is a fragment, truncated, or p.Local (see SetVerifyChecksums).
//
// Whole, unfragmented TCP and UDP packets over IPv4 without options or
// IPv6 without extension headers are decoded by hand (decodeFast), with
// results identical to the DecodingLayerParser's, which handles the rest.
func (d *Decoder) Decode(data []byte, p *packet.Packet) error {
	if d.decodeFast(data, p) {
		return nil
	}
	meta := p.Meta
	p.Reset()
	p.Meta = meta
	if cap(p.ExtHeaders) == 0 {
		p.ExtHeaders = make([]uint8, 0, maxExtHeaders) // once per Packet value
	}
	p.L3 = data
	if len(data) == 0 {
		return d.fail(p, "ip", ErrTruncated, "empty packet", 0, 1, nil)
	}
	switch data[0] >> 4 {
	case 4:
		return d.decode4(data, p)
	case 6:
		return d.decode6(data, p)
	}
	return d.fail(p, "ip", ErrMalformed, "IP version", int(data[0]>>4), 4, nil)
}

func (d *Decoder) decode4(data []byte, p *packet.Packet) error {
	p.Family = packet.IPv4
	if len(data) < 20 {
		return d.fail(p, "ipv4", ErrTruncated, "header shorter than 20 bytes", len(data), 20, nil)
	}
	p.Src = netip.AddrFrom4([4]byte(data[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(data[16:20]))
	p.TOS = data[1]
	p.TTL = data[8]
	p.Proto = data[9]
	p.ID = uint32(binary.BigEndian.Uint16(data[4:6]))
	ff := binary.BigEndian.Uint16(data[6:8])
	p.FragOffset = ff & 0x1fff
	p.MoreFrags = ff&0x2000 != 0
	p.Fragment = p.FragOffset != 0
	ihl := int(data[0]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(data[2:4]))
	p.Length = tot
	if ihl < 20 {
		return d.fail(p, "ipv4", ErrMalformed, "header length (IHL*4)", ihl, 20, nil)
	}
	if tot < ihl {
		return d.fail(p, "ipv4", ErrMalformed, "total length below header length", tot, ihl, nil)
	}
	if len(data) < ihl {
		return d.fail(p, "ipv4", ErrTruncated, "header cut", len(data), ihl, nil)
	}
	if ipChecksum(data[:ihl]) != 0xffff {
		return d.fail(p, "ipv4", ErrMalformed, "bad header checksum", -1, -1, nil)
	}
	if len(data) < tot {
		// The whole datagram is not there: decode the headers we have but
		// the packet is INVALID.
		p.Truncated = true
	} else {
		data = data[:tot] // strip link-layer padding
	}
	p.L3 = data
	d.decoded = d.decoded[:0]
	d.fragPkt = p.FragOffset != 0 || p.MoreFrags
	d.truncIP = p.Truncated
	d.l4Bad = false
	d.ip4.stop = p.FragOffset != 0 || !d.checkL4(p.Proto, data[ihl:])
	if err := d.p4.DecodeLayers(data, &d.decoded); err != nil {
		return d.layerError(p, err, d.p4.Truncated)
	}
	if d.l4Bad {
		return d.fail(p, d.l4Layer, d.l4Kind, d.l4What, d.l4Got, d.l4Want, nil)
	}
	return d.finishL4(p, data[ihl:], d.fragPkt)
}

func (d *Decoder) decode6(data []byte, p *packet.Packet) error {
	p.Family = packet.IPv6
	if len(data) < 40 {
		return d.fail(p, "ipv6", ErrTruncated, "header shorter than 40 bytes", len(data), 40, nil)
	}
	p.Src = netip.AddrFrom16([16]byte(data[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(data[24:40]))
	p.TOS = uint8(binary.BigEndian.Uint16(data[0:2]) >> 4)
	p.TTL = data[7]
	p.Proto = data[6]
	plen := int(binary.BigEndian.Uint16(data[4:6]))
	p.Length = 40 + plen
	if plen == 0 && data[6] == 0 {
		return d.fail(p, "ipv6", ErrUnsupported, "jumbogram (payload length 0 with hop-by-hop header)", -1, -1, nil)
	}
	if len(data) < p.Length {
		p.Truncated = true
	} else {
		data = data[:p.Length]
	}
	p.L3 = data
	d.nExt, d.hasFrag, d.fragOff, d.fragMF, d.fragID = 0, false, 0, false, 0
	d.rtType, d.segsLeft = -1, 0
	d.l4Proto = data[6]
	d.decoded = d.decoded[:0]
	d.fragPkt = false
	d.truncIP = p.Truncated
	d.l4Bad = false
	err := d.p6.DecodeLayers(data, &d.decoded)
	// Extension header facts are recorded even when a later layer fails.
	n := d.nExt
	if n > cap(p.ExtHeaders) {
		n = cap(p.ExtHeaders)
	}
	p.ExtHeaders = append(p.ExtHeaders[:0], d.extTypes[:n]...)
	p.RoutingType, p.SegsLeft = d.rtType, d.segsLeft
	p.Proto = d.l4Proto
	if d.hasFrag {
		p.HasFragHdr = true
		p.ID = d.fragID
		p.FragOffset = d.fragOff
		p.MoreFrags = d.fragMF
		p.Fragment = d.fragOff != 0
	}
	if err != nil {
		return d.layerError(p, err, d.p6.Truncated)
	}
	if d.l4Bad {
		return d.fail(p, d.l4Layer, d.l4Kind, d.l4What, d.l4Got, d.l4Want, nil)
	}
	frag := d.hasFrag && (d.fragOff != 0 || d.fragMF)
	return d.finishL4(p, d.ip6.l4, frag)
}

// layerError converts an error from the DecodingLayerParser into a
// DecodeError. A header that runs past the end of the data is "truncated"
// only when the IP datagram itself is cut (a snaplen cut); in a whole
// datagram it is malformed, as the kernel's conntrack judges it.
func (d *Decoder) layerError(p *packet.Packet, err error, parserTruncated bool) error {
	if err == error(&d.err) { // from our own extension layers
		if d.err.Kind == ErrTruncated && !p.Truncated {
			d.err.Kind = ErrMalformed
		}
		return err
	}
	layer := "ipv4"
	if p.Family == packet.IPv6 {
		layer = "ipv6"
	}
	if len(d.decoded) > 0 {
		// The failing layer is the one after the last decoded one.
		layer = nextLayerName(p)
	}
	kind := ErrMalformed
	if parserTruncated && p.Truncated {
		kind = ErrTruncated
	}
	return d.fail(p, layer, kind, "layer decode failed", -1, -1, err)
}

func nextLayerName(p *packet.Packet) string {
	switch p.Proto {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	case packet.ProtoICMP:
		return "icmp"
	case packet.ProtoICMPv6:
		return "icmpv6"
	}
	return "transport"
}

// finishL4 fills the transport fields from the decoded layers. l4 is the IP
// payload (the transport header onwards); frag says the packet is a fragment
// (first or not), whose checksum cannot be judged.
func (d *Decoder) finishL4(p *packet.Packet, l4 []byte, frag bool) error {
	var seen gopacket.LayerType
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeTCP, layers.LayerTypeUDP, layers.LayerTypeICMPv4, layers.LayerTypeICMPv6:
			seen = t
		}
	}
	if seen == 0 {
		// Unknown transport, or a non-first fragment: no L4 fields.
		if !p.Fragment {
			p.Payload = l4
		}
		return nil
	}
	switch seen {
	case layers.LayerTypeTCP:
		t := &d.tcp
		h := t.Contents
		p.SrcPort = uint16(t.SrcPort)
		p.DstPort = uint16(t.DstPort)
		p.Seq, p.Ack = t.Seq, t.Ack
		p.TCPFlags = h[13]
		p.Window = t.Window
		p.TCPDataOff = uint8(len(h))
		parseTCPOptions(h[20:], &p.TCPOpt)
		p.Payload = t.Payload
	case layers.LayerTypeUDP:
		u := &d.udp
		p.SrcPort = uint16(u.SrcPort)
		p.DstPort = uint16(u.DstPort)
		ulen := int(u.Length)
		if !frag && !p.Truncated {
			if ulen < 8 || ulen > len(l4) {
				return d.fail(p, "udp", ErrMalformed, "UDP length vs IP payload", ulen, len(l4), nil)
			}
			l4 = l4[:ulen]
		}
		p.Payload = u.Payload
	case layers.LayerTypeICMPv4:
		ic := &d.icmp4
		p.ICMPType, p.ICMPCode = ic.TypeCode.Type(), ic.TypeCode.Code()
		switch p.ICMPType {
		case 0, 8, 13, 14, 15, 16, 17, 18:
			p.ICMPID = ic.Id
		case 3, 4, 5, 11, 12:
			parseInner4(ic.Payload, &p.Inner)
		}
		p.Payload = ic.Payload
	case layers.LayerTypeICMPv6:
		ic := &d.icmp6
		p.ICMPType, p.ICMPCode = ic.TypeCode.Type(), ic.TypeCode.Code()
		body := ic.Payload // after type, code, checksum
		switch {
		case p.ICMPType == 128 || p.ICMPType == 129:
			if len(body) >= 2 {
				p.ICMPID = binary.BigEndian.Uint16(body[0:2])
			}
		case p.ICMPType >= 1 && p.ICMPType <= 4:
			if len(body) >= 4 {
				parseInner6(body[4:], &p.Inner)
			}
		}
		p.Payload = body[4:] // after the 8-byte header, as for ICMPv4 (checkL4 saw 8 bytes)
	}
	// Locally generated packets (p.Local) are not judged: their checksums
	// may be left to offload, as the kernel's conntrack skips them on
	// LOCAL_OUT.
	if frag || p.Truncated || !d.verifyCsum || p.Local {
		return nil
	}
	p.Checksum = l4Checksum(p, l4)
	return nil
}

// l4Checksum verifies the transport checksum of a whole (unfragmented,
// untruncated) packet.
func l4Checksum(p *packet.Packet, l4 []byte) packet.Checksum {
	var sum uint64
	switch p.Proto {
	case packet.ProtoUDP:
		if binary.BigEndian.Uint16(l4[6:8]) == 0 {
			if p.Family == packet.IPv4 {
				return packet.ChecksumUnknown // no checksum (RFC 768)
			}
			return packet.ChecksumBad // mandatory over IPv6 (RFC 8200 8.1)
		}
		sum = pseudoHeader(p, len(l4))
	case packet.ProtoTCP, packet.ProtoICMPv6:
		sum = pseudoHeader(p, len(l4))
	case packet.ProtoICMP:
	default:
		return packet.ChecksumUnknown
	}
	if fold(csumAdd(sum, l4)) == 0xffff {
		return packet.ChecksumGood
	}
	return packet.ChecksumBad
}

func pseudoHeader(p *packet.Packet, l4len int) uint64 {
	var sum uint64
	if p.Family == packet.IPv4 {
		// The header's own addresses (p.Src and p.Dst are them), read as
		// words without going through netip.Addr.
		h := p.L3[12:20]
		sum = uint64(binary.BigEndian.Uint32(h[0:4])) + uint64(binary.BigEndian.Uint32(h[4:8]))
	} else {
		s, dd := p.Src.As16(), p.Dst.As16()
		sum = uint64(binary.BigEndian.Uint32(s[0:])) + uint64(binary.BigEndian.Uint32(s[4:])) +
			uint64(binary.BigEndian.Uint32(s[8:])) + uint64(binary.BigEndian.Uint32(s[12:])) +
			uint64(binary.BigEndian.Uint32(dd[0:])) + uint64(binary.BigEndian.Uint32(dd[4:])) +
			uint64(binary.BigEndian.Uint32(dd[8:])) + uint64(binary.BigEndian.Uint32(dd[12:]))
	}
	return sum + uint64(p.Proto) + uint64(l4len)
}

// parseTCPOptions reads MSS, window scale and SACK-permitted from the raw
// option bytes the way nf_conntrack's tcp_options() does: stop at EOL or at a
// malformed length; the window scale is clamped to 14.
func parseTCPOptions(b []byte, o *packet.TCPOptions) {
	for len(b) > 0 {
		kind := b[0]
		if kind == 0 { // EOL
			return
		}
		if kind == 1 { // NOP
			b = b[1:]
			continue
		}
		if len(b) < 2 {
			return
		}
		size := int(b[1])
		if size < 2 || size > len(b) {
			return
		}
		switch {
		case kind == 2 && size == 4:
			o.MSS = binary.BigEndian.Uint16(b[2:4])
		case kind == 3 && size == 3:
			ws := b[2]
			if ws > 14 {
				ws = 14
			}
			o.WScale = int8(ws)
		case kind == 4 && size == 2:
			o.SACKPerm = true
		}
		b = b[size:]
	}
}

// parseInner4 parses the IPv4 header (and the first 8 transport bytes)
// quoted in an ICMP error. Valid is set when the addresses and the
// transport identifiers were all present.
func parseInner4(b []byte, e *packet.Embedded) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return
	}
	e.Proto = b[9]
	e.Src = netip.AddrFrom4([4]byte(b[12:16]))
	e.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
		// quoted a non-first fragment: no transport header
		e.Valid = true
		return
	}
	e.Valid = parseInnerL4(b[ihl:], e, packet.ProtoICMP)
}

// parseInner6 does the same for the IPv6 header quoted in an ICMPv6 error,
// walking its extension headers.
func parseInner6(b []byte, e *packet.Embedded) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return
	}
	e.Src = netip.AddrFrom16([16]byte(b[8:24]))
	e.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	rest := b[40:]
	for i := 0; i < 16 && isExt6(next); i++ {
		hl, ok := ext6Len(next, rest)
		if !ok {
			e.Proto = next
			return
		}
		if next == 44 && binary.BigEndian.Uint16(rest[2:4])&0xfff8 != 0 {
			// quoted a non-first fragment: no transport header
			e.Proto = rest[0]
			e.Valid = true
			return
		}
		next = rest[0]
		rest = rest[hl:]
	}
	e.Proto = next
	e.Valid = parseInnerL4(rest, e, packet.ProtoICMPv6)
}

func parseInnerL4(b []byte, e *packet.Embedded, icmpProto uint8) bool {
	switch e.Proto {
	case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoSCTP, packet.ProtoUDPLite:
		if len(b) < 4 {
			return false
		}
		e.SrcPort = binary.BigEndian.Uint16(b[0:2])
		e.DstPort = binary.BigEndian.Uint16(b[2:4])
		if e.Proto == packet.ProtoTCP {
			if len(b) < 8 {
				return false
			}
			e.Seq = binary.BigEndian.Uint32(b[4:8])
		}
		return true
	case icmpProto:
		if len(b) < 8 {
			return false
		}
		e.ICMPType, e.ICMPCode = b[0], b[1]
		e.SrcPort = binary.BigEndian.Uint16(b[4:6]) // echo id
		return true
	}
	return true
}

// ---- gopacket DecodingLayers ----

// ipv4Layer is gopacket's IPv4 layer, continuing to the transport only for
// protocols we decode and never past a non-first fragment.
type ipv4Layer struct {
	layers.IPv4
	d    *Decoder
	stop bool // non-first fragment, or a transport header checkL4 refused
}

func (l *ipv4Layer) NextLayerType() gopacket.LayerType {
	if l.stop {
		return gopacket.LayerTypeZero
	}
	switch l.Protocol {
	case layers.IPProtocolTCP:
		return layers.LayerTypeTCP
	case layers.IPProtocolUDP:
		return layers.LayerTypeUDP
	case layers.IPProtocolICMPv4:
		return layers.LayerTypeICMPv4
	}
	return gopacket.LayerTypeZero
}

// ipv6Layer decodes the fixed IPv6 header. gopacket's own IPv6 layer decodes
// a hop-by-hop header into freshly allocated options; here every extension
// header goes through ipv6ExtLayer instead.
type ipv6Layer struct {
	d       *Decoder
	next    uint8
	l4      []byte // transport header onwards, set by the last header
	payload []byte
}

func (l *ipv6Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	l.next = data[6] // length checked by decode6
	l.payload = data[40:]
	l.l4 = l.payload
	return nil
}
func (l *ipv6Layer) CanDecode() gopacket.LayerClass    { return layers.LayerTypeIPv6 }
func (l *ipv6Layer) LayerPayload() []byte              { return l.payload }
func (l *ipv6Layer) NextLayerType() gopacket.LayerType { return l.d.nextAfter6(l.next, l.payload) }

// nextAfter6 records the upper-layer protocol and says which layer decodes it.
func (d *Decoder) nextAfter6(next uint8, rest []byte) gopacket.LayerType {
	d.l4Proto = next
	d.ip6.l4 = rest
	switch next {
	case 0:
		return layers.LayerTypeIPv6HopByHop
	case 43:
		return layers.LayerTypeIPv6Routing
	case 44:
		return layers.LayerTypeIPv6Fragment
	case 60:
		return layers.LayerTypeIPv6Destination
	case 51:
		return layers.LayerTypeIPSecAH
	case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoICMPv6:
		if !d.checkL4(next, rest) {
			return gopacket.LayerTypeZero
		}
		switch next {
		case packet.ProtoTCP:
			return layers.LayerTypeTCP
		case packet.ProtoUDP:
			return layers.LayerTypeUDP
		}
		return layers.LayerTypeICMPv6
	}
	return gopacket.LayerTypeZero
}

// checkL4 checks that the transport header in b is whole and sane before
// gopacket decodes it (gopacket would build an error value with fmt.Errorf,
// allocating, and judges some cases differently from the kernel). It
// returns false to stop decoding at the IP layer. In a fragment a bad or cut
// transport header is no error (reassembly comes first); otherwise the
// problem is recorded for Decode to return.
func (d *Decoder) checkL4(proto uint8, b []byte) bool {
	need, layer := 0, ""
	switch proto {
	case packet.ProtoTCP:
		need, layer = 20, "tcp"
	case packet.ProtoUDP:
		need, layer = 8, "udp"
	case packet.ProtoICMP:
		need, layer = 8, "icmp"
	case packet.ProtoICMPv6:
		need, layer = 8, "icmpv6"
	default:
		return true
	}
	bad := func(kind error, what string, got, want int) bool {
		if !d.fragPkt {
			d.l4Bad, d.l4Layer, d.l4Kind, d.l4What, d.l4Got, d.l4Want = true, layer, kind, what, got, want
		}
		return false
	}
	cut := ErrMalformed
	if d.truncIP {
		cut = ErrTruncated
	}
	if len(b) < need {
		return bad(cut, "header cut", len(b), need)
	}
	switch proto {
	case packet.ProtoTCP:
		off := int(b[12]>>4) * 4
		if off < 20 {
			return bad(ErrMalformed, "data offset below 20 bytes", off, 20)
		}
		if off > len(b) {
			return bad(cut, "header (data offset) past the end of the segment", len(b), off)
		}
	case packet.ProtoUDP:
		if ulen := int(binary.BigEndian.Uint16(b[4:6])); ulen < 8 {
			return bad(ErrMalformed, "UDP length below 8", ulen, 8)
		}
	}
	return true
}

// ipv6ExtLayer decodes one IPv6 extension header (hop-by-hop, routing,
// fragment, destination options or AH) without allocating, recording what
// the packet view needs in the Decoder.
type ipv6ExtLayer struct {
	d       *Decoder
	typ     gopacket.LayerType
	proto   uint8  // its IP protocol number (0, 43, 44, 60, 51)
	name    string // for DecodeError.Layer
	next    uint8
	stop    bool
	payload []byte
}

func (l *ipv6ExtLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	hl, ok := ext6Len(l.proto, data)
	if !ok {
		df.SetTruncated()
		need := 8
		if len(data) >= 2 {
			need = hl
		}
		return d.fail(nil, l.name, ErrTruncated, "extension header cut", len(data), need, nil)
	}
	switch l.proto {
	case 0:
		if d.nExt != 0 {
			return d.fail(nil, l.name, ErrMalformed, "hop-by-hop header not first", -1, -1, nil)
		}
	case 43:
		d.rtType = int16(data[2])
		d.segsLeft = data[3]
	case 44:
		d.hasFrag = true
		fo := binary.BigEndian.Uint16(data[2:4])
		d.fragOff = fo >> 3
		d.fragMF = fo&1 != 0
		d.fragID = binary.BigEndian.Uint32(data[4:8])
		d.fragPkt = d.fragOff != 0 || d.fragMF
	}
	if d.nExt < maxExtHeaders {
		d.extTypes[d.nExt] = l.proto
	}
	d.nExt++
	l.next = data[0]
	l.payload = data[hl:]
	// A non-first fragment carries no transport header.
	l.stop = l.proto == 44 && d.fragOff != 0
	return nil
}

// ext6Len returns the length of the IPv6 extension header of type next at
// the start of b (hop-by-hop 0, routing 43, fragment 44, destination
// options 60, AH 51), and whether b holds it whole (at least 8 bytes). When
// b holds the length byte but not the whole header, the length is still
// returned. It returns 0, false for other types.
func ext6Len(next uint8, b []byte) (int, bool) {
	var hl int
	switch next {
	case 44:
		hl = 8
	case 0, 43, 60:
		if len(b) < 2 {
			return 8, false
		}
		hl = (int(b[1]) + 1) * 8
	case 51:
		if len(b) < 2 {
			return 8, false
		}
		hl = (int(b[1]) + 2) * 4
		if hl < 8 {
			hl = 8
		}
	default:
		return 0, false
	}
	return hl, len(b) >= hl
}

func isExt6(next uint8) bool {
	switch next {
	case 0, 43, 44, 51, 60:
		return true
	}
	return false
}

func (l *ipv6ExtLayer) CanDecode() gopacket.LayerClass { return l.typ }
func (l *ipv6ExtLayer) LayerPayload() []byte           { return l.payload }
func (l *ipv6ExtLayer) NextLayerType() gopacket.LayerType {
	if l.stop {
		l.d.l4Proto = l.next
		l.d.ip6.l4 = l.payload
		return gopacket.LayerTypeZero
	}
	return l.d.nextAfter6(l.next, l.payload)
}

type tcpLayer struct{ layers.TCP }

// DecodeFromBytes decodes with gopacket. checkL4 has vetted the header
// length, so an error here is about TCP options, which the kernel (and
// conntrack's tcp_options) skip silently: such a segment is not invalid.
func (l *tcpLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if err := l.TCP.DecodeFromBytes(data, df); err != nil && len(l.Contents) < 20 {
		return err
	}
	return nil
}

func (l *tcpLayer) NextLayerType() gopacket.LayerType { return payloadOrZero(l.Payload) }

type udpLayer struct{ layers.UDP }

func (l *udpLayer) NextLayerType() gopacket.LayerType { return payloadOrZero(l.Payload) }

type icmp4Layer struct{ layers.ICMPv4 }

func (l *icmp4Layer) NextLayerType() gopacket.LayerType { return payloadOrZero(l.Payload) }

type icmp6Layer struct{ layers.ICMPv6 }

func (l *icmp6Layer) NextLayerType() gopacket.LayerType { return payloadOrZero(l.Payload) }

func payloadOrZero(b []byte) gopacket.LayerType {
	if len(b) > 0 {
		return gopacket.LayerTypePayload
	}
	return gopacket.LayerTypeZero
}
