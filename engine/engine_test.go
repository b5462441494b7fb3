package engine

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

var serverAddr = netip.MustParseAddr("198.18.2.2")

func accept() ruleset.Target { return ruleset.Target{Kind: ruleset.TargetAccept} }

// statefulTable is INPUT policy DROP, accepting ESTABLISHED,RELATED and new
// TCP connections to port 8080; OUTPUT and FORWARD are absent (ACCEPT).
func statefulTable() *ruleset.Table {
	return &ruleset.Table{Name: "filter", Family: packet.IPv4, Chains: []*ruleset.Chain{{
		Name: "INPUT", Builtin: true, Hook: packet.HookInput, Policy: ruleset.PolicyDrop,
		Rules: []*ruleset.Rule{
			{Proto: ruleset.ProtoMatch{Any: true}, Matches: []ruleset.Match{&ruleset.StateMatch{States: packet.CTEstablished | packet.CTRelated}}, Target: accept()},
			{Proto: ruleset.ProtoMatch{Num: packet.ProtoTCP}, Matches: []ruleset.Match{&ruleset.TCPMatch{
				Dport: ruleset.PortMatch{Set: true, Lo: 8080, Hi: 8080},
				Flags: ruleset.TCPFlagsMatch{Set: true, Mask: packet.TCPSyn | packet.TCPRst | packet.TCPAck | packet.TCPFin, Comp: packet.TCPSyn},
			}}, Target: accept()},
		},
	}}}
}

func newTestEngine(t *testing.T, tbl *ruleset.Table, local ...netip.Prefix) *Engine {
	t.Helper()
	var rules Rules
	if tbl != nil {
		c, err := ruleset.Compile(tbl, ruleset.CompileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rules.V4 = c
	}
	e, err := New(Config{Rules: rules, Conntrack: conntrack.New(conntrack.Config{HashSeed: 1}), Local: local})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// eachFrame calls fn for every IP frame of a testdata pcap.
func eachFrame(t *testing.T, name string, fn func(f *Frame)) {
	t.Helper()
	r, err := OpenPcapFile(filepath.Join(pcapDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var f Frame
	for {
		err := r.Next(&f)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Skip == SkipNone {
			fn(&f)
		}
	}
}

// eachCapturedFrame calls fn for every IP frame of every testdata capture
// (fn gets the capture's base name); there must be at least 20 of them.
func eachCapturedFrame(t *testing.T, fn func(name string, f *Frame)) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	if len(files) < 20 {
		t.Fatalf("only %d captures in %s", len(files), pcapDir)
	}
	for _, path := range files {
		name := filepath.Base(path)
		eachFrame(t, name, func(f *Frame) { fn(name, f) })
	}
}

// TestEngineHTTPStateful replays four real HTTP connections against a
// stateful INPUT policy: every packet passes, each SYN is NEW and matched by
// the port rule, every other packet to the server is ESTABLISHED, and the
// server's packets leave by OUTPUT's policy. The expected split is computed
// independently with gopacket's full decoder.
func TestEngineHTTPStateful(t *testing.T) {
	const name = "captured_http_ipv4_get.pcap"
	var wantSYN, wantIn, wantOut int
	eachFrame(t, name, func(f *Frame) {
		p := gopacket.NewPacket(f.L3, layers.LayerTypeIPv4, gopacket.Default)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		switch {
		case ip.DstIP.Equal(serverAddr.AsSlice()) && tcp.SYN && !tcp.ACK:
			wantSYN++
		case ip.DstIP.Equal(serverAddr.AsSlice()):
			wantIn++
		default:
			wantOut++
		}
	})
	if wantSYN != 4 {
		t.Fatalf("capture has %d SYNs to the server, the MANIFEST says 4 connections", wantSYN)
	}
	e := newTestEngine(t, statefulTable(), netip.PrefixFrom(serverAddr, 32))
	w := e.NewWorker()
	var got [4]int
	states := map[packet.CTState]int{}
	eachFrame(t, name, func(f *Frame) {
		var m packet.Meta
		f.FillMeta(&m)
		v := w.Process(f.L3, m)
		got[v.Action]++
		states[w.Packet().CTState]++
		if v.Action != Accept {
			t.Errorf("packet %d: %v (%v), want ACCEPT", f.Num, v.Action, w.Packet().CTState)
		}
	})
	snap := e.Rules().V4.Snapshot()
	in := snap.Chain("INPUT")
	if n := in.Rules[0].Counters.Packets; n != uint64(wantIn) {
		t.Errorf("ESTABLISHED,RELATED rule: %d packets, want %d", n, wantIn)
	}
	if n := in.Rules[1].Counters.Packets; n != uint64(wantSYN) {
		t.Errorf("--syn dport 8080 rule: %d packets, want %d", n, wantSYN)
	}
	if in.Counters.Packets != 0 {
		t.Errorf("INPUT policy DROP counted %d packets, want 0", in.Counters.Packets)
	}
	if out, ok := e.Rules().V4.ChainCounters("OUTPUT"); !ok || out.Packets != uint64(wantOut) {
		t.Errorf("OUTPUT policy: %+v, want %d packets", out, wantOut)
	}
	if states[packet.CTNew] != wantSYN || states[packet.CTInvalid] != 0 {
		t.Errorf("states %v: want %d NEW and no INVALID", states, wantSYN)
	}
}

// TestEngineDroppedSYNLeavesNoEntry checks confirmation: a flow whose first
// packet the rules drop leaves nothing in the conntrack table, while the
// same SYNs accepted leave one entry each.
func TestEngineDroppedSYNLeavesNoEntry(t *testing.T) {
	for _, tt := range []struct {
		name        string
		rules       int // how many of statefulTable's INPUT rules to keep
		want        Action
		wantEntries int
	}{
		{"dropped", 1, Drop, 0},
		{"accepted", 2, Accept, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tbl := statefulTable()
			tbl.Chains[0].Rules = tbl.Chains[0].Rules[:tt.rules]
			e := newTestEngine(t, tbl, netip.PrefixFrom(serverAddr, 32))
			w := e.NewWorker()
			syns := 0
			eachFrame(t, "captured_http_ipv4_get.pcap", func(f *Frame) {
				var m packet.Meta
				f.FillMeta(&m)
				// Only the clients' SYNs: what a SYN flood is made of.
				if f.L3[9] != packet.ProtoTCP || f.L3[20+13] != packet.TCPSyn {
					return
				}
				syns++
				if v := w.Process(f.L3, m); v.Action != tt.want {
					t.Errorf("packet %d: %v, want %v", f.Num, v.Action, tt.want)
				}
			})
			if syns != 4 {
				t.Fatalf("%d SYNs, want 4", syns)
			}
			if n := e.Conntrack().Len(); n != tt.wantEntries {
				t.Errorf("%d conntrack entries, want %d", n, tt.wantEntries)
			}
		})
	}
}

// TestEngineHooks checks the hook and interfaces the engine picks from
// --local addresses, as the kernel's routing would.
func TestEngineHooks(t *testing.T) {
	local := []netip.Prefix{netip.MustParsePrefix("198.18.2.2/32"), netip.MustParsePrefix("198.18.2.3/32")}
	tests := []struct {
		src, dst  string
		hook      packet.Hook
		in, out   string
		wantLocal bool
	}{
		{"198.18.1.2", "198.18.2.2", packet.HookInput, "eth0", "", false},
		{"198.18.2.2", "198.18.1.2", packet.HookOutput, "", "eth0", true},
		{"198.18.1.2", "198.18.3.9", packet.HookForward, "eth0", "eth1", false},
		{"198.18.2.2", "198.18.2.3", packet.HookInput, "lo", "", true}, // OUTPUT then INPUT
	}
	for _, tt := range tests {
		e := newTestEngine(t, statefulTable(), local...)
		w := e.NewWorker()
		pkt := udpDatagram(t, tt.src, tt.dst)
		v := w.Process(pkt, packet.Meta{Time: time.Unix(1, 0)})
		p := w.Packet()
		if v.Hook != tt.hook || p.InIface != tt.in || p.OutIface != tt.out || p.Local != tt.wantLocal {
			t.Errorf("%s -> %s: hook %v in %q out %q local %v; want %v %q %q %v", tt.src, tt.dst, v.Hook, p.InIface, p.OutIface, p.Local, tt.hook, tt.in, tt.out, tt.wantLocal)
		}
	}
}

// udpDatagram builds a valid IPv4 UDP datagram.
func udpDatagram(t *testing.T, src, dst string) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
	u := &layers.UDP{SrcPort: 40000, DstPort: 53}
	if err := u.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, ip, u, gopacket.Payload("query")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestEngineMalformed: packets whose IP header is unusable are dropped as
// the kernel's IP layer drops them, before tracking; none panics.
func TestEngineMalformed(t *testing.T) {
	good := udpDatagram(t, "198.18.1.2", "198.18.2.2")
	badSum := append([]byte(nil), good...)
	badSum[10] ^= 0xff
	tests := map[string][]byte{
		"empty":           {},
		"version 5":       {0x50, 0, 0, 20},
		"short header":    good[:12],
		"bad ip checksum": badSum,
	}
	e := newTestEngine(t, statefulTable(), netip.PrefixFrom(serverAddr, 32))
	w := e.NewWorker()
	for name, b := range tests {
		v := w.Process(b, packet.Meta{Time: time.Unix(1, 0)})
		if v.Action != Drop || v.Reason != ReasonMalformed {
			t.Errorf("%s: %v/%v, want DROP/malformed", name, v.Action, v.Reason)
		}
	}
	if n := e.Conntrack().Len(); n != 0 {
		t.Errorf("%d conntrack entries from malformed packets", n)
	}
}

func TestAppendLogLine(t *testing.T) {
	e := newTestEngine(t, nil, netip.PrefixFrom(serverAddr, 32))
	w := e.NewWorker()
	l2 := []byte{2, 0, 0xc6, 0x12, 2, 2, 2, 0, 0xc6, 0x12, 1, 2, 8, 0}
	w.Process(udpDatagram(t, "198.18.1.2", "198.18.2.2"), packet.Meta{Time: time.Unix(1, 0), L2: l2})
	got := string(AppendLogLine(nil, w.Packet(), &ruleset.LogOptions{Prefix: "Dropped: "}, l2))
	want := "Dropped: IN=eth0 OUT= MAC=02:00:c6:12:02:02:02:00:c6:12:01:02:08:00 SRC=198.18.1.2 DST=198.18.2.2 LEN=33 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=UDP SPT=40000 DPT=53 LEN=13 "
	if got != want {
		t.Errorf("log line\n got %q\nwant %q", got, want)
	}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = AppendLogLine(buf[:0], w.Packet(), &ruleset.LogOptions{Prefix: "x"}, l2) }); n != 0 {
		t.Errorf("AppendLogLine allocates %v times", n)
	}
	if !strings.HasSuffix(got, " ") {
		t.Error("the kernel's lines end in a space")
	}
}

// TestProcessToReusedVerdict: ProcessTo into one Verdict reused from packet
// to packet (as replay and the NFQUEUE batch driver do) gives, field for
// field, what Process gives on a twin engine: nothing of an earlier verdict
// (a TTL drop's Reason, a rule's Result) survives into a later one.
func TestProcessToReusedVerdict(t *testing.T) {
	fwd := v4(layers.IPProtocolUDP)
	fwd.DstIP, fwd.TTL = net.IP{198, 18, 5, 5}, 1
	u := &layers.UDP{SrcPort: 40000, DstPort: 53}
	u.SetNetworkLayerForChecksum(fwd)
	ttlOut := serialize(t, fwd, u, gopacket.Payload([]byte("q")))
	pkts := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"forwarded, TTL 1", ttlOut, ReasonTTLExpired},
		{"SYN to 8080 (rule 2)", tcp4(t, nil), ReasonRules},
		{"IPv6, no rules", udp6(t, nil), ReasonRules},
		{"UDP to the server (policy DROP)", udp4(t, nil), ReasonRules},
		{"forwarded, TTL 1 again", ttlOut, ReasonTTLExpired},
		{"IPv6 again", udp6(t, nil), ReasonRules},
		{"SYN again", tcp4(t, nil), ReasonRules},
	}
	local := netip.PrefixFrom(serverAddr, 32)
	reused, fresh := newTestEngine(t, statefulTable(), local).NewWorker(), newTestEngine(t, statefulTable(), local).NewWorker()
	var v Verdict
	for i, p := range pkts {
		m := packet.Meta{Time: time.Unix(1700000000, 0).Add(time.Duration(i) * time.Second)}
		reused.ProcessTo(p.b, &m, &v)
		want := fresh.Process(p.b, m)
		// The twins have tables of their own: chains and rules compare by
		// name and number.
		name := func(c *ruleset.Chain) string {
			if c == nil {
				return ""
			}
			return c.Name
		}
		got, exp := v, want
		got.Result.Chain, exp.Result.Chain, got.Result.Rule, exp.Result.Rule = nil, nil, nil, nil
		if got != exp || name(v.Result.Chain) != name(want.Result.Chain) || (v.Result.Rule == nil) != (want.Result.Rule == nil) {
			t.Errorf("%s: reused %+v, fresh %+v", p.name, v, want)
		}
		if v.Reason != p.want {
			t.Errorf("%s: reason %v, want %v", p.name, v.Reason, p.want)
		}
	}
}
