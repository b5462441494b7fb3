package nfqbatch

import (
	"log/slog"
	"testing"
	"time"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/internal/testpkt"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// TestEngineRunnerFragments runs the batch driver's handler (the shared
// engine.QueueHandler) over FORWARD fragments the engine holds for
// reassembly: each packet gets exactly one verdict, the held ones with their
// datagram's, and no batch accept is sent while fragments are held (it would
// accept them too).
func TestEngineRunnerFragments(t *testing.T) {
	f, diags := ruleset.Load("t.rules", []byte("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -p udp --dport 161 -j ACCEPT\nCOMMIT\n"),
		ruleset.LoadOptions{Family: packet.IPv4})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{Rules: engine.Rules{V4: c}, Conntrack: conntrack.New(conntrack.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	q := newReplayQueue(Config{Queue: 7, Batch: 8, VerdictBatch: 100}, nil)
	r := newEngineRunner(q.Queue, eng, engine.NFQueueConfig{Logger: slog.New(slog.DiscardHandler), IfaceTTL: time.Hour})

	// Batch 1: a whole datagram to 53 (dropped), the first two fragments of
	// a datagram to 161, a whole one to 161 (accepted).
	// Batch 2: the last fragment to 161, a whole one to 161.
	msg := func(id uint32, l3 []byte) []byte {
		return tNlmsg(msgPacket, 0, 7, tPacketHdr(id, 0x0800, uint8(packet.HookForward)), tAttr{attrPayload, l3})
	}
	frags := testpkt.FragmentUDP(161, 3000, 1500, 42)
	if len(frags) != 3 {
		t.Fatalf("%d fragments", len(frags))
	}
	whole := func(dport uint16) []byte { return testpkt.FragmentUDP(dport, 10, 1500, 1)[0] }
	batch1 := [][]byte{msg(1, whole(53)), msg(2, frags[0]), msg(3, frags[1]), msg(4, whole(161))}
	batch2 := [][]byte{msg(5, frags[2]), msg(6, whole(161))}

	if err := q.process(q.load(batch1), r.handle); err != nil {
		t.Fatal(err)
	}
	if !r.h.Holding() {
		t.Fatal("the engine holds no fragment")
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	got := decodeVerdicts(t, q.sent[0])
	want := []tVerdict{{typ: msgVerdict, verdict: Drop, id: 1, queue: 7}, {typ: msgVerdict, verdict: Accept, id: 4, queue: 7}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("batch 1 verdicts %+v, want %+v (per packet, fragments 2 and 3 held)", got, want)
	}
	if err := q.process(q.load(batch2), r.handle); err != nil {
		t.Fatal(err)
	}
	if r.h.Holding() {
		t.Fatal("fragments still held after the last one")
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	// The held fragments 2 and 3 get their datagram's accept one by one,
	// before the batch accept that covers 5 and 6.
	got = decodeVerdicts(t, q.sent[1])
	verdicts := map[uint32]Action{}
	for i, v := range got {
		if v.typ == msgVerdictBat {
			if v.id != 6 || i != len(got)-1 {
				t.Errorf("batch accept up to %d as message %d of %d, want up to 6, last", v.id, i, len(got))
			}
			for id := uint32(5); id <= v.id; id++ {
				if _, dup := verdicts[id]; dup {
					t.Errorf("packet %d verdicted twice", id)
				}
				verdicts[id] = Accept
			}
			continue
		}
		if _, dup := verdicts[v.id]; dup {
			t.Errorf("packet %d verdicted twice", v.id)
		}
		verdicts[v.id] = v.verdict
	}
	for _, id := range []uint32{2, 3, 5, 6} {
		if verdicts[id] != Accept {
			t.Errorf("packet %d: verdict %v (%+v), want ACCEPT", id, verdicts[id], got)
		}
	}
	st := q.Stats()
	hs := r.h.Stats()
	if st.Packets != 6 || st.Accepted != 5 || st.Dropped != 1 {
		t.Errorf("driver stats %+v, want 6 packets, 5 accepted, 1 dropped", st)
	}
	if a, d := hs.Packets[engine.Accept].Load(), hs.Packets[engine.Drop].Load(); a != 5 || d != 1 {
		t.Errorf("queue stats: %d accepted %d dropped, want 5 and 1", a, d)
	}
}
