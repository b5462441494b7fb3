package engine

import (
	"net/netip"
	"testing"
	"time"

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
