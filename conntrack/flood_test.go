package conntrack

import (
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/filterd/filterd/packet"
)

// floodResult is what a SYN flood run measured.
type floodResult struct {
	entries       int
	bytesPerEntry float64
	peakHeap      uint64
	stats         Stats
	established   int
}

// runFlood sends `sources` SYNs from distinct spoofed sources (addresses in
// 198.18.0.0/15, 128 source ports each) into a table of capacity max that
// already holds `legit` assured connections. Every SYN is accepted and
// confirmed.
func runFlood(t testing.TB, max, sources, legit int) floodResult {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	peak := uint64(0)

	tab := New(Config{Max: max, HashSeed: 99})
	conns := make([]*tconn, legit)
	for i := range conns {
		c := newTConn(t, tab)
		c.addr[0] = netip.AddrFrom4([4]byte{198, 18, 250, byte(i % 250)}).String()
		c.port[0] = uint16(10000 + i/250)
		c.send(0, fS, 0)
		c.send(1, fSA, 0)
		c.send(0, fA, 0)
		c.send(1, fPA, 100)
		c.send(0, fA, 0)
		conns[i] = c
	}
	p := seg{src: "198.18.0.1", dst: "198.18.2.2", sport: 1024, dport: 8080, flags: fS, win: 64240, at: time.Second}.packet()
	for i := 0; i < sources; i++ {
		// distinct (address, port) sources inside 198.18.0.0/15
		p.Src = netip.AddrFrom4([4]byte{198, 18 + byte(i>>23&1), byte(i >> 15), byte(i >> 7)})
		p.SrcPort = uint16(1024 + i&0x7f)
		p.Seq = uint32(i) * 2654435761
		p.Meta.Time = t0.Add(time.Second + time.Duration(i)*time.Microsecond)
		r := tab.Track(p)
		r.Confirm(p)
		if i%(sources/20) == 0 {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak {
				peak = ms.HeapAlloc
			}
		}
	}
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > peak {
		peak = ms.HeapAlloc
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	n := tab.Len()
	res := floodResult{entries: n, peakHeap: peak - base, stats: tab.Stats()}
	res.bytesPerEntry = float64(ms.HeapAlloc-base) / float64(n)
	for _, c := range conns {
		if ct := c.send(0, fA, 0); ct == packet.CTEstablished && c.state() == xES {
			res.established++
		}
	}
	runtime.KeepAlive(tab)
	return res
}

// TestSYNFlood: a million spoofed sources into a 262144-entry table (scaled
// down by 10 under -race or -short). The table stays at its capacity,
// memory is bounded and the assured connections survive.
func TestSYNFlood(t *testing.T) {
	max, sources, legit := DefaultMax, 1_000_000, 1000
	if raceEnabled || testing.Short() {
		max, sources, legit = DefaultMax/10, 100_000, 100
	}
	res := runFlood(t, max, sources, legit)
	t.Logf("flood: %d sources into max %d: %d entries, %.0f bytes/entry (entry struct %d B), peak heap %.1f MiB, stats %+v",
		sources, max, res.entries, res.bytesPerEntry, unsafe.Sizeof(entry{}), float64(res.peakHeap)/(1<<20), res.stats)
	if res.entries > max {
		t.Errorf("table holds %d > max %d", res.entries, max)
	}
	if res.entries < max*9/10 {
		t.Errorf("table holds only %d", res.entries)
	}
	if res.established != legit {
		t.Errorf("%d of %d established connections survived", res.established, legit)
	}
	if res.stats.EarlyDrop == 0 {
		t.Errorf("no early drops: %+v", res.stats)
	}
	// Bounded: well under 1 KiB per entry and the peak proportional to max.
	if res.bytesPerEntry > 512 {
		t.Errorf("%.0f bytes per entry", res.bytesPerEntry)
	}
	if lim := uint64(max) * 1024; res.peakHeap > lim {
		t.Errorf("peak heap %d > %d", res.peakHeap, lim)
	}
}
