package conntrack

// Reference: Linux net/netfilter/nf_conntrack_proto_udp.c
// (nf_conntrack_udp_packet), nf_conntrack_proto_icmp.c and
// nf_conntrack_proto_icmpv6.c (invmap, valid_new, noct_valid_new,
// nf_conntrack_inet_error), nf_conntrack_proto_generic.c and
// nf_conntrack_core.c (resolve_normal_ct ctinfo rules).

import (
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

func udp(src, dst string, sport, dport uint16, at time.Duration) *packet.Packet {
	return seg{src: src, dst: dst, sport: sport, dport: dport, proto: packet.ProtoUDP, n: 10, at: at}.packet()
}

func TestUDP(t *testing.T) {
	tab := New(Config{HashSeed: 2})
	k := Key{Family: packet.IPv4, Proto: packet.ProtoUDP, Src: mustAddr("198.18.1.2"), Dst: mustAddr("198.18.2.2"), SrcPort: 40000, DstPort: 53}
	steps := []struct {
		name      string
		reply     bool
		at        time.Duration
		wantCT    packet.CTState
		wantTO    time.Duration
		assured   bool
		seenReply bool
	}{
		{"first packet", false, 0, packet.CTNew, 30 * time.Second, false, false},
		{"again, unreplied", false, time.Second, packet.CTNew, 30 * time.Second, false, false},
		{"reply within 2 s", true, 1500 * time.Millisecond, packet.CTEstablished, 30 * time.Second, false, true},
		{"original after reply", false, 1800 * time.Millisecond, packet.CTEstablished, 30 * time.Second, false, true},
		{"still active after 2 s: stream", true, 3 * time.Second, packet.CTEstablished, 120 * time.Second, true, true},
		{"stream keeps 120 s", false, 10 * time.Second, packet.CTEstablished, 120 * time.Second, true, true},
	}
	for _, s := range steps {
		p := udp("198.18.1.2", "198.18.2.2", 40000, 53, s.at)
		if s.reply {
			p = udp("198.18.2.2", "198.18.1.2", 53, 40000, s.at)
		}
		if got := track(tab, p); got != s.wantCT {
			t.Fatalf("%s: ct %s, want %s", s.name, got, s.wantCT)
		}
		en, ok := entryOf(tab, k)
		if !ok {
			t.Fatalf("%s: no entry", s.name)
		}
		if en.Timeout != s.wantTO || en.Assured != s.assured || en.SeenReply != s.seenReply {
			t.Fatalf("%s: timeout %v assured %v seen %v; want %v %v %v", s.name, en.Timeout, en.Assured, en.SeenReply, s.wantTO, s.assured, s.seenReply)
		}
	}
	// Expiry: 121 s of silence later the flow is new again.
	if got := track(tab, udp("198.18.1.2", "198.18.2.2", 40000, 53, 131*time.Second)); got != packet.CTNew {
		t.Fatalf("after expiry: %s", got)
	}
}

func icmp(src, dst string, typ, code uint8, id uint16, at time.Duration) *packet.Packet {
	proto := packet.ProtoICMP
	if mustAddr(src).Is6() {
		proto = packet.ProtoICMPv6
	}
	return seg{src: src, dst: dst, proto: proto, icmpType: typ, icmpCode: code, icmpID: id, n: 56, at: at}.packet()
}

func TestICMP(t *testing.T) {
	cases := []struct {
		name string
		pkts []*packet.Packet
		want []packet.CTState
	}{
		{"echo request/reply", []*packet.Packet{
			icmp("198.18.1.2", "198.18.2.2", 8, 0, 7, 0), icmp("198.18.2.2", "198.18.1.2", 0, 0, 7, time.Millisecond),
			icmp("198.18.1.2", "198.18.2.2", 8, 0, 7, time.Second)},
			[]packet.CTState{packet.CTNew, packet.CTEstablished, packet.CTEstablished}},
		{"reply without request is INVALID", []*packet.Packet{icmp("198.18.2.2", "198.18.1.2", 0, 0, 7, 0)},
			[]packet.CTState{packet.CTInvalid}},
		{"reply with another id is INVALID", []*packet.Packet{
			icmp("198.18.1.2", "198.18.2.2", 8, 0, 7, 0), icmp("198.18.2.2", "198.18.1.2", 0, 0, 8, time.Millisecond)},
			[]packet.CTState{packet.CTNew, packet.CTInvalid}},
		{"timestamp request/reply", []*packet.Packet{
			icmp("198.18.1.2", "198.18.2.2", 13, 0, 1, 0), icmp("198.18.2.2", "198.18.1.2", 14, 0, 1, time.Millisecond)},
			[]packet.CTState{packet.CTNew, packet.CTEstablished}},
		{"router advertisement cannot be tracked", []*packet.Packet{icmp("198.18.1.1", "198.18.1.2", 9, 0, 0, 0)},
			[]packet.CTState{packet.CTInvalid}},
		{"unknown type > 18 is INVALID", []*packet.Packet{icmp("198.18.1.1", "198.18.1.2", 40, 0, 0, 0)},
			[]packet.CTState{packet.CTInvalid}},
		{"echo reply after 30 s is INVALID", []*packet.Packet{
			icmp("198.18.1.2", "198.18.2.2", 8, 0, 7, 0), icmp("198.18.2.2", "198.18.1.2", 0, 0, 7, 31*time.Second)},
			[]packet.CTState{packet.CTNew, packet.CTInvalid}},
		{"ICMPv6 echo", []*packet.Packet{
			icmp("fd00:198:18:1::2", "fd00:198:18:2::2", 128, 0, 9, 0), icmp("fd00:198:18:2::2", "fd00:198:18:1::2", 129, 0, 9, time.Millisecond)},
			[]packet.CTState{packet.CTNew, packet.CTEstablished}},
		{"ICMPv6 reply without request", []*packet.Packet{icmp("fd00:198:18:2::2", "fd00:198:18:1::2", 129, 0, 9, 0)},
			[]packet.CTState{packet.CTInvalid}},
		{"ICMPv6 neighbour solicitation is untracked", []*packet.Packet{icmp("fe80::1", "ff02::1:ff00:2", 135, 0, 0, 0)},
			[]packet.CTState{packet.CTUntracked}},
		{"ICMPv6 router solicitation is untracked", []*packet.Packet{icmp("fe80::1", "ff02::2", 133, 0, 0, 0)},
			[]packet.CTState{packet.CTUntracked}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(Config{HashSeed: 4})
			for i, p := range tc.pkts {
				if got := track(tab, p); got != tc.want[i] {
					t.Errorf("packet %d: %s, want %s", i, got, tc.want[i])
				}
			}
		})
	}
}

// icmpErr builds an ICMP error from `from` to `to` quoting a packet.
func icmpErr(from, to string, typ, code uint8, in packet.Embedded, at time.Duration) *packet.Packet {
	p := icmp(from, to, typ, code, 0, at)
	in.Valid = true
	p.Inner = in
	return p
}

func TestRelatedICMPErrors(t *testing.T) {
	c, s, r := "198.18.1.2", "198.18.2.2", "198.18.1.1"
	udpOut := packet.Embedded{Proto: packet.ProtoUDP, Src: mustAddr(c), Dst: mustAddr(s), SrcPort: 40000, DstPort: 7778}
	cases := []struct {
		name    string
		setup   []*packet.Packet
		err     *packet.Packet
		want    packet.CTState
		wantDir packet.CTDir
	}{
		{"port unreachable for a tracked UDP flow", []*packet.Packet{udp(c, s, 40000, 7778, 0)},
			icmpErr(s, c, 3, 3, udpOut, time.Millisecond), packet.CTRelated, packet.DirReply},
		{"from a router on the path", []*packet.Packet{udp(c, s, 40000, 7778, 0)},
			icmpErr(r, c, 11, 0, udpOut, time.Millisecond), packet.CTRelated, packet.DirReply},
		{"about an untracked flow is INVALID", nil,
			icmpErr(s, c, 3, 3, udpOut, time.Millisecond), packet.CTInvalid, 0},
		{"outer destination is not the flow's is INVALID", []*packet.Packet{udp(c, s, 40000, 7778, 0)},
			icmpErr(s, "198.18.1.77", 3, 3, udpOut, time.Millisecond), packet.CTInvalid, 0},
		{"time exceeded for a ping", []*packet.Packet{icmp(c, s, 8, 0, 5, 0)},
			icmpErr(r, c, 11, 0, packet.Embedded{Proto: packet.ProtoICMP, Src: mustAddr(c), Dst: mustAddr(s), ICMPType: 8, SrcPort: 5}, time.Millisecond),
			packet.CTRelated, packet.DirReply},
		{"error quoting an error is INVALID", []*packet.Packet{udp(c, s, 40000, 7778, 0)},
			icmpErr(r, c, 3, 1, packet.Embedded{Proto: packet.ProtoICMP, Src: mustAddr(c), Dst: mustAddr(s), ICMPType: 3}, time.Millisecond),
			packet.CTInvalid, 0},
		{"error in the original direction", []*packet.Packet{udp(c, s, 40000, 7778, 0), udp(s, c, 7778, 40000, time.Millisecond)},
			icmpErr(c, s, 3, 3, packet.Embedded{Proto: packet.ProtoUDP, Src: mustAddr(s), Dst: mustAddr(c), SrcPort: 7778, DstPort: 40000}, 2*time.Millisecond),
			packet.CTRelated, packet.DirOriginal},
		{"ICMPv6 port unreachable", []*packet.Packet{udp("fd00:198:18:1::2", "fd00:198:18:2::2", 40000, 7778, 0)},
			icmpErr("fd00:198:18:2::2", "fd00:198:18:1::2", 1, 4, packet.Embedded{Proto: packet.ProtoUDP,
				Src: mustAddr("fd00:198:18:1::2"), Dst: mustAddr("fd00:198:18:2::2"), SrcPort: 40000, DstPort: 7778}, time.Millisecond),
			packet.CTRelated, packet.DirReply},
		{"error about an expired flow is INVALID", []*packet.Packet{udp(c, s, 40000, 7778, 0)},
			icmpErr(s, c, 3, 3, udpOut, 31*time.Second), packet.CTInvalid, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(Config{HashSeed: 6})
			for _, p := range tc.setup {
				track(tab, p)
			}
			var before []string
			if len(tc.setup) > 0 {
				before = tab.List()
			}
			if got := track(tab, tc.err); got != tc.want || tc.err.CTDir != tc.wantDir {
				t.Fatalf("ct %s dir %d, want %s dir %d", got, tc.err.CTDir, tc.want, tc.wantDir)
			}
			if tc.want == packet.CTRelated {
				// RELATED errors refresh and count nothing.
				after := tab.List()
				if len(after) != len(before) || after[0] != before[0] {
					t.Errorf("entry changed:\n%v\n%v", before, after)
				}
			}
		})
	}
}

func TestGenericAndChecksum(t *testing.T) {
	tab := New(Config{HashSeed: 8})
	gre := seg{src: "198.18.1.2", dst: "198.18.2.2", proto: packet.ProtoGRE, n: 20}.packet()
	if got := track(tab, gre); got != packet.CTNew {
		t.Fatalf("GRE: %s", got)
	}
	back := seg{src: "198.18.2.2", dst: "198.18.1.2", proto: packet.ProtoGRE, n: 20, at: time.Second}.packet()
	if got := track(tab, back); got != packet.CTEstablished {
		t.Fatalf("GRE back: %s", got)
	}
	en, _ := entryOf(tab, Key{Family: packet.IPv4, Proto: packet.ProtoGRE, Src: mustAddr("198.18.1.2"), Dst: mustAddr("198.18.2.2")})
	if en.Timeout != 600*time.Second {
		t.Fatalf("generic timeout %v", en.Timeout)
	}

	for _, tc := range []struct {
		name  string
		cfg   Switch
		local bool
		want  packet.CTState
	}{
		{"bad checksum from the network", Default, false, packet.CTInvalid},
		{"bad checksum, nf_conntrack_checksum=0", Off, false, packet.CTNew},
		{"bad checksum on a locally sent packet", Default, true, packet.CTNew},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(Config{HashSeed: 8, Checksum: tc.cfg})
			p := udp("198.18.1.2", "198.18.2.2", 1, 2, 0)
			p.Checksum = packet.ChecksumBad
			p.Meta.Local = tc.local
			if got := track(tab, p); got != tc.want {
				t.Fatalf("ct %s, want %s", got, tc.want)
			}
			if tc.want == packet.CTInvalid && tab.Len() != 0 {
				t.Fatalf("INVALID packet left an entry")
			}
		})
	}
	t.Run("truncated TCP header", func(t *testing.T) {
		tab := New(Config{HashSeed: 8})
		p := seg{src: "198.18.1.2", dst: "198.18.2.2", sport: 1, dport: 2, flags: fS}.packet()
		p.TCPDataOff = 16
		if got := track(tab, p); got != packet.CTInvalid {
			t.Fatalf("ct %s", got)
		}
		p = seg{src: "198.18.1.2", dst: "198.18.2.2", sport: 1, dport: 2, flags: fS}.packet()
		p.Truncated = true
		if got := track(tab, p); got != packet.CTInvalid {
			t.Fatalf("ct %s", got)
		}
	})
}
