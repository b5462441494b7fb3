package ruleset

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/filterd/filterd/packet"
)

// This file holds the reference evaluator: a plain first-match walk over the
// AST, written to be obviously correct rather than fast, and the property and
// fuzz tests that hold the compiled table to it. It covers the stateless
// matches; stateful ones have their own tests.

type refResult struct {
	verdict Verdict
	reject  RejectWith
	chain   string
	rule    *Rule
}

// refEval evaluates p against t, counting matched rules and policies into
// hits (keyed by *Rule, or by chain name for policies).
func refEval(t *Table, p *packet.Packet, hits map[any]uint64) refResult {
	var start *Chain
	for _, c := range t.Chains {
		if c.Builtin && c.Name == p.Hook.String() {
			start = c
		}
	}
	if start == nil {
		hits[p.Hook.String()]++
		return refResult{verdict: VerdictAccept, chain: p.Hook.String()}
	}
	if res, ok := refChain(t, start, p, hits); ok {
		return res
	}
	hits[start.Name]++
	v := VerdictAccept
	if start.Policy == PolicyDrop {
		v = VerdictDrop
	}
	return refResult{verdict: v, chain: start.Name}
}

func refChain(t *Table, c *Chain, p *packet.Packet, hits map[any]uint64) (refResult, bool) {
	for _, r := range c.Rules {
		if !refRuleMatches(t, r, p) {
			continue
		}
		hits[r]++
		switch r.Target.Kind {
		case TargetNone, TargetLog:
			// non-terminating
		case TargetAccept:
			return refResult{verdict: VerdictAccept, chain: c.Name, rule: r}, true
		case TargetDrop:
			return refResult{verdict: VerdictDrop, chain: c.Name, rule: r}, true
		case TargetReject:
			return refResult{verdict: VerdictReject, reject: r.Target.Reject, chain: c.Name, rule: r}, true
		case TargetReturn:
			return refResult{}, false
		case TargetJump:
			if res, ok := refChain(t, t.Chain(r.Target.Chain), p, hits); ok {
				return res, true
			}
		case TargetGoto:
			// Whatever the goto'd chain does is what this chain does.
			return refChain(t, t.Chain(r.Target.Chain), p, hits)
		}
	}
	return refResult{}, false
}

func refAddr(m AddrMatch, a netip.Addr) bool {
	if !m.Prefix.IsValid() {
		return true
	}
	in := m.Prefix.Bits() == 0 || m.Prefix.Contains(a)
	return in != m.Invert
}

func refIface(m IfaceMatch, name string) bool {
	if m.Name == "" {
		return true
	}
	var in bool
	if base, ok := strings.CutSuffix(m.Name, "+"); ok {
		in = strings.HasPrefix(name, base)
	} else {
		in = name == m.Name
	}
	return in != m.Invert
}

func refPort(m PortMatch, port uint16) bool {
	if !m.Set {
		return true
	}
	return (m.Lo <= port && port <= m.Hi) != m.Invert
}

func refRuleMatches(t *Table, r *Rule, p *packet.Packet) bool {
	if r.Family != packet.FamilyAny && r.Family != p.Family {
		return false
	}
	if !r.Proto.Any && r.Proto.Num != 0 {
		if (p.Proto == r.Proto.Num) == r.Proto.Invert {
			return false
		}
	}
	if !refAddr(r.Src, p.Src) || !refAddr(r.Dst, p.Dst) {
		return false
	}
	if !refIface(r.InIface, p.InIface) || !refIface(r.OutIface, p.OutIface) {
		return false
	}
	if r.Frag == True && !p.Fragment || r.Frag == False && p.Fragment {
		return false
	}
	for _, m := range r.Matches {
		if !refMatch(m, p) {
			return false
		}
	}
	return true
}

func refMatch(m Match, p *packet.Packet) bool {
	switch m := m.(type) {
	case *TCPMatch:
		if p.Proto != packet.ProtoTCP || p.Fragment {
			return false
		}
		if !refPort(m.Sport, p.SrcPort) || !refPort(m.Dport, p.DstPort) {
			return false
		}
		if m.Flags.Set && (p.TCPFlags&m.Flags.Mask == m.Flags.Comp) == m.Flags.Invert {
			return false
		}
		return true
	case *UDPMatch:
		if p.Proto != packet.ProtoUDP || p.Fragment {
			return false
		}
		return refPort(m.Sport, p.SrcPort) && refPort(m.Dport, p.DstPort)
	case *MultiportMatch:
		if !p.HasPorts() || p.Fragment {
			return false
		}
		found := false
		for _, r := range m.Ports {
			s := r.Lo <= p.SrcPort && p.SrcPort <= r.Hi
			d := r.Lo <= p.DstPort && p.DstPort <= r.Hi
			switch m.Dir {
			case MultiportSrc:
				found = found || s
			case MultiportDst:
				found = found || d
			case MultiportBoth:
				found = found || s || d
			}
		}
		return found != m.Invert
	case *ICMPMatch:
		want := packet.ProtoICMP
		if m.V6 {
			want = packet.ProtoICMPv6
		}
		if p.Proto != want || p.Fragment {
			return false
		}
		in := m.Any || p.ICMPType == m.Type && m.CodeLo <= p.ICMPCode && p.ICMPCode <= m.CodeHi
		return in != m.Invert
	case *StateMatch:
		st := p.CTState
		if st == 0 {
			st = packet.CTInvalid
		}
		return (m.States&st != 0) != m.Invert
	case *CommentMatch:
		return true
	case *MarkMatch:
		return (p.Mark&m.Mask == m.Value) != m.Invert
	case *LengthMatch:
		return (int(m.Lo) <= p.Length && p.Length <= int(m.Hi)) != m.Invert
	case *TTLMatch:
		switch m.Op {
		case CmpEq:
			return p.TTL == m.Value
		case CmpNe:
			return p.TTL != m.Value
		case CmpLt:
			return p.TTL < m.Value
		case CmpGt:
			return p.TTL > m.Value
		}
	}
	panic(fmt.Sprintf("reference evaluator: unsupported match %T", m))
}

// chooser makes the random decisions of the generators, from a PRNG or from
// fuzzer bytes.
type chooser interface {
	intn(n int) int
}

type rngChooser struct{ r *rand.Rand }

func (c rngChooser) intn(n int) int { return c.r.IntN(n) }

type byteChooser struct {
	b []byte
	i int
}

func (c *byteChooser) intn(n int) int {
	if n <= 1 {
		return 0
	}
	var v int
	for k := 0; k < 2; k++ {
		v <<= 8
		if c.i < len(c.b) {
			v |= int(c.b[c.i])
			c.i++
		}
	}
	return v % n
}

func gPick[T any](c chooser, xs ...T) T { return xs[c.intn(len(xs))] }

func gChance(c chooser, percent int) bool { return c.intn(100) < percent }

var (
	genPorts  = []uint16{0, 22, 25, 53, 80, 443, 1024, 1025, 1026, 8080, 65535}
	genIfaces = []string{"eth0", "eth1", "eth10", "lo", "wg0", ""}
)

func genAddr4(c chooser) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(c.intn(4)), byte(gPick(c, 0, 1, 2, 5, 128, 200, 255))})
}

func genAddr6(c chooser) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0, 0x01, 0x98, 0, 0x18, 0, byte(c.intn(3)), 14: byte(c.intn(2)), 15: byte(gPick(c, 1, 2, 5, 200))})
}

func genPrefix(c chooser) netip.Prefix {
	if gChance(c, 75) {
		return netip.PrefixFrom(genAddr4(c), gPick(c, 0, 8, 16, 22, 24, 24, 30, 32, 32, 32)).Masked()
	}
	return netip.PrefixFrom(genAddr6(c), gPick(c, 0, 48, 56, 64, 120, 128, 128)).Masked()
}

func genPortMatch(c chooser) PortMatch {
	if gChance(c, 40) {
		return PortMatch{}
	}
	lo := gPick(c, genPorts...)
	hi := lo
	if gChance(c, 25) {
		hi = gPick(c, genPorts...)
		if hi < lo {
			lo, hi = hi, lo
		}
	}
	return PortMatch{Set: true, Lo: lo, Hi: hi, Invert: gChance(c, 15)}
}

func genRule(c chooser, userChains []string) *Rule {
	r := &Rule{}
	if gChance(c, 8) {
		r.Family = gPick(c, packet.IPv4, packet.IPv6)
	}
	switch c.intn(10) {
	case 0, 1, 2, 3:
		r.Proto = ProtoMatch{Any: true}
	case 4, 5:
		r.Proto = ProtoMatch{Num: packet.ProtoTCP}
	case 6, 7:
		r.Proto = ProtoMatch{Num: packet.ProtoUDP}
	case 8:
		r.Proto = ProtoMatch{Num: gPick(c, packet.ProtoICMP, packet.ProtoICMPv6)}
	case 9:
		r.Proto = ProtoMatch{Num: gPick(c, packet.ProtoGRE, packet.ProtoTCP, packet.ProtoUDP), Invert: true}
	}
	if gChance(c, 40) {
		r.Src = AddrMatch{Prefix: genPrefix(c), Invert: gChance(c, 15)}
	}
	if gChance(c, 30) {
		r.Dst = AddrMatch{Prefix: genPrefix(c), Invert: gChance(c, 15)}
	}
	if gChance(c, 25) {
		r.InIface = IfaceMatch{Name: gPick(c, "eth0", "eth1", "eth+", "lo", "wg+", "+"), Invert: gChance(c, 20)}
	}
	if gChance(c, 15) {
		r.OutIface = IfaceMatch{Name: gPick(c, "eth0", "eth+", "lo"), Invert: gChance(c, 20)}
	}
	if gChance(c, 8) {
		r.Frag = gPick(c, True, False)
	}
	if !r.Proto.Invert {
		switch r.Proto.Num {
		case packet.ProtoTCP:
			if gChance(c, 70) {
				m := &TCPMatch{Sport: genPortMatch(c), Dport: genPortMatch(c)}
				if gChance(c, 25) {
					m.Flags = TCPFlagsMatch{Set: true, Mask: gPick[uint8](c, 0x17, 0x3f, 0x02, 0x12), Comp: gPick[uint8](c, 0x02, 0x10, 0x12, 0), Invert: gChance(c, 20)}
				}
				r.Matches = append(r.Matches, m)
			}
		case packet.ProtoUDP:
			if gChance(c, 70) {
				r.Matches = append(r.Matches, &UDPMatch{Sport: genPortMatch(c), Dport: genPortMatch(c)})
			}
		case packet.ProtoICMP, packet.ProtoICMPv6:
			if gChance(c, 70) {
				m := &ICMPMatch{V6: r.Proto.Num == packet.ProtoICMPv6, Any: gChance(c, 15), Type: gPick[uint8](c, 0, 3, 8, 11, 128),
					CodeLo: 0, CodeHi: 255, Invert: gChance(c, 15)}
				if gChance(c, 30) {
					m.CodeLo = uint8(c.intn(4))
					m.CodeHi = m.CodeLo + uint8(c.intn(3))
				}
				r.Matches = append(r.Matches, m)
			}
		}
		if (r.Proto.Num == packet.ProtoTCP || r.Proto.Num == packet.ProtoUDP) && gChance(c, 30) {
			m := &MultiportMatch{Dir: gPick(c, MultiportSrc, MultiportDst, MultiportDst, MultiportBoth), Invert: gChance(c, 15)}
			for n := 1 + c.intn(4); n > 0; n-- {
				lo := gPick(c, genPorts...)
				hi := lo
				if gChance(c, 20) {
					hi = lo + uint16(c.intn(100))
					if hi < lo {
						hi = 65535
					}
				}
				m.Ports = append(m.Ports, PortRange{Lo: lo, Hi: hi})
			}
			r.Matches = append(r.Matches, m)
		}
	}
	if gChance(c, 25) {
		r.Matches = append(r.Matches, &StateMatch{States: packet.CTState(1 + c.intn(31)), Invert: gChance(c, 15)})
	}
	if gChance(c, 5) {
		r.Matches = append(r.Matches, &CommentMatch{Text: "generated"})
	}
	if gChance(c, 5) {
		r.Matches = append(r.Matches, &MarkMatch{Value: uint32(c.intn(3)), Mask: gPick[uint32](c, 0xffffffff, 0x1, 0x2), Invert: gChance(c, 20)})
	}
	if gChance(c, 5) {
		lo := uint16(c.intn(1500))
		r.Matches = append(r.Matches, &LengthMatch{Lo: lo, Hi: lo + uint16(c.intn(600)), Invert: gChance(c, 20)})
	}
	if gChance(c, 5) {
		r.Matches = append(r.Matches, &TTLMatch{Op: gPick(c, CmpEq, CmpNe, CmpLt, CmpGt), Value: gPick[uint8](c, 1, 64, 128)})
	}
	switch k := c.intn(100); {
	case k < 5:
		r.Target = Target{Kind: TargetNone}
	case k < 10:
		r.Target = Target{Kind: TargetLog, Log: LogOptions{Prefix: "gen: "}}
	case k < 35:
		r.Target = Target{Kind: TargetAccept}
	case k < 55:
		r.Target = Target{Kind: TargetDrop}
	case k < 65:
		r.Target = Target{Kind: TargetReject, Reject: gPick(c, RejectICMPPortUnreachable, RejectTCPReset, RejectICMPHostProhibited)}
	case k < 75:
		r.Target = Target{Kind: TargetReturn}
	default:
		if len(userChains) == 0 {
			r.Target = Target{Kind: TargetAccept}
		} else {
			r.Target = Target{Kind: gPick(c, TargetJump, TargetJump, TargetGoto), Chain: gPick(c, userChains...)}
		}
	}
	return r
}

// genTable builds a random acyclic table: built-in chains may jump to any
// user chain, user chain i only to user chains after it.
func genTable(c chooser) *Table {
	t := &Table{Name: "filter", Family: packet.IPv4}
	nuser := c.intn(5)
	var users []string
	for i := 0; i < nuser; i++ {
		users = append(users, fmt.Sprintf("U%d", i))
	}
	maxRules := gPick(c, 4, 12, 30, 60)
	for _, name := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		if gChance(c, 10) {
			continue // missing built-in chain: policy ACCEPT
		}
		h, _ := packet.ParseHook(name)
		ch := &Chain{Name: name, Builtin: true, Hook: h, Policy: gPick(c, PolicyAccept, PolicyDrop)}
		for n := c.intn(maxRules + 1); n > 0; n-- {
			ch.Rules = append(ch.Rules, genRule(c, users))
		}
		t.Chains = append(t.Chains, ch)
	}
	for i, name := range users {
		ch := &Chain{Name: name, Policy: PolicyNone}
		for n := c.intn(maxRules + 1); n > 0; n-- {
			ch.Rules = append(ch.Rules, genRule(c, users[i+1:]))
		}
		t.Chains = append(t.Chains, ch)
	}
	return t
}

func genPacket(c chooser) *packet.Packet {
	p := &packet.Packet{}
	p.Reset()
	if gChance(c, 70) {
		p.Family = packet.IPv4
		p.Src, p.Dst = genAddr4(c), genAddr4(c)
	} else {
		p.Family = packet.IPv6
		p.Src, p.Dst = genAddr6(c), genAddr6(c)
	}
	p.Proto = gPick(c, packet.ProtoTCP, packet.ProtoTCP, packet.ProtoUDP, packet.ProtoICMP, packet.ProtoICMPv6, packet.ProtoGRE)
	if p.HasPorts() {
		p.SrcPort, p.DstPort = gPick(c, genPorts...), gPick(c, genPorts...)
		if gChance(c, 10) {
			p.DstPort += uint16(c.intn(50))
		}
	}
	if p.Proto == packet.ProtoTCP {
		p.TCPFlags = uint8(c.intn(256))
	}
	if p.IsICMP() {
		p.ICMPType = gPick[uint8](c, 0, 3, 8, 11, 128, 129)
		p.ICMPCode = uint8(c.intn(5))
	}
	p.Fragment = gChance(c, 8)
	p.Length = 20 + c.intn(2000)
	p.TTL = gPick[uint8](c, 1, 63, 64, 65, 128, 255)
	p.Mark = uint32(c.intn(4))
	p.CTState = gPick(c, packet.CTState(0), packet.CTNew, packet.CTEstablished, packet.CTRelated, packet.CTInvalid, packet.CTUntracked)
	p.Hook = gPick(c, packet.HookInput, packet.HookForward, packet.HookOutput)
	switch p.Hook {
	case packet.HookInput:
		p.InIface = gPick(c, genIfaces...)
	case packet.HookOutput:
		p.OutIface = gPick(c, genIfaces...)
	default:
		p.InIface, p.OutIface = gPick(c, genIfaces...), gPick(c, genIfaces...)
	}
	return p
}

// checkAgainstReference compiles t, runs the packets through the compiled
// table and the reference, and compares every result and, at the end, every
// counter.
func checkAgainstReference(t *testing.T, tab *Table, pkts []*packet.Packet) {
	t.Helper()
	ct, err := Compile(tab, CompileOptions{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	hits := map[any]uint64{}
	for i, p := range pkts {
		want := refEval(tab, p, hits)
		got := ct.Evaluate(p)
		if got.Verdict != want.verdict || got.Rule != want.rule || got.Chain == nil || got.Chain.Name != want.chain ||
			(got.Verdict == VerdictReject && got.RejectWith != want.reject) {
			t.Fatalf("packet %d %+v\ncompiled:  %v by %s rule %v\nreference: %v by %s rule %v\ntable:\n%s",
				i, p, got.Verdict, refChainName(got.Chain), got.Rule, want.verdict, want.chain, want.rule, refDumpTable(tab))
		}
		if got.Rule != nil && got.Chain.Rules[got.RuleNum-1] != got.Rule {
			t.Fatalf("RuleNum %d does not point at the deciding rule", got.RuleNum)
		}
	}
	snap := ct.Snapshot()
	for ci, ch := range tab.Chains {
		if got, want := snap.Chains[ci].Counters.Packets, hits[ch.Name]; got != want {
			t.Fatalf("chain %s policy counter = %d, reference %d", ch.Name, got, want)
		}
		for ri, r := range ch.Rules {
			if got, want := snap.Chains[ci].Rules[ri].Counters.Packets, hits[r]; got != want {
				t.Fatalf("chain %s rule %d counter = %d, reference %d\n%s", ch.Name, ri+1, got, want, refDumpTable(tab))
			}
		}
	}
}

func refChainName(c *Chain) string {
	if c == nil {
		return "<nil>"
	}
	return c.Name
}

func refDumpTable(t *Table) string {
	var b strings.Builder
	for _, c := range t.Chains {
		fmt.Fprintf(&b, ":%s %s\n", c.Name, c.Policy)
		for i, r := range c.Rules {
			fmt.Fprintf(&b, "  %d: fam=%v proto=%+v src=%+v dst=%+v in=%+v out=%+v frag=%v", i+1, r.Family, r.Proto, r.Src, r.Dst, r.InIface, r.OutIface, r.Frag)
			for _, m := range r.Matches {
				fmt.Fprintf(&b, " %s%+v", m.Module(), m)
			}
			fmt.Fprintf(&b, " -> %+v\n", r.Target)
		}
	}
	return b.String()
}

// TestCompiledMatchesReference is the property test: random rule sets and
// random packets, compiled result == reference result, 100,000 pairs.
func TestCompiledMatchesReference(t *testing.T) {
	const tables, perTable = 1000, 100
	rng := rand.New(rand.NewPCG(1, 2))
	c := rngChooser{rng}
	pairs := 0
	for i := 0; i < tables; i++ {
		tab := genTable(c)
		pkts := make([]*packet.Packet, perTable)
		for j := range pkts {
			pkts[j] = genPacket(c)
		}
		checkAgainstReference(t, tab, pkts)
		pairs += perTable
	}
	if pairs < 100000 {
		t.Fatalf("only %d packet/rule-set pairs checked", pairs)
	}
	t.Logf("%d packet/rule-set pairs: compiled == reference", pairs)
}

// FuzzCompiledMatchesReference derives a rule set and packets from the
// fuzzer's bytes.
func FuzzCompiledMatchesReference(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("filterd compiles rules"))
	seed := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 8; i++ {
		b := make([]byte, 64+seed.IntN(4000))
		for j := range b {
			b[j] = byte(seed.Uint32())
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &byteChooser{b: data}
		tab := genTable(c)
		pkts := make([]*packet.Packet, 32)
		for j := range pkts {
			pkts[j] = genPacket(c)
		}
		checkAgainstReference(t, tab, pkts)
	})
}
