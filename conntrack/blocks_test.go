package conntrack

import (
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// TestPreallocate: with Preallocate a table filling up to its share of Max
// allocates nothing; without it, it allocates its entry blocks as it fills.
// Prefault (one madvise per block) changes neither: it allocates nothing
// and every flow is found again, in the state it was left in.
func TestPreallocate(t *testing.T) {
	for _, tc := range []struct{ pre, prefault bool }{{true, false}, {false, false}, {true, true}, {false, true}} {
		pre := tc.pre
		tab := New(Config{Max: 8192, Shards: 4, HashSeed: 5, Preallocate: pre, Prefault: tc.prefault})
		pkts := make([]*packet.Packet, 4000)
		for i := range pkts {
			pkts[i] = synFrom(i, time.Second)
		}
		// One run of the whole arrival (AllocsPerRun counts with
		// GOMAXPROCS=1, so nothing else allocates meanwhile; its warm-up
		// call is skipped).
		calls := 0
		allocs := testing.AllocsPerRun(1, func() {
			if calls++; calls == 1 {
				return
			}
			for _, p := range pkts {
				tab.Track(p).Confirm(p)
			}
		})
		if pre && allocs > 0 {
			t.Errorf("preallocated: %.0f allocations while 4000 flows arrived", allocs)
		}
		if !pre && allocs == 0 {
			t.Errorf("not preallocated: no allocation while 4000 flows arrived")
		}
		if tab.Len() < 3900 {
			t.Errorf("only %d flows in the table", tab.Len())
		}
		// Every SYN again, a retransmission: each finds its flow (NEW, as
		// the kernel calls a flow that has not seen a reply).
		found := 0
		for _, p := range pkts {
			r := tab.Track(p)
			if !r.Tentative() && p.CTState == packet.CTNew {
				found++
			}
			r.Confirm(p)
		}
		if found != tab.Len() {
			t.Errorf("pre %v prefault %v: %d of %d flows found again", tc.pre, tc.prefault, found, tab.Len())
		}
	}
}
