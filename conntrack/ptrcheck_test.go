package conntrack

import (
	"math/rand/v2"
	"testing"
	"time"
)

// checkChains walks every chain of tab and fails unless each pointer
// agrees with the entry it points to: its hash tag, its "more" flag (set
// exactly when the entry has a successor) and ptrCheck (set exactly when
// the entry is ASSURED or has a helper, so that early drop never evicts
// such an entry unread); unless every shard's confirmed count is the
// entries its chains hold; and unless no entry is at once in a chain, in
// the free list or the shard's spare.
func checkChains(t *testing.T, tab *Table, step string) {
	t.Helper()
	total := 0
	for si := range tab.shards {
		s := &tab.shards[si]
		where := map[int32]string{}
		n := 0
		for b := range s.buckets {
			for c := s.buckets[b]; c != 0; {
				i := c.idx1() - 1
				e := s.at(i)
				if w, ok := where[i]; ok {
					t.Fatalf("%s: entry %d in bucket %d and %s", step, i, b, w)
				}
				where[i] = "a chain"
				n++
				next := s.lnk(i).next
				if c.tag() != e.tag || int(e.bucket) != b {
					t.Fatalf("%s: pointer tag %#x bucket %d, entry tag %#x bucket %d", step, c.tag(), b, e.tag, e.bucket)
				}
				if c.more() != (next != 0) {
					t.Fatalf("%s: entry %d more=%v, successor %d", step, i, c.more(), next.idx1())
				}
				if want := e.status&(stAssured|stHelper) != 0; (c&ptrCheck != 0) != want {
					t.Fatalf("%s: entry %d (status %#x) ptrCheck=%v, want %v", step, i, e.status, c&ptrCheck != 0, want)
				}
				c = next
			}
		}
		for f := s.free; f != 0; f = s.lnk(f - 1).next.idx1() {
			if w, ok := where[f-1]; ok {
				t.Fatalf("%s: free entry %d also in %s", step, f-1, w)
			}
			where[f-1] = "the free list"
		}
		if s.spare != 0 {
			if w, ok := where[s.spare-1]; ok {
				t.Fatalf("%s: spare entry %d also in %s", step, s.spare-1, w)
			}
		}
		if n != s.n {
			t.Fatalf("%s: shard %d counts %d entries, its chains hold %d", step, si, s.n, n)
		}
		total += n
	}
	if c := tab.count.Load(); c != int64(total) {
		t.Fatalf("%s: table count %d, chains hold %d", step, c, total)
	}
}

// TestChainPointers drives a small full table with a seeded mix of
// handshakes (which become ASSURED after confirmation), FTP control SYNs
// (a helper), closes and resets (entries leave mid-chain), unanswered
// SYNs (early drop, mostly of lone entries unread) and jumps in time
// (expired entries removed on the way), and checks the chains after every
// step.
func TestChainPointers(t *testing.T) {
	for _, tc := range []struct {
		name        string
		max, shards int
		seed        uint64
	}{
		{"one shard", 32, 1, 1},
		{"four shards", 64, 4, 2},
		{"long chains", 200, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(Config{Max: tc.max, Shards: tc.shards, HashSeed: tc.seed, FTPHelper: true})
			rng := rand.New(rand.NewPCG(tc.seed, 99))
			var at time.Duration
			var open []*tconn
			port := uint16(10000)
			for step := 0; step < 4000; step++ {
				at += time.Duration(rng.IntN(200)) * time.Millisecond
				name := ""
				switch op := rng.IntN(10); {
				case op < 3: // a handshake: ASSURED on its third packet
					c := newTConn(t, tab)
					port++
					c.port[0], c.at = port, at
					if rng.IntN(4) == 0 {
						c.port[1] = 21
					}
					c.send(0, fS, 0)
					c.send(1, fSA, 0)
					c.send(0, fA, 0)
					open = append(open, c)
					name = "handshake"
				case op < 4 && len(open) > 0: // reset or close a flow
					k := rng.IntN(len(open))
					c := open[k]
					c.at = max(c.at, at)
					if rng.IntN(2) == 0 {
						c.send(0, fR, 0)
					} else {
						c.send(0, fFA, 0)
						c.send(1, fFA, 0)
						c.send(0, fA, 0)
					}
					open = append(open[:k], open[k+1:]...)
					name = "close"
				case op < 5: // an FTP control SYN: a helper, not assured
					port++
					p := seg{src: "198.18.1.7", dst: "198.18.2.2", sport: port, dport: 21, flags: fS, seq: 1, win: 64240, at: at}.packet()
					track(tab, p)
					name = "ftp syn"
				default: // an unanswered SYN from a new source
					p := synFrom(step, at)
					track(tab, p)
					name = "syn"
				}
				checkChains(t, tab, name)
			}
			if st := tab.Stats(); st.EarlyDrop == 0 {
				t.Fatalf("no early drop: %+v", st)
			}
		})
	}
}
