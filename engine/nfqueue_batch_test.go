package engine

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/filterd/filterd/conntrack"
)

// TestQueueHandlerBatched: with SetBatched the packet and byte counters
// and the latency histogram stay unchanged while a batch is handled and
// hold exactly the per-packet mode's totals after EndBatch; the latency of
// each packet is EndBatch's time minus its Received, packets sharing a
// receive time counted together, and more distinct receive times than the
// handler keeps are measured early, not lost.
func TestQueueHandlerBatched(t *testing.T) {
	rules := compileForBench(t, `*filter
:INPUT ACCEPT [0:0]
-A INPUT -p udp --dport 161 -j ACCEPT
-A INPUT -j DROP
COMMIT
`)
	t0 := time.Unix(1_700_000_000, 0)
	pkt := func(dport uint16) []byte {
		b := udpPacketForBench()
		binary.BigEndian.PutUint16(b[22:], dport)
		return b
	}
	type in struct {
		dport uint16
		recv  time.Duration // after t0
	}
	for _, tc := range []struct {
		name    string
		pkts    []in
		end     time.Duration // EndBatch at t0+end
		accept  uint64
		drop    uint64
		buckets map[int]uint64 // LatencyBuckets index -> count
		sumNs   uint64
	}{
		{
			name:    "one receive time",
			pkts:    []in{{161, 0}, {161, 0}, {9, 0}},
			end:     3 * time.Microsecond,
			accept:  2,
			drop:    1,
			buckets: map[int]uint64{2: 3}, // 3 µs: (2.5 µs, 5 µs]
			sumNs:   3 * 3000,
		},
		{
			name: "six receive times, more than the handler keeps",
			pkts: []in{{161, 0}, {161, time.Microsecond}, {161, 2 * time.Microsecond}, {9, 3 * time.Microsecond},
				{161, 90 * time.Microsecond}, {161, 90 * time.Microsecond}},
			// The first four groups are measured when the fifth arrives
			// (at the real clock, long after t0): the last bucket.
			end:     100 * time.Microsecond,
			accept:  5,
			drop:    1,
			buckets: map[int]uint64{3: 2, len(LatencyBuckets): 4}, // 10 µs: (5 µs, 10 µs]
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng, err := New(Config{Rules: Rules{V4: rules}, Conntrack: conntrack.New(conntrack.Config{})})
			if err != nil {
				t.Fatal(err)
			}
			verdicts := 0
			h := NewQueueHandler(eng, NFQueueConfig{Logger: slog.New(slog.DiscardHandler), IfaceTTL: time.Hour}, 0,
				func(uint32, int) error { verdicts++; return nil })
			h.SetBatched(true)
			st := h.Stats()
			var bytes uint64
			for i, p := range tc.pkts {
				l3 := pkt(p.dport)
				bytes += uint64(len(l3))
				h.Handle(&QueuedPacket{ID: uint32(i + 1), Payload: l3, Hook: 1, HasHook: true, Received: t0.Add(p.recv)})
			}
			if verdicts != len(tc.pkts) {
				t.Fatalf("%d verdicts for %d packets", verdicts, len(tc.pkts))
			}
			if a, d := st.Packets[Accept].Load(), st.Packets[Drop].Load(); a != 0 || d != 0 {
				t.Errorf("before EndBatch: accepted %d dropped %d, want 0 and 0", a, d)
			}
			h.EndBatch(t0.Add(tc.end))
			if a, d := st.Packets[Accept].Load(), st.Packets[Drop].Load(); a != tc.accept || d != tc.drop {
				t.Errorf("accepted %d dropped %d, want %d and %d", a, d, tc.accept, tc.drop)
			}
			if b := st.Bytes[Accept].Load() + st.Bytes[Drop].Load(); b != bytes {
				t.Errorf("bytes %d, want %d", b, bytes)
			}
			var n uint64
			for i := range st.Latency {
				got := st.Latency[i].Load()
				n += got
				if got != tc.buckets[i] {
					t.Errorf("latency bucket %d: %d packets, want %d", i, got, tc.buckets[i])
				}
			}
			if n != uint64(len(tc.pkts)) {
				t.Errorf("latency histogram holds %d packets, want %d", n, len(tc.pkts))
			}
			if tc.sumNs != 0 && st.LatencySumNs.Load() != tc.sumNs {
				t.Errorf("latency sum %d ns, want %d", st.LatencySumNs.Load(), tc.sumNs)
			}
			// A second EndBatch adds nothing.
			h.EndBatch(t0.Add(time.Second))
			if a := st.Packets[Accept].Load(); a != tc.accept {
				t.Errorf("after a second EndBatch: accepted %d, want %d", a, tc.accept)
			}
		})
	}
}
