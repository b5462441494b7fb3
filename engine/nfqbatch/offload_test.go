package nfqbatch

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/packet"
)

var offloadCfg = engine.Offload{Mark: 0x40000000, Mask: 0x40000000}

// tHookMsg is a packet message for l3 queued at hook (INPUT from ifindex 2,
// OUTPUT to ifindex 2), carrying nfmark mark when it is not 0.
func tHookMsg(id uint32, hook packet.Hook, mark uint32, l3 []byte) []byte {
	dev := tAttr{attrIfIndexIn, be32(2)}
	if hook == packet.HookOutput {
		dev = tAttr{attrIfIndexOut, be32(2)}
	}
	attrs := []tAttr{tPacketHdr(id, 0x0800, uint8(hook)), dev}
	if mark != 0 {
		attrs = append(attrs, tAttr{attrMark, be32(mark)})
	}
	return tNlmsg(msgPacket, 0, 7, append(attrs, tAttr{attrPayload, l3})...)
}

// offloadBatch is 64 packet messages: 32 UDP exchanges with the server's
// port 53 (a query on INPUT, its answer on OUTPUT) from 16 sources.
func offloadBatch(tb testing.TB) [][]byte {
	var dg [][]byte
	for i := 0; i < 32; i++ {
		src := "198.18.1." + strconv.Itoa(10+i%16)
		sport := uint16(40000 + i)
		dg = append(dg, tHookMsg(uint32(2*i+1), packet.HookInput, 0, udp4(tb, src, benchServer.String(), sport, 53, make([]byte, 32))),
			tHookMsg(uint32(2*i+2), packet.HookOutput, 0, udp4(tb, benchServer.String(), src, 53, sport, make([]byte, 32))))
	}
	return dg
}

func newOffloadRunner(tb testing.TB, q *replayQueue) *engineRunner {
	return newEngineRunner(q.Queue, newEngine(tb, "server.rules"),
		engine.NFQueueConfig{Logger: slog.New(slog.DiscardHandler), IfaceTTL: time.Hour, Offload: offloadCfg})
}

// TestEngineRunnerOffload runs the batch driver's handler with offload on:
// the query (NEW) is accepted in the batch accept, its answer (ESTABLISHED)
// gets a per-packet NF_REPEAT with the offload mark OR-ed into its nfmark,
// sent before the batch accept and not covered twice; a packet that already
// carries the mark is accepted plainly.
func TestEngineRunnerOffload(t *testing.T) {
	q := newReplayQueue(Config{Queue: 7, Batch: 8, VerdictBatch: 100}, nil)
	r := newOffloadRunner(t, q)
	l3q := udp4(t, "198.18.1.10", benchServer.String(), 40000, 53, []byte("query"))
	l3a := udp4(t, benchServer.String(), "198.18.1.10", 53, 40000, []byte("answer"))
	batch := [][]byte{
		tHookMsg(1, packet.HookInput, 0, l3q),
		tHookMsg(2, packet.HookOutput, 0x7, l3a),
		tHookMsg(3, packet.HookInput, 0x40000000, l3q),                                                 // repeated before and back: no second repeat
		tHookMsg(4, packet.HookInput, 0, udp4(t, "198.18.1.11", benchServer.String(), 40001, 9, nil)),  // NEW, rejected
		tHookMsg(5, packet.HookInput, 0, udp4(t, "198.18.1.12", benchServer.String(), 40002, 53, nil)), // NEW, accepted
	}
	if err := q.process(q.load(batch), r.handle); err != nil {
		t.Fatal(err)
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	if len(q.sent) != 1 {
		t.Fatalf("%d datagrams sent, want 1", len(q.sent))
	}
	got := decodeVerdicts(t, q.sent[0])
	want := []tVerdict{
		{typ: msgVerdict, verdict: Repeat, id: 2, mark: 0x40000007, hasMark: true, queue: 7},
		{typ: msgVerdict, verdict: Drop, id: 4, queue: 7},
		{typ: msgVerdictBat, verdict: Accept, id: 5, queue: 7},
	}
	if len(got) != len(want) {
		t.Fatalf("verdicts %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("verdict message %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	st, hs := q.Stats(), r.h.Stats()
	if st.Packets != 5 || st.Accepted != 3 || st.Dropped != 1 || st.Other != 1 {
		t.Errorf("driver stats %+v, want 5 packets: 3 accepted, 1 dropped, 1 repeated", st)
	}
	if n := hs.Offloaded.Load(); n != 1 {
		t.Errorf("Offloaded = %d, want 1", n)
	}
}

// BenchmarkReceiveQueueHandlerOffload is the batch driver path with offload
// on: a replayed batch of 32 UDP exchanges (query and answer) through parse →
// engine.QueueHandler → verdict encoding. After the first round every flow
// is ESTABLISHED, so every packet gets a per-packet NF_REPEAT with the mark.
// It must not allocate.
func BenchmarkReceiveQueueHandlerOffload(b *testing.B) {
	dg := offloadBatch(b)
	q := newReplayQueue(Config{Queue: 7, Batch: 64}, map[uint32]string{2: "veth0"})
	s := &sink{}
	q.send = s.send
	r := newOffloadRunner(b, q)
	n := q.load(dg)
	for round := 0; round < 2; round++ {
		if err := q.process(n, r.handle); err != nil {
			b.Fatal(err)
		}
	}
	// Round 1: 32 answers offloaded; round 2: all 64 packets.
	if off := r.h.Stats().Offloaded.Load(); off != 32+64 {
		b.Fatalf("%d packets offloaded in two rounds, want 96", off)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.process(n, r.handle); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if off := r.h.Stats().Offloaded.Load(); off != uint64(96+b.N*n) {
		b.Fatalf("%d packets offloaded, want %d", off, 96+b.N*n)
	}
	reportPkts(b, b.N*n)
}
