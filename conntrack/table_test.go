package conntrack

// Reference: Linux net/netfilter/nf_conntrack_core.c: init_conntrack,
// __nf_conntrack_confirm (entries enter the hash only when the packet is
// accepted), early_drop/early_drop_list (NF_CT_EVICTION_RANGE buckets,
// non-ASSURED entries only), nf_ct_is_expired/nf_ct_gc_expired (lazy expiry).

import (
	"net/netip"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

func synFrom(i int, at time.Duration) *packet.Packet {
	src := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
	return seg{src: src.String(), dst: "198.18.2.2", sport: uint16(1024 + i%50000), dport: 8080, flags: fS, seq: uint32(i) * 7919, win: 64240, at: at}.packet()
}

func TestConfirmAndDrop(t *testing.T) {
	tab := New(Config{HashSeed: 1})
	syn := synFrom(1, 0)
	r := tab.Track(syn)
	if syn.CTState != packet.CTNew || !r.Tentative() {
		t.Fatalf("ct %s tentative %v", syn.CTState, r.Tentative())
	}
	if tab.Len() != 0 {
		t.Fatalf("tentative entry visible: %d", tab.Len())
	}
	// While tentative, a reply does not find the entry (not in the hash).
	r.Drop()
	if tab.Len() != 0 || tab.count.Load() != 0 {
		t.Fatalf("dropped SYN left a trace: len %d count %d", tab.Len(), tab.count.Load())
	}
	// Dropped again: still NEW (nothing remembered).
	syn = synFrom(1, time.Millisecond)
	r = tab.Track(syn)
	if syn.CTState != packet.CTNew {
		t.Fatalf("ct %s", syn.CTState)
	}
	r.Confirm(syn)
	if tab.Len() != 1 {
		t.Fatalf("len %d after confirm", tab.Len())
	}
	// Retransmitted SYN finds the confirmed entry: still NEW, no new entry.
	syn = synFrom(1, 2*time.Millisecond)
	r = tab.Track(syn)
	if syn.CTState != packet.CTNew || r.Tentative() {
		t.Fatalf("retransmit: ct %s tentative %v", syn.CTState, r.Tentative())
	}
	r.Drop() // dropping a packet of a confirmed entry changes nothing
	if tab.Len() != 1 {
		t.Fatalf("len %d", tab.Len())
	}
	// A zero Ref is harmless.
	Ref{}.Confirm(syn)
	Ref{}.Drop()
	st := tab.Stats()
	if st.New != 2 || st.Insert != 1 || st.Found != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConfirmRace(t *testing.T) {
	// Two workers see the first packet of the same flow before either
	// confirms: the second confirmation fails (insert_failed) and the table
	// keeps one entry.
	tab := New(Config{HashSeed: 1})
	p1, p2 := synFrom(3, 0), synFrom(3, 0)
	r1, r2 := tab.Track(p1), tab.Track(p2)
	r1.Confirm(p1)
	r2.Confirm(p2)
	if tab.Len() != 1 || tab.Stats().InsertFailed != 1 || tab.count.Load() != 1 {
		t.Fatalf("len %d stats %+v count %d", tab.Len(), tab.Stats(), tab.count.Load())
	}
}

func TestTableFullEarlyDrop(t *testing.T) {
	const max = 64
	tab := New(Config{Max: max, Shards: 1, HashSeed: 11})
	// Assured flows: full handshakes.
	var assured []*tconn
	for i := 0; i < max/2; i++ {
		c := newTConn(t, tab)
		c.port[0] = uint16(20000 + i)
		c.send(0, fS, 0)
		c.send(1, fSA, 0)
		c.send(0, fA, 0)
		c.send(1, fA, 0)
		assured = append(assured, c)
	}
	// Fill the rest and go on with unanswered SYNs (an accepted SYN flood).
	for i := 0; i < 10*max; i++ {
		p := synFrom(i, time.Second)
		if st := track(tab, p); st != packet.CTNew && st != packet.CTInvalid {
			t.Fatalf("syn %d: %s", i, st)
		}
		if n := tab.Len(); n > max {
			t.Fatalf("table grew past max: %d", n)
		}
	}
	st := tab.Stats()
	if st.EarlyDrop == 0 {
		t.Fatalf("no early drop: %+v", st)
	}
	for _, c := range assured {
		if c.state() != xES {
			t.Fatalf("assured flow evicted: %v", c.key())
		}
	}
	// Only assured entries: nothing can be evicted, a new flow is refused
	// and the kernel would drop the packet itself.
	tab2 := New(Config{Max: 4, Shards: 1, HashSeed: 11})
	for i := 0; i < 4; i++ {
		c := newTConn(t, tab2)
		c.port[0] = uint16(30000 + i)
		c.send(0, fS, 0)
		c.send(1, fSA, 0)
		c.send(0, fA, 0)
	}
	p := synFrom(1, time.Second)
	r := tab2.Track(p)
	if p.CTState != packet.CTInvalid || !r.MustDrop() {
		t.Fatalf("full table of assured flows: ct %s mustDrop %v", p.CTState, r.MustDrop())
	}
	if s := tab2.Stats(); s.Drop != 1 || s.Entries != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// TestSweepEvictsClosingWhenFull: after a refusal, the sweep evicts closing
// (TIME_WAIT) entries while the table is above 95% (gc_worker early_drop).
func TestSweepEvictsClosingWhenFull(t *testing.T) {
	const max = 100
	tab := New(Config{Max: max, Shards: 1, HashSeed: 14})
	for i := 0; i < max; i++ {
		c := newTConn(t, tab)
		c.port[0] = uint16(20000 + i)
		c.send(0, fS, 0)
		c.send(1, fSA, 0)
		c.send(0, fA, 0)
		if i%2 == 0 { // close half of them: TIME_WAIT, assured
			c.send(0, fFA, 0)
			c.send(1, fFA, 0)
			c.send(0, fA, 0)
		}
	}
	p := synFrom(1, time.Second)
	if r := tab.Track(p); !r.MustDrop() {
		t.Fatalf("table of assured entries accepted a new flow")
	}
	tab.Sweep(t0.Add(time.Second), 1<<20)
	if n := tab.Len(); n != max*95/100 {
		t.Fatalf("after sweep %d entries, want %d", n, max*95/100)
	}
	if c := tab.Counts(); c["tcp ESTABLISHED"] != max/2 {
		t.Fatalf("established entries evicted: %v", c)
	}
	p = synFrom(1, time.Second)
	if st := track(tab, p); st != packet.CTNew {
		t.Fatalf("new flow after sweep: %s", st)
	}
	// The flag is cleared after the pass: no more eviction at 96%.
	tab.Sweep(t0.Add(time.Second), 1<<20)
	if n := tab.Len(); n != max*95/100+1 {
		t.Fatalf("second sweep evicted: %d", n)
	}
}

func TestSweepAndLazyExpiry(t *testing.T) {
	tab := New(Config{HashSeed: 12, Shards: 4})
	for i := 0; i < 1000; i++ {
		track(tab, synFrom(i, 0)) // SYN_SENT: 120 s
	}
	c := newTConn(t, tab)
	c.send(0, fS, 0)
	c.send(1, fSA, 0)
	c.send(0, fA, 0) // ESTABLISHED, 5 days
	if tab.Len() != 1001 {
		t.Fatalf("len %d", tab.Len())
	}
	// Nothing expired yet.
	if n := tab.Sweep(t0.Add(119*time.Second), 1<<20); n != 0 {
		t.Fatalf("swept %d before expiry", n)
	}
	// Small budgets: repeated sweeps make progress and end with everything expired gone.
	total := 0
	for i := 0; i < 10000 && tab.Len() > 1; i++ {
		total += tab.Sweep(t0.Add(121*time.Second), 64)
	}
	if total != 1000 || tab.Len() != 1 {
		t.Fatalf("swept %d, len %d", total, tab.Len())
	}
	if c.state() != xES {
		t.Fatalf("established flow swept")
	}
	// Lazy expiry: an expired entry found by lookup is gone and the packet is new.
	tab3 := New(Config{HashSeed: 12})
	track(tab3, synFrom(5, 0))
	p := synFrom(5, 121*time.Second)
	if st := track(tab3, p); st != packet.CTNew || tab3.Stats().Expired != 1 {
		t.Fatalf("lazy expiry: %s %+v", st, tab3.Stats())
	}
}

func TestListFormat(t *testing.T) {
	tab := New(Config{HashSeed: 1})
	c := newTConn(t, tab)
	c.send(0, fS, 0)
	c.send(1, fSA, 0)
	c.send(0, fA, 0)
	track(tab, udp("198.18.1.2", "198.18.2.2", 5000, 53, 0))
	track(tab, icmp("198.18.1.2", "198.18.2.2", 8, 0, 77, 0))
	lines := map[string]bool{}
	for _, l := range tab.List() {
		lines[l] = true
	}
	want := []string{
		"tcp      6 432000 ESTABLISHED src=198.18.1.2 dst=198.18.2.2 sport=40000 dport=80 packets=2 bytes=80 src=198.18.2.2 dst=198.18.1.2 sport=80 dport=40000 packets=1 bytes=40 [ASSURED] mark=0 use=1",
		"udp      17 29 src=198.18.1.2 dst=198.18.2.2 sport=5000 dport=53 packets=1 bytes=38 [UNREPLIED] src=198.18.2.2 dst=198.18.1.2 sport=53 dport=5000 packets=0 bytes=0 mark=0 use=1",
		"icmp     1 29 src=198.18.1.2 dst=198.18.2.2 type=8 code=0 id=77 packets=1 bytes=84 [UNREPLIED] src=198.18.2.2 dst=198.18.1.2 type=0 code=0 id=77 packets=0 bytes=0 mark=0 use=1",
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("missing line\n%s\nhave %q", w, tab.List())
		}
	}
	counts := tab.Counts()
	if counts["tcp ESTABLISHED"] != 1 || counts["udp"] != 1 || counts["icmp"] != 1 {
		t.Errorf("counts %v", counts)
	}
	re := regexp.MustCompile(`^(tcp|udp|icmp) +\d+ \d+ `)
	for l := range lines {
		if !re.MatchString(l) {
			t.Errorf("bad line %q", l)
		}
	}
}

// TestConcurrent shares one table between goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	tab := New(Config{HashSeed: 13, Max: 4096, Shards: 8, FTPHelper: true})
	const workers = 4
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				c := newTConn(t, tab)
				c.port[0] = uint16(10000 + w*1000 + i)
				c.port[1] = uint16(21 + (i%2)*59)
				c.at = time.Duration(i) * time.Millisecond
				c.send(0, fS, 0)
				c.send(1, fSA, 0)
				c.send(0, fA, 0)
				c.send(0, fPA, 10)
				c.send(1, fA, 0)
				// Every worker also hammers one shared flow.
				p := udp("198.18.1.9", "198.18.2.9", 999, 53, c.at)
				r := tab.Track(p)
				if i%3 == 0 {
					r.Drop()
				} else {
					r.Confirm(p)
				}
				if i%50 == 0 {
					tab.Sweep(t0.Add(c.at), 100)
					_ = tab.List()
					_ = tab.Stats()
				}
			}
		}(w)
	}
	wg.Wait()
	if n := tab.Len(); n != workers*300+1 {
		t.Fatalf("len %d, want %d", n, workers*300+1)
	}
	if got := tab.Counts()["tcp ESTABLISHED"]; got != workers*300 {
		t.Fatalf("established %d", got)
	}
}

// TestStateChangeDespiteDrop: as in the kernel, where the TCP tracker runs in
// the conntrack hook before the filter table, a dropped packet of an
// existing entry still moves its state; only a new entry is discarded.
func TestStateChangeDespiteDrop(t *testing.T) {
	tab := New(Config{HashSeed: 15})
	c := newTConn(t, tab)
	c.send(0, fS, 0)
	c.send(1, fSA, 0)
	c.send(0, fA, 0)
	p := c.pkt(0, fFA, 0)
	r := tab.Track(p)
	r.Drop()
	if got := c.state(); got != xFW {
		t.Fatalf("state after dropped FIN: %s, want FIN_WAIT", got)
	}
}

// TestSweepIdleBound: after a pass that found the earliest expiry at E,
// started at S, sweeps skip the walk until min(E, S + the shortest timeout)
// and resume at that time; flows added meanwhile and flows whose timeout
// shrinks are still removed once they expire.
func TestSweepIdleBound(t *testing.T) {
	tab := New(Config{HashSeed: 3, Shards: 2, Max: 256})
	minTO := time.Duration(tab.cfg.minTimeout)
	if minTO <= 0 || minTO > 30*time.Second {
		t.Fatalf("shortest timeout %v", minTO)
	}
	for i := 0; i < 50; i++ {
		track(tab, synFrom(i, 0)) // SYN_SENT: 120 s
	}
	// A full pass at 1 s: the bound is 1 s + the shortest timeout.
	if n := tab.Sweep(t0.Add(time.Second), 1<<20); n != 0 {
		t.Fatalf("swept %d", n)
	}
	want := t0.Add(time.Second + minTO).UnixNano()
	if got := tab.sweepIdle.Load(); got != want {
		t.Fatalf("idle until %d, want %d", got, want)
	}
	// A flow that arrives later with a short life: a UDP flow (30 s).
	track(tab, udp("198.18.0.1", "198.18.0.2", 1000, 53, 2*time.Second))
	for _, tc := range []struct {
		at      time.Duration
		removed int
		skipped bool
	}{
		{5 * time.Second, 0, true},      // before the bound: no walk
		{time.Second + minTO, 0, false}, // at the bound: a pass, nothing expired yet
		{33 * time.Second, 1, false},    // the UDP flow has expired by now
		{121 * time.Second, 50, false},  // and so have the SYNs
	} {
		// A walk ends its pass (the budget covers the table) and sets a
		// new bound from this time; a skipped sweep leaves the old one.
		before := tab.sweepIdle.Load()
		n := tab.Sweep(t0.Add(tc.at), 1<<20)
		moved := tab.sweepIdle.Load() != before
		if n != tc.removed || moved == tc.skipped {
			t.Errorf("at %v: removed %d (want %d), walked %v (want %v)", tc.at, n, tc.removed, moved, !tc.skipped)
		}
	}
	if tab.Len() != 0 {
		t.Fatalf("%d entries left", tab.Len())
	}
}
