package ruleset

import (
	"fmt"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// TestRecentSSHBruteForce is the classic pair:
//
//	-A INPUT -p tcp --dport 22 -m recent --name SSH --rcheck --seconds 60 --hitcount 3 -j DROP
//	-A INPUT -p tcp --dport 22 -m recent --name SSH --set
//	-A INPUT -p tcp --dport 22 -j ACCEPT
func TestRecentSSHBruteForce(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop,
		&Rule{Proto: ProtoMatch{Num: packet.ProtoTCP}, Matches: []Match{mkTCPDport(22), &RecentMatch{Name: "SSH", Cmd: RecentCheck, Seconds: 60, Hitcount: 3}}, Target: tgtDrop()},
		&Rule{Proto: ProtoMatch{Num: packet.ProtoTCP}, Matches: []Match{mkTCPDport(22), &RecentMatch{Name: "SSH", Cmd: RecentSet}}},
		mkTCPRule(22, tgtAccept()),
	))
	const A, D = VerdictAccept, VerdictDrop
	c := mustCompile(t, tab, CompileOptions{})
	runSteps(t, c, []step{
		{"198.18.0.1", 0, A}, {"198.18.0.1", time.Second, A}, {"198.18.0.1", 2 * time.Second, A},
		{"198.18.0.1", 3 * time.Second, D},                       // three hits in 60 s
		{"198.18.0.2", 3 * time.Second, A},                       // another source
		{"198.18.0.1", 61 * time.Second, A},                      // the stamp at 0 s is out of the window: 2 hits
		{"198.18.0.1", 62 * time.Second, A},                      // stamps 2 s, 61 s: 2 hits
		{"198.18.0.1", 62*time.Second + 500*time.Millisecond, A}, // 2.5 s is out: 61 s, 62 s
		{"198.18.0.1", 63 * time.Second, D},                      // 61 s, 62 s, 62.5 s
	})
}

func TestRecentCommands(t *testing.T) {
	const A, D = VerdictAccept, VerdictDrop
	udpSet := func() *Rule {
		return &Rule{Proto: ProtoMatch{Num: packet.ProtoUDP}, Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentSet}}, Target: tgtDrop()}
	}
	type pstep struct {
		src   string
		proto uint8
		want  Verdict
	}
	tcp, udp := packet.ProtoTCP, packet.ProtoUDP
	tests := []struct {
		name  string
		rules []*Rule
		steps []pstep
	}{
		{"rcheck", []*Rule{udpSet(), {Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentCheck}}, Target: tgtAccept()}},
			[]pstep{{"198.18.0.1", tcp, D}, {"198.18.0.1", udp, D}, {"198.18.0.1", tcp, A}, {"198.18.0.2", tcp, D}}},
		{"! rcheck", []*Rule{udpSet(), {Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentCheck, Invert: true}}, Target: tgtAccept()}},
			[]pstep{{"198.18.0.1", tcp, A}, {"198.18.0.1", udp, D}, {"198.18.0.1", tcp, D}}},
		{"! set always fails", []*Rule{{Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentSet, Invert: true}}, Target: tgtAccept()},
			{Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentCheck}}, Target: tgtDrop()}},
			[]pstep{{"198.18.0.1", tcp, D}}},
		{"rdest", []*Rule{{Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentCheck, Dest: true}}, Target: tgtDrop()},
			{Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentSet}}, Target: tgtAccept()}},
			// .2 (the destination of every packet) is set as a source, then
			// matched as the destination of .3's packet.
			[]pstep{{"198.18.0.2", tcp, A}, {"198.18.0.3", tcp, D}}},
		{"mask", []*Rule{{Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentCheck, Mask: mkAddr("255.255.255.0")}}, Target: tgtDrop()},
			{Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentSet, Mask: mkAddr("255.255.255.0")}}, Target: tgtAccept()}},
			[]pstep{{"198.18.0.1", tcp, A}, {"198.18.0.77", tcp, D}, {"198.18.1.1", tcp, A}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCompile(t, mkTable(mkBuiltin("INPUT", PolicyDrop, tt.rules...)), CompileOptions{})
			for i, s := range tt.steps {
				p := at(s.src, time.Duration(i)*time.Second)
				p.Proto = s.proto
				if got := c.Evaluate(p).Verdict; got != s.want {
					t.Fatalf("step %d (%s proto %d): %v, want %v", i, s.src, s.proto, got, s.want)
				}
			}
		})
	}
}

// TestRecentUpdateAndRemove drives --update and --remove with packets of
// different protocols from one address.
func TestRecentUpdateAndRemove(t *testing.T) {
	udp := func(d time.Duration) *packet.Packet { p := at("198.18.0.1", d); p.Proto = packet.ProtoUDP; return p }
	icmp := func(d time.Duration) *packet.Packet { p := at("198.18.0.1", d); p.Proto = packet.ProtoICMP; return p }
	tcp := func(d time.Duration) *packet.Packet { return at("198.18.0.1", d) }
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop,
		&Rule{Proto: ProtoMatch{Num: packet.ProtoUDP}, Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentSet}}, Target: tgtDrop()},
		&Rule{Proto: ProtoMatch{Num: packet.ProtoICMP}, Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentRemove}}, Target: tgtDrop()},
		&Rule{Matches: []Match{&RecentMatch{Name: "L", Cmd: RecentUpdate, Seconds: 10}}, Target: tgtAccept()},
	))
	c := mustCompile(t, tab, CompileOptions{})
	steps := []struct {
		p    *packet.Packet
		want Verdict
	}{
		{tcp(0), VerdictDrop},                  // not in the list
		{udp(time.Second), VerdictDrop},        // set at 1 s
		{tcp(5 * time.Second), VerdictAccept},  // seen 4 s ago: match, stamp 5 s
		{tcp(14 * time.Second), VerdictAccept}, // 9 s after the update at 5 s
		{tcp(25 * time.Second), VerdictDrop},   // 11 s after 14 s: no match, no update
		{tcp(26 * time.Second), VerdictDrop},   // still nothing within 10 s
		{udp(30 * time.Second), VerdictDrop},   // set again
		{icmp(31 * time.Second), VerdictDrop},  // removed
		{tcp(32 * time.Second), VerdictDrop},   // gone
		{udp(33 * time.Second), VerdictDrop},   // set
		{tcp(34 * time.Second), VerdictAccept}, // back
	}
	for i, s := range steps {
		if got := c.Evaluate(s.p).Verdict; got != s.want {
			t.Fatalf("step %d (proto %d at %v): %v, want %v", i, s.p.Proto, s.p.Meta.Time.Sub(t0), got, s.want)
		}
	}
	if c.State().RecentLen("L") != 1 {
		t.Fatalf("list L holds %d addresses, want 1", c.State().RecentLen("L"))
	}
}

// TestRecentReap: --reap drops the least recently seen address once its
// newest stamp is older than --seconds.
func TestRecentReap(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop,
		&Rule{Proto: ProtoMatch{Num: packet.ProtoUDP}, Matches: []Match{&RecentMatch{Name: "R", Cmd: RecentSet}}, Target: tgtDrop()},
		&Rule{Matches: []Match{&RecentMatch{Name: "R", Cmd: RecentCheck, Seconds: 10, Reap: true}}, Target: tgtAccept()},
	))
	c := mustCompile(t, tab, CompileOptions{})
	for _, s := range []string{"198.18.0.1", "198.18.0.2"} {
		p := at(s, 0)
		p.Proto = packet.ProtoUDP
		c.Evaluate(p)
	}
	if n := c.State().RecentLen("R"); n != 2 {
		t.Fatalf("list holds %d", n)
	}
	if got := c.Evaluate(at("198.18.0.2", 20*time.Second)).Verdict; got != VerdictDrop {
		t.Fatalf("stale address matched: %v", got)
	}
	if n := c.State().RecentLen("R"); n != 1 {
		t.Fatalf("after one reap the list holds %d, want 1", n)
	}
}

// TestRecentBounded: a list keeps at most ip_list_tot addresses, dropping
// the least recently seen; it survives a reload.
func TestRecentBounded(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Matches: []Match{&RecentMatch{Name: "B", Cmd: RecentSet}}, Target: tgtAccept()}))
	st := NewState()
	c := mustCompile(t, tab, CompileOptions{State: st})
	for i := 0; i < 1000; i++ {
		c.Evaluate(at(fmt.Sprintf("198.18.%d.%d", i/256, i%256), time.Duration(i)*time.Millisecond))
	}
	if n := st.RecentLen("B"); n != DefaultRecentListSize {
		t.Fatalf("list holds %d addresses, want %d", n, DefaultRecentListSize)
	}
	l := st.recent["B"]
	if !l.Contains(mkAddr("198.18.3.231")) || l.Contains(mkAddr("198.18.0.1")) {
		t.Fatal("the list did not keep the most recent addresses")
	}
	c2 := mustCompile(t, mkTable(mkBuiltin("INPUT", PolicyDrop,
		&Rule{Matches: []Match{&RecentMatch{Name: "B", Cmd: RecentCheck}}, Target: tgtAccept()})), CompileOptions{State: st})
	if got := c2.Evaluate(at("198.18.3.231", 2*time.Second)).Verdict; got != VerdictAccept {
		t.Fatalf("list lost across reload: %v", got)
	}
}

// TestRecentLargeHitcount: a --hitcount above the default 20 remembered
// packets sizes the list to fit.
func TestRecentLargeHitcount(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyAccept,
		&Rule{Matches: []Match{&RecentMatch{Name: "H", Cmd: RecentCheck, Seconds: 3600, Hitcount: 42}}, Target: tgtDrop()},
		&Rule{Matches: []Match{&RecentMatch{Name: "H", Cmd: RecentSet}}},
	))
	c := mustCompile(t, tab, CompileOptions{})
	for i := 0; i < 42; i++ {
		if got := c.Evaluate(at("198.18.0.1", time.Duration(i)*time.Second)).Verdict; got != VerdictAccept {
			t.Fatalf("packet %d: %v", i+1, got)
		}
	}
	if got := c.Evaluate(at("198.18.0.1", time.Minute)).Verdict; got != VerdictDrop {
		t.Fatalf("43rd packet: %v, want DROP", got)
	}
}

func TestRecentCompileErrors(t *testing.T) {
	for _, m := range []*RecentMatch{
		{Cmd: RecentCheck, Hitcount: 256},
		{Cmd: RecentCheck, Reap: true},
		{Cmd: RecentSet, Seconds: 5},
	} {
		if _, err := Compile(mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Pos: Pos{Line: 3}, Matches: []Match{m}})), CompileOptions{}); err == nil {
			t.Errorf("%+v compiled", m)
		}
	}
}
