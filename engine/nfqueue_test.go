package engine

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/internal/testpkt"
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

func compileForBench(b testing.TB, text string) *ruleset.Compiled {
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

// TestNFQueueFragments: fragments held for reassembly get their verdict
// with the whole datagram's (accept or drop), and incomplete ones are
// dropped after the reassembly timeout.
func TestNFQueueFragments(t *testing.T) {
	rules := compileForBench(t, `*filter
:FORWARD DROP [0:0]
-A FORWARD -p udp --dport 161 -j ACCEPT
COMMIT
`)
	eng, err := New(Config{Rules: Rules{V4: rules}, Conntrack: conntrack.New(conntrack.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	q := &NFQueue{eng: eng, cfg: NFQueueConfig{IfaceTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)}}
	verdicts := map[uint32]int{}
	var order []uint32
	r := &nfqRunner{q: q, w: eng.NewWorker(), ifnames: map[uint32]ifInfo{}, log: q.cfg.Logger,
		send: func(id uint32, v int) error {
			if _, dup := verdicts[id]; dup {
				t.Errorf("packet %d verdicted twice", id)
			}
			verdicts[id] = v
			order = append(order, id)
			return nil
		}}
	next := uint32(0)
	feed := func(pkts [][]byte) []uint32 {
		var ids []uint32
		for _, p := range pkts {
			next++
			id, hook := next, uint8(packet.HookForward)
			pp := p
			r.handle(nfqueue.Attribute{PacketID: &id, Hook: &hook, Payload: &pp})
			ids = append(ids, id)
		}
		return ids
	}
	for _, c := range []struct {
		dport uint16
		want  int
	}{{161, nfqueue.NfAccept}, {9999, nfqueue.NfDrop}} {
		frags := testpkt.FragmentUDP(c.dport, 3000, 1500, uint16(c.dport))
		if len(frags) != 3 {
			t.Fatalf("%d fragments", len(frags))
		}
		ids := feed(frags[:2])
		for _, id := range ids {
			if _, ok := verdicts[id]; ok {
				t.Fatalf("dport %d: fragment %d verdicted before its datagram was complete", c.dport, id)
			}
		}
		ids = append(ids, feed(frags[2:])...)
		for _, id := range ids {
			if v, ok := verdicts[id]; !ok || v != c.want {
				t.Errorf("dport %d: fragment %d verdict %d (given %v), want %d", c.dport, id, v, ok, c.want)
			}
		}
	}
	// An incomplete datagram: dropped after ipfrag_time.
	ids := feed(testpkt.FragmentUDP(161, 3000, 1500, 7)[:1])
	if _, ok := verdicts[ids[0]]; ok {
		t.Fatal("lone fragment verdicted at once")
	}
	r.expireFrags(time.Now().Add(DefaultFragTimeout + time.Second))
	if v, ok := verdicts[ids[0]]; !ok || v != nfqueue.NfDrop {
		t.Errorf("expired fragment: verdict %d (given %v), want drop", v, ok)
	}
	if r.nheld != 0 || len(r.frags) != 0 {
		t.Errorf("%d fragments still held", r.nheld)
	}
	if len(order) != int(next) {
		t.Errorf("%d verdicts for %d packets", len(order), next)
	}
}

// TestNFQueuePanic: a panic while processing a packet (here from a LOG
// callback) still gives the packet exactly one verdict and is counted.
func TestNFQueuePanic(t *testing.T) {
	f, diags := ruleset.Load("panic.rules", []byte("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j LOG\nCOMMIT\n"), ruleset.LoadOptions{Family: packet.IPv4})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{Log: func(*ruleset.Rule, *packet.Packet) { panic("boom") }})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := New(Config{Rules: Rules{V4: c}, Conntrack: conntrack.New(conntrack.Config{})})
	for _, failOpen := range []bool{false, true} {
		q := &NFQueue{eng: eng, cfg: NFQueueConfig{IfaceTTL: time.Hour, FailOpen: failOpen, Logger: slog.New(slog.DiscardHandler)}}
		var got []int
		r := &nfqRunner{q: q, w: eng.NewWorker(), ifnames: map[uint32]ifInfo{}, log: q.cfg.Logger,
			send: func(_ uint32, v int) error { got = append(got, v); return nil }}
		id, hook, pkt := uint32(1), uint8(packet.HookInput), udpPacketForBench()
		r.handle(nfqueue.Attribute{PacketID: &id, Hook: &hook, Payload: &pkt})
		want := nfqueue.NfDrop
		if failOpen {
			want = nfqueue.NfAccept
		}
		if len(got) != 1 || got[0] != want || r.stats.Panics.Load() != 1 {
			t.Errorf("failOpen=%v: verdicts %v, panics %d; want one %d and one panic", failOpen, got, r.stats.Panics.Load(), want)
		}
	}
}

func TestNFQueuePktType(t *testing.T) {
	q := &NFQueue{cfg: NFQueueConfig{Local: []netip.Prefix{netip.MustParsePrefix("198.18.1.1/24")}}}
	r := &nfqRunner{q: q}
	own := [6]byte{2, 0, 0, 0, 0, 1}
	v4 := func(dst string) []byte {
		b := make([]byte, 20)
		b[0] = 0x45
		copy(b[16:], netip.MustParseAddr(dst).AsSlice())
		return b
	}
	v6 := func(dst string) []byte {
		b := make([]byte, 40)
		b[0] = 0x60
		copy(b[24:], netip.MustParseAddr(dst).AsSlice())
		return b
	}
	for _, c := range []struct {
		pkt  []byte
		want packet.PktType
		mac  string
	}{
		{v4("198.18.1.1"), packet.PktUnicast, "02:00:00:00:00:01"},
		{v4("255.255.255.255"), packet.PktBroadcast, "ff:ff:ff:ff:ff:ff"},
		{v4("198.18.1.255"), packet.PktBroadcast, "ff:ff:ff:ff:ff:ff"},
		{v4("198.18.2.255"), packet.PktUnicast, "02:00:00:00:00:01"},
		{v4("224.0.0.251"), packet.PktMulticast, "01:00:5e:00:00:fb"},
		{v4("239.129.2.3"), packet.PktMulticast, "01:00:5e:01:02:03"},
		{v6("ff02::1:ff00:2"), packet.PktMulticast, "33:33:ff:00:00:02"},
		{v6("fd00:198:18:1::1"), packet.PktUnicast, "02:00:00:00:00:01"},
	} {
		var dst [6]byte
		got := r.pktType(c.pkt, dst[:], own)
		if mac := net.HardwareAddr(dst[:]).String(); got != c.want || mac != c.mac {
			t.Errorf("%x: %v %s, want %v %s", c.pkt[16:], got, mac, c.want, c.mac)
		}
	}
}
