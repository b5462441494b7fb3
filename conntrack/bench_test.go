package conntrack

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// estTable returns a table holding n assured TCP connections and one ACK
// packet per connection (client to server, in window).
func estTable(b *testing.B, n int) (*Table, []*packet.Packet) {
	tab := New(Config{HashSeed: 77})
	pkts := make([]*packet.Packet, n)
	for i := 0; i < n; i++ {
		c := newTConn(b, tab)
		c.addr[0] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8 & 0x3f), byte(i)}).String()
		c.port[0] = uint16(1024 + i>>14)
		c.send(0, fS, 0)
		c.send(1, fSA, 0)
		c.send(0, fA, 0)
		pkts[i] = c.pkt(0, fA, 0)
	}
	return tab, pkts
}

// BenchmarkLookupHit: an ACK of an established flow (lookup, TCP window
// check, refresh, Confirm). Must not allocate. "hot" cycles over 1024 flows
// (in cache), "cold" over 65536 flows and their packets (cache misses).
func BenchmarkLookupHit(b *testing.B) {
	for _, tc := range []struct {
		name  string
		flows int
	}{{"hot", 1024}, {"cold", 65536}} {
		b.Run(tc.name, func(b *testing.B) {
			tab, pkts := estTable(b, tc.flows)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := pkts[i&(len(pkts)-1)]
				r := tab.Track(p)
				r.Confirm(p)
				if p.CTState != packet.CTEstablished {
					b.Fatalf("ct %s", p.CTState)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
		})
	}
}

// BenchmarkLookupHitParallel: the same from several goroutines (shards).
func BenchmarkLookupHitParallel(b *testing.B) {
	tab, pkts := estTable(b, 65536)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var q packet.Packet
		i := 0
		for pb.Next() {
			q = *pkts[i&(len(pkts)-1)]
			i += 7919
			tab.Track(&q).Confirm(&q)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
}

// BenchmarkNewFlow: a SYN of a new flow, confirmed. Once the default
// 262144 entries are reached every insert also early-drops an entry.
func BenchmarkNewFlow(b *testing.B) {
	tab := New(Config{HashSeed: 78})
	p := seg{src: "198.18.0.1", dst: "198.18.2.2", sport: 1024, dport: 8080, flags: fS, win: 64240}.packet()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Src = netip.AddrFrom4([4]byte{198, 18 + byte(i>>23&1), byte(i >> 15), byte(i >> 7)})
		p.SrcPort = uint16(1024 + i&0x7f)
		p.Meta.Time = t0.Add(time.Duration(i) * time.Microsecond)
		tab.Track(p).Confirm(p)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
}

// BenchmarkNewFlowDropped: a SYN that the rules drop (tentative entry freed).
func BenchmarkNewFlowDropped(b *testing.B) {
	tab := New(Config{HashSeed: 79})
	p := seg{src: "198.18.0.1", dst: "198.18.2.2", sport: 1024, dport: 8080, flags: fS, win: 64240}.packet()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Src = netip.AddrFrom4([4]byte{198, 18, byte(i >> 15), byte(i >> 7)})
		p.SrcPort = uint16(1024 + i&0x7f)
		tab.Track(p).Drop()
	}
}

// BenchmarkSweep: one Sweep call with budget 1024 over a full table; half of
// the calls find expired entries to reclaim (the table is refilled off the
// clock when empty).
func BenchmarkSweep(b *testing.B) {
	for _, tc := range []struct {
		name    string
		expired bool
	}{{"live", false}, {"expired", true}} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 1 << 16
			fill := func() *Table {
				tab := New(Config{HashSeed: 80, Max: n})
				p := seg{src: "198.18.0.1", dst: "198.18.2.2", sport: 1024, dport: 53, proto: packet.ProtoUDP}.packet()
				for i := 0; i < n; i++ {
					p.Src = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
					tab.Track(p).Confirm(p)
				}
				return tab
			}
			tab := fill()
			now := t0
			if tc.expired {
				now = t0.Add(time.Hour)
			}
			removed := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				removed += tab.Sweep(now, 1024)
				if tc.expired && tab.Len() == 0 {
					b.StopTimer()
					tab = fill()
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1024, "ns/visit")
			_ = removed
		})
	}
}

// BenchmarkSYNFlood1M: the full-size flood (1,000,000 spoofed sources into
// 262144 entries), reporting bytes per entry and peak heap.
func BenchmarkSYNFlood1M(b *testing.B) {
	for i := 0; i < b.N; i++ {
		res := runFlood(b, DefaultMax, 1_000_000, 1000)
		b.ReportMetric(res.bytesPerEntry, "bytes/entry")
		b.ReportMetric(float64(res.peakHeap)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(res.established), "established-kept")
	}
	runtime.GC()
}
