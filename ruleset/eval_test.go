package ruleset

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// Helpers to write tables as data.

func mkPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mkAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

func mkBuiltin(name string, pol Policy, rules ...*Rule) *Chain {
	h, _ := packet.ParseHook(name)
	return &Chain{Name: name, Builtin: true, Hook: h, Policy: pol, Rules: rules}
}

func mkUser(name string, rules ...*Rule) *Chain {
	return &Chain{Name: name, Rules: rules}
}

func mkTable(chains ...*Chain) *Table {
	return &Table{Name: "filter", Family: packet.IPv4, Chains: chains}
}

func tgtAccept() Target             { return Target{Kind: TargetAccept} }
func tgtDrop() Target               { return Target{Kind: TargetDrop} }
func tgtJump(c string) Target       { return Target{Kind: TargetJump, Chain: c} }
func tgtGoto(c string) Target       { return Target{Kind: TargetGoto, Chain: c} }
func tgtReturn() Target             { return Target{Kind: TargetReturn} }
func tgtReject(w RejectWith) Target { return Target{Kind: TargetReject, Reject: w} }

func mkTCPDport(port uint16) *TCPMatch {
	return &TCPMatch{Dport: PortMatch{Set: true, Lo: port, Hi: port}}
}

func mkTCPRule(port uint16, t Target) *Rule {
	return &Rule{Proto: ProtoMatch{Num: packet.ProtoTCP}, Matches: []Match{mkTCPDport(port)}, Target: t}
}

// pkt builds an IPv4 TCP packet on INPUT from eth0.
func mkPkt(src, dst string, dport uint16) *packet.Packet {
	p := &packet.Packet{}
	p.Reset()
	p.Family = packet.IPv4
	p.Src, p.Dst = mkAddr(src), mkAddr(dst)
	if p.Src.Is6() {
		p.Family = packet.IPv6
	}
	p.Proto = packet.ProtoTCP
	p.SrcPort, p.DstPort = 40000, dport
	p.TCPFlags = packet.TCPSyn
	p.Length = 60
	p.TTL = 64
	p.Hook = packet.HookInput
	p.InIface = "eth0"
	p.CTState = packet.CTNew
	return p
}

func mustCompile(t *testing.T, tab *Table, opts CompileOptions) *Compiled {
	t.Helper()
	c, err := Compile(tab, opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return c
}

// TestChainSemantics checks first match, non-terminating targets, jump,
// goto, RETURN, falling off user chains and policies on hand-made tables.
func TestChainSemantics(t *testing.T) {
	logRule := &Rule{Target: Target{Kind: TargetLog}}
	countRule := &Rule{}
	tab := mkTable(
		mkBuiltin("INPUT", PolicyDrop,
			countRule,
			logRule,
			&Rule{Src: AddrMatch{Prefix: mkPrefix("198.18.9.0/24")}, Target: tgtJump("BANNED")},
			&Rule{Src: AddrMatch{Prefix: mkPrefix("198.18.7.0/24")}, Target: tgtGoto("G")},
			&Rule{Src: AddrMatch{Prefix: mkPrefix("198.18.8.0/24")}, Target: tgtJump("OUTER")},
			mkTCPRule(22, tgtAccept()),
			mkTCPRule(23, tgtReject(RejectTCPReset)),
			mkTCPRule(80, tgtJump("WEB")),
			mkTCPRule(80, tgtDrop()),
		),
		mkBuiltin("OUTPUT", PolicyAccept),
		mkUser("BANNED",
			&Rule{Src: AddrMatch{Prefix: mkPrefix("198.18.9.9/32")}, Target: tgtDrop()},
			&Rule{Src: AddrMatch{Prefix: mkPrefix("198.18.9.8/32")}, Target: tgtReturn()},
			mkTCPRule(22, tgtDrop()),
		),
		mkUser("WEB",
			&Rule{Src: AddrMatch{Prefix: mkPrefix("198.18.1.1/32")}, Target: tgtAccept()},
		),
		// OUTER jumps to G2 with goto: when G2 returns, OUTER is left too.
		mkUser("OUTER",
			&Rule{Target: tgtGoto("G2")},
			&Rule{Target: tgtAccept()},
		),
		mkUser("G2",
			mkTCPRule(443, tgtAccept()),
		),
		mkUser("G",
			mkTCPRule(25, tgtAccept()),
			&Rule{Target: tgtReturn()},
			&Rule{Target: tgtAccept()},
		),
	)
	var logged []*Rule
	c := mustCompile(t, tab, CompileOptions{Log: func(r *Rule, p *packet.Packet) { logged = append(logged, r) }})
	in := tab.Chains[0]
	tests := []struct {
		name    string
		p       *packet.Packet
		verdict Verdict
		chain   string
		rulenum int // 0: policy
	}{
		{"ssh accepted", mkPkt("198.18.0.5", "198.18.0.2", 22), VerdictAccept, "INPUT", 6},
		{"telnet rejected", mkPkt("198.18.0.5", "198.18.0.2", 23), VerdictReject, "INPUT", 7},
		{"other port: policy DROP", mkPkt("198.18.0.5", "198.18.0.2", 9999), VerdictDrop, "INPUT", 0},
		{"banned host dropped in user chain", mkPkt("198.18.9.9", "198.18.0.2", 22), VerdictDrop, "BANNED", 1},
		{"RETURN from user chain continues in caller", mkPkt("198.18.9.8", "198.18.0.2", 22), VerdictAccept, "INPUT", 6},
		{"rule after RETURN not reached", mkPkt("198.18.9.8", "198.18.0.2", 9999), VerdictDrop, "INPUT", 0},
		{"third rule of BANNED", mkPkt("198.18.9.7", "198.18.0.2", 22), VerdictDrop, "BANNED", 3},
		{"fall off user chain returns", mkPkt("198.18.2.2", "198.18.0.2", 80), VerdictDrop, "INPUT", 9},
		{"user chain accepts", mkPkt("198.18.1.1", "198.18.0.2", 80), VerdictAccept, "WEB", 1},
		{"goto accepts", mkPkt("198.18.7.1", "198.18.0.2", 25), VerdictAccept, "G", 1},
		{"goto'd chain RETURN goes to INPUT's caller: policy", mkPkt("198.18.7.1", "198.18.0.2", 22), VerdictDrop, "INPUT", 0},
		{"goto inside jump returns past the jumping chain", mkPkt("198.18.8.1", "198.18.0.2", 22), VerdictAccept, "INPUT", 6},
		{"goto inside jump: G2 accepts", mkPkt("198.18.8.1", "198.18.0.2", 443), VerdictAccept, "G2", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logged = logged[:0]
			got := c.Evaluate(tt.p)
			if got.Verdict != tt.verdict || got.Chain == nil || got.Chain.Name != tt.chain || got.RuleNum != tt.rulenum {
				t.Fatalf("got %v by %s rule %d, want %v by %s rule %d", got.Verdict, refChainName(got.Chain), got.RuleNum, tt.verdict, tt.chain, tt.rulenum)
			}
			if (got.Rule == nil) != (tt.rulenum == 0) || got.ByPolicy() != (tt.rulenum == 0) {
				t.Fatalf("Rule = %v for rule number %d", got.Rule, tt.rulenum)
			}
			if got.Verdict == VerdictReject && got.RejectWith != RejectTCPReset {
				t.Fatalf("RejectWith = %v, want tcp-reset", got.RejectWith)
			}
			if len(logged) != 1 || logged[0] != in.Rules[1] {
				t.Fatalf("LOG called %d times (%v), want once with the LOG rule", len(logged), logged)
			}
		})
	}
	// The rule without a target counted every packet; the policy counted the drops.
	if got, _ := c.RuleCounters("INPUT", 1); got.Packets != uint64(len(tests)) || got.Bytes != 60*uint64(len(tests)) {
		t.Errorf("counting rule: %+v, want %d packets", got, len(tests))
	}
	if got, _ := c.ChainCounters("INPUT"); got.Packets != 3 {
		t.Errorf("INPUT policy counter %+v, want 3 packets", got)
	}
}

// TestMissingBuiltinAccepts: a hook whose chain is not in the file accepts.
func TestMissingBuiltinAccepts(t *testing.T) {
	c := mustCompile(t, mkTable(mkBuiltin("INPUT", PolicyDrop)), CompileOptions{})
	p := mkPkt("198.18.0.1", "198.18.0.2", 22)
	p.Hook = packet.HookForward
	got := c.Evaluate(p)
	if got.Verdict != VerdictAccept || got.Chain == nil || got.Chain.Name != "FORWARD" || !got.ByPolicy() {
		t.Fatalf("FORWARD without chain: %+v", got)
	}
	if n, ok := c.ChainCounters("FORWARD"); !ok || n.Packets != 1 {
		t.Fatalf("FORWARD policy counter %+v %v", n, ok)
	}
	p.Hook = packet.HookInput
	if got := c.Evaluate(p); got.Verdict != VerdictDrop {
		t.Fatalf("INPUT policy DROP: %+v", got)
	}
}

func TestCompileErrors(t *testing.T) {
	at := func(line int) Pos { return Pos{File: "r.rules", Line: line, Col: 1} }
	tests := []struct {
		name  string
		tab   *Table
		want  []string
		unsup bool
	}{
		{"unknown chain", mkTable(mkBuiltin("INPUT", PolicyAccept, &Rule{Pos: at(3), Target: tgtJump("NOPE")})),
			[]string{`r.rules:3:1: error: rule jumps to unknown chain "NOPE"`}, false},
		{"jump to built-in", mkTable(mkBuiltin("INPUT", PolicyAccept, &Rule{Pos: at(4), Target: tgtJump("OUTPUT")}), mkBuiltin("OUTPUT", PolicyAccept)),
			[]string{`built-in chain "OUTPUT"`}, false},
		{"loop", mkTable(mkBuiltin("INPUT", PolicyAccept, &Rule{Target: tgtJump("A")}),
			mkUser("A", &Rule{Target: tgtJump("B")}), mkUser("B", &Rule{Pos: at(9), Target: tgtGoto("A")})),
			[]string{"r.rules:9:1: error: jump loop: A -> B -> A"}, false},
		{"self loop", mkTable(mkUser("A", &Rule{Pos: at(2), Target: tgtJump("A")})), []string{"jump loop: A -> A"}, false},
		{"connlimit without counter", mkTable(mkBuiltin("INPUT", PolicyAccept, &Rule{Pos: at(5), Matches: []Match{&ConnlimitMatch{Limit: 3, Above: true}}})),
			[]string{"r.rules:5:1: unsupported: -m connlimit"}, true},
		{"ctstatus", mkTable(mkBuiltin("INPUT", PolicyAccept, &Rule{Pos: at(6), Matches: []Match{&ConntrackMatch{HasStatus: true, Status: CTStatusAssured}}})),
			[]string{"--ctstatus"}, true},
		{"all errors at once", mkTable(mkBuiltin("INPUT", PolicyAccept,
			&Rule{Pos: at(1), Target: tgtJump("X")}, &Rule{Pos: at(2), Target: tgtJump("Y")})),
			[]string{`r.rules:1:1: error: rule jumps to unknown chain "X"`, `r.rules:2:1: error: rule jumps to unknown chain "Y"`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Compile(tt.tab, CompileOptions{})
			if err == nil {
				t.Fatalf("Compile succeeded (%v), want error", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if errors.Is(err, ErrUnsupported) != tt.unsup {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", !tt.unsup, tt.unsup)
			}
		})
	}
}

func TestFamilyRestriction(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyAccept,
		&Rule{Family: packet.IPv6, Target: tgtDrop()},
		&Rule{Family: packet.IPv4, Proto: ProtoMatch{Num: packet.ProtoTCP}, Target: tgtReject(RejectICMPPortUnreachable)},
	))
	c := mustCompile(t, tab, CompileOptions{})
	if got := c.Evaluate(mkPkt("198.18.0.1", "198.18.0.2", 1)); got.Verdict != VerdictReject || got.RuleNum != 2 {
		t.Errorf("IPv4 packet: %+v, want REJECT by rule 2", got)
	}
	if got := c.Evaluate(mkPkt("fd00:198:18::1", "fd00:198:18::2", 1)); got.Verdict != VerdictDrop || got.RuleNum != 1 {
		t.Errorf("IPv6 packet: %+v, want DROP by rule 1", got)
	}
}

func TestSnapshotAndReset(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop, mkTCPRule(22, tgtAccept())))
	tab.Chains[0].Counters = Counters{Packets: 100, Bytes: 1000}
	tab.Chains[0].Rules[0].Counters = Counters{Packets: 7, Bytes: 70}
	for _, keep := range []bool{false, true} {
		c := mustCompile(t, tab, CompileOptions{KeepCounters: keep})
		c.Evaluate(mkPkt("198.18.0.1", "198.18.0.2", 22))
		c.Evaluate(mkPkt("198.18.0.1", "198.18.0.2", 22))
		c.Evaluate(mkPkt("198.18.0.1", "198.18.0.2", 80))
		s := c.Snapshot()
		wantRule, wantPol := Counters{Packets: 2, Bytes: 120}, Counters{Packets: 1, Bytes: 60}
		if keep {
			wantRule, wantPol = Counters{Packets: 9, Bytes: 190}, Counters{Packets: 101, Bytes: 1060}
		}
		if s.Chains[0].Rules[0].Counters != wantRule || s.Chains[0].Counters != wantPol {
			t.Errorf("keep=%v: snapshot rule %+v policy %+v, want %+v %+v", keep, s.Chains[0].Rules[0].Counters, s.Chains[0].Counters, wantRule, wantPol)
		}
		if s == tab || s.Chains[0] == tab.Chains[0] || s.Chains[0].Rules[0] == tab.Chains[0].Rules[0] {
			t.Error("Snapshot shares chains or rules with the compiled table")
		}
		if tab.Chains[0].Rules[0].Counters.Packets != 7 {
			t.Error("Snapshot modified the original table")
		}
		c.ResetCounters()
		s = c.Snapshot()
		if s.Chains[0].Rules[0].Counters != (Counters{}) || s.Chains[0].Counters != (Counters{}) {
			t.Errorf("after ResetCounters: %+v %+v", s.Chains[0].Rules[0].Counters, s.Chains[0].Counters)
		}
	}
}

// TestIndexedChainFirstMatch: a long chain (indexed) keeps first-match order
// across the src, port, proto and wildcard lists.
func TestIndexedChainFirstMatch(t *testing.T) {
	var rules []*Rule
	for i := 0; i < 200; i++ {
		rules = append(rules, &Rule{Src: AddrMatch{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i), 1}), 32)}, Target: tgtDrop()})
		rules = append(rules, mkTCPRule(uint16(1000+i), tgtAccept()))
	}
	rules = append(rules,
		&Rule{Proto: ProtoMatch{Num: packet.ProtoUDP}, Target: tgtReject(RejectICMPPortUnreachable)}, // 401
		&Rule{Src: AddrMatch{Prefix: mkPrefix("198.18.0.0/15")}, Proto: ProtoMatch{Num: packet.ProtoTCP},
			Matches: []Match{&MultiportMatch{Dir: MultiportDst, Ports: []PortRange{{Lo: 1000, Hi: 1003}, {Lo: 5000, Hi: 5000}}}}, Target: tgtDrop()}, // 402
		&Rule{Target: tgtAccept()}, // 403
	)
	c := mustCompile(t, mkTable(mkBuiltin("INPUT", PolicyDrop, rules...)), CompileOptions{})
	if c.chains[0].idx == nil {
		t.Fatal("a 403-rule chain is not indexed")
	}
	udp := mkPkt("198.18.5.5", "198.18.0.2", 53)
	udp.Proto = packet.ProtoUDP
	tests := []struct {
		p    *packet.Packet
		want int
	}{
		{mkPkt("198.19.1.1", "198.18.0.2", 1003), 3}, // banned source before the port rule
		{mkPkt("198.19.7.1", "198.18.0.2", 1199), 15},
		{mkPkt("198.18.5.5", "198.18.0.2", 1003), 8}, // port rule 1003 is rule 8
		{mkPkt("198.18.5.5", "198.18.0.2", 1199), 400},
		{mkPkt("198.18.5.5", "198.18.0.2", 5000), 402},
		{mkPkt("198.18.5.5", "198.18.0.2", 7000), 403},
		{udp, 401},
	}
	for _, tt := range tests {
		if got := c.Evaluate(tt.p); got.RuleNum != tt.want {
			t.Errorf("%v -> %v:%d: rule %d, want %d", tt.p.Src, tt.p.Dst, tt.p.DstPort, got.RuleNum, tt.want)
		}
	}
}

func TestEvaluateAllocatesNothing(t *testing.T) {
	tab := genBenchTable(1000)
	c := mustCompile(t, tab, CompileOptions{})
	p := benchPacket()
	p.Meta.Time = time.Unix(1700000000, 0)
	if got := c.Evaluate(p); got.Verdict != VerdictAccept || got.RuleNum != len(tab.Chains[0].Rules)-1 {
		t.Fatalf("bench packet: %+v", got)
	}
	if n := testing.AllocsPerRun(1000, func() { c.Evaluate(p) }); n != 0 {
		t.Fatalf("Evaluate allocates %.1f times per packet", n)
	}
}

// TestEvaluateConcurrent runs several workers over one compiled table with
// stateful matches; under -race it shows the per-packet path shares nothing
// unsynchronised, and the counters add up exactly.
func TestEvaluateConcurrent(t *testing.T) {
	rules := []*Rule{
		{Matches: []Match{&RecentMatch{Name: "seen", Cmd: RecentSet}}},
		{Matches: []Match{&HashlimitMatch{Name: "per-src", Rate: Rate{Count: 100, Unit: PerSecond}, Burst: 10, Mode: HashSrcIP, SrcMask: 32, DstMask: 32}}, Target: tgtJump("LIMITED")},
	}
	for i := 0; i < 40; i++ {
		rules = append(rules, mkTCPRule(uint16(1000+i), tgtAccept()))
	}
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop, rules...),
		mkUser("LIMITED", &Rule{Matches: []Match{&LimitMatch{Rate: Rate{Count: 1000, Unit: PerSecond}, Burst: 50}}, Target: tgtAccept()}))
	c := mustCompile(t, tab, CompileOptions{})
	const workers, per = 4, 5000
	done := make(chan int)
	for w := 0; w < workers; w++ {
		go func(w int) {
			p := mkPkt("198.18.0.1", "198.18.0.2", 1000)
			accepted := 0
			for i := 0; i < per; i++ {
				p.Src = netip.AddrFrom4([4]byte{198, 18, byte(w), byte(i % 50)})
				p.DstPort = uint16(1000 + i%45)
				p.Meta.Time = t0.Add(time.Duration(i) * time.Millisecond)
				if c.Evaluate(p).Verdict == VerdictAccept {
					accepted++
				}
			}
			done <- accepted
		}(w)
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	total := uint64(workers * per)
	first, _ := c.RuleCounters("INPUT", 1)
	if first.Packets != total || first.Bytes != total*60 {
		t.Fatalf("first rule counted %+v, want %d packets", first, total)
	}
	var sum uint64
	s := c.Snapshot()
	for _, ch := range s.Chains {
		if ch.Builtin {
			sum += ch.Counters.Packets
		}
		for _, r := range ch.Rules {
			if r.Target.Kind == TargetAccept {
				sum += r.Counters.Packets
			}
		}
	}
	if sum != total {
		t.Fatalf("accepting rules and policy counted %d packets, want %d", sum, total)
	}
	if n := c.State().RecentLen("seen"); n != DefaultRecentListSize {
		t.Fatalf("recent list holds %d addresses, want %d", n, DefaultRecentListSize)
	}
}
