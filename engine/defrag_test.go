package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// frag4 cuts an IPv4 packet (20-byte header) into fragments at the given
// payload ranges [from, to).
func frag4(pkt []byte, ranges ...[2]int) [][]byte {
	hdr, pl := pkt[:20], pkt[20:]
	var out [][]byte
	for _, r := range ranges {
		b := append(append([]byte(nil), hdr...), pl[r[0]:r[1]]...)
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
		ff := uint16(r[0] / 8)
		if r[1] < len(pl) {
			ff |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:8], ff)
		fixIPv4Checksum(b)
		out = append(out, b)
	}
	return out
}

// frag6 cuts an IPv6 packet (no extension headers) into fragments with a
// Fragment header of the given id.
func frag6(pkt []byte, id uint32, ranges ...[2]int) [][]byte {
	hdr, pl := pkt[:40], pkt[40:]
	var out [][]byte
	for _, r := range ranges {
		fh := make([]byte, 8)
		fh[0] = hdr[6]
		fo := uint16(r[0]/8) << 3
		if r[1] < len(pl) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:4], fo)
		binary.BigEndian.PutUint32(fh[4:8], id)
		b := append(append(append([]byte(nil), hdr...), fh...), pl[r[0]:r[1]]...)
		b[6] = 44
		binary.BigEndian.PutUint16(b[4:6], uint16(len(b)-40))
		out = append(out, b)
	}
	return out
}

type defragStep struct {
	pkt  []byte
	at   time.Duration
	want DefragVerdict
	why  FragDropReason
}

func TestDefragCases(t *testing.T) {
	big4 := udp4(t, bytes.Repeat([]byte("0123456789abcdef"), 250)) // 4000 B payload
	big6 := udp6(t, bytes.Repeat([]byte("fedcba9876543210"), 200)) // 3200 B payload
	f4 := frag4(big4, [2]int{0, 1480}, [2]int{1480, 2960}, [2]int{2960, 4008})
	f6 := frag6(big6, 77, [2]int{0, 1448}, [2]int{1448, 2896}, [2]int{2896, 3208})
	ovl4 := frag4(big4, [2]int{1400, 2960})[0] // starts inside the first fragment
	ovl6 := frag6(big6, 77, [2]int{1400, 2896})[0]
	dup4 := frag4(big4, [2]int{1480, 2000})[0] // wholly inside the second fragment
	odd4 := frag4(big4, [2]int{0, 1485})[0]    // MF with 1485 bytes: trimmed to 1480
	odd6 := frag6(big6, 77, [2]int{0, 1450})[0]
	// "last" fragments (MF clear) covering [8, 16): ending before queued data
	lastEarly4 := func() []byte { b := frag4(big4, [2]int{8, 16})[0]; b[6] &^= 0x20; fixIPv4Checksum(b); return b }()
	lastEarly6 := func() []byte { b := frag6(big6, 77, [2]int{8, 16})[0]; b[43] &^= 1; return b }()
	other4 := func() [][]byte { // same datagram, other id
		b := append([]byte(nil), big4...)
		b[5] ^= 0xff
		fixIPv4Checksum(b)
		return frag4(b, [2]int{0, 1480}, [2]int{1480, 2960}, [2]int{2960, 4008})
	}()
	Q, R, D, N := FragQueued, FragReassembled, FragDropped, NotFragment
	tests := []struct {
		name  string
		cfg   DefragConfig
		steps []defragStep
		// expected afterwards
		reassembled, timedOut, evicted, killed uint64
		pending                                int
	}{
		{"ipv4 in order", DefragConfig{}, []defragStep{{f4[0], 0, Q, 0}, {f4[1], 0, Q, 0}, {f4[2], 0, R, 0}}, 1, 0, 0, 0, 0},
		{"ipv4 reverse order", DefragConfig{}, []defragStep{{f4[2], 0, Q, 0}, {f4[1], 0, Q, 0}, {f4[0], 0, R, 0}}, 1, 0, 0, 0, 0},
		{"ipv6 shuffled", DefragConfig{}, []defragStep{{f6[1], 0, Q, 0}, {f6[2], 0, Q, 0}, {f6[0], 0, R, 0}}, 1, 0, 0, 0, 0},
		{"whole packet passes", DefragConfig{}, []defragStep{{big4, 0, N, 0}, {big6, 0, N, 0}}, 0, 0, 0, 0, 0},
		{"exact duplicate dropped, queue kept", DefragConfig{}, []defragStep{{f4[0], 0, Q, 0}, {f4[0], 0, D, FragDropDuplicate}, {f4[1], 0, Q, 0}, {dup4, 0, D, FragDropDuplicate}, {f4[2], 0, R, 0}}, 1, 0, 0, 0, 0},
		{"ipv4 overlap kills the queue", DefragConfig{}, []defragStep{{f4[0], 0, Q, 0}, {ovl4, 0, D, FragDropOverlap}, {f4[1], 0, Q, 0}, {f4[2], 0, Q, 0}}, 0, 0, 0, 1, 1},
		{"ipv6 overlap kills the queue", DefragConfig{}, []defragStep{{f6[0], 0, Q, 0}, {ovl6, 0, D, FragDropOverlap}, {f6[1], 0, Q, 0}, {f6[2], 0, Q, 0}}, 0, 0, 0, 1, 1},
		{"ipv4 odd MF fragment trimmed to 8", DefragConfig{}, []defragStep{{odd4, 0, Q, 0}, {f4[1], 0, Q, 0}, {f4[2], 0, R, 0}}, 1, 0, 0, 0, 0},
		{"ipv6 odd MF fragment kills the queue", DefragConfig{}, []defragStep{{f6[1], 0, Q, 0}, {odd6, 0, D, FragDropBadLength}, {f6[0], 0, Q, 0}}, 0, 0, 0, 1, 1},
		{"ipv4 last fragment before queued data kills", DefragConfig{}, []defragStep{{f4[0], 0, Q, 0}, {f4[1], 0, Q, 0}, {lastEarly4, 0, D, FragDropBadEnd}, {f4[2], 0, Q, 0}}, 0, 0, 0, 1, 1},
		{"ipv6 last fragment before queued data dropped alone", DefragConfig{}, []defragStep{{f6[0], 0, Q, 0}, {f6[1], 0, Q, 0}, {lastEarly6, 0, D, FragDropBadEnd}, {f6[2], 0, R, 0}}, 1, 0, 0, 0, 0},
		{"timeout by the packet clock", DefragConfig{}, []defragStep{{f4[0], 0, Q, 0}, {f4[1], 29 * time.Second, Q, 0}, {f4[2], 31 * time.Second, Q, 0}}, 0, 1, 0, 0, 1},
		{"just inside the timeout", DefragConfig{}, []defragStep{{f4[0], 0, Q, 0}, {f4[1], 10 * time.Second, Q, 0}, {f4[2], 30 * time.Second, R, 0}}, 1, 0, 0, 0, 0},
		// room for one whole datagram (3 fragments, 6568 bytes charged) only
		{"memory bound evicts the oldest", DefragConfig{HighThresh: 6600},
			[]defragStep{{f4[0], 0, Q, 0}, {other4[0], time.Second, Q, 0}, {other4[1], 2 * time.Second, Q, 0}, {other4[2], 3 * time.Second, R, 0}, {f4[1], 4 * time.Second, Q, 0}}, 1, 0, 1, 0, 1},
		{"fragment larger than the bound", DefragConfig{HighThresh: 1000}, []defragStep{{f4[0], 0, D, FragDropNoMem}}, 0, 0, 0, 0, 0},
		{"ipv4 datagram over 65535", DefragConfig{}, func() []defragStep {
			b := append([]byte(nil), f4[2]...)
			binary.BigEndian.PutUint16(b[6:8], 8180) // offset 65440, last
			fixIPv4Checksum(b)
			return []defragStep{{f4[0], 0, Q, 0}, {b, 0, Q, 0}}
		}(), 0, 0, 0, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			df := NewDefrag(tc.cfg)
			dec := NewDecoder()
			base := time.Unix(1700000000, 0)
			for i, st := range tc.steps {
				var p packet.Packet
				p.Time = base.Add(st.at)
				if err := dec.Decode(st.pkt, &p); err != nil {
					t.Fatalf("step %d: decode: %v", i, err)
				}
				res := df.Add(&p)
				if res.Verdict != st.want || res.Reason != st.why {
					t.Fatalf("step %d: %v/%v, want %v/%v (stats %+v)", i, res.Verdict, res.Reason, st.want, st.why, df.Stats())
				}
				if res.Verdict == FragReassembled {
					checkReassembled(t, dec, res.Datagram, p.Family)
				}
			}
			s := df.Stats()
			if s.Reassembled != tc.reassembled || s.TimedOut != tc.timedOut || s.Evicted != tc.evicted || s.Killed != tc.killed {
				t.Errorf("stats %+v", s)
			}
			if q, _ := df.Pending(); q != tc.pending {
				t.Errorf("%d queues pending, want %d", q, tc.pending)
			}
			if q, _ := df.Pending(); q == 0 && df.Memory() != 0 {
				t.Errorf("memory %d with no queues", df.Memory())
			}
		})
	}
}

// checkReassembled decodes a reassembled datagram: it must be whole, not a
// fragment, and its L4 checksum (computed by gopacket over the original
// datagram) must verify.
func checkReassembled(t *testing.T, dec *Decoder, b []byte, fam packet.Family) *packet.Packet {
	t.Helper()
	var p packet.Packet
	if err := dec.Decode(b, &p); err != nil {
		t.Fatalf("reassembled datagram: %v", err)
	}
	if p.Family != fam || p.Fragment || p.MoreFrags || p.HasFragHdr || p.Checksum != packet.ChecksumGood || p.Truncated {
		t.Fatalf("reassembled datagram: %+v", p)
	}
	return &p
}

// TestDefragCapture reassembles the real fragments of
// captured_ip_fragments_v4_v6.pcap: IPv4 ping -s 3000 and UDP 4000 B,
// IPv6 ping6 -s 3000 and UDP 3500 B, each way, twice; 3 fragments each.
func TestDefragCapture(t *testing.T) {
	r, err := OpenPcapFile(filepath.Join(pcapDir, "captured_ip_fragments_v4_v6.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	df := NewDefrag(DefragConfig{})
	dec, dec2 := NewDecoder(), NewDecoder()
	var f Frame
	var p packet.Packet
	got := map[string]int{}
	for {
		if err := r.Next(&f); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		f.FillMeta(&p.Meta)
		if err := dec.Decode(f.L3, &p); err != nil {
			t.Fatalf("packet %d: %v", f.Num, err)
		}
		res := df.Add(&p)
		switch res.Verdict {
		case FragReassembled:
			q := checkReassembled(t, dec2, res.Datagram, p.Family)
			if res.Fragments != 3 {
				t.Errorf("packet %d completed a datagram of %d fragments", f.Num, res.Fragments)
			}
			got[fmt.Sprintf("%v proto %d len %d", q.Family, q.Proto, q.Length)]++
		case FragQueued:
		default:
			t.Errorf("packet %d: %v %v", f.Num, res.Verdict, res.Reason)
		}
	}
	want := map[string]int{
		"ipv4 proto 1 len 3028":  4, // 20 + 8 + 3000, request and reply, twice
		"ipv4 proto 17 len 4028": 4, // 20 + 8 + 4000
		"ipv6 proto 58 len 3048": 4, // 40 + 8 + 3000
		"ipv6 proto 17 len 3548": 4, // 40 + 8 + 3500
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reassembled %v\nwant        %v", got, want)
	}
	if s := df.Stats(); s.Fragments != 48 || s.Reassembled != 16 || s.DroppedTotal() != 0 || df.Memory() != 0 {
		t.Errorf("stats %+v memory %d", s, df.Memory())
	}
}

// TestDefragIncomplete: zeek_ipv4_fragmented_tcp.pcap has 5 fragments with
// DF+MF and no last fragment: nothing comes out, and the queue times out.
func TestDefragIncomplete(t *testing.T) {
	r, err := OpenPcapFile(filepath.Join(pcapDir, "zeek_ipv4_fragmented_tcp.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	df := NewDefrag(DefragConfig{})
	dec := NewDecoder()
	var f Frame
	var p packet.Packet
	var first time.Time
	for r.Next(&f) == nil {
		f.FillMeta(&p.Meta)
		if err := dec.Decode(f.L3, &p); err != nil {
			t.Fatal(err)
		}
		if res := df.Add(&p); res.Verdict != FragQueued {
			t.Fatalf("packet %d: %v %v", f.Num, res.Verdict, res.Reason)
		}
		if f.Num == 1 {
			first = p.Time
		}
	}
	if q, n := df.Pending(); q != 1 || n != 5 {
		t.Fatalf("pending %d queues %d fragments", q, n)
	}
	// the queue lives 30 s from its first fragment
	if n := df.Expire(first.Add(DefaultFragTimeout)); n != 0 {
		t.Errorf("expired too early")
	}
	if n := df.Expire(first.Add(DefaultFragTimeout + time.Millisecond)); n != 1 {
		t.Errorf("expired %d queues", n)
	}
	if s := df.Stats(); s.TimedOut != 1 || s.Discarded != 5 || s.Reassembled != 0 || df.Memory() != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestDefragNoAllocs(t *testing.T) {
	big := udp4(t, bytes.Repeat([]byte("x"), 3000))
	frags := frag4(big, [2]int{0, 1480}, [2]int{1480, 2960}, [2]int{2960, 3008})
	df := NewDefrag(DefragConfig{})
	dec := NewDecoder()
	ps := make([]packet.Packet, len(frags))
	for i := range frags {
		if err := dec.Decode(frags[i], &ps[i]); err != nil {
			t.Fatal(err)
		}
	}
	n := testing.AllocsPerRun(100, func() {
		for i := range ps {
			df.Add(&ps[i])
		}
	})
	if n != 0 {
		t.Errorf("%v allocs per datagram", n)
	}
	if df.Stats().Reassembled < 100 {
		t.Errorf("stats %+v", df.Stats())
	}
}
