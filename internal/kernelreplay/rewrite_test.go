package kernelreplay

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

const pcapDir = "../../testdata/pcaps"

// manifestCounts reads the Pkts column of testdata/pcaps/PROVENANCE.md.
func manifestCounts(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pcapDir, "PROVENANCE.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		c := strings.Split(l, "|")
		if len(c) < 4 || !strings.Contains(c[1], ".pcap") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(c[3]))
		if err != nil {
			t.Fatalf("PROVENANCE.md: bad packet count in %q", l)
		}
		out[strings.TrimSpace(c[1])] = n
	}
	return out
}

func pcapFiles(t *testing.T) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	if err != nil || len(fs) == 0 {
		t.Fatalf("no pcaps in %s: %v", pcapDir, err)
	}
	return fs
}

// csumErr returns the verification residue of the IPv4 header and of the
// transport checksum (0xffff means valid), to check that a broken checksum
// stays broken by the same amount.
func csumResidue(l3 []byte) (ip, l4 uint16) {
	h, _ := parseIP(l3)
	if !h.v6 {
		ip = fold(sum(l3[:h.hlen], 0))
	}
	var s uint32
	if _, pseudo, _ := csumOff(h.proto); pseudo {
		s = sum(l3[h.srcOff:h.srcOff+h.alen], s)
		s = sum(l3[h.dstOff:h.dstOff+h.alen], s)
		s += uint32(h.proto) + uint32(h.end-h.l4)
	}
	return ip, fold(sum(l3[h.l4:h.end], s))
}

func TestRewriteEveryPcap(t *testing.T) {
	want := manifestCounts(t)
	mappedSome := 0
	for _, path := range pcapFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			pkts, rr, err := ReadPcap(path)
			if err != nil {
				t.Fatal(err)
			}
			if n, ok := want[name]; !ok || rr.Frames != n {
				t.Fatalf("read %d frames, PROVENANCE.md says %d (listed: %v)", rr.Frames, n, ok)
			}
			if len(pkts)+rr.NonIP != rr.Frames || len(pkts) == 0 {
				t.Fatalf("%d IP + %d non-IP != %d frames", len(pkts), rr.NonIP, rr.Frames)
			}
			orig := make([][]byte, len(pkts))
			ipBefore := make([]CsumState, len(pkts))
			l4Before := make([]CsumState, len(pkts))
			for i, p := range pkts {
				orig[i] = append([]byte(nil), p.L3...)
				ipBefore[i], l4Before[i] = Checksums(p.L3)
			}
			for _, a := range CollectAddrs(pkts) {
				if !InRange(a) {
					// The safety check refuses such a capture before the rewrite.
					if !slices.ContainsFunc(pkts, func(p Packet) bool { return CheckAddrs(p.L3) != nil }) {
						t.Errorf("address %s outside the ranges, but CheckAddrs accepts every packet", a)
					}
					break
				}
			}
			m, err := NewAddrMap(CollectAddrs(pkts), nil)
			if err != nil {
				t.Fatal(err)
			}
			checkable, changed := 0, 0
			for i, p := range pkts {
				if err := m.Rewrite(p.L3); err != nil {
					t.Fatalf("packet %d: %v", p.Index, err)
				}
				ip, l4 := Checksums(p.L3)
				if ip != ipBefore[i] || l4 != l4Before[i] {
					t.Errorf("packet %d: checksums ip %v→%v, l4 %v→%v", p.Index, ipBefore[i], ip, l4Before[i], l4)
				}
				if l4 != CsumNA {
					checkable++
				}
				if err := CheckAddrs(p.L3); err != nil {
					t.Errorf("packet %d: %v", p.Index, err)
				}
				if !bytes.Equal(orig[i], p.L3) {
					changed++
				}
				// An independent decoder sees the outer addresses in range too.
				lt := layers.LayerTypeIPv4
				if p.L3[0]>>4 == 6 {
					lt = layers.LayerTypeIPv6
				}
				g := gopacket.NewPacket(p.L3, lt, gopacket.Default)
				if nl := g.NetworkLayer(); nl == nil {
					t.Errorf("packet %d: gopacket finds no network layer", p.Index)
				} else {
					src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
					dst, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
					if !InRange(src) || !InRange(dst) {
						t.Errorf("packet %d: gopacket sees %s > %s", p.Index, src, dst)
					}
				}
			}
			allFrags := true
			for _, b := range orig {
				h, _ := parseIP(b)
				allFrags = allFrags && h.frag
			}
			if checkable == 0 && !allFrags {
				t.Errorf("no packet with a checkable transport checksum")
			}
			allIn := true
			for _, a := range CollectAddrs(ptrOrig(orig)) {
				allIn = allIn && InRange(a)
			}
			if allIn && changed != 0 {
				t.Errorf("%d packets changed although every address was in range", changed)
			}
			if !allIn {
				if changed == 0 {
					t.Errorf("addresses outside the ranges but nothing rewritten")
				}
				mappedSome++
			}

			// Broken checksums stay broken, by the same amount.
			broken := 0
			for i := range orig {
				b := append([]byte(nil), orig[i]...)
				h, _ := parseIP(b)
				off, _, ok := csumOff(h.proto)
				breakL4 := l4Before[i] != CsumNA && ok
				if !h.v6 {
					b[10] ^= 0x5a
				}
				if breakL4 {
					b[h.l4+off] ^= 0x21
				}
				ipR0, l4R0 := csumResidue(b)
				ip0, l40 := Checksums(b)
				if err := m.Rewrite(b); err != nil {
					t.Fatal(err)
				}
				ipR1, l4R1 := csumResidue(b)
				ip1, l41 := Checksums(b)
				if !h.v6 && (ip0 != CsumInvalid || ip1 != CsumInvalid || ipR0 != ipR1) {
					t.Errorf("packet %d: broken IPv4 header checksum %v/%#x → %v/%#x", pkts[i].Index, ip0, ipR0, ip1, ipR1)
				}
				if breakL4 {
					broken++
					if l40 != l41 || l41 == CsumNA || l4R0 != l4R1 {
						t.Errorf("packet %d: broken transport checksum %v/%#x → %v/%#x", pkts[i].Index, l40, l4R0, l41, l4R1)
					}
				}
			}
			if broken == 0 && !allFrags {
				t.Errorf("no transport checksum was broken and checked")
			}

			// The written raw-IP pcap reads back identically.
			out := filepath.Join(t.TempDir(), "out.pcap")
			if err := WritePcap(out, pkts, rr.Nanos); err != nil {
				t.Fatal(err)
			}
			back, br, err := ReadPcap(out)
			if err != nil {
				t.Fatal(err)
			}
			if br.LinkType != layers.LinkTypeRaw || len(back) != len(pkts) || br.NonIP != 0 {
				t.Fatalf("read back: link %v, %d packets (want %d)", br.LinkType, len(back), len(pkts))
			}
			for i := range back {
				if !bytes.Equal(back[i].L3, pkts[i].L3) || !back[i].Time.Equal(pkts[i].Time) {
					t.Fatalf("read back: packet %d differs", i+1)
				}
			}
		})
	}
	if mappedSome < 5 {
		t.Errorf("only %d captures needed mapping; expected the zeek, tcpdump and gopacket ones", mappedSome)
	}
}

func ptrOrig(bs [][]byte) []Packet {
	out := make([]Packet, len(bs))
	for i, b := range bs {
		out[i] = Packet{L3: b}
	}
	return out
}

func mustAddrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestAddrMapKeepsMembership(t *testing.T) {
	tests := []struct {
		name     string
		addrs    []netip.Addr
		prefixes []netip.Prefix
		wantErr  string
	}{
		{
			name:     "private nets and rule prefixes",
			addrs:    mustAddrs("10.0.0.1", "10.0.0.2", "10.0.1.1", "10.200.3.4", "192.168.1.10", "192.168.1.200", "8.8.8.8", "198.18.1.2", "198.18.2.2", "224.0.0.251"),
			prefixes: mustPrefixes("10.0.0.0/8", "10.0.0.0/24", "192.168.0.0/16", "8.8.8.8/32", "172.16.0.0/12", "198.18.2.0/24", "0.0.0.0/0", "10.0.0.0/25"),
		},
		{
			name:     "ipv6",
			addrs:    mustAddrs("2001:db8::1", "2001:db8::2", "2001:db8:1::1", "fe80::1", "::1", "fd00:198:18:1::2", "ff02::1:ff00:1"),
			prefixes: mustPrefixes("2001:db8::/32", "fe80::/10", "::1/128", "fd00:198:18:1::/64", "::/0", "2001:db8::/64"),
		},
		{
			name: "many sources in one /24",
			addrs: func() []netip.Addr {
				a := []netip.Addr{}
				for i := 1; i < 255; i++ {
					a = append(a, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}))
				}
				return a
			}(),
			prefixes: mustPrefixes("203.0.113.0/25", "203.0.113.128/26"),
		},
		{
			name:     "prefix covering the whole range excludes a capture address",
			addrs:    mustAddrs("10.0.0.1", "198.18.1.1"),
			prefixes: mustPrefixes("192.0.0.0/2"),
			wantErr:  "cannot keep its membership",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewAddrMap(tc.addrs, tc.prefixes)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			seen := map[netip.Addr]netip.Addr{}
			for _, a := range tc.addrs {
				img, ok := m.Map(a)
				if !ok || !InRange(img) {
					t.Fatalf("Map(%s) = %s, %v", a, img, ok)
				}
				if InRange(a) && img != a {
					t.Errorf("in-range %s moved to %s", a, img)
				}
				if prev, dup := seen[img]; dup {
					t.Errorf("%s and %s both map to %s", prev, a, img)
				}
				seen[img] = a
			}
			groups := append([]netip.Prefix(nil), tc.prefixes...)
			for _, a := range tc.addrs { // the /24 (/64) of every address is kept too
				g := netip.PrefixFrom(a, map[bool]int{true: 24, false: 64}[a.Is4()]).Masked()
				if !InRange(a) {
					groups = append(groups, g)
				}
			}
			for _, p := range groups {
				pi, ok := m.MapPrefix(p)
				if !ok {
					t.Fatalf("MapPrefix(%s) missing", p)
				}
				for _, a := range tc.addrs {
					if a.Is4() != p.Addr().Is4() {
						continue
					}
					img, _ := m.Map(a)
					if p.Contains(a) != pi.Contains(img) {
						t.Errorf("%s in %s = %v, but %s in %s = %v", a, p, p.Contains(a), img, pi, pi.Contains(img))
					}
				}
			}
			// Order of mapped addresses is kept.
			pairs := m.Pairs()
			for i := 1; i < len(pairs); i++ {
				a, b := pairs[i-1], pairs[i]
				if !InRange(a[0]) && !InRange(b[0]) && a[0].Is4() == b[0].Is4() && a[1].Compare(b[1]) >= 0 {
					t.Errorf("order: %s<%s but %s>=%s", a[0], b[0], a[1], b[1])
				}
			}
		})
	}
}

func TestRewriteRules(t *testing.T) {
	rules := "*filter\n:INPUT DROP [0:0]\n-A INPUT -s 10.0.0.0/255.0.0.0 -j ACCEPT\n-A INPUT ! -d 192.168.1.10 -p tcp -j DROP\n-A INPUT -s 198.18.1.0/24,8.8.8.8 -j ACCEPT\nCOMMIT\n"
	ps, err := RulePrefixes(rules)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 4 || ps[0] != netip.MustParsePrefix("10.0.0.0/8") || ps[1] != netip.MustParsePrefix("192.168.1.10/32") {
		t.Fatalf("RulePrefixes = %v", ps)
	}
	m, err := NewAddrMap(mustAddrs("10.1.2.3", "192.168.1.10", "198.18.1.2", "8.8.8.8", "11.0.0.1"), ps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.RewriteRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	p10, _ := m.MapPrefix(netip.MustParsePrefix("10.0.0.0/8"))
	h, _ := m.Map(netip.MustParseAddr("192.168.1.10"))
	g, _ := m.Map(netip.MustParseAddr("8.8.8.8"))
	for _, want := range []string{"-s " + p10.String() + " -j ACCEPT", "! -d " + h.String() + " -p tcp", "-s 198.18.1.0/24," + g.String() + " -j"} {
		if !strings.Contains(out, want) {
			t.Errorf("rewritten rules lack %q:\n%s", want, out)
		}
	}
	if regexp.MustCompile(`\b(10|192|8)\.\d+\.\d+\.\d+`).MatchString(out) {
		t.Errorf("outside address left in rules:\n%s", out)
	}
	// iptables' abbreviated IPv4 forms (the article's "-s 0/0 -d 0/0").
	for _, c := range []struct{ in, want string }{
		{"0/0", "0.0.0.0/0"}, {"10/8", "10.0.0.0/8"}, {"10.1", "10.1.0.0/32"}, {"198.18/15", "198.18.0.0/15"},
		{"fd00::/8", "fd00::/8"}, {"1.2.3.4/255.255.0.0", "1.2.0.0/16"},
	} {
		ps, err := RulePrefixes("-A INPUT -s " + c.in + " -j ACCEPT")
		if err != nil || len(ps) != 1 || ps[0] != netip.MustParsePrefix(c.want) {
			t.Errorf("RulePrefixes(-s %s) = %v, %v; want %s", c.in, ps, err, c.want)
		}
	}
	for _, bad := range []string{"10./8", "1.2.3.4/33", "1.2.3.4/x", "fd00::/129"} {
		if ps, err := RulePrefixes("-A INPUT -s " + bad + " -j ACCEPT"); err == nil {
			t.Errorf("RulePrefixes(-s %s) = %v, want an error", bad, ps)
		}
	}
	if _, err := RulePrefixes("-A INPUT -s 10.0.0.0/255.0.255.0 -j DROP"); err == nil {
		t.Error("non-contiguous mask accepted")
	}
}

func TestReadPcapErrors(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(pcapDir, "captured_tcp_refused_rst.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.pcap")
	if err := os.WriteFile(cut, src[:len(src)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	pkts, _, err := ReadPcap(cut)
	if err == nil || !strings.Contains(err.Error(), "packet 8") || len(pkts) != 7 {
		t.Fatalf("truncated file: %d packets, err %v; want 7 and an error naming packet 8", len(pkts), err)
	}
	junk := filepath.Join(dir, "junk.pcap")
	if err := os.WriteFile(junk, bytes.Repeat([]byte{1}, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadPcap(junk); err == nil || !strings.Contains(err.Error(), "header") {
		t.Fatalf("junk file: err %v", err)
	}
	_ = binary.BigEndian
}
