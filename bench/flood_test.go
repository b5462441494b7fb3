package bench

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// floodRules protect port 80 with a per-source SYN hashlimit: 1 SYN/s with a
// burst of 2 per source address.
const floodRules = `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate INVALID -j DROP
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m hashlimit --hashlimit-above 1/sec --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name synflood --hashlimit-htable-max 65536 -j DROP
-A INPUT -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
COMMIT
`

// TestFloodHashlimit replays the acceptance flood of issue 4 (200,000 SYNs
// from 50,000 sources at 100,000 SYN/s plus 20 legitimate HTTP sessions)
// through the engine: every legitimate session passes whole, and no flood
// source gets more SYNs through than its bucket allows (burst + rate × the
// time it flooded).
func TestFloodHashlimit(t *testing.T) {
	cfg := FloodConfig{FloodSYNs: 200_000, FloodSources: 50_000, FloodRate: 100_000, Sessions: 20, Seed: 7}
	if testing.Short() || raceEnabled {
		cfg.FloodSYNs, cfg.FloodSources = 20_000, 5_000
	}
	var buf bytes.Buffer
	st, err := WriteFlood(&buf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := ruleset.Load("flood.rules", []byte(floodRules), ruleset.LoadOptions{})
	if len(diags) > 0 {
		t.Fatalf("rules: %v", diags)
	}
	c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{Rules: engine.Rules{V4: c}, Conntrack: conntrack.New(conntrack.Config{HashSeed: 1}), Local: serverPfx})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := engine.OpenPcap(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	legit := map[netip.Addr]bool{}
	for _, a := range st.ClientAddrs {
		legit[a] = true
	}
	type tally struct{ offered, accepted int }
	perSrc := map[netip.Addr]*tally{}
	var legitPkts, legitAccepted int
	rp := engine.NewReplayer(e, engine.ReplayOptions{})
	w := rp.Worker()
	var fr engine.Frame
	for rd.Next(&fr) == nil {
		if err := rp.Frame(&fr); err != nil {
			t.Fatal(err)
		}
		p := w.Packet()
		v := rp.LastVerdict()
		if legit[p.Src] || legit[p.Dst] {
			legitPkts++
			if v.Action == engine.Accept {
				legitAccepted++
			}
			continue
		}
		if p.TCPFlags&(packet.TCPSyn|packet.TCPAck) != packet.TCPSyn {
			t.Fatalf("packet %d: flood packet is not a SYN", fr.Num)
		}
		ts := perSrc[p.Src]
		if ts == nil {
			ts = &tally{}
			perSrc[p.Src] = ts
		}
		ts.offered++
		if v.Action == engine.Accept {
			ts.accepted++
		}
	}
	if legitPkts != st.SessionPkts || legitAccepted != legitPkts {
		t.Errorf("legitimate sessions: %d of %d packets accepted (generator wrote %d)", legitAccepted, legitPkts, st.SessionPkts)
	}
	if len(perSrc) != cfg.FloodSources {
		t.Fatalf("%d flood sources seen, want %d", len(perSrc), cfg.FloodSources)
	}
	// Each source sends one SYN every FloodSources/FloodRate seconds.
	perSource := cfg.FloodSYNs / cfg.FloodSources
	gap := float64(cfg.FloodSources) / cfg.FloodRate
	span := gap * float64(perSource-1)
	allowed := int(2 + 1*span) // burst + rate × span
	var accepted, limited int
	for a, ts := range perSrc {
		if ts.offered != perSource {
			t.Fatalf("source %v offered %d SYNs, want %d", a, ts.offered, perSource)
		}
		if ts.accepted > allowed || ts.accepted < 2 {
			t.Fatalf("source %v: %d of %d SYNs accepted, want between the burst (2) and burst+rate×%.1fs (%d)", a, ts.accepted, ts.offered, span, allowed)
		}
		accepted += ts.accepted
		if ts.accepted < ts.offered {
			limited++
		}
	}
	if limited != cfg.FloodSources {
		t.Errorf("%d of %d flood sources were limited; all send faster than 1/s after their burst", limited, cfg.FloodSources)
	}
	// The same from the rule counters, as iptables -L -v would show them.
	snap := e.Rules().V4.Snapshot()
	in := snap.Chain("INPUT")
	drop, syn := in.Rules[2].Counters.Packets, in.Rules[3].Counters.Packets
	if int(syn) != accepted+cfg.Sessions || int(drop) != cfg.FloodSYNs-accepted {
		t.Errorf("counters: hashlimit DROP %d, SYN ACCEPT %d; want %d and %d", drop, syn, cfg.FloodSYNs-accepted, accepted+cfg.Sessions)
	}
	sum := rp.Summary("flood.rules", "")
	if sum.Packets != uint64(st.Packets) {
		t.Errorf("summary: %d packets, want %d", sum.Packets, st.Packets)
	}
	t.Logf("%d flood SYNs from %d sources: %d accepted (<= %d per source), %d dropped by the hashlimit rule; %d legitimate packets all accepted",
		cfg.FloodSYNs, cfg.FloodSources, accepted, allowed, drop, legitPkts)
}
