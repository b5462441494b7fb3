package ruleset

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// genBenchTable returns an INPUT chain of n rules shaped like a large real
// rule set (banned hosts, per-port service rules with and without source
// restrictions, multiport, ICMP), where the benchmark packet (TCP to port
// 443) matches rule n-1 and rule n is a catch-all DROP.
func genBenchTable(n int) *Table {
	rules := make([]*Rule, 0, n)
	for i := 0; len(rules) < n-2; i++ {
		a := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		port := uint16(1024 + i%60000)
		var r *Rule
		switch i % 6 {
		case 0:
			r = &Rule{Src: AddrMatch{Prefix: netip.PrefixFrom(a, 32)}, Target: Target{Kind: TargetDrop}}
		case 1:
			r = &Rule{Proto: ProtoMatch{Num: packet.ProtoTCP}, Matches: []Match{mkTCPDport(port)}, Target: Target{Kind: TargetAccept}}
		case 2:
			r = &Rule{Proto: ProtoMatch{Num: packet.ProtoUDP}, Matches: []Match{&UDPMatch{Dport: PortMatch{Set: true, Lo: port, Hi: port}}}, Target: Target{Kind: TargetAccept}}
		case 3:
			r = &Rule{Src: AddrMatch{Prefix: netip.PrefixFrom(a, 24).Masked()}, Proto: ProtoMatch{Num: packet.ProtoTCP},
				Matches: []Match{mkTCPDport(22)}, Target: Target{Kind: TargetAccept}}
		case 4:
			r = &Rule{Proto: ProtoMatch{Num: packet.ProtoTCP}, Matches: []Match{&MultiportMatch{Dir: MultiportDst,
				Ports: []PortRange{{Lo: port, Hi: port}, {Lo: port + 1, Hi: port + 1}, {Lo: port + 3, Hi: port + 5}}}},
				Target: Target{Kind: TargetAccept}}
		case 5:
			r = &Rule{Src: AddrMatch{Prefix: netip.PrefixFrom(a, 32)}, Proto: ProtoMatch{Num: packet.ProtoICMP},
				Matches: []Match{&ICMPMatch{Type: 8, CodeHi: 255}}, Target: Target{Kind: TargetAccept}}
		}
		rules = append(rules, r)
	}
	rules = append(rules,
		&Rule{Proto: ProtoMatch{Num: packet.ProtoTCP}, Matches: []Match{mkTCPDport(443)}, Target: Target{Kind: TargetAccept}},
		&Rule{Target: Target{Kind: TargetDrop}},
	)
	return mkTable(mkBuiltin("INPUT", PolicyDrop, rules...))
}

func benchPacket() *packet.Packet {
	return mkPkt("198.18.0.10", "198.18.0.2", 443)
}

func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			tab := genBenchTable(n)
			c, err := Compile(tab, CompileOptions{})
			if err != nil {
				b.Fatal(err)
			}
			p := benchPacket()
			if got := c.Evaluate(p); got.RuleNum != n-1 {
				b.Fatalf("packet decided by rule %d, want %d", got.RuleNum, n-1)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				c.Evaluate(p)
			}
			el := time.Since(start)
			b.ReportMetric(float64(el.Nanoseconds())/float64(b.N), "ns/pkt")
			b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	tab := genBenchTable(10000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Compile(tab, CompileOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvaluateParallel runs the 10,000-rule case on every P at once
// (all packets hit the same rule and counter: the worst case for sharing).
func BenchmarkEvaluateParallel(b *testing.B) {
	c, err := Compile(genBenchTable(10000), CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		p := benchPacket()
		for pb.Next() {
			c.Evaluate(p)
		}
	})
	el := time.Since(start)
	b.ReportMetric(float64(el.Nanoseconds())/float64(b.N), "ns/pkt")
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
}
