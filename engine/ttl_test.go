package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// TestEngineForwardTTLExpired: a packet to be forwarded with a TTL or hop
// limit of 1 or less is dropped before the FORWARD chain, as the kernel's
// ip_forward / ip6_forward do (after PREROUTING's conntrack, which never
// confirms its entry); no FORWARD rule or policy counts it. Packets for the
// host itself are delivered whatever their TTL, and TTL 2 is forwarded.
func TestEngineForwardTTLExpired(t *testing.T) {
	const rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p udp\n-A FORWARD -p udp\nCOMMIT\n"
	withTTL := func(b []byte, ttl uint8) []byte {
		b = append([]byte(nil), b...)
		if b[0]>>4 == 4 {
			b[8] = ttl
			fixIPv4Checksum(b)
		} else {
			b[7] = ttl
		}
		return b
	}
	tests := []struct {
		name       string
		pkt        []byte
		local      string
		wantAction Action
		wantReason Reason
		wantChain  string // chain whose udp rule counts the packet; "" none
	}{
		{"v4 forward ttl 1", withTTL(udp4(t, []byte("x")), 1), "198.18.9.9/32", Drop, ReasonTTLExpired, ""},
		{"v4 forward ttl 0", withTTL(udp4(t, []byte("x")), 0), "198.18.9.9/32", Drop, ReasonTTLExpired, ""},
		{"v4 forward ttl 2", withTTL(udp4(t, []byte("x")), 2), "198.18.9.9/32", Accept, ReasonRules, "FORWARD"},
		{"v4 input ttl 1", withTTL(udp4(t, []byte("x")), 1), "198.18.2.2/32", Accept, ReasonRules, "INPUT"},
		{"v6 forward hop limit 1", withTTL(udp6(t, []byte("x")), 1), "fd00:198:18:9::9/128", Drop, ReasonTTLExpired, ""},
		{"v6 forward hop limit 2", withTTL(udp6(t, []byte("x")), 2), "fd00:198:18:9::9/128", Accept, ReasonRules, "FORWARD"},
		{"v6 input hop limit 1", withTTL(udp6(t, []byte("x")), 1), "fd00:198:18:2::2/128", Accept, ReasonRules, "INPUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fam := packet.IPv4
			if tt.pkt[0]>>4 == 6 {
				fam = packet.IPv6
			}
			f, diags := ruleset.Load("ttl.rules", []byte(rules), ruleset.LoadOptions{Family: fam})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rs := Rules{V4: c}
			if fam == packet.IPv6 {
				rs = Rules{V6: c}
			}
			ct := conntrack.New(conntrack.Config{HashSeed: 1})
			e, err := New(Config{Rules: rs, Conntrack: ct, Local: []netip.Prefix{netip.MustParsePrefix(tt.local)}})
			if err != nil {
				t.Fatal(err)
			}
			v := e.NewWorker().Process(tt.pkt, packet.Meta{Time: time.Unix(1000, 0)})
			if v.Action != tt.wantAction || v.Reason != tt.wantReason {
				t.Errorf("verdict %v reason %d, want %v reason %d", v.Action, v.Reason, tt.wantAction, tt.wantReason)
			}
			snap := c.Snapshot()
			for _, name := range []string{"INPUT", "FORWARD"} {
				ch := snap.Chain(name)
				want := uint64(0)
				if name == tt.wantChain {
					want = 1
				}
				if got := ch.Rules[0].Counters.Packets; got != want {
					t.Errorf("%s rule counted %d packets, want %d", name, got, want)
				}
				if got := ch.Counters.Packets; got != want {
					t.Errorf("%s policy counted %d packets, want %d", name, got, want)
				}
			}
			wantEntries := 1
			if tt.wantReason == ReasonTTLExpired {
				wantEntries = 0 // never confirmed
			}
			if n := ct.Len(); n != wantEntries {
				t.Errorf("conntrack holds %d entries, want %d", n, wantEntries)
			}
		})
	}
}

// TestEngineRouteForwardTTL: with Route (pcap replay) and no local address
// every packet is forwarded, and the FORWARD chain sees the TTL / hop limit
// already decremented, as after the kernel's ip_forward / ip6_forward
// (checked against the kernel with bench/cmd/parity: a TTL-64 packet
// matches -m ttl --ttl-eq 63 in FORWARD). Without Route and Local the hook
// comes with the packet (NFQUEUE) and the TTL is left as it is.
func TestEngineRouteForwardTTL(t *testing.T) {
	tests := []struct {
		name  string
		fam   packet.Family
		rules string
		pkt   []byte // TTL / hop limit 64 / 63 as built
		route bool
		local string
		hook  packet.Hook // given with the packet
		want  [3]uint64   // packets of FORWARD rules 1-3
	}{
		{"v4 route, no local", packet.IPv4,
			"-A FORWARD -m ttl --ttl-eq 64\n-A FORWARD -m ttl --ttl-eq 63\n-A FORWARD -m ttl --ttl-lt 63\n",
			udp4(t, []byte("x")), true, "", packet.HookPreRouting, [3]uint64{0, 1, 0}},
		{"v4 route, other local", packet.IPv4,
			"-A FORWARD -m ttl --ttl-eq 64\n-A FORWARD -m ttl --ttl-eq 63\n-A FORWARD -m ttl --ttl-lt 63\n",
			udp4(t, []byte("x")), false, "198.18.9.9/32", packet.HookPreRouting, [3]uint64{0, 1, 0}},
		{"v6 route", packet.IPv6,
			"-A FORWARD -m hl --hl-eq 63\n-A FORWARD -m hl --hl-eq 62\n-A FORWARD -m hl --hl-lt 62\n",
			udp6(t, []byte("x")), true, "", packet.HookPreRouting, [3]uint64{0, 1, 0}},
		{"v4 nfqueue: hook and TTL as given", packet.IPv4,
			"-A FORWARD -m ttl --ttl-eq 64\n-A FORWARD -m ttl --ttl-eq 63\n-A FORWARD -m ttl --ttl-lt 63\n",
			udp4(t, []byte("x")), false, "", packet.HookForward, [3]uint64{1, 0, 0}},
		{"v4 nfqueue at INPUT: FORWARD not traversed", packet.IPv4,
			"-A FORWARD -m ttl --ttl-eq 64\n-A FORWARD -m ttl --ttl-eq 63\n-A FORWARD -m ttl --ttl-lt 63\n",
			udp4(t, []byte("x")), false, "", packet.HookInput, [3]uint64{0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, diags := ruleset.Load("ttl.rules", []byte("*filter\n:FORWARD DROP [0:0]\n"+tt.rules+"COMMIT\n"), ruleset.LoadOptions{Family: tt.fam})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rs := Rules{V4: c}
			if tt.fam == packet.IPv6 {
				rs = Rules{V6: c}
			}
			cfg := Config{Rules: rs, Conntrack: conntrack.New(conntrack.Config{HashSeed: 1}), Route: tt.route}
			if tt.local != "" {
				cfg.Local = []netip.Prefix{netip.MustParsePrefix(tt.local)}
			}
			e, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			meta := packet.Meta{Time: time.Unix(1000, 0), Hook: tt.hook}
			if tt.hook == packet.HookForward {
				meta.InIface, meta.OutIface = "eth0", "eth1"
			}
			v := e.NewWorker().Process(tt.pkt, meta)
			fwd := c.Snapshot().Chain("FORWARD")
			var got [3]uint64
			for i := range got {
				got[i] = fwd.Rules[i].Counters.Packets
			}
			if got != tt.want {
				t.Errorf("FORWARD rules counted %v, want %v (verdict %v, hook %v)", got, tt.want, v.Action, v.Hook)
			}
			wantDrop := tt.hook != packet.HookInput // FORWARD policy DROP
			if (v.Action == Drop) != wantDrop {
				t.Errorf("verdict %v, want drop %v", v.Action, wantDrop)
			}
		})
	}
}

// TestEngineLoopbackConfirmedBeforeInput: a packet from one local address to
// another goes OUTPUT, POSTROUTING (where the kernel confirms its conntrack
// entry), then INPUT on lo. When INPUT drops it, the entry stays, so the
// reply is ESTABLISHED (found with bench/cmd/parity on the gopacket loopback
// capture). A packet from outside that INPUT drops leaves no entry.
func TestEngineLoopbackConfirmedBeforeInput(t *testing.T) {
	const rules = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n-A INPUT -m conntrack --ctstate NEW -j DROP\nCOMMIT\n"
	reply := func() []byte {
		ip := v4(layers.IPProtocolUDP)
		ip.SrcIP, ip.DstIP = tDst4, tSrc4
		u := &layers.UDP{SrcPort: 7777, DstPort: 40000}
		u.SetNetworkLayerForChecksum(ip)
		return serialize(t, ip, u, gopacket.Payload([]byte("y")))
	}()
	for _, tt := range []struct {
		name        string
		local       []string
		wantEntries int
		wantReply   packet.CTState
	}{
		{"loopback", []string{"198.18.1.2/32", "198.18.2.2/32"}, 1, packet.CTEstablished},
		{"from outside", []string{"198.18.2.2/32"}, 0, packet.CTNew},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, diags := ruleset.Load("lo.rules", []byte(rules), ruleset.LoadOptions{})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ct := conntrack.New(conntrack.Config{HashSeed: 1})
			var local []netip.Prefix
			for _, l := range tt.local {
				local = append(local, netip.MustParsePrefix(l))
			}
			e, err := New(Config{Rules: Rules{V4: c}, Conntrack: ct, Local: local})
			if err != nil {
				t.Fatal(err)
			}
			w := e.NewWorker()
			if v := w.Process(udp4(t, []byte("x")), packet.Meta{Time: time.Unix(1000, 0)}); v.Action != Drop || v.Hook != packet.HookInput {
				t.Fatalf("first packet: %v at %v, want DROP at INPUT", v.Action, v.Hook)
			}
			if n := ct.Len(); n != tt.wantEntries {
				t.Errorf("conntrack holds %d entries after the INPUT drop, want %d", n, tt.wantEntries)
			}
			w.Process(reply, packet.Meta{Time: time.Unix(1001, 0)})
			if got := w.Packet().CTState; got != tt.wantReply {
				t.Errorf("reply is %v, want %v", got, tt.wantReply)
			}
		})
	}
}
