package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/filterd/filterd/conntrack"
)

// indexed counts the index's occupied slots.
func (t *srcTable) indexed() int {
	n := 0
	for _, j := range t.slots {
		if j != 0 {
			n++
		}
	}
	return n
}

func srcAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
}

// srcAddr6 is a distinct address in the tests' ULA prefix for each i < 2^24.
func srcAddr6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0, 1, 0x98, 0, 0x18, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
}

// TestReplaySourcesIndex: every source is found again with its own
// counters, IPv4 and IPv6 (also an IPv4-mapped IPv6 address, a different
// source from the IPv4 one), across index growth.
func TestReplaySourcesIndex(t *testing.T) {
	r := &srcTable{max: 1 << 16, seed: 99}
	var addrs []netip.Addr
	for i := 0; i < 5000; i++ {
		a4 := srcAddr(i)
		addrs = append(addrs, a4, netip.AddrFrom16(a4.As16()), srcAddr6(i))
	}
	for round := 1; round <= 3; round++ {
		for i, a := range addrs {
			sc := r.get(a)
			if sc.addr() != a || sc.Offered != uint64(round-1) {
				t.Fatalf("round %d, source %d (%v): %+v", round, i, a, *sc)
			}
			sc.Offered++
		}
	}
	if len(r.srcs) != len(addrs) || r.indexed() != len(addrs) || len(r.slots) < 2*len(addrs) {
		t.Errorf("%d sources, %d indexed in %d slots, want %d", len(r.srcs), r.indexed(), len(r.slots), len(addrs))
	}
}

// TestReplaySourcesBounded: per-source counters are exact up to MaxSources;
// past it the sources with the fewest drops are forgotten, the heaviest
// droppers keep their exact counts, the loss is reported, and counting
// allocates nothing once the table has grown.
func TestReplaySourcesBounded(t *testing.T) {
	r := &srcTable{max: 64, seed: 12345}
	// 64 sources: source i has i drops. Exact, nothing pruned.
	for i := 0; i < 64; i++ {
		for j := 0; j < i; j++ {
			r.get(srcAddr(i)).Dropped++
		}
		r.get(srcAddr(i)).Offered++
	}
	if len(r.srcs) != 64 || r.pruned != 0 {
		t.Fatalf("%d sources, %d pruned", len(r.srcs), r.pruned)
	}
	// A new source finds the table full: sources 0..32 (at or below the
	// median of 32 drops) go, 33..63 stay with their counts.
	r.get(srcAddr(1000)).Dropped++
	if r.pruned != 33 || len(r.srcs) != 32 || r.indexed() != 32 {
		t.Fatalf("after pruning: %d sources (%d indexed), %d pruned", len(r.srcs), r.indexed(), r.pruned)
	}
	for i := 33; i < 64; i++ {
		sc := r.get(srcAddr(i))
		if sc.Dropped != uint64(i) || sc.Offered != 1 || sc.addr() != srcAddr(i) {
			t.Errorf("source %d: %+v", i, *sc)
		}
	}
	if sc := r.get(srcAddr(1000)); sc.Dropped != 1 {
		t.Errorf("new source: %+v", *sc)
	}
	if len(r.srcs) != 32 {
		t.Errorf("looking sources up added entries: %d", len(r.srcs))
	}
	// A flood of new sources stays within the bound, without allocating.
	n := 2000
	allocs := testing.AllocsPerRun(5, func() {
		for i := 0; i < 1000; i++ {
			a := srcAddr(n)
			if n%3 == 0 {
				a = srcAddr6(n)
			}
			r.get(a).Offered++
			n++
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 1000 new sources", allocs)
	}
	if len(r.srcs) > 64 || r.indexed() != len(r.srcs) {
		t.Errorf("%d sources, %d indexed, bound 64", len(r.srcs), r.indexed())
	}
	for i := 33; i < 64; i++ {
		if sc := r.get(srcAddr(i)); sc.Dropped != uint64(i) {
			t.Errorf("heavy dropper %d forgotten: %+v", i, *sc)
		}
	}
}

// TestReplaySecondsBounded: a capture whose timestamps span more than a day
// (here 400 days) keeps the per-second picture to its first day and counts
// the later packets apart, instead of growing a slice per second.
func TestReplaySecondsBounded(t *testing.T) {
	e, err := New(Config{Conntrack: conntrack.New(conntrack.Config{HashSeed: 1}), Route: true})
	if err != nil {
		t.Fatal(err)
	}
	r := NewReplayer(e, ReplayOptions{})
	l3 := udp4(t, []byte("x"))
	t0 := time.Unix(1700000000, 0)
	for i, d := range []time.Duration{0, time.Second, 23 * time.Hour, 400 * 24 * time.Hour, 401 * 24 * time.Hour} {
		f := Frame{Num: i + 1, Time: t0.Add(d), Data: l3, L3: l3}
		if err := r.Frame(&f); err != nil {
			t.Fatal(err)
		}
	}
	s := r.Summary("", "")
	if s.Packets != 5 || len(s.Seconds) != 23*3600+1 || s.SecondsBeyond != 2 {
		t.Fatalf("%d packets, %d seconds, %d beyond; want 5, %d, 2", s.Packets, len(s.Seconds), s.SecondsBeyond, 23*3600+1)
	}
	if n := s.Seconds[0].Offered + s.Seconds[1].Offered + s.Seconds[23*3600].Offered; n != 3 {
		t.Errorf("%d packets in the per-second picture, want 3", n)
	}
}

// TestReplaySourcesPresized: a table made by newSrcTable takes sources up
// to its bound without allocating (no growth of the counters, no rebuilt
// index) and finds each again; one past a bound above the presize grows it.
func TestReplaySourcesPresized(t *testing.T) {
	for _, tc := range []struct{ max, sources int }{{srcPresize, srcPresize}, {1000, 1000}, {2 * srcPresize, srcPresize}} {
		r := newSrcTable(tc.max, 7)
		addrs := make([]netip.Addr, tc.sources)
		for i := range addrs {
			addrs[i] = srcAddr6(i)
		}
		allocs := testing.AllocsPerRun(1, func() {
			for _, a := range addrs {
				r.get(a).Offered++
			}
		})
		// AllocsPerRun runs the function twice (a warm-up first).
		if allocs != 0 {
			t.Errorf("max %d: %.0f allocations for %d sources", tc.max, allocs, tc.sources)
		}
		for i, a := range addrs {
			if sc := r.get(a); sc.Offered != 2 {
				t.Fatalf("max %d: source %d (%v) offered %d, want 2", tc.max, i, a, sc.Offered)
			}
		}
		if r.pruned != 0 || len(r.srcs) != tc.sources {
			t.Errorf("max %d: %d sources kept, %d pruned; want %d, 0", tc.max, len(r.srcs), r.pruned, tc.sources)
		}
	}
	r := newSrcTable(2*srcPresize, 7)
	for i := 0; i <= srcPresize; i++ {
		r.get(srcAddr6(i)).Offered++
	}
	if len(r.srcs) != srcPresize+1 || cap(r.srcs) <= srcPresize || len(r.slots) < 2*(srcPresize+1) {
		t.Errorf("past the presize: %d sources in room for %d, %d slots", len(r.srcs), cap(r.srcs), len(r.slots))
	}
}
