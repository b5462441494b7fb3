package ruleset

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/filterd/filterd/packet"
)

// matcher is one compiled match module.
type matcher interface {
	match(p *packet.Packet) bool
}

// statefulMatcher marks matchers whose evaluation changes state (limit,
// hashlimit, recent, connlimit): the index never skips a rule on a later
// module's key when such a module runs first.
type statefulMatcher interface {
	matcher
	stateful()
}

func isStateful(m matcher) bool {
	_, ok := m.(statefulMatcher)
	return ok
}

// dportKeyer is implemented by matchers that require the destination port to
// lie in a set of ranges (and a port-carrying, unfragmented packet).
type dportKeyer interface {
	dportRanges() []PortRange
}

// compileMatch compiles one match module. It returns a nil matcher for
// modules that always match (comment).
func (c *Compiled) compileMatch(m Match, r *Rule, fam packet.Family, opts CompileOptions) (matcher, error) {
	switch m := m.(type) {
	case *TCPMatch:
		return &tcpMatcher{sport: compilePort(m.Sport), dport: compilePort(m.Dport), flags: m.Flags,
			optSet: m.OptionSet, opt: m.Option, optInv: m.OptionInvert}, nil
	case *UDPMatch:
		return &udpMatcher{sport: compilePort(m.Sport), dport: compilePort(m.Dport)}, nil
	case *MultiportMatch:
		if len(m.Ports) == 0 {
			return nil, fmt.Errorf("-m multiport without ports")
		}
		return &multiportMatcher{dir: m.Dir, ports: m.Ports, inv: m.Invert}, nil
	case *ICMPMatch:
		mm := &icmpMatcher{proto: packet.ProtoICMP, any: m.Any, typ: m.Type, lo: m.CodeLo, hi: m.CodeHi, inv: m.Invert}
		if m.V6 {
			mm.proto = packet.ProtoICMPv6
		}
		return mm, nil
	case *StateMatch:
		return &stateMatcher{states: m.States, inv: m.Invert}, nil
	case *ConntrackMatch:
		if m.HasStatus {
			return nil, fmt.Errorf("-m conntrack --ctstatus: %w (the packet view carries no conntrack status)", ErrUnsupported)
		}
		return compileConntrack(m), nil
	case *LimitMatch:
		return newLimitMatcher(m), nil
	case *HashlimitMatch:
		return c.newHashlimitMatcher(m, fam)
	case *RecentMatch:
		return c.newRecentMatcher(m, opts)
	case *CommentMatch:
		return nil, nil
	case *IPRangeMatch:
		return &iprangeMatcher{src: m.Src, dst: m.Dst}, nil
	case *AddrtypeMatch:
		return newAddrtypeMatcher(m, opts)
	case *ConnlimitMatch:
		if opts.ConnCounter == nil {
			return nil, fmt.Errorf("-m connlimit: %w without a connection counter (CompileOptions.ConnCounter)", ErrUnsupported)
		}
		return &connlimitMatcher{cc: opts.ConnCounter, limit: m.Limit, above: m.Above, mask: m.Mask, dest: m.Dest}, nil
	case *MarkMatch:
		return &markMatcher{value: m.Value, mask: m.Mask, inv: m.Invert}, nil
	case *OwnerMatch:
		return &ownerMatcher{m: *m}, nil
	case *LengthMatch:
		hi := m.Hi
		if hi < m.Lo {
			hi = m.Lo
		}
		return &lengthMatcher{lo: m.Lo, hi: hi, inv: m.Invert}, nil
	case *TTLMatch:
		return &ttlMatcher{op: m.Op, v: m.Value}, nil
	case *PkttypeMatch:
		return &pkttypeMatcher{t: m.Type, inv: m.Invert}, nil
	case *MACMatch:
		return &macMatcher{addr: m.Addr, inv: m.Invert}, nil
	case *FragMatch:
		return &fragMatcher{m: *m}, nil
	case nil:
		return nil, fmt.Errorf("nil match module")
	}
	return nil, fmt.Errorf("-m %s: %w", m.Module(), ErrUnsupported)
}

// portTest is a compiled PortMatch.
type portTest struct {
	set    bool
	lo, hi uint16
	inv    bool
}

func compilePort(p PortMatch) portTest {
	hi := p.Hi
	if hi < p.Lo {
		hi = p.Lo
	}
	return portTest{set: p.Set, lo: p.Lo, hi: hi, inv: p.Invert}
}

func (t *portTest) match(port uint16) bool {
	return (port >= t.lo && port <= t.hi) != t.inv
}

// keyRanges returns the ranges a non-inverted port test requires.
func (t *portTest) keyRanges() []PortRange {
	if !t.set || t.inv {
		return nil
	}
	return []PortRange{{Lo: t.lo, Hi: t.hi}}
}

// tcpMatcher is -m tcp (xt_tcp).
type tcpMatcher struct {
	sport, dport portTest
	flags        TCPFlagsMatch
	optSet       bool
	opt          uint8
	optInv       bool
}

func (m *tcpMatcher) dportRanges() []PortRange { return m.dport.keyRanges() }

func (m *tcpMatcher) match(p *packet.Packet) bool {
	// Non-first fragments carry no TCP header: xt_tcp never matches them.
	if p.Proto != packet.ProtoTCP || p.Fragment {
		return false
	}
	if m.sport.set && !m.sport.match(p.SrcPort) {
		return false
	}
	if m.dport.set && !m.dport.match(p.DstPort) {
		return false
	}
	if m.flags.Set && ((p.TCPFlags&m.flags.Mask) == m.flags.Comp) == m.flags.Invert {
		return false
	}
	if m.optSet {
		return tcpOptionMatch(p, m.opt, m.optInv)
	}
	return true
}

// tcpHeader locates the TCP header (with options) inside p.L3.
func tcpHeader(p *packet.Packet) []byte {
	n := int(p.TCPDataOff)
	if n < 20 {
		return nil
	}
	ok := func(start int) bool {
		if start < 0 || start+n > len(p.L3) {
			return false
		}
		h := p.L3[start:]
		return binary.BigEndian.Uint16(h) == p.SrcPort && binary.BigEndian.Uint16(h[2:]) == p.DstPort &&
			int(h[12]>>4)*4 == n
	}
	if s := len(p.L3) - len(p.Payload) - n; ok(s) {
		return p.L3[s : s+n]
	}
	if p.Family == packet.IPv4 && len(p.L3) > 0 {
		if s := int(p.L3[0]&0x0f) * 4; ok(s) {
			return p.L3[s : s+n]
		}
	}
	return nil
}

// tcpOptionMatch is xt_tcp's tcp_find_option.
func tcpOptionMatch(p *packet.Packet, opt uint8, inv bool) bool {
	h := tcpHeader(p)
	if h == nil {
		return false // the kernel drops such a packet (hotdrop)
	}
	op := h[20:]
	for i := 0; i < len(op); {
		if op[i] == opt {
			return !inv
		}
		if op[i] < 2 || i+1 >= len(op) {
			i++
			continue
		}
		if l := int(op[i+1]); l > 0 {
			i += l
		} else {
			i++
		}
	}
	return inv
}

// udpMatcher is -m udp.
type udpMatcher struct {
	sport, dport portTest
}

func (m *udpMatcher) dportRanges() []PortRange { return m.dport.keyRanges() }

func (m *udpMatcher) match(p *packet.Packet) bool {
	if p.Proto != packet.ProtoUDP || p.Fragment {
		return false
	}
	if m.sport.set && !m.sport.match(p.SrcPort) {
		return false
	}
	if m.dport.set && !m.dport.match(p.DstPort) {
		return false
	}
	return true
}

// multiportMatcher is -m multiport (revision 1, ranges allowed).
type multiportMatcher struct {
	dir   MultiportDir
	ports []PortRange
	inv   bool
}

func (m *multiportMatcher) dportRanges() []PortRange {
	if m.dir != MultiportDst || m.inv {
		return nil
	}
	return m.ports
}

func (m *multiportMatcher) match(p *packet.Packet) bool {
	if !p.HasPorts() || p.Fragment {
		return false
	}
	for _, r := range m.ports {
		switch m.dir {
		case MultiportSrc:
			if p.SrcPort >= r.Lo && p.SrcPort <= r.Hi {
				return !m.inv
			}
		case MultiportDst:
			if p.DstPort >= r.Lo && p.DstPort <= r.Hi {
				return !m.inv
			}
		default:
			if (p.SrcPort >= r.Lo && p.SrcPort <= r.Hi) || (p.DstPort >= r.Lo && p.DstPort <= r.Hi) {
				return !m.inv
			}
		}
	}
	return m.inv
}

// icmpMatcher is -m icmp / -m icmp6.
type icmpMatcher struct {
	proto  uint8
	any    bool
	typ    uint8
	lo, hi uint8
	inv    bool
}

func (m *icmpMatcher) match(p *packet.Packet) bool {
	if p.Proto != m.proto || p.Fragment {
		return false
	}
	ok := m.any || (p.ICMPType == m.typ && p.ICMPCode >= m.lo && p.ICMPCode <= m.hi)
	return ok != m.inv
}

// ctState returns the packet's state bit; a packet the tracker left without
// state is INVALID, as the kernel treats a packet without a conntrack entry.
func ctState(p *packet.Packet) packet.CTState {
	if p.CTState == 0 {
		return packet.CTInvalid
	}
	return p.CTState
}

// stateMatcher is -m state.
type stateMatcher struct {
	states packet.CTState
	inv    bool
}

func (m *stateMatcher) match(p *packet.Packet) bool {
	return (m.states&ctState(p) != 0) != m.inv
}

// conntrackMatcher is -m conntrack (xt_conntrack revision 3), from what the
// packet view carries: state, protocol, original/reply addresses and ports
// (without NAT the reply tuple is the original one reversed), direction.
type conntrackMatcher struct {
	m ConntrackMatch
}

func compileConntrack(m *ConntrackMatch) matcher {
	cm := &conntrackMatcher{m: *m}
	for _, a := range []*AddrMatch{&cm.m.OrigSrc, &cm.m.OrigDst, &cm.m.ReplSrc, &cm.m.ReplDst} {
		if a.Prefix.IsValid() {
			a.Prefix = a.Prefix.Masked()
		}
	}
	return cm
}

func ctAddr(a *AddrMatch, x netip.Addr) bool {
	if !a.Prefix.IsValid() {
		return true
	}
	if a.Prefix.Bits() == 0 {
		return !a.Invert
	}
	return a.Prefix.Contains(x) != a.Invert
}

func ctPort(t *PortMatch, port uint16) bool {
	if !t.Set {
		return true
	}
	hi := t.Hi
	if hi < t.Lo {
		hi = t.Lo
	}
	return (port >= t.Lo && port <= hi) != t.Invert
}

func (cm *conntrackMatcher) match(p *packet.Packet) bool {
	m := &cm.m
	st := ctState(p)
	if m.HasState && (m.State.States&st != 0) == m.State.Invert {
		return false
	}
	if st == packet.CTInvalid || st == packet.CTUntracked {
		// No conntrack entry: only the state part can match (kernel:
		// "if (ct == NULL) return info->match_flags & XT_CONNTRACK_STATE").
		return m.HasState
	}
	if m.HasProto && (p.Proto == m.Proto) == m.ProtoInvert {
		return false
	}
	origSrc, origDst, origSport, origDport := p.Src, p.Dst, p.SrcPort, p.DstPort
	if p.CTDir == packet.DirReply {
		origSrc, origDst, origSport, origDport = p.Dst, p.Src, p.DstPort, p.SrcPort
	}
	if !ctAddr(&m.OrigSrc, origSrc) || !ctAddr(&m.OrigDst, origDst) ||
		!ctAddr(&m.ReplSrc, origDst) || !ctAddr(&m.ReplDst, origSrc) {
		return false
	}
	if !ctPort(&m.OrigSrcPort, origSport) || !ctPort(&m.OrigDstPort, origDport) ||
		!ctPort(&m.ReplSrcPort, origDport) || !ctPort(&m.ReplDstPort, origSport) {
		return false
	}
	if m.HasDir && p.CTDir != m.Dir {
		return false
	}
	return true
}

// iprangeMatcher is -m iprange.
type iprangeMatcher struct {
	src, dst AddrRange
}

func inRange(r *AddrRange, a netip.Addr) bool {
	in := r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
	return in != r.Invert
}

func (m *iprangeMatcher) match(p *packet.Packet) bool {
	if m.src.From.IsValid() && !inRange(&m.src, p.Src) {
		return false
	}
	if m.dst.From.IsValid() && !inRange(&m.dst, p.Dst) {
		return false
	}
	return true
}

// addrtypeMatcher is -m addrtype. LOCAL comes from the host's addresses,
// BROADCAST from 255.255.255.255, 0.0.0.0/8 and the subnet broadcast of
// local prefixes, MULTICAST from the address; without a routing table,
// BLACKHOLE, UNREACHABLE, PROHIBIT, THROW, NAT and XRESOLVE never match and
// --limit-iface-in/out are not applied.
type addrtypeMatcher struct {
	m       AddrtypeMatch
	local   func(netip.Addr) bool
	bcast   []netip.Addr
	locPfx  []netip.Prefix
	hasInfo bool
}

func newAddrtypeMatcher(m *AddrtypeMatch, opts CompileOptions) (matcher, error) {
	am := &addrtypeMatcher{m: *m, local: opts.LocalAddr}
	for _, p := range opts.LocalPrefixes {
		am.locPfx = append(am.locPfx, p)
		if p.Addr().Is4() && p.Bits() < 31 {
			last := p.Masked().Addr().As4()
			hostBits := 32 - p.Bits()
			v := binary.BigEndian.Uint32(last[:]) | (1<<hostBits - 1)
			binary.BigEndian.PutUint32(last[:], v)
			am.bcast = append(am.bcast, netip.AddrFrom4(last))
		}
	}
	am.hasInfo = am.local != nil || len(am.locPfx) > 0
	if (m.Src|m.Dst)&AddrLocal != 0 && !am.hasInfo {
		return nil, fmt.Errorf("-m addrtype LOCAL: %w without the host's addresses (CompileOptions.LocalAddr or LocalPrefixes)", ErrUnsupported)
	}
	return am, nil
}

func (m *addrtypeMatcher) isLocal(a netip.Addr) bool {
	if m.local != nil && m.local(a) {
		return true
	}
	for _, p := range m.locPfx {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

// type4 is the single route type the kernel's inet_addr_type gives.
func (m *addrtypeMatcher) type4(a netip.Addr) uint16 {
	b := a.As4()
	if b[0] == 0 || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return AddrBroadcast
	}
	if a.IsMulticast() {
		return AddrMulticast
	}
	if m.isLocal(a) {
		return AddrLocal
	}
	for _, bc := range m.bcast {
		if bc == a {
			return AddrBroadcast
		}
	}
	return AddrUnicast
}

// matchType6 follows xt_addrtype's match_type6.
func (m *addrtypeMatcher) matchType6(a netip.Addr, mask uint16) bool {
	if mask&AddrMulticast != 0 && !a.IsMulticast() {
		return false
	}
	if mask&AddrUnicast != 0 && (a.IsMulticast() || a.IsUnspecified()) {
		return false
	}
	if mask&AddrUnspec != 0 && !a.IsUnspecified() {
		return false
	}
	if mask&(AddrLocal|AddrAnycast|AddrBlackhole|AddrUnreachable|AddrProhibit) != 0 {
		var t uint16
		if m.isLocal(a) {
			t = AddrLocal
		}
		return mask&t != 0
	}
	return true
}

func (m *addrtypeMatcher) matchType(a netip.Addr, mask uint16) bool {
	if a.Is4() {
		return m.type4(a)&mask != 0
	}
	return m.matchType6(a, mask)
}

func (m *addrtypeMatcher) match(p *packet.Packet) bool {
	if m.m.Src != 0 && m.matchType(p.Src, m.m.Src) == m.m.SrcInvert {
		return false
	}
	if m.m.Dst != 0 && m.matchType(p.Dst, m.m.Dst) == m.m.DstInvert {
		return false
	}
	return true
}

// connlimitMatcher is -m connlimit, counted by the engine's ConnCounter.
type connlimitMatcher struct {
	cc    ConnCounter
	limit uint32
	above bool
	mask  int
	dest  bool
}

func (*connlimitMatcher) stateful() {}

func (m *connlimitMatcher) match(p *packet.Packet) bool {
	a := p.Src
	if m.dest {
		a = p.Dst
	}
	bits := m.mask
	if bits < 0 || bits > a.BitLen() {
		bits = a.BitLen()
	}
	key := netip.PrefixFrom(a, bits).Masked()
	n := m.cc.ConnCount(p, key, m.dest)
	over := n > int(m.limit)
	if m.above {
		return over
	}
	return !over
}

// markMatcher is -m mark.
type markMatcher struct {
	value, mask uint32
	inv         bool
}

func (m *markMatcher) match(p *packet.Packet) bool {
	return (p.Mark&m.mask == m.value) != m.inv
}

// ownerMatcher is -m owner (xt_owner): without a socket owner only fully
// inverted tests match.
type ownerMatcher struct {
	m OwnerMatch
}

func (om *ownerMatcher) match(p *packet.Packet) bool {
	m := &om.m
	if !p.HasOwner {
		ok := true
		if m.UID.Set && !m.UID.Invert {
			ok = false
		}
		if m.GID.Set && !m.GID.Invert {
			ok = false
		}
		if m.SocketExists == True {
			ok = false
		}
		return ok
	}
	if m.SocketExists == False {
		return false
	}
	if m.UID.Set && (p.UID >= m.UID.Lo && p.UID <= m.UID.Hi) == m.UID.Invert {
		return false
	}
	if m.GID.Set && (p.GID >= m.GID.Lo && p.GID <= m.GID.Hi) == m.GID.Invert {
		return false
	}
	return true
}

// lengthMatcher is -m length (IPv4 total length; IPv6 payload + 40).
type lengthMatcher struct {
	lo, hi uint16
	inv    bool
}

func (m *lengthMatcher) match(p *packet.Packet) bool {
	return (p.Length >= int(m.lo) && p.Length <= int(m.hi)) != m.inv
}

// ttlMatcher is -m ttl / -m hl.
type ttlMatcher struct {
	op CmpOp
	v  uint8
}

func (m *ttlMatcher) match(p *packet.Packet) bool {
	switch m.op {
	case CmpEq:
		return p.TTL == m.v
	case CmpNe:
		return p.TTL != m.v
	case CmpLt:
		return p.TTL < m.v
	case CmpGt:
		return p.TTL > m.v
	}
	return false
}

// pkttypeMatcher is -m pkttype.
type pkttypeMatcher struct {
	t   packet.PktType
	inv bool
}

func (m *pkttypeMatcher) match(p *packet.Packet) bool {
	return (p.PktType == m.t) != m.inv
}

// macMatcher is -m mac: a packet without an Ethernet source never matches,
// inverted or not (xt_mac).
type macMatcher struct {
	addr [6]byte
	inv  bool
}

func (m *macMatcher) match(p *packet.Packet) bool {
	if !p.HasMAC {
		return false
	}
	return (p.SrcMAC == m.addr) != m.inv
}

// fragMatcher is ip6tables -m frag: only packets with a Fragment header.
type fragMatcher struct {
	m FragMatch
}

func (fm *fragMatcher) match(p *packet.Packet) bool {
	m := &fm.m
	if p.Family != packet.IPv6 || !p.HasFragHdr {
		return false
	}
	if m.HasID {
		hi := m.IDHi
		if hi < m.IDLo {
			hi = m.IDLo
		}
		if (p.ID >= m.IDLo && p.ID <= hi) == m.IDInvert {
			return false
		}
	}
	if m.First && p.FragOffset != 0 {
		return false
	}
	if m.More && !p.MoreFrags {
		return false
	}
	if m.Last && p.MoreFrags {
		return false
	}
	return true
}
