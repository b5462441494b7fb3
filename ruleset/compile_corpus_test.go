package ruleset

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// rulesFiles lists testdata/rules and ../shared/rules-corpus files.
func rulesFiles(t *testing.T) []string {
	var files []string
	for _, pat := range []string{"../testdata/rules/*.rules", "../testdata/rules/*.rules6", "../testdata/rules/*.v4", "../testdata/rules/*.v6"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	corpus := "../../shared/rules-corpus"
	if _, err := os.Stat(corpus); err != nil {
		t.Logf("skipping the corpus: %s is absent", corpus)
	} else {
		for _, pat := range []string{"*.rules", "*.rules6"} {
			m, _ := filepath.Glob(filepath.Join(corpus, pat))
			files = append(files, m...)
		}
	}
	sort.Strings(files)
	return files
}

type corpusConns struct{}

func (corpusConns) ConnCount(p *packet.Packet, key netip.Prefix, dest bool) int {
	return int(p.SrcPort % 7)
}

// packetsFor generates packets that exercise a table: addresses drawn from
// its own prefixes and ranges, its ports, interfaces and protocols.
func packetsFor(tab *Table, fam packet.Family, n int, rng *rand.Rand) []*packet.Packet {
	var addrs []netip.Addr
	var ports []uint16
	ifaces := []string{"eth0", "lo", ""}
	protos := []uint8{packet.ProtoTCP, packet.ProtoUDP, packet.ProtoICMP, packet.ProtoICMPv6, packet.ProtoGRE}
	addPfx := func(p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		a := p.Masked().Addr()
		addrs = append(addrs, a, a.Next(), p.Addr())
	}
	for _, ch := range tab.Chains {
		for _, r := range ch.Rules {
			addPfx(r.Src.Prefix)
			addPfx(r.Dst.Prefix)
			for _, in := range []string{r.InIface.Name, r.OutIface.Name} {
				if in != "" {
					ifaces = append(ifaces, strings.TrimSuffix(in, "+"), strings.Replace(in, "+", "0", 1))
				}
			}
			if !r.Proto.Any && r.Proto.Num != 0 {
				protos = append(protos, r.Proto.Num)
			}
			for _, m := range r.Matches {
				switch m := m.(type) {
				case *TCPMatch:
					ports = append(ports, m.Dport.Lo, m.Dport.Hi, m.Sport.Lo)
				case *UDPMatch:
					ports = append(ports, m.Dport.Lo, m.Dport.Hi, m.Sport.Lo)
				case *MultiportMatch:
					for _, pr := range m.Ports {
						ports = append(ports, pr.Lo, pr.Hi)
					}
				case *IPRangeMatch:
					if m.Src.From.IsValid() {
						addrs = append(addrs, m.Src.From, m.Src.To)
					}
				}
			}
		}
	}
	if fam == packet.IPv6 {
		addrs = append(addrs, netip.MustParseAddr("fd00:198:18::1"), netip.MustParseAddr("ff02::1"), netip.MustParseAddr("fe80::1"))
	} else {
		addrs = append(addrs, netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("255.255.255.255"))
	}
	ports = append(ports, 22, 53, 80, 443, 40000)
	var fa []netip.Addr
	for _, a := range addrs {
		if (fam == packet.IPv6) == a.Is6() {
			fa = append(fa, a)
		}
	}
	pkts := make([]*packet.Packet, n)
	for i := range pkts {
		p := &packet.Packet{}
		p.Reset()
		p.Family = fam
		p.Src, p.Dst = fa[rng.IntN(len(fa))], fa[rng.IntN(len(fa))]
		p.Proto = protos[rng.IntN(len(protos))]
		if p.HasPorts() {
			p.SrcPort, p.DstPort = ports[rng.IntN(len(ports))], ports[rng.IntN(len(ports))]
		}
		p.TCPFlags = uint8(rng.IntN(256))
		p.ICMPType, p.ICMPCode = uint8(rng.IntN(140)), uint8(rng.IntN(4))
		p.Length = 40 + rng.IntN(1400)
		p.TTL = uint8(rng.IntN(256))
		p.CTState = packet.CTState(1 << rng.IntN(5))
		p.Mark = uint32(rng.IntN(4))
		p.HasOwner, p.UID, p.GID = rng.IntN(2) == 0, uint32(rng.IntN(1002)), uint32(rng.IntN(1002))
		p.Hook = []packet.Hook{packet.HookInput, packet.HookForward, packet.HookOutput}[rng.IntN(3)]
		if p.Hook != packet.HookOutput {
			p.InIface = ifaces[rng.IntN(len(ifaces))]
		}
		if p.Hook != packet.HookInput {
			p.OutIface = ifaces[rng.IntN(len(ifaces))]
		}
		p.Meta.Time = t0.Add(time.Duration(i) * 7 * time.Millisecond)
		pkts[i] = p
	}
	return pkts
}

// TestCompileRulesFiles compiles every testdata and corpus file the parser
// loads without errors, and checks on generated packets that the indexed
// evaluation equals a plain linear walk, stateful matches included (each
// walk has its own State, fed the same packets).
func TestCompileRulesFiles(t *testing.T) {
	files := rulesFiles(t)
	if len(files) == 0 {
		t.Skip("no rules files")
	}
	var compiled, unsupported, parseErr int
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			fam := packet.IPv4
			if strings.HasSuffix(path, "6") {
				fam = packet.IPv6
			}
			f, ds, err := LoadFile(path, LoadOptions{Family: fam})
			if err != nil {
				t.Fatal(err)
			}
			if ds.HasErrors() || f == nil || f.Filter == nil {
				parseErr++
				t.Skipf("parser reports errors or no *filter table (%d diagnostics)", len(ds))
			}
			opts := func() CompileOptions {
				return CompileOptions{LocalPrefixes: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24"), netip.MustParsePrefix("fd00:198:18::2/64")},
					ConnCounter: corpusConns{}, State: NewState()}
			}
			c, err := Compile(f.Filter, opts())
			if err != nil {
				for _, e := range flatten(err) {
					if !errors.Is(e, ErrUnsupported) {
						t.Fatalf("compile error on a file the parser accepted: %v", e)
					}
				}
				unsupported++
				t.Skipf("unsupported: %v", err)
			}
			compiled++
			lo := opts()
			lo.linearOnly = true
			lin, err := Compile(f.Filter, lo)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(uint64(len(path)), 7))
			for i, p := range packetsFor(f.Filter, fam, 3000, rng) {
				q := *p
				got, want := c.Evaluate(p), lin.Evaluate(&q)
				if got.Verdict != want.Verdict || got.Rule != want.Rule || got.Chain != want.Chain {
					t.Fatalf("packet %d %v->%v proto %d dport %d: indexed %v by %s:%d, linear %v by %s:%d",
						i, p.Src, p.Dst, p.Proto, p.DstPort, got.Verdict, refChainName(got.Chain), got.RuleNum, want.Verdict, refChainName(want.Chain), want.RuleNum)
				}
			}
		})
	}
	t.Logf("%d files compiled, %d refused as unsupported, %d not loaded by the parser", compiled, unsupported, parseErr)
}

// BenchmarkCorpusGeoFencing evaluates packets against the corpus's largest
// real file (11,764 rules, one chain of 11,756 source prefixes of many
// lengths), from sources that fall through most of the list.
func BenchmarkCorpusGeoFencing(b *testing.B) {
	path := "../../shared/rules-corpus/43-geo-fencing-big-country-allowlist-11k.rules"
	if _, err := os.Stat(path); err != nil {
		b.Skipf("%s is absent", path)
	}
	f, ds, err := LoadFile(path, LoadOptions{Family: packet.IPv4})
	if err != nil || ds.HasErrors() {
		b.Fatalf("load: %v %v", err, ds)
	}
	c, err := Compile(f.Filter, CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	pkts := make([]*packet.Packet, 1024)
	for i := range pkts {
		p := mkPkt("198.18.0.1", "198.18.0.2", 443)
		p.Src = netip.AddrFrom4([4]byte{byte(1 + rng.IntN(223)), byte(rng.IntN(256)), byte(rng.IntN(256)), 1})
		p.CTState = packet.CTNew
		pkts[i] = p
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c.Evaluate(pkts[i&1023])
	}
	el := time.Since(start)
	b.ReportMetric(float64(el.Nanoseconds())/float64(b.N), "ns/pkt")
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
}

// BenchmarkServerRules evaluates the article's rule set with the
// ESTABLISHED,RELATED rule (testdata/rules/server-state.rules): a packet of
// an established flow, a SYN to HTTP once the SYN limit is used up, and a SYN
// to a closed port that falls through both LOG rules to the final REJECT.
func BenchmarkServerRules(b *testing.B) {
	f, ds, err := LoadFile("../testdata/rules/server-state.rules", LoadOptions{Family: packet.IPv4})
	if err != nil || ds.HasErrors() {
		b.Skipf("load: %v %v", err, ds)
	}
	c, err := Compile(f.Filter, CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	est := mkPkt("198.18.0.10", "198.18.0.2", 443)
	est.CTState, est.TCPFlags = packet.CTEstablished, packet.TCPAck
	syn := mkPkt("198.18.0.10", "198.18.0.2", 80)
	closed := mkPkt("198.18.0.10", "198.18.0.2", 8081)
	closed.TCPFlags = packet.TCPSyn
	for _, bc := range []struct {
		name string
		p    *packet.Packet
		want Verdict
	}{{"established", est, VerdictAccept}, {"syn-http", syn, VerdictAccept}, {"closed-port", closed, VerdictReject}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < 10; i++ { // use up the SYN limit's burst
				c.Evaluate(bc.p)
			}
			if got := c.Evaluate(bc.p); got.Verdict != bc.want {
				b.Fatalf("%v by %s:%d, want %v", got.Verdict, refChainName(got.Chain), got.RuleNum, bc.want)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				c.Evaluate(bc.p)
			}
			el := time.Since(start)
			b.ReportMetric(float64(el.Nanoseconds())/float64(b.N), "ns/pkt")
			b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
		})
	}
}

// BenchmarkBig10000 compiles and evaluates testdata/rules/big-10000.rules
// (banned hosts, per-source services, tenants' destinations): "compile" is
// Compile alone; "new-flow" a TCP SYN from an unlisted host that walks
// BANNED, SERVICES and TENANTS to FWALL-INPUT's final REJECT; "last-tenant"
// a packet for the TENANTS chain's last rule.
func BenchmarkBig10000(b *testing.B) {
	f, ds, err := LoadFile("../testdata/rules/big-10000.rules", LoadOptions{Family: packet.IPv4})
	if err != nil || ds.HasErrors() {
		b.Skipf("load: %v %v", err, ds)
	}
	b.Run("compile", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := Compile(f.Filter, CompileOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	c, err := Compile(f.Filter, CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	syn := mkPkt("198.19.200.1", "198.18.0.2", 4444)
	tenants := f.Filter.Chain("TENANTS")
	last := tenants.Rules[len(tenants.Rules)-1]
	lt := mkPkt("198.19.200.1", last.Dst.Prefix.Addr().String(), 14988)
	lt.Proto, lt.SrcPort, lt.CTState = packet.ProtoUDP, 2000, packet.CTNew
	var tcpReject *Rule
	for _, r := range f.Filter.Chain("FWALL-INPUT").Rules {
		if r.Target.Kind == TargetReject && r.Proto.Num == packet.ProtoTCP {
			tcpReject = r
		}
	}
	for _, bc := range []struct {
		name string
		p    *packet.Packet
		rule *Rule
	}{{"new-flow", syn, tcpReject}, {"last-tenant", lt, last}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < 10; i++ { // use up the SYN limit's burst
				c.Evaluate(bc.p)
			}
			if got := c.Evaluate(bc.p); got.Rule != bc.rule {
				b.Fatalf("%v by %s:%d", got.Verdict, refChainName(got.Chain), got.RuleNum)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				c.Evaluate(bc.p)
			}
			el := time.Since(start)
			b.ReportMetric(float64(el.Nanoseconds())/float64(b.N), "ns/pkt")
			b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
		})
	}
}
