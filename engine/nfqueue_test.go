package engine

import (
	"encoding/binary"
	"log/slog"
	"strings"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

func TestParseQueueProc(t *testing.T) {
	in := "    0  27493     3 2 65531     7     9        2  1\n    1 4294960 0 2 65535 0 0 12345 1\n"
	got, err := ParseQueueProc(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []QueueProc{
		{Queue: 0, PortID: 27493, Waiting: 3, CopyMode: 2, CopyRange: 65531, Dropped: 7, UserDropped: 9, IDSequence: 2},
		{Queue: 1, PortID: 4294960, CopyMode: 2, CopyRange: 65535, IDSequence: 12345},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i+1, got[i], want[i])
		}
	}
	for _, bad := range []string{"0 1 2\n", "0 1 2 3 4 5 x 7 1\n"} {
		if _, err := ParseQueueProc(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: error %v, want one naming line 1", bad, err)
		}
	}
}

func TestKernelCTState(t *testing.T) {
	u := func(v uint32) *uint32 { return &v }
	cases := []struct {
		in   *uint32
		want packet.CTState
	}{
		{nil, packet.CTInvalid},
		{u(0), packet.CTEstablished}, {u(3), packet.CTEstablished},
		{u(1), packet.CTRelated}, {u(4), packet.CTRelated},
		{u(2), packet.CTNew},
		{u(7), packet.CTUntracked},
		{u(9), packet.CTInvalid},
	}
	for _, c := range cases {
		if got := KernelCTState(c.in); got != c.want {
			t.Errorf("KernelCTState(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// BenchmarkNFQueueHandle measures filterd's own share of the live path: one
// queued packet (as go-nfqueue hands it over) through interface lookup,
// the engine and the verdict call (stubbed: the netlink send is the
// kernel's share). It must not allocate.
func BenchmarkNFQueueHandle(b *testing.B) {
	rules := compileForBench(b, `*filter
:INPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p udp --dport 161 -j ACCEPT
-A INPUT -j DROP
COMMIT
`)
	eng, err := New(Config{Rules: Rules{V4: rules}, Conntrack: conntrack.New(conntrack.Config{})})
	if err != nil {
		b.Fatal(err)
	}
	q := &NFQueue{eng: eng, cfg: NFQueueConfig{IfaceTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)}}
	var verdicts int
	r := &nfqRunner{q: q, w: eng.NewWorker(), ifnames: map[uint32]ifInfo{}, log: q.cfg.Logger,
		send: func(uint32, int) error { verdicts++; return nil }}
	pkt := udpPacketForBench()
	id, hook, in, hw, proto := uint32(0), uint8(1), uint32(1), []byte{2, 0, 0, 0, 0, 1}, uint16(0x0800)
	a := nfqueue.Attribute{PacketID: &id, Hook: &hook, InDev: &in, Payload: &pkt, HwAddr: &hw, HwProtocol: &proto}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		id++
		r.handle(a)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pps")
	if verdicts != b.N || r.stats.Packets[Accept].Load() != uint64(b.N) {
		b.Fatalf("%d verdicts, %d accepted for %d packets", verdicts, r.stats.Packets[Accept].Load(), b.N)
	}
}

func compileForBench(b *testing.B, text string) *ruleset.Compiled {
	f, diags := ruleset.Load("bench.rules", []byte(text), ruleset.LoadOptions{Family: packet.IPv4})
	if diags.HasErrors() {
		b.Fatalf("load: %v", diags)
	}
	c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// udpPacketForBench is an IPv4 UDP datagram 198.18.1.2:40000 -> 198.18.1.1:161.
func udpPacketForBench() []byte {
	b := make([]byte, 28+16)
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], []byte{198, 18, 1, 2})
	copy(b[16:], []byte{198, 18, 1, 1})
	binary.BigEndian.PutUint16(b[10:], Checksum(0, b[:20]))
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], 161)
	binary.BigEndian.PutUint16(b[24:], uint16(len(b)-20))
	return b
}
