package engine

import (
	"net/netip"
	"testing"
)

func srcAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
}

// TestReplaySourcesBounded: per-source counters are exact up to MaxSources;
// past it the sources with the fewest drops are forgotten, the heaviest
// droppers keep their exact counts, the loss is reported, and counting
// allocates nothing once the table has grown.
func TestReplaySourcesBounded(t *testing.T) {
	r := &Replayer{opts: ReplayOptions{MaxSources: 64}, sources: make(map[netip.Addr]int32)}
	// 64 sources: source i has i drops. Exact, nothing pruned.
	for i := 0; i < 64; i++ {
		for j := 0; j < i; j++ {
			r.source(srcAddr(i)).Dropped++
		}
		r.source(srcAddr(i)).Offered++
	}
	if len(r.srcs) != 64 || r.pruned != 0 {
		t.Fatalf("%d sources, %d pruned", len(r.srcs), r.pruned)
	}
	// A new source finds the table full: sources 0..32 (at or below the
	// median of 32 drops) go, 33..63 stay with their counts.
	r.source(srcAddr(1000)).Dropped++
	if r.pruned != 33 || len(r.srcs) != 32 || len(r.sources) != 32 {
		t.Fatalf("after pruning: %d sources (%d in the map), %d pruned", len(r.srcs), len(r.sources), r.pruned)
	}
	for i := 33; i < 64; i++ {
		sc := r.source(srcAddr(i))
		if sc.Dropped != uint64(i) || sc.Offered != 1 || sc.Addr != srcAddr(i) {
			t.Errorf("source %d: %+v", i, *sc)
		}
	}
	if sc := r.source(srcAddr(1000)); sc.Dropped != 1 {
		t.Errorf("new source: %+v", *sc)
	}
	if len(r.srcs) != 32 {
		t.Errorf("looking sources up added entries: %d", len(r.srcs))
	}
	// A flood of new sources stays within the bound, without allocating.
	n := 2000
	allocs := testing.AllocsPerRun(5, func() {
		for i := 0; i < 1000; i++ {
			r.source(srcAddr(n)).Offered++
			n++
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 1000 new sources", allocs)
	}
	if len(r.srcs) > 64 || len(r.sources) != len(r.srcs) {
		t.Errorf("%d sources, %d in the map, bound 64", len(r.srcs), len(r.sources))
	}
	for i := 33; i < 64; i++ {
		if sc := r.source(srcAddr(i)); sc.Dropped != uint64(i) {
			t.Errorf("heavy dropper %d forgotten: %+v", i, *sc)
		}
	}
}
