package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

const pcapDir = "../testdata/pcaps"

// pcapStats is what one pass of reading and decoding a capture counts.
type pcapStats struct {
	Link                         LinkType
	Frames, Skipped              int
	IPv4, IPv6                   int
	TCP, UDP, ICMP, ICMPv6       int
	Good, Bad, Unknown           int
	Frags, Inner, VLAN, DecodeEr int
}

func readStats(t *testing.T, name string, each func(f *Frame, p *packet.Packet)) pcapStats {
	t.Helper()
	r, err := OpenPcapFile(filepath.Join(pcapDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st := pcapStats{Link: r.LinkType()}
	d := NewDecoder()
	var f Frame
	var p packet.Packet
	for {
		err := r.Next(&f)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		st.Frames++
		if f.Num != st.Frames {
			t.Fatalf("frame number %d, want %d", f.Num, st.Frames)
		}
		if f.Link.VLANs > 0 {
			st.VLAN++
		}
		if f.Skip != SkipNone {
			st.Skipped++
			continue
		}
		f.FillMeta(&p.Meta)
		if err := d.Decode(f.L3, &p); err != nil {
			st.DecodeEr++
			t.Errorf("%s packet %d: %v", name, f.Num, err)
			continue
		}
		switch p.Family {
		case packet.IPv4:
			st.IPv4++
		case packet.IPv6:
			st.IPv6++
		}
		switch p.Proto {
		case packet.ProtoTCP:
			st.TCP++
		case packet.ProtoUDP:
			st.UDP++
		case packet.ProtoICMP:
			st.ICMP++
		case packet.ProtoICMPv6:
			st.ICMPv6++
		}
		switch p.Checksum {
		case packet.ChecksumGood:
			st.Good++
		case packet.ChecksumBad:
			st.Bad++
		default:
			st.Unknown++
		}
		if p.Fragment || p.MoreFrags {
			st.Frags++
		}
		if p.Inner.Valid {
			st.Inner++
		}
		if each != nil {
			each(&f, &p)
		}
	}
	return st
}

// TestPcapFiles reads and decodes every testdata capture. The expected
// counts were cross-checked with tcpdump filters (tcp, udp, icmp, icmp6,
// ip, ip6, vlan) on the same files; checksums are all good in the captured_*
// files (offload was off) and bad in the macOS loopback capture (lo0 does
// not fill them in; tcpdump -vv says "incorrect" for all 24).
func TestPcapFiles(t *testing.T) {
	E, N := LinkTypeEthernet, LinkTypeNull
	tests := []struct {
		file string
		want pcapStats
	}{
		{"captured_dns_udp_tcp_dnsmasq.pcap", pcapStats{Link: E, Frames: 38, IPv4: 24, IPv6: 14, TCP: 20, UDP: 16, ICMPv6: 2, Good: 38}},
		{"captured_ftp_pyftpdlib_passive_active.pcap", pcapStats{Link: E, Frames: 148, IPv4: 148, TCP: 148, Good: 148}},
		{"captured_http_ipv4_get.pcap", pcapStats{Link: E, Frames: 95, IPv4: 95, TCP: 95, Good: 95}},
		{"captured_icmp_ping_ttl_exceeded_host_unreach.pcap", pcapStats{Link: E, Frames: 40, Skipped: 2, IPv4: 18, IPv6: 20, UDP: 6, ICMP: 15, ICMPv6: 17, Good: 38, Inner: 11}},
		{"captured_ip_fragments_v4_v6.pcap", pcapStats{Link: E, Frames: 48, IPv4: 24, IPv6: 24, UDP: 24, ICMP: 12, ICMPv6: 12, Unknown: 48, Frags: 48}},
		{"captured_ipv6_http_session.pcap", pcapStats{Link: E, Frames: 82, IPv6: 82, TCP: 78, ICMPv6: 4, Good: 82}},
		{"captured_synflood_burst_200_spoofed_sources.pcap", pcapStats{Link: E, Frames: 1228, Skipped: 4, IPv4: 1224, TCP: 1218, ICMP: 6, Good: 1224, Inner: 6}},
		{"captured_synflood_hping3_slow_vs_fast.pcap", pcapStats{Link: E, Frames: 876, IPv4: 876, TCP: 867, ICMP: 9, Good: 876, Inner: 9}},
		{"captured_tcp_halfclose_keepalive_abort.pcapng", pcapStats{Link: E, Frames: 49, IPv4: 49, TCP: 49, Good: 49}},
		{"captured_tcp_invalid_injected.pcap", pcapStats{Link: E, Frames: 34, Skipped: 2, IPv4: 32, TCP: 32, Good: 32}},
		{"captured_tcp_refused_rst.pcap", pcapStats{Link: E, Frames: 8, IPv4: 6, IPv6: 2, TCP: 8, Good: 8}},
		{"captured_udp_echo_icmp_port_unreachable.pcap", pcapStats{Link: E, Frames: 16, IPv4: 10, IPv6: 6, UDP: 9, ICMP: 2, ICMPv6: 5, Good: 16, Inner: 3}},
		{"captured_vlan100_tagged_mixed.pcap", pcapStats{Link: E, Frames: 31, IPv4: 26, IPv6: 5, TCP: 18, UDP: 4, ICMP: 4, ICMPv6: 5, Good: 31, VLAN: 31}},
		{"gopacket_loopback_null_ipv6_http.pcap", pcapStats{Link: N, Frames: 24, IPv6: 24, TCP: 24, Bad: 24}},
		{"tcpdump_tcp_handshake_linux_sll_nano.pcap", pcapStats{Link: LinkTypeSLL, Frames: 3, IPv4: 3, TCP: 3, Good: 3}},
		{"zeek_ftp_ipv6_epsv_eprt.pcap", pcapStats{Link: E, Frames: 136, IPv6: 136, TCP: 136, Good: 136}},
		{"zeek_http_missing_syn.pcapng", pcapStats{Link: E, Frames: 13, IPv4: 13, TCP: 13, Good: 13}},
		{"zeek_icmp_dot1q_vlan.pcap", pcapStats{Link: E, Frames: 15, Skipped: 6, IPv4: 9, ICMP: 9, Good: 9, VLAN: 15}},
		{"zeek_ipv4_fragmented_tcp.pcap", pcapStats{Link: E, Frames: 5, IPv4: 5, TCP: 5, Unknown: 5, Frags: 5}},
		{"zeek_wikipedia_browse.pcap", pcapStats{Link: E, Frames: 136, Skipped: 10, IPv4: 121, IPv6: 5, TCP: 78, UDP: 48, Good: 126}},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		seen[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			got := readStats(t, tc.file, nil)
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// every capture in testdata must be covered
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s has no expectations in TestPcapFiles", f)
		}
	}
}

func TestPcapLinkDetails(t *testing.T) {
	t.Run("SLL nanosecond timestamps and options", func(t *testing.T) {
		var times []time.Time
		var wscale []int8
		var mss []uint16
		readStats(t, "tcpdump_tcp_handshake_linux_sll_nano.pcap", func(f *Frame, p *packet.Packet) {
			times = append(times, f.Time)
			wscale = append(wscale, p.TCPOpt.WScale)
			mss = append(mss, p.TCPOpt.MSS)
			// the capture is from a PPP interface (hatype 512, no address)
			if f.Link.HasMAC || f.Link.PktType != packet.PktUnicast || p.Time != f.Time {
				t.Errorf("packet %d link %+v", f.Num, f.Link)
			}
		})
		// tcpdump --nano -tt: 1418145369.924505488, 1418145370.052027262, 1418145370.052115157
		want := []time.Time{time.Unix(1418145369, 924505488), time.Unix(1418145370, 52027262), time.Unix(1418145370, 52115157)}
		for i := range want {
			if i >= len(times) || !times[i].Equal(want[i]) {
				t.Fatalf("times %v, want %v", times, want)
			}
		}
		if wscale[0] != 7 || wscale[1] != 8 || wscale[2] != -1 || mss[0] != 1360 || mss[1] != 1440 {
			t.Errorf("wscale %v mss %v", wscale, mss)
		}
	})
	t.Run("pcapng nanosecond timestamps", func(t *testing.T) {
		var first time.Time
		readStats(t, "captured_tcp_halfclose_keepalive_abort.pcapng", func(f *Frame, p *packet.Packet) {
			if f.Num == 1 {
				first = f.Time
				if p.TCPOpt.WScale != 10 || !p.TCPOpt.SACKPerm || p.TCPOpt.MSS != 1460 || p.TCPFlags != packet.TCPSyn {
					t.Errorf("SYN options %+v flags %#x", p.TCPOpt, p.TCPFlags)
				}
			}
		})
		if !first.Equal(time.Unix(1795608447, 362164533)) {
			t.Errorf("first timestamp %v", first.UnixNano())
		}
	})
	t.Run("VLAN ids and broadcast", func(t *testing.T) {
		ids := map[uint16]int{}
		bcast := 0
		for _, file := range []string{"captured_vlan100_tagged_mixed.pcap", "zeek_icmp_dot1q_vlan.pcap"} {
			r, err := OpenPcapFile(filepath.Join(pcapDir, file))
			if err != nil {
				t.Fatal(err)
			}
			var f Frame
			for r.Next(&f) == nil {
				ids[f.Link.VLAN]++
				if f.Link.PktType == packet.PktBroadcast {
					bcast++
				}
			}
			r.Close()
		}
		if ids[100] != 31 || ids[123] != 15 || len(ids) != 2 {
			t.Errorf("VLAN ids %v", ids)
		}
		if bcast < 3 { // the zeek file starts with 3 broadcast ARPs
			t.Errorf("%d broadcast frames", bcast)
		}
	})
	t.Run("client MAC in captured files", func(t *testing.T) {
		client := [6]byte{0x02, 0x00, 0xc6, 0x12, 0x01, 0x02}
		n := 0
		readStats(t, "captured_http_ipv4_get.pcap", func(f *Frame, p *packet.Packet) {
			if p.Src.String() == "198.18.1.2" {
				if p.SrcMAC != client || !p.HasMAC {
					t.Fatalf("packet %d from client has MAC %x", f.Num, p.SrcMAC)
				}
				n++
			}
		})
		if n == 0 {
			t.Error("no client packets")
		}
	})
}

func readAll(r *PcapReader) (n int, err error) {
	var f Frame
	for {
		if err = r.Next(&f); err != nil {
			if err == io.EOF {
				err = nil
			}
			return
		}
		n++
	}
}

// TestPcapTruncatedAndCorrupt cuts and damages real captures.
func TestPcapTruncatedAndCorrupt(t *testing.T) {
	http, err := os.ReadFile(filepath.Join(pcapDir, "captured_http_ipv4_get.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	ng, err := os.ReadFile(filepath.Join(pcapDir, "captured_tcp_halfclose_keepalive_abort.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	// offsets of the records of the classic file
	var recs []int
	for off := 24; off < len(http); {
		recs = append(recs, off)
		off += 16 + int(binary.LittleEndian.Uint32(http[off+8:]))
	}
	if len(recs) != 95 {
		t.Fatalf("%d records", len(recs))
	}
	var blocks []int
	for off := 0; off < len(ng); off += int(binary.LittleEndian.Uint32(ng[off+4:])) {
		blocks = append(blocks, off)
	}
	if binary.LittleEndian.Uint32(ng[blocks[9]:]) != ngEPB {
		t.Fatalf("block 10 is not an EPB")
	}
	mod := func(b []byte, f func([]byte)) []byte { b = append([]byte(nil), b...); f(b); return b }
	tests := []struct {
		name      string
		data      []byte
		delivered int
		kind      error
		packet    int
		offset    int64
		msg       string
	}{
		{"cut inside packet data of record 50", http[:recs[49]+16+10], 49, ErrPcapTruncated, 50, int64(recs[49]), "packet data"},
		{"cut inside record header 50", http[:recs[49]+7], 49, ErrPcapTruncated, 50, int64(recs[49]), "16-byte packet record header"},
		{"cut inside the file header", http[:10], 0, ErrPcapTruncated, 1, 0, "file header"},
		{"caplen too large in record 3", mod(http, func(b []byte) { binary.LittleEndian.PutUint32(b[recs[2]+8:], 1<<30) }), 2, ErrPcapCorrupt, 3, int64(recs[2]), "exceeds the maximum snaplen"},
		{"caplen over origlen in record 3", mod(http, func(b []byte) { binary.LittleEndian.PutUint32(b[recs[2]+12:], 10) }), 2, ErrPcapCorrupt, 3, int64(recs[2]), "exceeds the original length"},
		{"bad magic", mod(http, func(b []byte) { b[0] = 0 }), 0, ErrPcapCorrupt, 1, 0, "unknown file magic"},
		{"pcapng cut in the middle", ng[:len(ng)/2], -1, ErrPcapTruncated, -1, -1, "file ends inside"},
		{"pcapng block 10 length huge", mod(ng, func(b []byte) { binary.LittleEndian.PutUint32(b[blocks[9]+4:], 0x7ffffff0) }), -1, ErrPcapCorrupt, -1, int64(blocks[9]), "block length 2147483632"},
		{"pcapng block 10 length not a multiple of 4", mod(ng, func(b []byte) { binary.LittleEndian.PutUint32(b[blocks[9]+4:], 13) }), -1, ErrPcapCorrupt, -1, int64(blocks[9]), "block length 13"},
		{"pcapng packet block caplen past block", mod(ng, func(b []byte) { binary.LittleEndian.PutUint32(b[blocks[9]+20:], 5000) }), -1, ErrPcapCorrupt, -1, int64(blocks[9]), "does not fit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := OpenPcap(bytes.NewReader(tc.data))
			n := 0
			if err == nil {
				n, err = readAll(r)
			}
			if err == nil {
				t.Fatalf("no error after %d packets", n)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("%v is not %v", err, tc.kind)
			}
			var pe *PcapError
			if !errors.As(err, &pe) {
				t.Fatalf("%T %v", err, err)
			}
			if tc.delivered >= 0 && n != tc.delivered {
				t.Errorf("delivered %d packets, want %d", n, tc.delivered)
			}
			if tc.delivered < 0 && pe.Packet != n+1 {
				t.Errorf("error names packet %d after %d delivered", pe.Packet, n)
			}
			if tc.packet >= 0 && pe.Packet != tc.packet {
				t.Errorf("error names packet %d, want %d", pe.Packet, tc.packet)
			}
			if tc.offset >= 0 && pe.Offset != tc.offset {
				t.Errorf("error offset %d, want %d", pe.Offset, tc.offset)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q lacks %q", err, tc.msg)
			}
			t.Log(err)
		})
	}
}

// TestPcapWriterRoundTrip writes frames of several link types and reads
// them back: the reader must find the same IP packets and link info.
func TestPcapWriterRoundTrip(t *testing.T) {
	ip4 := udp4(t, []byte("round trip"))
	ip6 := tcp6(t, []byte("six"))
	mac := []byte{0x02, 0x00, 0xc6, 0x12, 0x01, 0x02}
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	eth := cat([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, []byte{0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 100, 0x08, 0x00}, ip4)
	sll := cat([]byte{0, 2, 0, 1, 0, 6}, mac, []byte{0, 0, 0x86, 0xdd}, ip6)
	sll2 := cat([]byte{0x08, 0x00, 0, 0}, be32(3), []byte{0, 1, 1, 6}, mac, []byte{0, 0}, ip4)
	arp := cat([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, []byte{0x08, 0x06}, make([]byte, 28))
	tests := []struct {
		link    LinkType
		frame   []byte
		l3      []byte
		skip    SkipReason
		mac     bool
		pkttype packet.PktType
		vlans   uint8
		vlan    uint16
	}{
		{LinkTypeEthernet, eth, ip4, SkipNone, true, packet.PktBroadcast, 2, 5},
		{LinkTypeEthernet, arp, nil, SkipNonIP, true, packet.PktBroadcast, 0, 0},
		{LinkTypeSLL, sll, ip6, SkipNone, true, packet.PktMulticast, 0, 0},
		{LinkTypeSLL2, sll2, ip4, SkipNone, true, packet.PktBroadcast, 0, 0},
		{LinkTypeRaw, ip6, ip6, SkipNone, false, 0, 0, 0},
		{LinkTypeIPv4, ip4, ip4, SkipNone, false, 0, 0, 0},
		{LinkTypeIPv6, ip6, ip6, SkipNone, false, 0, 0, 0},
		{LinkTypeNull, cat(le32(30), ip6), ip6, SkipNone, false, 0, 0, 0},
		{LinkTypeNull, cat(be32(2), ip4), ip4, SkipNone, false, 0, 0, 0},
		{LinkTypeNull, cat(le32(7), ip4), nil, SkipNonIP, false, 0, 0, 0},
		{LinkTypeLoop, cat(be32(24), ip6), ip6, SkipNone, false, 0, 0, 0},
		{LinkTypeEthernet, eth[:10], nil, SkipLinkShort, false, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.link.String(), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewPcapWriter(&buf, tc.link)
			if err != nil {
				t.Fatal(err)
			}
			ts := time.Unix(1700000000, 123456789)
			if err := w.WritePacket(ts, tc.frame, len(tc.frame)+4); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			r, err := OpenPcap(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if r.LinkType() != tc.link {
				t.Errorf("link type %v", r.LinkType())
			}
			var f Frame
			if err := r.Next(&f); err != nil {
				t.Fatal(err)
			}
			if !f.Time.Equal(ts) || f.OrigLen != len(tc.frame)+4 || f.Num != 1 || !bytes.Equal(f.Data, tc.frame) {
				t.Errorf("frame %+v", f)
			}
			if f.Skip != tc.skip || !bytes.Equal(f.L3, tc.l3) {
				t.Errorf("skip %v L3 %x", f.Skip, f.L3)
			}
			if f.Link.HasMAC != tc.mac || (tc.mac && !bytes.Equal(f.Link.SrcMAC[:], mac)) || f.Link.PktType != tc.pkttype ||
				f.Link.VLANs != tc.vlans || f.Link.VLAN != tc.vlan {
				t.Errorf("link %+v", f.Link)
			}
			if err := r.Next(&f); err != io.EOF {
				t.Errorf("second Next: %v", err)
			}
		})
	}
}

// TestPcapWriteFrameRaw copies a capture into a raw file and an Ethernet
// file: the packets read back are the same.
func TestPcapWriteFrameRaw(t *testing.T) {
	r, err := OpenPcapFile(filepath.Join(pcapDir, "captured_tcp_refused_rst.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var rawBuf, ethBuf bytes.Buffer
	raw, _ := NewPcapWriter(&rawBuf, LinkTypeRaw)
	eth, _ := NewPcapWriter(&ethBuf, LinkTypeEthernet)
	sll, _ := NewPcapWriter(io.Discard, LinkTypeSLL)
	var f Frame
	var l3s [][]byte
	for r.Next(&f) == nil {
		if err := raw.WriteFrame(&f); err != nil {
			t.Fatal(err)
		}
		if err := eth.WriteFrame(&f); err != nil {
			t.Fatal(err)
		}
		if err := sll.WriteFrame(&f); err == nil {
			t.Error("wrote an Ethernet frame into an SLL file")
		}
		l3s = append(l3s, append([]byte(nil), f.L3...))
	}
	raw.Flush()
	eth.Flush()
	for _, b := range []*bytes.Buffer{&rawBuf, &ethBuf} {
		rr, err := OpenPcap(b)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for rr.Next(&f) == nil {
			if i >= len(l3s) || !bytes.Equal(f.L3, l3s[i]) {
				t.Fatalf("%v packet %d differs", rr.LinkType(), i+1)
			}
			i++
		}
		if i != len(l3s) || i != 8 {
			t.Errorf("%v: %d packets", rr.LinkType(), i)
		}
	}
}

func TestPcapNoAllocs(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(pcapDir, "captured_http_ipv4_get.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	ngData, err := os.ReadFile(filepath.Join(pcapDir, "captured_tcp_halfclose_keepalive_abort.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"pcap": data, "pcapng": ngData} {
		r, err := OpenPcap(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		var f Frame
		r.Next(&f) // warm up buffers
		n := testing.AllocsPerRun(30, func() {
			if err := r.Next(&f); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocs per packet", name, n)
		}
	}
}

// comparePcapPaths reads b with the direct path for classic pcap records and
// through pcapgo, and fails unless both give the same frames (bytes, times,
// lengths, link types) and end with the same error.
func comparePcapPaths(t *testing.T, b []byte) int {
	t.Helper()
	direct, errD := openPcap(bytes.NewReader(b), true)
	via, errV := openPcap(bytes.NewReader(b), false)
	if (errD == nil) != (errV == nil) {
		t.Fatalf("open: direct %v, pcapgo %v", errD, errV)
	}
	if errD != nil {
		// A header pcapgo rejects is named at offset 0 by the direct path;
		// through pcapgo the offset is wherever its read-ahead stopped.
		var pd, pv *PcapError
		if !errors.As(errD, &pd) || !errors.As(errV, &pv) || pd.Packet != pv.Packet || pd.Kind != pv.Kind || pd.What != pv.What {
			t.Fatalf("open: direct %v, pcapgo %v", errD, errV)
		}
	}
	if errD != nil {
		return 0
	}
	var fd, fv Frame
	for n := 0; ; n++ {
		ed, ev := direct.Next(&fd), via.Next(&fv)
		if (ed == nil) != (ev == nil) || (ed != nil && ed.Error() != ev.Error()) {
			t.Fatalf("frame %d: direct error %v, pcapgo %v", n+1, ed, ev)
		}
		if ed != nil {
			var pd, pv *PcapError
			if errors.As(ed, &pd) != errors.As(ev, &pv) || (pd != nil && (pd.Packet != pv.Packet || pd.Offset != pv.Offset || pd.Kind != pv.Kind)) {
				t.Fatalf("frame %d: direct error %#v, pcapgo %#v", n+1, pd, pv)
			}
			return n
		}
		if !bytes.Equal(fd.Data, fv.Data) || !fd.Time.Equal(fv.Time) || fd.Time.Location() != fv.Time.Location() ||
			fd.CapLen != fv.CapLen || fd.OrigLen != fv.OrigLen || fd.LinkType != fv.LinkType || fd.Num != fv.Num ||
			fd.Skip != fv.Skip || !bytes.Equal(fd.L3, fv.L3) {
			t.Fatalf("frame %d differs: direct %+v, pcapgo %+v", n+1, fd, fv)
		}
	}
}

// TestPcapDirectMatchesPcapgo: every bundled capture, whole and cut short
// at several places (inside a record header, inside a record's data), reads
// the same through the direct path as through pcapgo.
func TestPcapDirectMatchesPcapgo(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(pcapDir, "*.pcap"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures: %v", err)
	}
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(fn), func(t *testing.T) {
			if n := comparePcapPaths(t, b); n == 0 {
				t.Fatalf("no frames read")
			}
			for _, cut := range []int{len(b) - 1, len(b) - 20, len(b) / 2, 24 + 7, 24 + 16 + 3} {
				if cut > 24 && cut < len(b) {
					comparePcapPaths(t, b[:cut])
				}
			}
		})
	}
}
