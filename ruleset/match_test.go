package ruleset

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/filterd/filterd/packet"
)

// tcpPacketWithOptions builds an IPv4 TCP SYN whose L3 bytes carry the given
// TCP options, as the engine's decoder leaves them.
func tcpPacketWithOptions(opts []byte) *packet.Packet {
	p := mkPkt("198.18.0.1", "198.18.0.2", 80)
	for len(opts)%4 != 0 {
		opts = append(opts, 0) // EOL padding
	}
	thl := 20 + len(opts)
	l3 := make([]byte, 20+thl)
	l3[0] = 0x45
	binary.BigEndian.PutUint16(l3[2:], uint16(len(l3)))
	l3[9] = packet.ProtoTCP
	tcp := l3[20:]
	binary.BigEndian.PutUint16(tcp[0:], p.SrcPort)
	binary.BigEndian.PutUint16(tcp[2:], p.DstPort)
	tcp[12] = byte(thl/4) << 4
	tcp[13] = packet.TCPSyn
	copy(tcp[20:], opts)
	p.L3 = l3
	p.Payload = l3[len(l3):]
	p.TCPDataOff = uint8(thl)
	p.Length = len(l3)
	return p
}

type fakeConns map[netip.Prefix]int

func (f fakeConns) ConnCount(p *packet.Packet, key netip.Prefix, dest bool) int { return f[key] }

// TestMatchModules checks each match module on packets that do and do not
// match, with and without inversion.
func TestMatchModules(t *testing.T) {
	mss := []byte{2, 4, 5, 0xb4}       // MSS 1460
	sackWS := []byte{4, 2, 1, 3, 3, 7} // SACK-permitted, NOP, window scale 7
	local := func(a netip.Addr) bool { return a == mkAddr("198.18.0.2") || a == mkAddr("fd00:198:18::2") }
	conns := fakeConns{mkPrefix("198.18.0.1/32"): 3, mkPrefix("198.18.0.0/24"): 10}

	type tc struct {
		name string
		m    Match
		p    func() *packet.Packet
		want bool
	}
	base := func() *packet.Packet { return mkPkt("198.18.0.1", "198.18.0.2", 80) }
	with := func(f func(p *packet.Packet)) func() *packet.Packet {
		return func() *packet.Packet { p := base(); f(p); return p }
	}
	tests := []tc{
		{"tcp-option present", &TCPMatch{OptionSet: true, Option: 2}, func() *packet.Packet { return tcpPacketWithOptions(mss) }, true},
		{"tcp-option absent", &TCPMatch{OptionSet: true, Option: 8}, func() *packet.Packet { return tcpPacketWithOptions(mss) }, false},
		{"! tcp-option absent", &TCPMatch{OptionSet: true, Option: 8, OptionInvert: true}, func() *packet.Packet { return tcpPacketWithOptions(mss) }, true},
		{"tcp-option after NOP", &TCPMatch{OptionSet: true, Option: 3}, func() *packet.Packet { return tcpPacketWithOptions(sackWS) }, true},
		{"tcp-option without header bytes", &TCPMatch{OptionSet: true, Option: 2}, base, false},
		{"syn flags", &TCPMatch{Flags: TCPFlagsMatch{Set: true, Mask: 0x17, Comp: packet.TCPSyn}}, base, true},
		{"syn flags on SYN/ACK", &TCPMatch{Flags: TCPFlagsMatch{Set: true, Mask: 0x17, Comp: packet.TCPSyn}}, with(func(p *packet.Packet) { p.TCPFlags |= packet.TCPAck }), false},
		{"tcp on fragment", &TCPMatch{Dport: PortMatch{Set: true, Lo: 80, Hi: 80, Invert: true}}, with(func(p *packet.Packet) { p.Fragment = true }), false},

		{"conntrack state", &ConntrackMatch{HasState: true, State: StateMatch{States: packet.CTNew}}, base, true},
		{"conntrack ! state", &ConntrackMatch{HasState: true, State: StateMatch{States: packet.CTNew, Invert: true}}, base, false},
		{"conntrack origdst", &ConntrackMatch{OrigDst: AddrMatch{Prefix: mkPrefix("198.18.0.2/32")}}, base, true},
		{"conntrack origdst on reply", &ConntrackMatch{OrigDst: AddrMatch{Prefix: mkPrefix("198.18.0.2/32")}},
			with(func(p *packet.Packet) { p.CTDir = packet.DirReply; p.CTState = packet.CTEstablished }), false},
		{"conntrack replsrc is origdst", &ConntrackMatch{ReplSrc: AddrMatch{Prefix: mkPrefix("198.18.0.2/32")}}, base, true},
		{"conntrack origdstport", &ConntrackMatch{OrigDstPort: PortMatch{Set: true, Lo: 80, Hi: 80}}, base, true},
		{"conntrack ctproto", &ConntrackMatch{HasProto: true, Proto: packet.ProtoUDP}, base, false},
		{"conntrack ctdir REPLY", &ConntrackMatch{HasDir: true, Dir: packet.DirReply}, base, false},
		{"conntrack untracked: only state counts", &ConntrackMatch{HasProto: true, Proto: packet.ProtoUDP},
			with(func(p *packet.Packet) { p.CTState = packet.CTUntracked }), false},
		{"conntrack untracked with state", &ConntrackMatch{HasState: true, State: StateMatch{States: packet.CTUntracked}, HasProto: true, Proto: packet.ProtoUDP},
			with(func(p *packet.Packet) { p.CTState = packet.CTUntracked }), true},

		{"iprange src in", &IPRangeMatch{Src: AddrRange{From: mkAddr("198.18.0.0"), To: mkAddr("198.18.0.9")}}, base, true},
		{"iprange src out", &IPRangeMatch{Src: AddrRange{From: mkAddr("198.18.0.2"), To: mkAddr("198.18.0.9")}}, base, false},
		{"iprange ! dst", &IPRangeMatch{Dst: AddrRange{From: mkAddr("198.18.0.2"), To: mkAddr("198.18.0.2"), Invert: true}}, base, false},

		{"addrtype dst LOCAL", &AddrtypeMatch{Dst: AddrLocal}, base, true},
		{"addrtype src LOCAL", &AddrtypeMatch{Src: AddrLocal}, base, false},
		{"addrtype ! dst LOCAL", &AddrtypeMatch{Dst: AddrLocal, DstInvert: true}, base, false},
		{"addrtype dst BROADCAST", &AddrtypeMatch{Dst: AddrBroadcast}, with(func(p *packet.Packet) { p.Dst = mkAddr("255.255.255.255") }), true},
		{"addrtype subnet broadcast", &AddrtypeMatch{Dst: AddrBroadcast}, with(func(p *packet.Packet) { p.Dst = mkAddr("198.18.0.255") }), true},
		{"addrtype MULTICAST", &AddrtypeMatch{Dst: AddrMulticast | AddrBroadcast}, with(func(p *packet.Packet) { p.Dst = mkAddr("224.0.0.1") }), true},
		{"addrtype UNICAST", &AddrtypeMatch{Src: AddrUnicast}, base, true},
		{"addrtype v6 LOCAL", &AddrtypeMatch{Dst: AddrLocal}, func() *packet.Packet { return mkPkt("fd00:198:18::1", "fd00:198:18::2", 80) }, true},
		{"addrtype v6 MULTICAST", &AddrtypeMatch{Dst: AddrMulticast}, func() *packet.Packet { return mkPkt("fd00:198:18::1", "ff02::1", 80) }, true},

		{"connlimit above 2 (3 conns)", &ConnlimitMatch{Limit: 2, Above: true, Mask: 32}, base, true},
		{"connlimit above 3 (3 conns)", &ConnlimitMatch{Limit: 3, Above: true, Mask: 32}, base, false},
		{"connlimit upto 3 (3 conns)", &ConnlimitMatch{Limit: 3, Mask: 32}, base, true},
		{"connlimit /24 above 9", &ConnlimitMatch{Limit: 9, Above: true, Mask: 24}, base, true},

		{"mark", &MarkMatch{Value: 5, Mask: 0xffffffff}, with(func(p *packet.Packet) { p.Mark = 5 }), true},
		{"mark other", &MarkMatch{Value: 5, Mask: 0xffffffff}, with(func(p *packet.Packet) { p.Mark = 4 }), false},
		{"mark 0/0 matches all", &MarkMatch{}, with(func(p *packet.Packet) { p.Mark = 4 }), true},
		{"mark masked", &MarkMatch{Value: 1, Mask: 1}, with(func(p *packet.Packet) { p.Mark = 0xff }), true},
		{"! mark", &MarkMatch{Value: 5, Mask: 0xffffffff, Invert: true}, with(func(p *packet.Packet) { p.Mark = 5 }), false},

		{"owner uid", &OwnerMatch{UID: IDRange{Set: true, Lo: 1000, Hi: 1000}}, with(func(p *packet.Packet) { p.HasOwner, p.UID = true, 1000 }), true},
		{"owner uid other", &OwnerMatch{UID: IDRange{Set: true, Lo: 1000, Hi: 1000}}, with(func(p *packet.Packet) { p.HasOwner, p.UID = true, 0 }), false},
		{"owner gid range", &OwnerMatch{GID: IDRange{Set: true, Lo: 100, Hi: 200}}, with(func(p *packet.Packet) { p.HasOwner, p.GID = true, 150 }), true},
		{"owner without socket", &OwnerMatch{UID: IDRange{Set: true, Lo: 0, Hi: 0}}, base, false},
		{"! owner without socket", &OwnerMatch{UID: IDRange{Set: true, Lo: 0, Hi: 0, Invert: true}}, base, true},
		{"socket-exists", &OwnerMatch{SocketExists: True}, with(func(p *packet.Packet) { p.HasOwner = true }), true},
		{"! socket-exists with socket", &OwnerMatch{SocketExists: False}, with(func(p *packet.Packet) { p.HasOwner = true }), false},
		{"! socket-exists without socket", &OwnerMatch{SocketExists: False}, base, true},

		{"length in", &LengthMatch{Lo: 40, Hi: 60}, base, true},
		{"length single value", &LengthMatch{Lo: 60}, base, true},
		{"! length", &LengthMatch{Lo: 0, Hi: 100, Invert: true}, base, false},
		{"ttl eq", &TTLMatch{Op: CmpEq, Value: 64}, base, true},
		{"ttl lt", &TTLMatch{Op: CmpLt, Value: 64}, base, false},
		{"ttl gt", &TTLMatch{Op: CmpGt, Value: 5}, base, true},
		{"hl ne", &TTLMatch{V6: true, Op: CmpNe, Value: 64}, base, false},
		{"pkttype broadcast", &PkttypeMatch{Type: packet.PktBroadcast}, with(func(p *packet.Packet) { p.PktType = packet.PktBroadcast }), true},
		{"! pkttype unicast", &PkttypeMatch{Type: packet.PktUnicast, Invert: true}, base, false},
		{"mac", &MACMatch{Addr: [6]byte{2, 0, 0, 0, 0, 1}}, with(func(p *packet.Packet) { p.HasMAC, p.SrcMAC = true, [6]byte{2, 0, 0, 0, 0, 1} }), true},
		{"! mac other", &MACMatch{Addr: [6]byte{2, 0, 0, 0, 0, 1}, Invert: true}, with(func(p *packet.Packet) { p.HasMAC, p.SrcMAC = true, [6]byte{2, 0, 0, 0, 0, 2} }), true},
		{"! mac without link layer", &MACMatch{Addr: [6]byte{2, 0, 0, 0, 0, 1}, Invert: true}, base, false},

		{"frag first", &FragMatch{First: true}, func() *packet.Packet {
			p := mkPkt("fd00:198:18::1", "fd00:198:18::2", 80)
			p.HasFragHdr, p.MoreFrags, p.ID = true, true, 7
			return p
		}, true},
		{"frag last on first", &FragMatch{Last: true}, func() *packet.Packet {
			p := mkPkt("fd00:198:18::1", "fd00:198:18::2", 80)
			p.HasFragHdr, p.MoreFrags = true, true
			return p
		}, false},
		{"frag id", &FragMatch{HasID: true, IDLo: 7, IDHi: 7}, func() *packet.Packet {
			p := mkPkt("fd00:198:18::1", "fd00:198:18::2", 80)
			p.HasFragHdr, p.ID = true, 7
			return p
		}, true},
		{"frag without header", &FragMatch{}, func() *packet.Packet { return mkPkt("fd00:198:18::1", "fd00:198:18::2", 80) }, false},
		{"comment", &CommentMatch{Text: "x"}, base, true},
		{"icmp any", &ICMPMatch{Any: true}, with(func(p *packet.Packet) { p.Proto = packet.ProtoICMP }), true},
		{"icmp type/code", &ICMPMatch{Type: 3, CodeLo: 3, CodeHi: 3}, with(func(p *packet.Packet) { p.Proto, p.ICMPType, p.ICMPCode = packet.ProtoICMP, 3, 1 }), false},
		{"icmp6 on icmp", &ICMPMatch{V6: true, Any: true}, with(func(p *packet.Packet) { p.Proto = packet.ProtoICMP }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Matches: []Match{tt.m}, Target: tgtAccept()}))
			c := mustCompile(t, tab, CompileOptions{LocalAddr: local, LocalPrefixes: []netip.Prefix{mkPrefix("198.18.0.2/24")}, ConnCounter: conns})
			got := c.Evaluate(tt.p()).Verdict == VerdictAccept
			if got != tt.want {
				t.Fatalf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAddrtypeLocalNeedsAddresses(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Matches: []Match{&AddrtypeMatch{Dst: AddrLocal}}, Target: tgtAccept()}))
	if _, err := Compile(tab, CompileOptions{}); err == nil {
		t.Fatal("addrtype LOCAL compiled without the host's addresses")
	}
	tab = mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Matches: []Match{&AddrtypeMatch{Dst: AddrBroadcast}}, Target: tgtAccept()}))
	if _, err := Compile(tab, CompileOptions{}); err != nil {
		t.Fatalf("addrtype BROADCAST needs no local addresses: %v", err)
	}
}
