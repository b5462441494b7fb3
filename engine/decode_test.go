package engine

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/packet"
)

// Test addresses: 198.18.0.0/15 and fd00:198:18::/48 only.
var (
	tSrc4 = net.IP{198, 18, 1, 2}
	tDst4 = net.IP{198, 18, 2, 2}
	tSrc6 = net.ParseIP("fd00:198:18:1::2")
	tDst6 = net.ParseIP("fd00:198:18:2::2")
)

// serialize builds a packet with gopacket (an independent implementation of
// lengths and checksums).
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func v4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, TOS: 0x10, Id: 0x1234, Flags: layers.IPv4DontFragment, Protocol: proto, SrcIP: tSrc4, DstIP: tDst4}
}

func v6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, TrafficClass: 0x20, HopLimit: 63, NextHeader: next, SrcIP: tSrc6, DstIP: tDst6}
}

func tcpSYN(ip gopacket.NetworkLayer, payload []byte) []gopacket.SerializableLayer {
	tc := &layers.TCP{SrcPort: 40000, DstPort: 8080, Seq: 1000, Ack: 0, SYN: true, ECE: true, CWR: true, Window: 64240,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
	tc.SetNetworkLayerForChecksum(ip)
	return []gopacket.SerializableLayer{ip.(gopacket.SerializableLayer), tc, gopacket.Payload(payload)}
}

func tcp4(t testing.TB, payload []byte) []byte {
	return serialize(t, tcpSYN(v4(layers.IPProtocolTCP), payload)...)
}

func udp4(t testing.TB, payload []byte) []byte {
	ip := v4(layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: 40000, DstPort: 7777}
	u.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, u, gopacket.Payload(payload))
}

func udp6(t testing.TB, payload []byte) []byte {
	ip := v6(layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: 40000, DstPort: 7777}
	u.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, u, gopacket.Payload(payload))
}

func tcp6(t testing.TB, payload []byte) []byte {
	return serialize(t, tcpSYN(v6(layers.IPProtocolTCP), payload)...)
}

// icmp4Err is an ICMP port unreachable quoting the given packet (cut to
// quote bytes when quote >= 0).
func icmp4Err(t testing.TB, quoted []byte, quote int) []byte {
	if quote >= 0 && quote < len(quoted) {
		quoted = quoted[:quote]
	}
	ip := v4(layers.IPProtocolICMPv4)
	ip.SrcIP, ip.DstIP = tDst4, tSrc4
	return serialize(t, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(quoted))
}

func icmp6Err(t testing.TB, quoted []byte) []byte {
	ip := v6(layers.IPProtocolICMPv6)
	ip.SrcIP, ip.DstIP = tDst6, tSrc6
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 4)}
	ic.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, ic, gopacket.Payload(append([]byte{0, 0, 0, 0}, quoted...)))
}

func ping4(t testing.TB) []byte {
	return serialize(t, v4(layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 0xbeef, Seq: 1}, gopacket.Payload([]byte("ping")))
}

func ping6(t testing.TB) []byte {
	ip := v6(layers.IPProtocolICMPv6)
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
	ic.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, ic, gopacket.Payload([]byte{0xca, 0xfe, 0, 1, 'p', 'i', 'n', 'g'}))
}

// withExt6 inserts IPv6 extension headers (each given as its full bytes with
// byte 0 to be overwritten by the next header) after the fixed header of pkt.
func withExt6(pkt []byte, exts ...[]byte) []byte {
	out := append([]byte(nil), pkt[:40]...)
	next := pkt[6]
	types := make([]byte, len(exts))
	for i, e := range exts {
		types[i] = e[0]
	}
	out[6] = types[0]
	for i, e := range exts {
		e = append([]byte(nil), e...)
		if i+1 < len(exts) {
			e[0] = types[i+1]
		} else {
			e[0] = next
		}
		out = append(out, e...)
	}
	out = append(out, pkt[40:]...)
	binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-40))
	return out
}

// Extension header templates: byte 0 is the header's own type (replaced by
// withExt6 with the next header).
var (
	extHopByHop = []byte{0, 0, 1, 4, 0, 0, 0, 0}        // PadN
	extDstOpts  = []byte{60, 0, 1, 4, 0, 0, 0, 0}       // PadN
	extRouting  = []byte{43, 0, 4, 0, 0, 0, 0, 0}       // SRH type 4, segments left 0
	extFragMF   = []byte{44, 0, 0, 1, 0xab, 0xcd, 0, 1} // offset 0, MF, id 0xabcd0001
	extFragLast = []byte{44, 0, 0x05, 0xc8, 0, 0, 0, 7} // offset 185 (1480 B), last, id 7
)

func mustDecode(t *testing.T, d *Decoder, b []byte) *packet.Packet {
	t.Helper()
	var p packet.Packet
	if err := d.Decode(b, &p); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return &p
}

func TestDecodeFields(t *testing.T) {
	d := NewDecoder()
	payload := []byte("GET / HTTP/1.0\r\n\r\n")
	tcpIn := tcp4(t, payload)
	tests := []struct {
		name  string
		pkt   []byte
		check func(t *testing.T, p *packet.Packet)
	}{
		{"tcp4 SYN with options", tcpIn, func(t *testing.T, p *packet.Packet) {
			want := packet.Packet{Family: packet.IPv4, Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.18.2.2"),
				Proto: packet.ProtoTCP, Length: len(tcpIn), TTL: 64, TOS: 0x10, ID: 0x1234, RoutingType: -1,
				SrcPort: 40000, DstPort: 8080, TCPFlags: packet.TCPSyn | packet.TCPEce | packet.TCPCwr, Seq: 1000, Window: 64240,
				TCPDataOff: 32, TCPOpt: packet.TCPOptions{WScale: 7, SACKPerm: true, MSS: 1460}, Checksum: packet.ChecksumGood}
			got := *p
			if string(got.Payload) != string(payload) {
				t.Errorf("payload %q", got.Payload)
			}
			got.L3, got.Payload, got.ExtHeaders = nil, nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		}},
		{"udp4", udp4(t, []byte("hello")), func(t *testing.T, p *packet.Packet) {
			if p.Proto != packet.ProtoUDP || p.SrcPort != 40000 || p.DstPort != 7777 || string(p.Payload) != "hello" || p.Checksum != packet.ChecksumGood {
				t.Errorf("%+v", p)
			}
		}},
		{"udp6", udp6(t, []byte("hello6")), func(t *testing.T, p *packet.Packet) {
			if p.Family != packet.IPv6 || p.Proto != packet.ProtoUDP || p.TTL != 63 || p.TOS != 0x20 || p.Length != 40+8+6 ||
				p.Src != netip.MustParseAddr("fd00:198:18:1::2") || p.Checksum != packet.ChecksumGood || string(p.Payload) != "hello6" {
				t.Errorf("%+v", p)
			}
		}},
		{"ping4", ping4(t), func(t *testing.T, p *packet.Packet) {
			if p.Proto != packet.ProtoICMP || p.ICMPType != 8 || p.ICMPID != 0xbeef || p.Checksum != packet.ChecksumGood || p.Inner.Valid {
				t.Errorf("%+v", p)
			}
		}},
		{"ping6", ping6(t), func(t *testing.T, p *packet.Packet) {
			if p.Proto != packet.ProtoICMPv6 || p.ICMPType != 128 || p.ICMPID != 0xcafe || p.Checksum != packet.ChecksumGood {
				t.Errorf("%+v", p)
			}
		}},
		{"icmp4 error quoting tcp, 8 bytes of L4", icmp4Err(t, tcpIn, 28), func(t *testing.T, p *packet.Packet) {
			want := packet.Embedded{Valid: true, Proto: packet.ProtoTCP, Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.18.2.2"),
				SrcPort: 40000, DstPort: 8080, Seq: 1000}
			if p.Inner != want || p.ICMPType != 3 || p.ICMPCode != 3 || p.Checksum != packet.ChecksumGood {
				t.Errorf("inner %+v want %+v (type %d/%d csum %d)", p.Inner, want, p.ICMPType, p.ICMPCode, p.Checksum)
			}
		}},
		{"icmp4 error quoting only 4 bytes of tcp", icmp4Err(t, tcpIn, 24), func(t *testing.T, p *packet.Packet) {
			if p.Inner.Valid || p.Inner.SrcPort != 40000 || p.Inner.Proto != packet.ProtoTCP {
				t.Errorf("inner %+v: want ports but not valid (seq missing)", p.Inner)
			}
		}},
		{"icmp4 error quoting a cut IP header", icmp4Err(t, tcpIn, 12), func(t *testing.T, p *packet.Packet) {
			if p.Inner.Valid || p.Inner.Proto != 0 {
				t.Errorf("inner %+v", p.Inner)
			}
		}},
		{"icmp4 error quoting a ping", icmp4Err(t, ping4(t), 28), func(t *testing.T, p *packet.Packet) {
			if !p.Inner.Valid || p.Inner.Proto != packet.ProtoICMP || p.Inner.ICMPType != 8 || p.Inner.SrcPort != 0xbeef {
				t.Errorf("inner %+v", p.Inner)
			}
		}},
		{"icmp6 error quoting udp6 with a fragment header", icmp6Err(t, withExt6(udp6(t, []byte("x")), extFragMF)), func(t *testing.T, p *packet.Packet) {
			if !p.Inner.Valid || p.Inner.Proto != packet.ProtoUDP || p.Inner.DstPort != 7777 || p.Inner.Dst != netip.MustParseAddr("fd00:198:18:2::2") || p.Checksum != packet.ChecksumGood {
				t.Errorf("inner %+v csum %d", p.Inner, p.Checksum)
			}
		}},
		{"ipv6 hop-by-hop, routing, dest opts", withExt6(tcp6(t, nil), extHopByHop, extRouting, extDstOpts), func(t *testing.T, p *packet.Packet) {
			if p.Proto != packet.ProtoTCP || string(p.ExtHeaders) != string([]byte{0, 43, 60}) || p.RoutingType != 4 || p.SegsLeft != 0 ||
				p.DstPort != 8080 || p.TCPOpt.MSS != 1460 || p.Checksum != packet.ChecksumGood || p.HasFragHdr {
				t.Errorf("%+v", p)
			}
		}},
		{"ipv6 first fragment", withExt6(udp6(t, []byte("part")), extFragMF), func(t *testing.T, p *packet.Packet) {
			if !p.HasFragHdr || p.Fragment || !p.MoreFrags || p.ID != 0xabcd0001 || p.Proto != packet.ProtoUDP || p.DstPort != 7777 || p.Checksum != packet.ChecksumUnknown {
				t.Errorf("%+v", p)
			}
		}},
		{"ipv6 last fragment", withExt6(udp6(t, []byte("part")), extFragLast), func(t *testing.T, p *packet.Packet) {
			if !p.HasFragHdr || !p.Fragment || p.MoreFrags || p.FragOffset != 185 || p.ID != 7 || p.Proto != packet.ProtoUDP || p.DstPort != 0 || p.Checksum != packet.ChecksumUnknown {
				t.Errorf("%+v", p)
			}
		}},
		{"ipv4 non-first fragment", func() []byte {
			b := udp4(t, []byte("0123456789abcdef"))
			binary.BigEndian.PutUint16(b[6:8], 0x2000|3) // MF, offset 24 B
			fixIPv4Checksum(b)
			return b
		}(), func(t *testing.T, p *packet.Packet) {
			if !p.Fragment || !p.MoreFrags || p.FragOffset != 3 || p.SrcPort != 0 || p.Proto != packet.ProtoUDP || len(p.Payload) != 0 {
				t.Errorf("%+v", p)
			}
		}},
		{"udp4 checksum zero means none", func() []byte {
			b := udp4(t, []byte("x"))
			b[26], b[27] = 0, 0
			return b
		}(), func(t *testing.T, p *packet.Packet) {
			if p.Checksum != packet.ChecksumUnknown {
				t.Errorf("checksum %d", p.Checksum)
			}
		}},
		{"udp6 checksum zero is bad", func() []byte {
			b := udp6(t, []byte("x"))
			b[46], b[47] = 0, 0
			return b
		}(), func(t *testing.T, p *packet.Packet) {
			if p.Checksum != packet.ChecksumBad {
				t.Errorf("checksum %d", p.Checksum)
			}
		}},
		{"tcp4 payload flipped: bad checksum", func() []byte {
			b := tcp4(t, payload)
			b[len(b)-1] ^= 0x40
			return b
		}(), func(t *testing.T, p *packet.Packet) {
			if p.Checksum != packet.ChecksumBad {
				t.Errorf("checksum %d", p.Checksum)
			}
		}},
		{"tcp option with a bad length is skipped, not an error", func() []byte {
			b := tcp4(t, nil)
			b[20+26] = 3  // the NOP before window scale becomes kind 3...
			b[20+27] = 40 // ...with a length past the header
			b[36], b[37] = 0, 0
			binary.BigEndian.PutUint16(b[36:38], tcpChecksum4(b))
			return b
		}(), func(t *testing.T, p *packet.Packet) {
			// conntrack's tcp_options() stops at the bad option: MSS and
			// SACK-permitted before it count, window scale after it does not
			if p.TCPOpt.MSS != 1460 || !p.TCPOpt.SACKPerm || p.TCPOpt.WScale != -1 || p.Checksum != packet.ChecksumGood {
				t.Errorf("%+v csum %d", p.TCPOpt, p.Checksum)
			}
		}},
		{"icmpv6 payload after the 8-byte header", ping6(t), func(t *testing.T, p *packet.Packet) {
			if string(p.Payload) != "ping" {
				t.Errorf("payload %q", p.Payload)
			}
		}},
		{"ethernet padding is stripped", append(udp4(t, []byte("ab")), 0, 0, 0, 0, 0, 0), func(t *testing.T, p *packet.Packet) {
			if len(p.L3) != 20+8+2 || string(p.Payload) != "ab" || p.Checksum != packet.ChecksumGood {
				t.Errorf("L3 %d payload %q csum %d", len(p.L3), p.Payload, p.Checksum)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, mustDecode(t, d, tc.pkt))
		})
	}
}

// tcpChecksum4 computes the TCP checksum of an IPv4 packet with a 20-byte
// header whose checksum field is zero.
func tcpChecksum4(b []byte) uint16 {
	ph := append(append([]byte(nil), b[12:20]...), 0, 6, 0, 0)
	binary.BigEndian.PutUint16(ph[10:12], uint16(len(b)-20))
	var sum uint64
	for i := 0; i+1 < len(ph); i += 2 {
		sum += uint64(binary.BigEndian.Uint16(ph[i:]))
	}
	seg := b[20:]
	for i := 0; i < len(seg); i += 2 {
		w := uint64(seg[i]) << 8
		if i+1 < len(seg) {
			w |= uint64(seg[i+1])
		}
		sum += w
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func fixIPv4Checksum(b []byte) {
	ihl := int(b[0]&0xf) * 4
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:12], Checksum(0, b[:ihl]))
}

func TestDecodeErrors(t *testing.T) {
	d := NewDecoder()
	good4 := tcp4(t, []byte("data"))
	good6 := tcp6(t, []byte("data"))
	mod := func(b []byte, f func(b []byte)) []byte {
		b = append([]byte(nil), b...)
		f(b)
		return b
	}
	tests := []struct {
		name      string
		pkt       []byte
		kind      error
		truncated bool
		layer     string
	}{
		{"empty", nil, ErrTruncated, true, "ip"},
		{"version 5", mod(good4, func(b []byte) { b[0] = 0x55 }), ErrMalformed, false, "ip"},
		{"ipv4 short header", good4[:19], ErrTruncated, true, "ipv4"},
		{"ipv4 ihl 4", mod(good4, func(b []byte) { b[0] = 0x44; fixIPv4Checksum(b) }), ErrMalformed, false, "ipv4"},
		{"ipv4 total length below ihl", mod(good4, func(b []byte) { b[3] = 16; b[2] = 0; fixIPv4Checksum(b) }), ErrMalformed, false, "ipv4"},
		{"ipv4 bad header checksum", mod(good4, func(b []byte) { b[10] ^= 1 }), ErrMalformed, false, "ipv4"},
		{"ipv4 options cut", mod(good4, func(b []byte) { b[0] = 0x4f; b[3] = 100; fixIPv4Checksum(b) })[:40], ErrTruncated, true, "ipv4"},
		{"tcp header cut by snaplen", good4[:30], ErrTruncated, true, "tcp"},
		{"tcp data offset 4", mod(good4, func(b []byte) { b[32] = 0x40 }), ErrMalformed, false, "tcp"},
		{"tcp data offset past end", mod(good4, func(b []byte) { b[32] = 0xf0 }), ErrMalformed, false, "tcp"},
		{"udp length beyond IP payload", mod(udp4(t, []byte("abc")), func(b []byte) { b[25] = 200 }), ErrMalformed, false, "udp"},
		{"udp length below 8", mod(udp4(t, []byte("abc")), func(b []byte) { b[25] = 4 }), ErrMalformed, false, "udp"},
		{"icmp shorter than 8", mod(ping4(t), func(b []byte) { b[3] = 24; fixIPv4Checksum(b) })[:24], ErrMalformed, false, "icmp"},
		{"icmp cut by snaplen", ping4(t)[:24], ErrTruncated, true, "icmp"},
		{"udp header cut by snaplen", udp4(t, []byte("abc"))[:26], ErrTruncated, true, "udp"},
		{"tcp6 header cut", tcp6(t, nil)[:50], ErrTruncated, true, "tcp"},
		{"icmpv6 shorter than 8", mod(ping6(t), func(b []byte) { b[5] = 4 })[:44], ErrMalformed, false, "icmpv6"},
		{"ipv6 short header", good6[:39], ErrTruncated, true, "ipv6"},
		{"ipv6 jumbogram", mod(withExt6(good6, extHopByHop), func(b []byte) { b[4], b[5] = 0, 0 }), ErrUnsupported, false, "ipv6"},
		{"ipv6 extension header cut", withExt6(good6, extDstOpts)[:44], ErrTruncated, true, "ipv6-dstopts"},
		{"ipv6 extension header past payload length", mod(withExt6(good6, extDstOpts), func(b []byte) { b[41] = 200 }), ErrMalformed, false, "ipv6-dstopts"},
		{"ipv6 hop-by-hop not first", withExt6(good6, extDstOpts, extHopByHop), ErrMalformed, false, "ipv6-hbh"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p packet.Packet
			err := d.Decode(tc.pkt, &p)
			if err == nil {
				t.Fatalf("no error; packet %+v", p)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Layer != tc.layer {
				t.Errorf("error %q: layer %q, want %q", err, de.Layer, tc.layer)
			}
			if p.Truncated != tc.truncated {
				t.Errorf("Truncated = %v, want %v (%v)", p.Truncated, tc.truncated, err)
			}
			if err.Error() == "" {
				t.Error("empty message")
			}
			wantIP := map[string]bool{"ip": true, "ipv4": true, "ipv6": true, "ipv6-hbh": true}[tc.layer]
			if de != nil && de.IPHeader() != wantIP {
				t.Errorf("IPHeader() = %v", de.IPHeader())
			}
		})
	}
}

// TestDecodeTruncatedPayload: a datagram cut in its payload decodes its
// headers but is marked Truncated, with no checksum verdict.
func TestDecodeTruncatedPayload(t *testing.T) {
	d := NewDecoder()
	b := tcp4(t, make([]byte, 1000))[:100]
	var p packet.Packet
	if err := d.Decode(b, &p); err != nil {
		t.Fatal(err)
	}
	if !p.Truncated || p.Checksum != packet.ChecksumUnknown || p.DstPort != 8080 || p.Length != 20+32+1000 {
		t.Errorf("%+v", p)
	}
}

func TestDecodeKeepsMeta(t *testing.T) {
	d := NewDecoder()
	var p packet.Packet
	p.InIface, p.Mark, p.Hook = "eth0", 7, packet.HookInput
	p.CTState = packet.CTNew
	mustDecodeInto(t, d, udp4(t, nil), &p)
	if p.Checksum != packet.ChecksumGood {
		t.Errorf("checksum %d", p.Checksum)
	}
	p.Local = true
	mustDecodeInto(t, d, udp4(t, nil), &p)
	if p.Checksum != packet.ChecksumUnknown || !p.Local {
		t.Errorf("local packet: checksum %d", p.Checksum)
	}
	if p.InIface != "eth0" || p.Mark != 7 || p.Hook != packet.HookInput || p.CTState != 0 || p.TCPOpt.WScale != -1 {
		t.Errorf("%+v", p)
	}
}

func mustDecodeInto(t *testing.T, d *Decoder, b []byte, p *packet.Packet) {
	t.Helper()
	if err := d.Decode(b, p); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeNoAllocs(t *testing.T) {
	d := NewDecoder()
	tcpIn := tcp4(t, []byte("hello"))
	pkts := map[string][]byte{
		"tcp4":            tcpIn,
		"tcp4 1400":       tcp4(t, make([]byte, 1400)),
		"udp6":            udp6(t, []byte("x")),
		"icmp4 error":     icmp4Err(t, tcpIn, -1),
		"icmp6 error":     icmp6Err(t, withExt6(udp6(t, []byte("x")), extFragMF)),
		"ipv6 ext":        withExt6(tcp6(t, nil), extHopByHop, extRouting, extDstOpts),
		"ipv6 fragment":   withExt6(udp6(t, []byte("part")), extFragLast),
		"bad ip checksum": func() []byte { b := append([]byte(nil), tcpIn...); b[10] ^= 1; return b }(),
		"truncated":       tcpIn[:30],
		"ext cut":         withExt6(tcp6(t, nil), extDstOpts)[:44],
	}
	var p packet.Packet
	for name, b := range pkts {
		n := testing.AllocsPerRun(200, func() { _ = d.Decode(b, &p) })
		if n != 0 {
			t.Errorf("%s: %v allocs per packet", name, n)
		}
	}
}
