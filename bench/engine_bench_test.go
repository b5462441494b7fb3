package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// The engine benchmarks run the whole per-packet path (decode → track →
// match → verdict) with the article's rule set, and report ns/pkt, pps and
// allocations. Run them with:
//
//	go test -run '^$' -bench . -benchmem ./bench/

var (
	server     = netip.MustParseAddr("198.18.2.2")
	serverPfx  = []netip.Prefix{netip.PrefixFrom(server, 32)}
	rulesDir   = filepath.Join("..", "testdata", "rules")
	pcapDir    = filepath.Join("..", "testdata", "pcaps")
	benchStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func compileRules(tb testing.TB, name string, logw *engine.LogWriter) *ruleset.Compiled {
	tb.Helper()
	f, diags, err := ruleset.LoadFile(filepath.Join(rulesDir, name), ruleset.LoadOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if diags.HasErrors() || diags.HasUnsupported() {
		tb.Fatalf("%s: %v", name, diags)
	}
	c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{Log: logw.Log, LocalPrefixes: serverPfx})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// newEngine returns an engine with the rules file and a conntrack table of
// max entries (0: the default, 262,144), preallocated when prealloc
// (--ct-prealloc: the table's growth, a block of 256 entries at a time, is
// then not part of what is measured).
func newEngine(tb testing.TB, rules string, max int, prealloc bool) *engine.Engine {
	tb.Helper()
	e, err := engine.New(engine.Config{
		Rules:     engine.Rules{V4: compileRules(tb, rules, engine.NewLogWriter(nil))},
		Conntrack: conntrack.New(conntrack.Config{HashSeed: 1, Max: max, Preallocate: prealloc}),
		Local:     serverPfx,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func report(b *testing.B, pkts int) {
	if b.Elapsed() > 0 && pkts > 0 {
		ns := float64(b.Elapsed().Nanoseconds()) / float64(pkts)
		b.ReportMetric(ns, "ns/pkt")
		b.ReportMetric(1e9/ns, "pps")
	}
}

// adjust updates a 16-bit one's complement checksum at b[off:] for a 32-bit
// field that changed from old to new (RFC 1624).
func adjust(b []byte, off int, old, new uint32) {
	sum := uint32(^binary.BigEndian.Uint16(b[off:]))
	sum += uint32(^uint16(old>>16)) + uint32(^uint16(old))
	sum += new>>16 + new&0xffff
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[off:], ^uint16(sum))
}

// BenchmarkEngineEstablished measures a packet of an established flow: one
// HTTP connection whose client sends 100-byte segments that the server
// acknowledges, sequence numbers advancing, checksums valid.
func BenchmarkEngineEstablished(b *testing.B) {
	for _, rules := range []string{"server.rules", "server-state.rules"} {
		b.Run(rules, func(b *testing.B) {
			e := newEngine(b, rules, 1024, true)
			w := e.NewWorker()
			bl := newBuilder(false)
			client := netip.MustParseAddr("198.18.1.2")
			const cport, sport = 40000, 80
			var c, s uint32 = 1000, 5000
			now := benchStart
			step := func(frame []byte) engine.Verdict {
				now = now.Add(10 * time.Microsecond)
				return w.Process(frame[14:], packet.Meta{Time: now})
			}
			step(bl.tcp(client, server, cport, sport, c, 0, packetSYN, 64240, true, nil))
			step(bl.tcp(server, client, sport, cport, s, c+1, packetSYN|packetACK, 65160, true, nil))
			c, s = c+1, s+1
			if v := step(bl.tcp(client, server, cport, sport, c, s, packetACK, 502, false, nil)); v.Action != engine.Accept {
				b.Fatalf("handshake ACK: %v", v.Action)
			}
			data := bl.tcp(client, server, cport, sport, c, s, packetPSH|packetACK, 502, false, make([]byte, 100))[14:]
			ack := bl.tcp(server, client, sport, cport, s, c, packetACK, 509, false, nil)[14:]
			ip := 20
			// The packets wait in a buffer, as a batch read from a socket or
			// a capture does, written before they are processed: ring holds
			// the next segments of the flow (data, ACK, data, ...) and is
			// refilled, untimed, when used up.
			const pairs = 512
			plen := len(data) + len(ack)
			ring := make([]byte, pairs*plen)
			fill := func() {
				for j := 0; j < pairs; j++ {
					off := j * plen
					copy(ring[off:], data)
					copy(ring[off+len(data):], ack)
					// Advance: next data segment and the ACK for it.
					adjust(data, ip+16, c, c+100)
					binary.BigEndian.PutUint32(data[ip+4:], c+100)
					adjust(ack, ip+16, c+100, c+200)
					binary.BigEndian.PutUint32(ack[ip+8:], c+200)
					c += 100
				}
			}
			fill()
			next := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += 2 {
				if next == pairs {
					b.StopTimer()
					fill()
					next = 0
					b.StartTimer()
				}
				off := next * plen
				next++
				now = now.Add(10 * time.Microsecond)
				if v := w.Process(ring[off:off+len(data)], packet.Meta{Time: now}); v.Action != engine.Accept || w.Packet().CTState != packet.CTEstablished {
					b.Fatalf("data segment %d: %v %v", i, v.Action, w.Packet().CTState)
				}
				w.Process(ring[off+len(data):off+plen], packet.Meta{Time: now})
			}
			report(b, b.N)
		})
	}
}

// BenchmarkEngineNewFlow measures a packet that creates a flow: SYNs to port
// 80 from distinct sources (inside 198.18.0.0/15), accepted and confirmed,
// into the default table (262,144 entries). "full": after the first 262,144
// SYNs every new flow evicts an unassured one (early drop), as in a SYN
// flood at the table's capacity. "room": the table never holds more than
// half of that (it is replaced, untimed, by an empty one every 131,072
// SYNs), as while a flood fills it or on a busy server. "single" hands the
// engine one packet at a time; "batch=16" reads 16 SYNs ahead and calls
// Worker.Prefetch for them first, as replay and the NFQUEUE batch driver do.
func BenchmarkEngineNewFlow(b *testing.B) {
	for _, full := range []bool{true, false} {
		for _, batch := range []int{1, 16} {
			name := "room/"
			if full {
				name = "full/"
			}
			name += "single"
			if batch > 1 {
				name = name[:len(name)-len("single")] + "batch=" + itoa(batch)
			}
			b.Run(name, func(b *testing.B) { benchNewFlow(b, batch, full) })
		}
	}
}

func benchNewFlow(b *testing.B, batch int, full bool) {
	const room = conntrack.DefaultMax / 2
	e := newEngine(b, "server-state.rules", 0, true)
	w := e.NewWorker()
	inTable := 0
	bl := newBuilder(false)
	syn := bl.tcp(netip.MustParseAddr("198.19.0.1"), server, 40000, 80, 12345, 0, packetSYN, 64240, true, nil)[14:]
	now := benchStart
	src := uint32(0xc6130001)                  // 198.19.0.1
	ports := binary.BigEndian.Uint32(syn[20:]) // source and destination port
	const banned = 0xc6120163                  // 198.18.1.99, dropped by the first rule
	// The SYNs wait in a buffer, written ahead (untimed) a few thousand at
	// a time, as a batch read from a socket or capture does.
	const ahead = 4096
	ring := make([]byte, ahead*len(syn))
	srcs := make([]uint32, ahead)
	pkts := make([][]byte, ahead)
	fill := func() {
		for j := 0; j < ahead; j++ {
			// A new source every packet; after 2^17 sources the port changes.
			next := 0xc6120000 | (src+1)&0x1ffff
			adjust(syn, 10, src, next)    // IP header checksum
			adjust(syn, 20+16, src, next) // TCP pseudo-header
			binary.BigEndian.PutUint32(syn[12:], next)
			if next&0x1ffff == 0 {
				np := ports + 1<<16 // next source port, same destination port
				adjust(syn, 20+16, ports, np)
				binary.BigEndian.PutUint32(syn[20:], np)
				ports = np
			}
			src = next
			srcs[j] = next
			pkts[j] = ring[j*len(syn) : (j+1)*len(syn)]
			copy(pkts[j], syn)
		}
	}
	fill()
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if next == ahead {
			b.StopTimer()
			fill()
			next = 0
			b.StartTimer()
		}
		if !full && inTable == room {
			b.StopTimer()
			w = newEngine(b, "server-state.rules", 0, true).NewWorker()
			inTable = 0
			runtime.GC() // the replaced table, now garbage: not timed
			b.StartTimer()
		}
		if batch > 1 && next%batch == 0 {
			w.Prefetch(pkts[next:min(next+batch, ahead)])
		}
		inTable++
		now = now.Add(time.Microsecond)
		// Every SYN is accepted as NEW, except the banned source's (dropped
		// by the rules) and those refused when the table is full and early
		// drop finds nothing to evict (the kernel drops them too).
		v := w.Process(pkts[next], packet.Meta{Time: now})
		if v.Reason != engine.ReasonTableFull && ((v.Action != engine.Accept && srcs[next] != banned) || w.Packet().CTState != packet.CTNew) {
			b.Fatalf("SYN %d: %v %v", i, v.Action, w.Packet().CTState)
		}
		next++
	}
	report(b, b.N)
}

type frame struct {
	l3   []byte
	meta packet.Meta
}

func loadFrames(tb testing.TB, path string) []frame {
	tb.Helper()
	r, err := engine.OpenPcapFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	var out []frame
	var f engine.Frame
	for r.Next(&f) == nil {
		if f.Skip != engine.SkipNone {
			continue
		}
		var m packet.Meta
		f.FillMeta(&m)
		out = append(out, frame{l3: append([]byte(nil), f.L3...), meta: m})
	}
	return out
}

// runFrames replays all frames through a fresh engine per iteration; the
// engine's construction is not timed. Its table is preallocated, sized for
// the capture (twice its packets, at most the default 262,144; a table
// that never fills behaves the same at any size).
func runFrames(b *testing.B, rules string, frames []frame) {
	ctMax := min(conntrack.DefaultMax, max(1024, 2*len(frames)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		w := newEngine(b, rules, ctMax, true).NewWorker()
		b.StartTimer()
		for j := range frames {
			w.Process(frames[j].l3, frames[j].meta)
		}
	}
	report(b, b.N*len(frames))
}

// BenchmarkEnginePcap runs real captures (mixed traffic) through the engine.
func BenchmarkEnginePcap(b *testing.B) {
	for _, name := range []string{"captured_http_ipv4_get.pcap", "zeek_wikipedia_browse.pcap", "captured_synflood_burst_200_spoofed_sources.pcap", "captured_ftp_pyftpdlib_passive_active.pcap"} {
		frames := loadFrames(b, filepath.Join(pcapDir, name))
		b.Run(name, func(b *testing.B) { runFrames(b, "server-state.rules", frames) })
	}
}

func floodPcap(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if _, err := WriteFlood(&buf, FloodConfig{FloodSYNs: 200_000, FloodSources: 50_000, FloodRate: 100_000, Sessions: 20, Seed: 7}); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkEngineFlood runs the generated flood (200,000 SYNs from 50,000
// sources at 100,000 SYN/s plus 20 HTTP sessions) with a per-source SYN
// hashlimit rule set.
func BenchmarkEngineFlood(b *testing.B) {
	data := floodPcap(b)
	tmp := filepath.Join(b.TempDir(), "flood.pcap")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		b.Fatal(err)
	}
	frames := loadFrames(b, tmp)
	for _, rules := range []string{"server.rules", "server-invalid-hashlimit.rules"} {
		b.Run(rules, func(b *testing.B) { runFrames(b, rules, frames) })
	}
}

// BenchmarkReplayEndToEnd is filterd replay without the printing: pcap
// parsing included, from a capture held in memory, with the default table
// (growing as it fills, as filterd replay does by default) and with
// --ct-prealloc ("prealloc").
func BenchmarkReplayEndToEnd(b *testing.B) {
	data := floodPcap(b)
	for _, tc := range []struct {
		rules    string
		prealloc bool
	}{{"server.rules", false}, {"server.rules", true}, {"server-invalid-hashlimit.rules", false}} {
		name := tc.rules
		if tc.prealloc {
			name += "/prealloc"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			pkts := 0
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				rp := engine.NewReplayer(newEngine(b, tc.rules, 0, tc.prealloc), engine.ReplayOptions{})
				rd, err := engine.OpenPcap(bytes.NewReader(data))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := rp.Replay(context.Background(), rd, "flood"); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				pkts += int(rp.Summary("", "").Packets)
				b.StartTimer()
			}
			report(b, pkts)
		})
	}
}

// BenchmarkDecode puts filterd's decoder next to gopacket's NewPacket on the
// same bytes, so the ratio is visible.
func BenchmarkDecode(b *testing.B) {
	bl := newBuilder(false)
	client := netip.MustParseAddr("198.18.1.2")
	for _, size := range []int{0, 1400} {
		pkt := bl.tcp(client, server, 40000, 80, 1, 1, packetACK|packetPSH, 502, false, make([]byte, size))[14:]
		b.Run("filterd/payload="+itoa(size), func(b *testing.B) {
			d := engine.NewDecoder()
			var p packet.Packet
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := d.Decode(pkt, &p); err != nil {
					b.Fatal(err)
				}
			}
			report(b, b.N)
		})
		b.Run("gopacket.NewPacket/payload="+itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
				if p.ErrorLayer() != nil {
					b.Fatal(p.ErrorLayer().Error())
				}
			}
			report(b, b.N)
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
