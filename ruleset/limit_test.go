package ruleset

import (
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/filterd/filterd/packet"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// at returns a packet from src at t0+d.
func at(src string, d time.Duration) *packet.Packet {
	p := mkPkt(src, "198.18.0.2", 22)
	p.Meta.Time = t0.Add(d)
	return p
}

type step struct {
	src  string
	at   time.Duration
	want Verdict
}

func runSteps(t *testing.T, c *Compiled, steps []step) {
	t.Helper()
	for i, s := range steps {
		if got := c.Evaluate(at(s.src, s.at)).Verdict; got != s.want {
			t.Fatalf("step %d (%s at +%v): %v, want %v", i, s.src, s.at, got, s.want)
		}
	}
}

func TestLimit(t *testing.T) {
	const A, D = VerdictAccept, VerdictDrop
	ms := time.Millisecond
	tests := []struct {
		name  string
		m     *LimitMatch
		steps []step
	}{
		{"5/second burst 5", &LimitMatch{Rate: Rate{Count: 5, Unit: PerSecond}, Burst: 5}, []step{
			{"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, {"198.18.0.1", 0, A},
			{"198.18.0.1", 0, D}, // burst used up
			{"198.18.0.1", 100 * ms, D},
			{"198.18.0.1", 200 * ms, A}, // one token per 200 ms
			{"198.18.0.1", 200 * ms, D},
			{"198.18.0.1", 10 * time.Second, A}, // refilled, but only up to the burst
			{"198.18.0.9", 10 * time.Second, A}, // one bucket for every source
			{"198.18.0.1", 10 * time.Second, A}, {"198.18.0.1", 10 * time.Second, A}, {"198.18.0.1", 10 * time.Second, A},
			{"198.18.0.1", 10 * time.Second, D},
		}},
		{"defaults 3/hour burst 5", &LimitMatch{}, []step{
			{"198.18.0.1", 0, A}, {"198.18.0.1", 1, A}, {"198.18.0.1", 2, A}, {"198.18.0.1", 3, A}, {"198.18.0.1", 4, A},
			{"198.18.0.1", 19 * time.Minute, D},
			{"198.18.0.1", 20 * time.Minute, A},
			{"198.18.0.1", 21 * time.Minute, D},
		}},
		{"a packet from the past does not refill the bucket", &LimitMatch{Rate: Rate{Count: 1, Unit: PerSecond}, Burst: 2}, []step{
			{"198.18.0.1", 10 * time.Second, A},
			{"198.18.0.1", 9 * time.Second, A},  // out of order: counts as 10 s, takes the second token
			{"198.18.0.1", 10 * time.Second, D}, // no time has passed since
			{"198.18.0.1", 11 * time.Second, A},
		}},
		{"! --limit matches over the rate", &LimitMatch{Rate: Rate{Count: 1, Unit: PerMinute}, Burst: 1, Invert: true}, []step{
			{"198.18.0.1", 0, D}, {"198.18.0.1", time.Second, A}, {"198.18.0.1", time.Minute, D},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Matches: []Match{tt.m}, Target: tgtAccept()}))
			runSteps(t, mustCompile(t, tab, CompileOptions{}), tt.steps)
		})
	}
}

// TestLimitRestartsOnReload: xt_limit's state belongs to the rule, so a
// reloaded rule starts with a full bucket.
func TestLimitRestartsOnReload(t *testing.T) {
	tab := mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Matches: []Match{&LimitMatch{Rate: Rate{Count: 1, Unit: PerHour}, Burst: 1}}, Target: tgtAccept()}))
	st := NewState()
	c := mustCompile(t, tab, CompileOptions{State: st})
	runSteps(t, c, []step{{"198.18.0.1", 0, VerdictAccept}, {"198.18.0.1", time.Second, VerdictDrop}})
	c = mustCompile(t, tab, CompileOptions{State: st})
	runSteps(t, c, []step{{"198.18.0.1", 2 * time.Second, VerdictAccept}})
}

// TestLimitBeforePortKey: a stateful match placed before the port test keeps
// its side effects for every packet that reaches it, indexed chain or not.
func TestLimitBeforePortKey(t *testing.T) {
	var rules []*Rule
	for i := 0; i < 40; i++ {
		rules = append(rules, mkTCPRule(uint16(2000+i), tgtAccept()))
	}
	// -p tcp -m limit --limit 1/hour --limit-burst 2 -m tcp --dport 22 -j ACCEPT:
	// the limit runs for every TCP packet, then the port is tested.
	rules = append(rules, &Rule{Proto: ProtoMatch{Num: packet.ProtoTCP},
		Matches: []Match{&LimitMatch{Rate: Rate{Count: 1, Unit: PerHour}, Burst: 2}, mkTCPDport(22)}, Target: tgtAccept()})
	c := mustCompile(t, mkTable(mkBuiltin("INPUT", PolicyDrop, rules...)), CompileOptions{})
	p80 := at("198.18.0.1", 0)
	p80.DstPort = 80
	if got := c.Evaluate(p80).Verdict; got != VerdictDrop {
		t.Fatalf("port 80: %v", got)
	}
	// The port-80 packet used one token: one left for port 22.
	runSteps(t, c, []step{{"198.18.0.1", time.Second, VerdictAccept}, {"198.18.0.1", 2 * time.Second, VerdictDrop}})
}

// TestLimitSkipsOnlyFailures: the limit matcher's shortcut (refusing without
// asking the limiter while the bucket is known to be empty) gives exactly
// the answers of asking golang.org/x/time/rate for every packet, over random
// packet times (bursts, gaps, equal and out-of-order timestamps) for several
// rates and bursts.
func TestLimitSkipsOnlyFailures(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		rate  Rate
		burst uint32
	}{
		{Rate{Count: 5, Unit: PerSecond}, 5},
		{Rate{Count: 3, Unit: PerHour}, 5},
		{Rate{Count: 1000, Unit: PerSecond}, 1},
		{Rate{Count: 7, Unit: PerMinute}, 20},
	} {
		for _, inv := range []bool{false, true} {
			m := newLimitMatcher(&LimitMatch{Rate: tc.rate, Burst: tc.burst, Invert: inv})
			ref := rate.NewLimiter(rate.Limit(tc.rate.PerSecond()), int(tc.burst))
			var last time.Time
			now := t0
			allowed, skipped := 0, 0
			for i := 0; i < 200000; i++ {
				switch k := r.IntN(100); {
				case k < 80:
					now = now.Add(time.Duration(r.IntN(2000)) * time.Microsecond)
				case k < 95:
					now = now.Add(time.Duration(r.IntN(3)) * time.Second)
				case k < 98:
					// out of order: the matcher and the reference both see
					// the latest time instead
					now = now.Add(-time.Duration(r.IntN(1000)) * time.Microsecond)
				}
				p := at("198.18.1.2", 0)
				p.Meta.Time = now
				before := m.emptyUntil.Load()
				got := m.match(p)
				if now.UnixNano() < before {
					skipped++
				}
				rt := now
				if rt.Before(last) {
					rt = last
				}
				last = rt
				want := ref.AllowN(rt, 1) != inv
				if got != want {
					t.Fatalf("%v burst %d invert %v, packet %d at %v: %v, want %v", tc.rate, tc.burst, inv, i, now, got, want)
				}
				if want != inv {
					allowed++
				}
			}
			if allowed == 0 || skipped == 0 {
				t.Errorf("%v burst %d: %d allowed, %d refused without the limiter: not exercised", tc.rate, tc.burst, allowed, skipped)
			}
		}
	}
}
