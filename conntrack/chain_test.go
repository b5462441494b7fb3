package conntrack

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// checkChains verifies the bucket chains: every pointer's tag is its entry's
// tag and its "more" flag says whether the entry has a successor; every
// entry sits in its own bucket and is confirmed; the chains hold exactly
// the shards' confirmed entries.
func (t *Table) checkChains() error {
	for si := range t.shards {
		s := &t.shards[si]
		n := 0
		for b, head := range s.buckets {
			for c := head; c != 0; {
				e := s.at(c.idx1() - 1)
				next := s.lnk(c.idx1() - 1).next
				switch {
				case c.tag() != e.tag:
					return fmt.Errorf("shard %d bucket %d: pointer tag %x, entry tag %x", si, b, c.tag(), e.tag)
				case c.more() != (next != 0):
					return fmt.Errorf("shard %d bucket %d: pointer says more=%v, successor %d", si, b, c.more(), next.idx1())
				case e.bucket != uint32(b):
					return fmt.Errorf("shard %d: entry of bucket %d in chain %d", si, e.bucket, b)
				case e.status&stConfirmed == 0:
					return fmt.Errorf("shard %d bucket %d: unconfirmed entry in a chain", si, b)
				}
				n++
				if n > s.n {
					return fmt.Errorf("shard %d: chains longer than its %d entries (a loop?)", si, s.n)
				}
				c = next
			}
		}
		if n != s.n {
			return fmt.Errorf("shard %d: %d entries in chains, %d counted", si, n, s.n)
		}
	}
	return nil
}

// TestChainsUnderChurn runs flows into small tables (few buckets, so long
// chains) through every way an entry leaves a chain: lazy expiry on lookup,
// early drop when full, the sweep, and RST kills. After every step the
// chains must be consistent and every live flow still found.
func TestChainsUnderChurn(t *testing.T) {
	for _, tc := range []struct {
		max, shards int
	}{{16, 1}, {64, 2}, {512, 4}} {
		t.Run(fmt.Sprintf("max=%d/shards=%d", tc.max, tc.shards), func(t *testing.T) {
			tab := New(Config{Max: tc.max, Shards: tc.shards, HashSeed: 3})
			r := rand.New(rand.NewPCG(7, uint64(tc.max)))
			var conns []*tconn
			at := time.Duration(0)
			for step := 0; step < 4000; step++ {
				at += time.Duration(r.IntN(3000)) * time.Millisecond
				switch op := r.IntN(10); {
				case op < 4:
					// An unanswered SYN: a new, non-assured flow.
					i := r.IntN(4 * tc.max)
					track(tab, synFrom(i, at))
				case op < 6:
					// A full handshake: an assured flow kept while used.
					c := newTConn(t, tab)
					c.at = at
					c.port[0] = uint16(10000 + r.IntN(20000))
					c.send(0, fS, 0)
					c.send(1, fSA, 0)
					c.send(0, fA, 0)
					c.send(1, fA, 10)
					conns = append(conns, c)
				case op < 7 && len(conns) > 0:
					// RST: the entry is killed.
					k := r.IntN(len(conns))
					c := conns[k]
					if c.at < at {
						c.at = at
					}
					c.send(0, fR|fA, 0)
					conns = append(conns[:k], conns[k+1:]...)
				case op < 8:
					tab.Sweep(time.Unix(0, 0).Add(at), 1+r.IntN(64))
				default:
					// Traffic on a live flow (a lookup hit, or lazy expiry).
					if len(conns) > 0 {
						c := conns[r.IntN(len(conns))]
						if c.at < at {
							c.at = at
						}
						c.send(0, fA, 1)
					}
				}
				if err := tab.checkChains(); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
			}
			st := tab.Stats()
			if st.EarlyDrop == 0 || st.Expired == 0 {
				t.Errorf("churn did not reach early drop and expiry: %+v", st)
			}
			if n := tab.Len(); n == 0 {
				t.Errorf("table empty after the churn")
			}
		})
	}
}
