package engine

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
)

// offTCP is an IPv4 TCP segment src:sport → dst:dport with the given flags.
func offTCP(t testing.TB, src, dst string, sport, dport uint16, seq, ack uint32, syn, isAck bool) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	tc := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack, SYN: syn, ACK: isAck, Window: 64240}
	_ = tc.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tc); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// TestQueueHandlerOffload: with offload on, a packet the rules accept while
// its flow is ESTABLISHED in filterd's conntrack is verdicted NF_REPEAT with
// the offload mark OR-ed into its nfmark under the mask; NEW packets, drops,
// packets already carrying the mark, and every packet with offload off or no
// mark sender get their plain verdict.
func TestQueueHandlerOffload(t *testing.T) {
	rules := compileForBench(t, `*filter
:INPUT DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p tcp --dport 22 --syn -j ACCEPT
COMMIT
`)
	const (
		cli = "198.18.1.2"
		srv = "198.18.1.1"
	)
	type sent struct {
		id      uint32
		verdict int
		mark    uint32
		setMark bool
	}
	type step struct {
		name string
		hook packet.Hook
		mark uint32
		l3   []byte
		want sent
	}
	in, out := packet.HookInput, packet.HookOutput
	const nfAccept, nfDrop, nfRepeat = 1, 0, 4
	handshake := func(offloaded bool) []step {
		est := sent{verdict: nfAccept}
		if offloaded {
			est = sent{verdict: nfRepeat, mark: 0x40000005, setMark: true}
		}
		estAck := est
		if offloaded {
			estAck.mark = 0x40000000
		}
		return []step{
			{"SYN (NEW)", in, 0, offTCP(t, cli, srv, 40000, 22, 100, 0, true, false), sent{verdict: nfAccept}},
			// The reply makes the flow ESTABLISHED: offloaded, the packet's
			// other mark bits (5) kept.
			{"SYN-ACK (ESTABLISHED)", out, 5, offTCP(t, srv, cli, 22, 40000, 900, 101, true, true), est},
			{"ACK (ESTABLISHED)", in, 0, offTCP(t, cli, srv, 40000, 22, 101, 901, false, true), estAck},
			// Already marked: it was repeated and came back (no connmark
			// rules); accepted plainly, no loop.
			{"ACK carrying the mark", in, 0x40000000, offTCP(t, cli, srv, 40000, 22, 101, 901, false, true), sent{verdict: nfAccept}},
			// A NEW connection the rules refuse is dropped, offload or not.
			{"SYN to 23 (NEW, refused)", in, 0, offTCP(t, cli, srv, 40001, 23, 100, 0, true, false), sent{verdict: nfDrop}},
			// An ESTABLISHED packet the rules drop is not offloaded: a
			// mid-stream ACK from an unknown flow is not ESTABLISHED, and
			// INPUT's policy drops it.
			{"stray ACK", in, 0, offTCP(t, "198.18.1.3", srv, 40002, 80, 5, 5, false, true), sent{verdict: nfDrop}},
		}
	}
	for _, tc := range []struct {
		name       string
		offload    Offload
		markSender bool
		offloaded  bool
	}{
		{"offload on", Offload{Mark: 0x40000000, Mask: 0x40000000}, true, true},
		{"offload off", Offload{}, true, false},
		{"no mark sender", Offload{Mark: 0x40000000, Mask: 0x40000000}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng, err := New(Config{Rules: Rules{V4: rules}, Conntrack: conntrack.New(conntrack.Config{})})
			if err != nil {
				t.Fatal(err)
			}
			var got []sent
			h := NewQueueHandler(eng, NFQueueConfig{Logger: slog.New(slog.DiscardHandler), IfaceTTL: time.Hour, Offload: tc.offload}, 0,
				func(id uint32, v int) error { got = append(got, sent{id: id, verdict: v}); return nil })
			if tc.markSender {
				h.SetMarkSender(func(id uint32, v int, mark uint32) error {
					got = append(got, sent{id: id, verdict: v, mark: mark, setMark: true})
					return nil
				})
			}
			steps := handshake(tc.offloaded)
			now := time.Unix(1_700_000_000, 0)
			for i, s := range steps {
				got = got[:0]
				id := uint32(i + 1)
				h.Handle(&QueuedPacket{ID: id, Payload: s.l3, Hook: uint8(s.hook), HasHook: true, Mark: s.mark,
					Received: now.Add(time.Duration(i) * time.Millisecond)})
				want := s.want
				want.id = id
				if len(got) != 1 || got[0] != want {
					t.Errorf("%s: verdicts %+v, want exactly %+v", s.name, got, want)
				}
			}
			wantOff := uint64(0)
			if tc.offloaded {
				wantOff = 2
			}
			st := h.Stats()
			if n := st.Offloaded.Load(); n != wantOff {
				t.Errorf("Offloaded = %d, want %d", n, wantOff)
			}
			// Offloaded packets are accepted packets too.
			if a, d := st.Packets[Accept].Load(), st.Packets[Drop].Load(); a != 4 || d != 2 {
				t.Errorf("accepted %d dropped %d, want 4 and 2", a, d)
			}
		})
	}
}

// TestOffloadMark: the mark an offloaded packet gets keeps the bits outside
// the mask, and a packet carrying the mark is recognised.
func TestOffloadMark(t *testing.T) {
	for _, c := range []struct {
		o             Offload
		old, want     uint32
		alreadyMarked bool
	}{
		{Offload{Mark: 0x40000000, Mask: 0x40000000}, 0, 0x40000000, false},
		{Offload{Mark: 0x40000000, Mask: 0x40000000}, 0x1234, 0x40001234, false},
		{Offload{Mark: 0x40000000, Mask: 0x40000000}, 0x40000001, 0x40000001, true},
		{Offload{Mark: 0x100, Mask: 0xf00}, 0x5a5, 0x1a5, false},
		{Offload{Mark: 0x100, Mask: 0xf00}, 0x1a5, 0x1a5, true},
	} {
		if got := c.o.mark(c.old); got != c.want {
			t.Errorf("%+v.mark(%#x) = %#x, want %#x", c.o, c.old, got, c.want)
		}
		if got := c.o.marked(c.old); got != c.alreadyMarked {
			t.Errorf("%+v.marked(%#x) = %v, want %v", c.o, c.old, got, c.alreadyMarked)
		}
	}
	if (Offload{}).Enabled() {
		t.Error("the zero Offload is enabled")
	}
}
