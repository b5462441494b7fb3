package nfqbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/packet"
)

// The tests build netlink messages byte by byte as the kernel does
// (net/netfilter/nfnetlink_queue.c, nfqnl_build_packet_message), with the
// layouts of linux/netfilter/nfnetlink_queue.h: struct nlmsghdr (host
// order), struct nfgenmsg, then attributes (struct nlattr, host order;
// values in network order).

type tAttr struct {
	typ uint16
	val []byte
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// tNlmsg builds one netlink message of type typ with the nfgenmsg for queue.
func tNlmsg(typ uint16, seq uint32, queue uint16, attrs ...tAttr) []byte {
	b := make([]byte, 16, 256)
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, 0 /* AF_UNSPEC */, 0 /* NFNETLINK_V0 */)
	b = binary.BigEndian.AppendUint16(b, queue)
	for _, a := range attrs {
		b = binary.NativeEndian.AppendUint16(b, uint16(4+len(a.val)))
		b = binary.NativeEndian.AppendUint16(b, a.typ)
		b = append(b, a.val...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}

// tPacketHdr is struct nfqnl_msg_packet_hdr (7 bytes, packed).
func tPacketHdr(id uint32, proto uint16, hook uint8) tAttr {
	v := binary.BigEndian.AppendUint32(nil, id)
	v = binary.BigEndian.AppendUint16(v, proto)
	return tAttr{attrPacketHdr, append(v, hook)}
}

// tPacketMsg is a packet message as the kernel sends it for a packet on
// INPUT from ifindex 2, with the given L3 payload.
func tPacketMsg(id uint32, l3 []byte) []byte {
	return tNlmsg(msgPacket, 0, 7, tPacketHdr(id, 0x0800, 1), tAttr{attrIfIndexIn, be32(2)},
		tAttr{attrHWAddr, []byte{0, 6, 0, 0, 0x02, 0, 0, 0, 0, 1, 0, 0}}, tAttr{attrPayload, l3})
}

// tErrMsg is an NLMSG_ERROR answering request seq with errno (0: an ACK).
func tErrMsg(seq uint32, errno int32) []byte {
	b := make([]byte, 16, 36)
	binary.NativeEndian.PutUint16(b[4:], nlmsgError)
	b = binary.NativeEndian.AppendUint32(b, uint32(errno))
	req := make([]byte, 16)
	binary.NativeEndian.PutUint32(req, 16)
	binary.NativeEndian.PutUint16(req[4:], msgVerdict)
	binary.NativeEndian.PutUint32(req[8:], seq)
	b = append(b, req...)
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}

func udp4(tb testing.TB, src, dst string, sport, dport uint16, payload []byte) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = u.SetNetworkLayerForChecksum(ip)
	return serialize(tb, ip, u, gopacket.Payload(payload))
}

func syn4(tb testing.TB, src, dst string, sport, dport uint16, seq uint32) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	t := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, SYN: true, Window: 64240}
	_ = t.SetNetworkLayerForChecksum(ip)
	return serialize(tb, ip, t)
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func TestParsePacketAllAttributes(t *testing.T) {
	l3 := udp4(t, "198.18.0.1", "198.18.0.2", 40000, 53, []byte("hello"))
	ct := tNlmsg(0, 0, 0)[:8] // any bytes: NFQA_CT is passed through raw
	ts := binary.BigEndian.AppendUint64(nil, 1_700_000_000)
	ts = binary.BigEndian.AppendUint64(ts, 123456)
	msg := tNlmsg(msgPacket, 0, 7,
		tPacketHdr(0xdeadbeef, 0x0800, 3),
		tAttr{attrIfIndexIn, be32(2)},
		tAttr{attrIfIndexOut, be32(3)},
		tAttr{attrMark, be32(0x1234)},
		tAttr{attrHWAddr, []byte{0, 6, 0, 0, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0, 0}},
		tAttr{attrUID, be32(1000)},
		tAttr{attrGID, be32(100)},
		tAttr{attrCT | nlaFNested, ct},
		tAttr{attrCTInfo, be32(2)},
		tAttr{attrCapLen, be32(9000)},
		tAttr{attrSKBInfo, be32(1)},
		tAttr{attrTimestamp, ts},
		tAttr{attrPayload, l3},
		tAttr{99, []byte{1, 2, 3}}, // unknown attributes are skipped
	)
	ps := parser{names: map[uint32]string{2: "veth0", 3: "eth1"}, now: time.Unix(1, 0)}
	var p Packet
	m, rest, err := nextMsg(msg)
	if err != nil || len(rest) != 0 {
		t.Fatalf("nextMsg: %v, %d bytes left", err, len(rest))
	}
	info, err := ps.parseMsg(m, &p)
	if err != nil {
		t.Fatal(err)
	}
	if info.kind != msgPacket {
		t.Fatalf("kind %#x", info.kind)
	}
	want := Packet{
		ID: 0xdeadbeef, HWProtocol: 0x0800, Hook: packet.HookOutput, L3: l3, OrigLen: 9000,
		InIndex: 2, OutIndex: 3, CT: ct, CTInfo: 2, HasCTInfo: true, SKBInfo: 1,
		Received: time.Unix(1, 0), // the receive time, even when the kernel stamped the packet
		Meta: packet.Meta{
			Time: time.Unix(1_700_000_000, 123456000), Hook: packet.HookOutput, InIface: "veth0", OutIface: "eth1",
			Mark: 0x1234, UID: 1000, GID: 100, HasOwner: true,
			SrcMAC: [6]byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}, HasMAC: true, Local: true,
		},
	}
	if !bytes.Equal(p.L3, want.L3) || !bytes.Equal(p.CT, want.CT) {
		t.Fatalf("L3/CT views differ: %x / %x", p.L3, p.CT)
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Fatalf("parsed\n%+v\nwant\n%+v", p, want)
	}
}

func TestParseDefaults(t *testing.T) {
	// Without NFQA_TIMESTAMP the receive time is used; an unknown ifindex has no name.
	l3 := syn4(t, "198.18.0.1", "198.18.0.2", 1234, 80, 1)
	msg := tNlmsg(msgPacket, 0, 0, tPacketHdr(5, 0x0800, 1), tAttr{attrIfIndexIn, be32(42)}, tAttr{attrPayload, l3})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ps := parser{names: map[uint32]string{}, now: now}
	var p Packet
	if _, err := ps.parseMsg(msg, &p); err != nil {
		t.Fatal(err)
	}
	if !p.Meta.Time.Equal(now) || p.Meta.InIface != "" || p.InIndex != 42 || p.Hook != packet.HookInput || p.Meta.Local {
		t.Fatalf("got %+v", p)
	}
	if p.Meta.HasMAC || p.Meta.HasOwner || p.HasCTInfo || p.OrigLen != 0 {
		t.Fatalf("absent attributes set: %+v", p)
	}
}

func TestParseErrors(t *testing.T) {
	good := tPacketMsg(1, []byte{0x45})
	noHdr := tNlmsg(msgPacket, 0, 0, tAttr{attrPayload, []byte{0x45}})
	shortHdr := tNlmsg(msgPacket, 0, 0, tAttr{attrPacketHdr, []byte{0, 0, 0, 1}})
	badAttr := append([]byte(nil), good...)
	binary.NativeEndian.PutUint16(badAttr[20:], 200) // first attribute claims 200 bytes
	for _, tc := range []struct {
		name string
		buf  []byte
		next bool // the error comes from nextMsg
		want string
	}{
		{"short nlmsghdr", good[:10], true, "need a 16-byte header"},
		{"nlmsg_len past end", good[:len(good)-4], true, "nlmsg_len"},
		{"nlmsg_len below header", append([]byte{4, 0, 0, 0}, good[4:]...), true, "nlmsg_len 4"},
		{"no nfgenmsg", tNlmsg(msgPacket, 0, 0)[:18], true, "nlmsg_len"},
		{"attribute past end", badAttr, false, "attribute 1 length 200"},
		{"no packet header", noHdr, false, "without NFQA_PACKET_HDR"},
		{"short packet header", shortHdr, false, "NFQA_PACKET_HDR of 4 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps parser
			var p Packet
			msg, _, err := nextMsg(tc.buf)
			if !tc.next {
				if err != nil {
					t.Fatalf("nextMsg: %v", err)
				}
				_, err = ps.parseMsg(msg, &p)
			}
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	var ps parser
	var p Packet
	if _, err := ps.parseMsg(noHdr[:18], &p); !errors.Is(err, ErrShort) {
		t.Fatalf("truncated packet message: %v", err)
	}
}

// decodeVerdicts splits a verdict datagram into (type, verdict, id, mark) tuples.
type tVerdict struct {
	typ     uint16
	verdict Action
	id      uint32
	mark    uint32
	hasMark bool
	queue   uint16
}

func decodeVerdicts(t *testing.T, b []byte) []tVerdict {
	t.Helper()
	var out []tVerdict
	for len(b) > 0 {
		msg, rest, err := nextMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		b = rest
		v := tVerdict{typ: binary.NativeEndian.Uint16(msg[4:]), queue: binary.BigEndian.Uint16(msg[18:])}
		if f := binary.NativeEndian.Uint16(msg[6:]); f != nlmFRequest {
			t.Fatalf("flags %#x", f)
		}
		for a := msg[20:]; len(a) >= 4; {
			l := int(binary.NativeEndian.Uint16(a))
			switch binary.NativeEndian.Uint16(a[2:]) {
			case attrVerdictHdr:
				v.verdict = Action(binary.BigEndian.Uint32(a[4:]))
				v.id = binary.BigEndian.Uint32(a[8:])
			case attrMark:
				v.mark, v.hasMark = binary.BigEndian.Uint32(a[4:]), true
			}
			a = a[align4(l):]
		}
		out = append(out, v)
	}
	return out
}

func TestEncoder(t *testing.T) {
	type in struct {
		id uint32
		v  Verdict
	}
	acc, drop := Verdict{Action: Accept}, Verdict{Action: Drop}
	for _, tc := range []struct {
		name string
		in   []in
		want []tVerdict
	}{
		{"all accept: one batch message", []in{{10, acc}, {11, acc}, {12, acc}},
			[]tVerdict{{typ: msgVerdictBat, verdict: Accept, id: 12}}},
		{"drop in the middle goes first", []in{{10, acc}, {11, drop}, {12, acc}},
			[]tVerdict{{typ: msgVerdict, verdict: Drop, id: 11}, {typ: msgVerdictBat, verdict: Accept, id: 12}}},
		{"trailing drops: batch only up to the last accept", []in{{10, acc}, {11, drop}, {12, drop}},
			[]tVerdict{{typ: msgVerdict, verdict: Drop, id: 11}, {typ: msgVerdict, verdict: Drop, id: 12},
				{typ: msgVerdictBat, verdict: Accept, id: 10}}},
		{"only drops: no batch message", []in{{7, drop}, {8, drop}},
			[]tVerdict{{typ: msgVerdict, verdict: Drop, id: 7}, {typ: msgVerdict, verdict: Drop, id: 8}}},
		{"mark is sent per packet", []in{{1, Verdict{Action: Accept, Mark: 0x10, SetMark: true}}, {2, acc}},
			[]tVerdict{{typ: msgVerdict, verdict: Accept, id: 1, mark: 0x10, hasMark: true},
				{typ: msgVerdictBat, verdict: Accept, id: 2}}},
		{"id wrap: highest in sequence order", []in{{0xfffffffe, acc}, {0xffffffff, acc}, {1, acc}},
			[]tVerdict{{typ: msgVerdictBat, verdict: Accept, id: 1}}},
		{"repeat per packet", []in{{3, Verdict{Action: Repeat}}},
			[]tVerdict{{typ: msgVerdict, verdict: Repeat, id: 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEncoder(7, 8)
			for _, x := range tc.in {
				e.add(x.id, x.v)
			}
			got := decodeVerdicts(t, e.finish())
			for i := range tc.want {
				tc.want[i].queue = 7
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("message %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			e.reset()
			if e.finish() != nil {
				t.Fatal("reset encoder has pending verdicts")
			}
		})
	}
}

func TestConfigMsg(t *testing.T) {
	cfg := Config{Queue: 513, MaxLen: 1000, CopyRange: 0xfffb, FailOpen: true, UIDGID: true}
	b := configMsg(9, cfg.Queue, cfgCmdBind, true, &cfg)
	if l := binary.NativeEndian.Uint32(b); int(l) != len(b) {
		t.Fatalf("nlmsg_len %d, message %d bytes", l, len(b))
	}
	if typ, fl := binary.NativeEndian.Uint16(b[4:]), binary.NativeEndian.Uint16(b[6:]); typ != msgConfig || fl != nlmFRequest|nlmFAck {
		t.Fatalf("type %#x flags %#x", typ, fl)
	}
	if q := binary.BigEndian.Uint16(b[18:]); q != 513 {
		t.Fatalf("res_id %d", q)
	}
	got := map[uint16][]byte{}
	var order []uint16
	for a := b[20:]; len(a) > 0; {
		l := int(binary.NativeEndian.Uint16(a))
		typ := binary.NativeEndian.Uint16(a[2:])
		got[typ] = a[4:l]
		order = append(order, typ)
		a = a[align4(l):]
	}
	want := map[uint16][]byte{
		cfgCmd:         {cfgCmdBind, 0, 0, 0},
		cfgParams:      {0, 0, 0xff, 0xfb, copyPacket},
		cfgQueueMaxLen: be32(1000),
		cfgMask:        be32(FlagFailOpen | FlagConntrack | FlagGSO | FlagUIDGID),
		cfgFlags:       be32(FlagFailOpen | FlagUIDGID),
	}
	if len(order) != 5 || order[0] != cfgCmd {
		t.Fatalf("attribute order %v: the command must come first", order)
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Errorf("attribute %d = %x, want %x", k, got[k], v)
		}
	}
	un := configMsg(10, 513, cfgCmdUnbind, false, &cfg)
	if len(un) != 28 || un[24] != cfgCmdUnbind {
		t.Fatalf("unbind message %x", un)
	}
}

// replayQueue is a Queue without a socket: the receive buffers are filled
// with recorded messages and verdict datagrams go to sent.
type replayQueue struct {
	*Queue
	sent [][]byte
}

func newReplayQueue(cfg Config, names map[uint32]string) *replayQueue {
	cfg.defaults()
	r := &replayQueue{Queue: &Queue{cfg: cfg, fd: -1}}
	r.initBuffers(names)
	r.send = func(b []byte) error {
		r.sent = append(r.sent, append([]byte(nil), b...))
		return nil
	}
	return r
}

// load copies datagrams into the receive buffers as recvmmsg would.
func (q *Queue) load(datagrams [][]byte) int {
	for i, d := range datagrams {
		n := copy(q.bufs[i], d)
		q.hdrs[i].Len = uint32(n)
		q.hdrs[i].Hdr.Flags = 0
		if n < len(d) {
			q.hdrs[i].Hdr.Flags = 0x20 // MSG_TRUNC
		}
	}
	return len(datagrams)
}

func TestProcessBatch(t *testing.T) {
	// Datagrams: packets 1..6 (UDP to 53 and 9 alternating), an ACK and a
	// kernel error in between, and a datagram holding two packet messages.
	var dg [][]byte
	for id := uint32(1); id <= 4; id++ {
		port := uint16(53)
		if id%2 == 0 {
			port = 9
		}
		dg = append(dg, tPacketMsg(id, udp4(t, "198.18.0.1", "198.18.0.2", 40000, port, nil)))
	}
	dg = append(dg, tErrMsg(77, 0), tErrMsg(78, -2))
	two := append(tPacketMsg(5, udp4(t, "198.18.0.1", "198.18.0.2", 40000, 53, nil)),
		tPacketMsg(6, udp4(t, "198.18.0.1", "198.18.0.2", 40000, 9, nil))...)
	dg = append(dg, two, []byte{1, 2, 3}) // and a runt
	q := newReplayQueue(Config{Queue: 7, Batch: 8, VerdictBatch: 100}, map[uint32]string{2: "veth0"})
	var seen []uint32
	h := func(pkts []Packet, vs []Verdict) {
		for i := range pkts {
			seen = append(seen, pkts[i].ID)
			if pkts[i].Meta.InIface != "veth0" || !pkts[i].Meta.HasMAC || pkts[i].Meta.SrcMAC[5] != 1 {
				t.Errorf("packet %d meta %+v", pkts[i].ID, pkts[i].Meta)
			}
			if vs[i].Action != Accept {
				t.Errorf("verdict not preset to accept: %v", vs[i])
			}
			if binary.BigEndian.Uint16(pkts[i].L3[22:]) == 9 {
				vs[i].Action = Drop
			}
		}
	}
	if err := q.process(q.load(dg), h); err != nil {
		t.Fatal(err)
	}
	if len(q.sent) != 0 {
		t.Fatalf("sent before the socket was empty or the batch full: %d", len(q.sent))
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	if want := []uint32{1, 2, 3, 4, 5, 6}; !equalU32(seen, want) {
		t.Fatalf("handler saw %v, want %v", seen, want)
	}
	if len(q.sent) != 1 {
		t.Fatalf("%d datagrams sent, want 1", len(q.sent))
	}
	got := decodeVerdicts(t, q.sent[0])
	want := []tVerdict{
		{typ: msgVerdict, verdict: Drop, id: 2, queue: 7}, {typ: msgVerdict, verdict: Drop, id: 4, queue: 7},
		{typ: msgVerdict, verdict: Drop, id: 6, queue: 7}, {typ: msgVerdictBat, verdict: Accept, id: 5, queue: 7},
	}
	if len(got) != len(want) {
		t.Fatalf("verdicts %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdict %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	st := q.Stats()
	if st.Packets != 6 || st.Accepted != 3 || st.Dropped != 3 || st.NetlinkErrs != 1 || st.LastErrno != -2 || st.BadMessages != 1 || st.VerdictSends != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestProcessTruncatedAndFullBatch(t *testing.T) {
	// A message cut by a small receive buffer still yields its id; more
	// packets than the packet array holds are handed over in several calls,
	// and VerdictBatch forces a send.
	q := newReplayQueue(Config{Queue: 1, Batch: 4, VerdictBatch: 4, MsgBuf: 80}, nil)
	var dg [][]byte
	for id := uint32(1); id <= 4; id++ {
		dg = append(dg, tPacketMsg(id, udp4(t, "198.18.0.1", "198.18.0.2", 1, 2, make([]byte, 100))))
	}
	calls := 0
	h := func(pkts []Packet, vs []Verdict) {
		calls++
		for i := range pkts {
			// 80-byte buffer: 16 + 4 header, 12 packet header, 8 ifindex,
			// 16 hwaddr, 4 payload attribute header: 20 bytes of L3 arrive.
			if !pkts[i].Truncated || pkts[i].ID == 0 || len(pkts[i].L3) != 20 || pkts[i].L3[0] != 0x45 {
				t.Errorf("packet %+v", pkts[i])
			}
		}
	}
	if err := q.process(q.load(dg), h); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || len(q.sent) != 1 {
		t.Fatalf("%d handler calls, %d sends", calls, len(q.sent))
	}
	if st := q.Stats(); st.Truncated != 4 || st.Packets != 4 {
		t.Fatalf("stats %+v", st)
	}
	if v := decodeVerdicts(t, q.sent[0]); len(v) != 1 || v[0].id != 4 || v[0].typ != msgVerdictBat {
		t.Fatalf("verdicts %+v", v)
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseKernelStats(t *testing.T) {
	text := "    7  12345     3 2 65535     10     4      1000 1\n  8 0 0 2 65535 0 0 0 1\n"
	m, err := ParseKernelStats(text)
	if err != nil {
		t.Fatal(err)
	}
	want := KernelStats{Queue: 7, PortID: 12345, Waiting: 3, CopyMode: 2, CopyRange: 65535, QueueDropped: 10, UserDropped: 4, IDSequence: 1000}
	if m[7] != want || len(m) != 2 {
		t.Fatalf("got %+v", m)
	}
	if _, err := ParseKernelStats("1 2 3\n"); err == nil {
		t.Fatal("short line accepted")
	}
	if _, err := ParseKernelStats("1 2 3 4 5 6 x 8 1\n"); err == nil {
		t.Fatal("non-number accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(tPacketMsg(1, []byte{0x45, 0, 0, 20}))
	f.Add(tErrMsg(3, -1))
	f.Add(append(tPacketMsg(2, nil), tPacketMsg(3, []byte{1})...))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps := parser{names: map[uint32]string{}}
		var p Packet
		for len(b) > 0 {
			msg, rest, err := nextMsg(b)
			if err != nil {
				return
			}
			b = rest
			if _, err := ps.parseMsg(msg, &p); err == nil && len(p.L3) > len(msg) {
				t.Fatal("payload view larger than the message")
			}
		}
	})
}
