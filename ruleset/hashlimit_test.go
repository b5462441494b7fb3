package ruleset

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

func hlTable(m *HashlimitMatch) *Table {
	return mkTable(mkBuiltin("INPUT", PolicyDrop, &Rule{Matches: []Match{m}, Target: tgtAccept()}))
}

func TestHashlimit(t *testing.T) {
	const A, D = VerdictAccept, VerdictDrop
	ms := time.Millisecond
	perSrc := func() *HashlimitMatch {
		return &HashlimitMatch{Name: "ssh", Rate: Rate{Count: 1, Unit: PerSecond}, Burst: 2, Mode: HashSrcIP, SrcMask: 32, DstMask: 32}
	}
	tests := []struct {
		name  string
		m     func() *HashlimitMatch
		steps []step
	}{
		{"upto per source", perSrc, []step{
			{"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, {"198.18.0.1", 0, D},
			{"198.18.0.2", 0, A}, {"198.18.0.2", 0, A}, {"198.18.0.2", 0, D}, // own bucket
			{"198.18.0.1", 999 * ms, D},
			{"198.18.0.1", 1000 * ms, A},
			{"198.18.0.1", 1000 * ms, D},
		}},
		{"srcmask 24 aggregates", func() *HashlimitMatch { m := perSrc(); m.SrcMask = 24; return m }, []step{
			{"198.18.0.1", 0, A}, {"198.18.0.2", 0, A}, {"198.18.0.3", 0, D}, {"198.18.1.1", 0, A},
		}},
		{"no mode: one bucket", func() *HashlimitMatch { m := perSrc(); m.Mode = 0; return m }, []step{
			{"198.18.0.1", 0, A}, {"198.18.0.2", 0, A}, {"198.18.1.3", 0, D},
		}},
		{"default burst 5", func() *HashlimitMatch { m := perSrc(); m.Burst = 0; return m }, []step{
			{"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, {"198.18.0.1", 0, A},
			{"198.18.0.1", 0, D},
		}},
		{"above matches over the rate", func() *HashlimitMatch { m := perSrc(); m.Above = true; return m }, []step{
			{"198.18.0.1", 0, D}, {"198.18.0.1", 0, D}, {"198.18.0.1", 0, A}, {"198.18.0.1", 1000 * ms, D},
		}},
		{"idle entry expires after htable-expire: a new full bucket", func() *HashlimitMatch {
			m := perSrc()
			m.Rate = Rate{Count: 1, Unit: PerMinute}
			m.Burst = 1
			return m
		}, []step{
			{"198.18.0.1", 0, A},
			{"198.18.0.1", 5 * time.Second, D},  // refreshes the expiry to +15 s
			{"198.18.0.1", 14 * time.Second, D}, // not idle for 10 s yet
			{"198.18.0.1", 25 * time.Second, A}, // idle 11 s: expired
		}},
		{"a packet from the past does not refill the bucket", perSrc, []step{
			{"198.18.0.1", 5 * time.Second, A},
			{"198.18.0.1", 4 * time.Second, A}, // out of order: counts as 5 s
			{"198.18.0.1", 5 * time.Second, D},
			{"198.18.0.1", 6 * time.Second, A},
		}},
		{"byte mode", func() *HashlimitMatch {
			return &HashlimitMatch{Name: "bytes", Bytes: true, Rate: Rate{Count: 100, Unit: PerSecond}, Burst: 20, Mode: HashSrcIP, SrcMask: 32, DstMask: 32}
		}, []step{
			{"198.18.0.1", 0, A}, {"198.18.0.1", 0, A}, // 120 bytes of 60
			{"198.18.0.1", 0, D},
			{"198.18.0.1", 600 * ms, A},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, mustCompile(t, hlTable(tt.m()), CompileOptions{}), tt.steps)
		})
	}
}

func TestHashlimitPorts(t *testing.T) {
	m := &HashlimitMatch{Name: "ports", Rate: Rate{Count: 1, Unit: PerHour}, Burst: 1, Mode: HashSrcIP | HashDstPort, SrcMask: 32, DstMask: 32}
	c := mustCompile(t, hlTable(m), CompileOptions{})
	for i, tt := range []struct {
		port uint16
		want Verdict
	}{{22, VerdictAccept}, {22, VerdictDrop}, {80, VerdictAccept}, {80, VerdictDrop}} {
		p := at("198.18.0.1", 0)
		p.DstPort = tt.port
		if got := c.Evaluate(p).Verdict; got != tt.want {
			t.Fatalf("packet %d to port %d: %v, want %v", i, tt.port, got, tt.want)
		}
	}
}

// TestHashlimitSurvivesReload: a reload with the same name and parameters
// keeps the buckets; other parameters get a new table.
func TestHashlimitSurvivesReload(t *testing.T) {
	m := &HashlimitMatch{Name: "syn", Rate: Rate{Count: 1, Unit: PerHour}, Burst: 1, Mode: HashSrcIP, SrcMask: 32, DstMask: 32}
	st := NewState()
	c1 := mustCompile(t, hlTable(m), CompileOptions{State: st})
	runSteps(t, c1, []step{{"198.18.0.1", 0, VerdictAccept}, {"198.18.0.1", time.Second, VerdictDrop}})

	// A different rule set using the same table.
	m2 := *m
	tab2 := mkTable(mkBuiltin("INPUT", PolicyDrop, mkTCPRule(80, tgtAccept()), &Rule{Matches: []Match{&m2}, Target: tgtAccept()}))
	c2 := mustCompile(t, tab2, CompileOptions{State: st})
	runSteps(t, c2, []step{{"198.18.0.1", 2 * time.Second, VerdictDrop}, {"198.18.0.2", 2 * time.Second, VerdictAccept}})

	m3 := *m
	m3.Burst = 2
	c3 := mustCompile(t, hlTable(&m3), CompileOptions{State: st})
	runSteps(t, c3, []step{{"198.18.0.1", 3 * time.Second, VerdictAccept}})

	st.Prune(c3)
	if n := len(st.hashlimit); n != 1 {
		t.Fatalf("after Prune: %d tables, want 1", n)
	}
	if st.HashlimitLen("syn") != 1 {
		t.Fatalf("table syn holds %d buckets, want 1", st.HashlimitLen("syn"))
	}
}

// TestHashlimitEvictsIdleFirst: in a full table, expired buckets go first,
// then the least recently used.
func TestHashlimitEvictsIdleFirst(t *testing.T) {
	cfg, err := hashlimitConfigOf(&HashlimitMatch{Name: "x", Rate: Rate{Count: 1, Unit: PerSecond}, Burst: 1, Mode: HashSrcIP, SrcMask: 32, DstMask: 32}, packet.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	ht := newHashTable(cfg)
	ht.shards, ht.mask = ht.shards[:1], 0
	ht.shards[0].max = 3
	key := func(s string) hlKey { return hlKey{src: addrWords(mkAddr(s), 32)} }
	sec := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Second))) }
	ht.allow(key("198.18.0.1"), sec(0), 1)
	ht.allow(key("198.18.0.2"), sec(1), 1)
	ht.allow(key("198.18.0.3"), sec(2), 1)
	ht.allow(key("198.18.0.1"), sec(3), 1) // .1 used again: .2 is now the idlest
	ht.allow(key("198.18.0.4"), sec(4), 1) // full: evicts .2
	has := func(s string) bool { _, ok := ht.shards[0].m[key(s)]; return ok }
	if has("198.18.0.2") || !has("198.18.0.1") || !has("198.18.0.3") || !has("198.18.0.4") {
		t.Fatalf("after LRU eviction: %v", ht.shards[0].m)
	}
	// At 12.5 s .3 (last seen at 2 s) has expired; .1 (3 s) and .4 (4 s) have not.
	ht.allow(key("198.18.0.5"), sec(12.5), 1)
	if has("198.18.0.3") || !has("198.18.0.1") || !has("198.18.0.4") || !has("198.18.0.5") {
		t.Fatalf("after expiry: %v", ht.shards[0].m)
	}
}

// TestHashlimitFloodBounded: a flood of 1,000,000 distinct sources keeps the
// table within --hashlimit-htable-max, and a source inside the flood that
// keeps to its rate is still served.
func TestHashlimitFloodBounded(t *testing.T) {
	n := 1000000
	if testing.Short() || raceEnabled {
		n = 200000
	}
	const max = 4096
	m := &HashlimitMatch{Name: "flood", Rate: Rate{Count: 10, Unit: PerSecond}, Burst: 5, Mode: HashSrcIP, SrcMask: 32, DstMask: 32, HtableMax: max, HtableSize: 512}
	st := NewState()
	c := mustCompile(t, hlTable(m), CompileOptions{State: st})
	p := at("198.18.0.1", 0)
	var accepted int
	for i := 0; i < n; i++ {
		// 100,000 packets per second, each from a new address.
		p.Meta.Time = t0.Add(time.Duration(i) * 10 * time.Microsecond)
		p.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if c.Evaluate(p).Verdict == VerdictAccept {
			accepted++
		}
		if i%100000 == 0 {
			if l := st.HashlimitLen("flood"); l > max {
				t.Fatalf("after %d sources the table holds %d buckets, max %d", i, l, max)
			}
		}
	}
	if l := st.HashlimitLen("flood"); l > max || l < max/2 {
		t.Fatalf("table holds %d buckets after the flood, want at most %d (and most of it in use)", l, max)
	}
	// Every flood source was new: all accepted (a fresh bucket has its burst).
	if accepted != n {
		t.Fatalf("accepted %d of %d first packets", accepted, n)
	}
	for i := range c.chains[0].rules[0].matchers[0].(*hashlimitMatcher).t.shards {
		s := &c.chains[0].rules[0].matchers[0].(*hashlimitMatcher).t.shards[i]
		if len(s.ents) > s.max {
			t.Fatalf("shard %d grew its slab to %d entries, max %d", i, len(s.ents), s.max)
		}
	}
}

func TestHashlimitNoAllocs(t *testing.T) {
	m := &HashlimitMatch{Name: "a", Rate: Rate{Count: 1000, Unit: PerSecond}, Burst: 5, Mode: HashSrcIP, SrcMask: 32, DstMask: 32}
	c := mustCompile(t, hlTable(m), CompileOptions{})
	p := at("198.18.0.1", 0)
	c.Evaluate(p)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		p.Meta.Time = t0.Add(time.Duration(i) * time.Millisecond)
		c.Evaluate(p)
	}); n != 0 {
		t.Fatalf("hashlimit on a known source allocates %.1f times per packet", n)
	}
}

func TestHashlimitFloodSteadyStateNoAllocs(t *testing.T) {
	const max = 1024
	m := &HashlimitMatch{Name: "flood", Rate: Rate{Count: 10, Unit: PerSecond}, Burst: 5, Mode: HashSrcIP, SrcMask: 32, DstMask: 32, HtableMax: max, HtableSize: 128}
	c := mustCompile(t, hlTable(m), CompileOptions{})
	p := at("198.18.0.1", 0)
	i := 0
	next := func() {
		i++
		p.Meta.Time = t0.Add(time.Duration(i) * 10 * time.Microsecond)
		p.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		c.Evaluate(p)
	}
	for k := 0; k < 20000; k++ { // fill the table and churn it
		next()
	}
	if n := testing.AllocsPerRun(10000, next); n != 0 {
		t.Fatalf("a new source in a full table allocates %.3f times per packet", n)
	}
}

// TestHashlimitMemoryCeiling: a table at the kernel's default
// --hashlimit-htable-max (65,536 buckets) stays under 24 MiB, flooded with
// three times as many sources.
func TestHashlimitMemoryCeiling(t *testing.T) {
	const ceiling = 24 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := &HashlimitMatch{Name: "mem", Rate: Rate{Count: 10, Unit: PerSecond}, Burst: 5, Mode: HashSrcIP | HashDstPort, SrcMask: 32, DstMask: 32}
	c := mustCompile(t, hlTable(m), CompileOptions{})
	p := at("198.18.0.1", 0)
	for i := 0; i < 3*8*DefaultHashlimitSize; i++ {
		p.Meta.Time = t0.Add(time.Duration(i) * time.Microsecond)
		p.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		c.Evaluate(p)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := c.State().HashlimitLen("mem")
	if n != 8*DefaultHashlimitSize {
		t.Fatalf("table holds %d buckets, want %d", n, 8*DefaultHashlimitSize)
	}
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d buckets use %d KiB (%d bytes each)", n, used>>10, used/int64(n))
	if used > ceiling {
		t.Fatalf("%d buckets use %d MiB, ceiling %d MiB", n, used>>20, ceiling>>20)
	}
	runtime.KeepAlive(c)
}

// TestHashlimitAddrWords: the bucket key's masked address is the address
// netip masks to the same prefix length, for every length of both families
// (IPv4-mapped IPv6 addresses as IPv6), and distinct addresses in distinct
// prefixes give distinct keys.
func TestHashlimitAddrWords(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for i := 0; i < 20000; i++ {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], r.Uint64())
		binary.BigEndian.PutUint64(b[8:], r.Uint64())
		a := netip.AddrFrom16(b)
		switch i % 3 {
		case 0:
			a = netip.AddrFrom4([4]byte(b[:4]))
		case 1:
			a = netip.AddrFrom16(netip.AddrFrom4([4]byte(b[:4])).As16())
		}
		bits := r.IntN(a.BitLen() + 2)
		got := addrWords(a, bits)
		want := maskAddr(a, bits)
		if back := wordsAddr(got, a.Is4()); back != want {
			t.Fatalf("addrWords(%v, %d) = %v, want %v", a, bits, back, want)
		}
	}
}

// maskAddr is the reference: a masked to its first bits by netip.
func maskAddr(a netip.Addr, bits int) netip.Addr {
	if bits >= a.BitLen() {
		return a
	}
	return netip.PrefixFrom(a, max(bits, 0)).Masked().Addr()
}

// wordsAddr turns hlKey's words back into an address.
func wordsAddr(w [2]uint64, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(w[1]))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], w[0])
	binary.BigEndian.PutUint64(b[8:], w[1])
	return netip.AddrFrom16(b)
}
