package nfqbatch

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/ruleset"
)

// Run with: go test -run '^$' -bench . -benchmem ./engine/nfqbatch/

var benchServer = netip.MustParseAddr("198.18.0.2")

func newEngine(tb testing.TB, rules string) *engine.Engine {
	tb.Helper()
	f, diags, err := ruleset.LoadFile(filepath.Join("..", "..", "testdata", "rules", rules), ruleset.LoadOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if diags.HasErrors() || diags.HasUnsupported() {
		tb.Fatalf("%s: %v", rules, diags)
	}
	local := []netip.Prefix{netip.PrefixFrom(benchServer, 32)}
	c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{Log: engine.NewLogWriter(nil).Log, LocalPrefixes: local})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := engine.New(engine.Config{
		Rules:     engine.Rules{V4: c},
		Conntrack: conntrack.New(conntrack.Config{HashSeed: 1}),
		Local:     local,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// replayBatch is 64 packet messages as the kernel queues them on INPUT:
// 60-byte UDP datagrams to port 53 (accepted by server.rules) and to port 9
// (rejected), and SYNs to port 80 (accepted) and 9 (rejected), from 16
// sources.
func replayBatch(tb testing.TB) (dg [][]byte, accepts, drops int) {
	for i := 0; i < 64; i++ {
		src := netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + i%16)}).String()
		var l3 []byte
		switch i % 4 {
		case 0:
			l3 = udp4(tb, src, benchServer.String(), uint16(40000+i), 53, make([]byte, 32))
			accepts++
		case 1:
			l3 = udp4(tb, src, benchServer.String(), uint16(40000+i), 9, make([]byte, 32))
			drops++
		case 2:
			l3 = syn4(tb, src, benchServer.String(), uint16(40000+i), 80, uint32(i)*1000)
			accepts++
		case 3:
			l3 = syn4(tb, src, benchServer.String(), uint16(40000+i), 9, uint32(i)*1000)
			drops++
		}
		dg = append(dg, tPacketMsg(uint32(i+1), l3))
	}
	return dg, accepts, drops
}

type sink struct{ bytes, sends int }

func (s *sink) send(b []byte) error { s.bytes += len(b); s.sends++; return nil }

// BenchmarkReceiveEngineVerdict runs a replayed recvmmsg batch of 64 packet
// messages through parse → engine.Worker.Process (server.rules, conntrack)
// → verdict encoding. One op is one batch.
func BenchmarkReceiveEngineVerdict(b *testing.B) {
	dg, accepts, drops := replayBatch(b)
	q := newReplayQueue(Config{Queue: 0, Batch: 64}, map[uint32]string{2: "veth0"})
	s := &sink{}
	q.send = s.send
	h := EngineHandler(newEngine(b, "server.rules").NewWorker())
	n := q.load(dg)
	// One checked round first: the verdicts are the rule set's. The SYN
	// limit rule (--limit 5/second, burst 5) accepts the first five SYNs
	// whatever their port: two of them go to port 9.
	if err := q.process(n, h); err != nil {
		b.Fatal(err)
	}
	accepts, drops = accepts+2, drops-2
	if st := q.Stats(); st.Accepted != uint64(accepts) || st.Dropped != uint64(drops) || s.sends != 1 {
		b.Fatalf("stats %+v, want %d accepted %d dropped in one send", st, accepts, drops)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.process(n, h); err != nil {
			b.Fatal(err)
		}
	}
	reportPkts(b, b.N*n)
}

// BenchmarkReceiveVerdict is the driver alone: parse and verdict encoding of
// the same batch, every packet accepted.
func BenchmarkReceiveVerdict(b *testing.B) {
	dg, _, _ := replayBatch(b)
	q := newReplayQueue(Config{Queue: 0, Batch: 64}, nil)
	s := &sink{}
	q.send = s.send
	h := Handler(func(pkts []Packet, vs []Verdict) {})
	n := q.load(dg)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.process(n, h); err != nil {
			b.Fatal(err)
		}
	}
	reportPkts(b, b.N*n)
}

func reportPkts(b *testing.B, pkts int) {
	if b.Elapsed() > 0 && pkts > 0 {
		ns := float64(b.Elapsed().Nanoseconds()) / float64(pkts)
		b.ReportMetric(ns, "ns/pkt")
		b.ReportMetric(1e9/ns, "pps")
	}
}

// BenchmarkReceiveQueueHandler is filterd's batch driver path: the same
// replayed batch through parse → engine.QueueHandler (engine, REJECT
// decision, stats, latency) → verdict encoding. One op is one batch.
func BenchmarkReceiveQueueHandler(b *testing.B) {
	dg, _, _ := replayBatch(b)
	q := newReplayQueue(Config{Queue: 0, Batch: 64}, map[uint32]string{2: "veth0"})
	s := &sink{}
	q.send = s.send
	r := newEngineRunner(q.Queue, newEngine(b, "server.rules"), engine.NFQueueConfig{})
	n := q.load(dg)
	if err := q.process(n, r.handle); err != nil {
		b.Fatal(err)
	}
	if st := q.Stats(); st.Packets != uint64(n) || s.sends != 1 {
		b.Fatalf("stats %+v, %d sends: want %d packets in one send", st, s.sends, n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.process(n, r.handle); err != nil {
			b.Fatal(err)
		}
	}
	reportPkts(b, b.N*n)
}
