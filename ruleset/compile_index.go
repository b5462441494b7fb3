package ruleset

import (
	"net/netip"
	"slices"

	"github.com/filterd/filterd/packet"
)

// The candidate index.
//
// Every rule of an indexed chain is filed under exactly one key that is a
// necessary condition for the rule to match: its source prefix, its
// destination prefix, its protocol + destination port, its protocol, or
// nothing (the wildcard list). For a packet, the lists under the keys the
// packet satisfies are merged in rule order; every rule left out fails its
// key's condition and so cannot match. The chain walk therefore sees exactly
// the rules plain first-match evaluation would see match, in the same order,
// and stateful matches run for exactly the same packets.

const (
	maxAddrGroups = 6                   // prefix lengths indexed per family and direction
	maxCursors    = 2*maxAddrGroups + 3 // src + dst groups of one family, port, proto, wildcard
	maxPortSpan   = 64                  // elementary port intervals a rule may be copied into
	longV4        = 16                  // prefixes at least this long are preferred keys
	longV6        = 48
)

// candidates merges sorted rule-index lists.
type candidates struct {
	n int
	l [maxCursors][]int32
}

func (c *candidates) add(l []int32) {
	if len(l) > 0 {
		c.l[c.n] = l
		c.n++
	}
}

// next returns the smallest pending rule index.
func (c *candidates) next() (int32, bool) {
	switch c.n {
	case 0:
		return 0, false
	case 1:
		l := c.l[0]
		v := l[0]
		if len(l) == 1 {
			c.n = 0
		} else {
			c.l[0] = l[1:]
		}
		return v, true
	}
	best := 0
	bv := c.l[0][0]
	for i := 1; i < c.n; i++ {
		if v := c.l[i][0]; v < bv {
			bv, best = v, i
		}
	}
	if len(c.l[best]) == 1 {
		c.n--
		c.l[best] = c.l[c.n]
		c.l[c.n] = nil
	} else {
		c.l[best] = c.l[best][1:]
	}
	return bv, true
}

type addrGroup struct {
	bits int
	m    map[netip.Addr][]int32
}

type portIndex struct {
	bounds []uint16 // start port of each elementary interval; bounds[0] == 0
	lists  [][]int32
}

func (pi *portIndex) lookup(port uint16) []int32 {
	b := pi.bounds
	lo, hi := 0, len(b) // invariant: b[lo] <= port, answer in [lo, hi)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if b[mid] <= port {
			lo = mid
		} else {
			hi = mid
		}
	}
	return pi.lists[lo]
}

// chainIndex is the candidate index of one chain.
type chainIndex struct {
	src4, src6, dst4, dst6 []addrGroup
	ports                  [256]*portIndex
	proto                  [256][]int32
	wild                   []int32
}

func lookupAddr(groups []addrGroup, a netip.Addr, it *candidates) {
	for i := range groups {
		g := &groups[i]
		k := netip.PrefixFrom(a, g.bits).Masked().Addr()
		if l, ok := g.m[k]; ok {
			it.add(l)
		}
	}
}

// candidates fills it with the lists of rules that may match p.
func (x *chainIndex) candidates(p *packet.Packet, it *candidates) {
	if p.Src.Is4() {
		lookupAddr(x.src4, p.Src, it)
	} else if p.Src.Is6() {
		lookupAddr(x.src6, p.Src, it)
	}
	if p.Dst.Is4() {
		lookupAddr(x.dst4, p.Dst, it)
	} else if p.Dst.Is6() {
		lookupAddr(x.dst6, p.Dst, it)
	}
	if pi := x.ports[p.Proto]; pi != nil && !p.Fragment {
		it.add(pi.lookup(p.DstPort))
	}
	it.add(x.proto[p.Proto])
	it.add(x.wild)
}

type dim uint8

const (
	dimSrc dim = iota
	dimDst
	dimPort
	dimProto
	dimWild
)

type groupKey struct {
	v6   bool
	bits int
}

func addrKeyable(a addrTest) bool { return a.set && !a.inv && !a.all }

func isLong(a addrTest) bool {
	if a.pfx.Addr().Is4() {
		return a.pfx.Bits() >= longV4
	}
	return a.pfx.Bits() >= longV6
}

// dportKey returns the destination port ranges the rule needs, taken from
// the first match module that tests them, provided no stateful module runs
// before it (skipping the rule would then skip that module's side effects).
func dportKey(r *crule) []PortRange {
	if r.protoAny || r.protoInv {
		return nil
	}
	for _, m := range r.matchers {
		if k, ok := m.(dportKeyer); ok {
			if rs := k.dportRanges(); rs != nil {
				return rs
			}
		}
		if isStateful(m) {
			return nil
		}
	}
	return nil
}

// buildIndex builds the candidate index for a chain's rules.
func buildIndex(rules []crule) *chainIndex {
	x := &chainIndex{}
	n := len(rules)

	// Most frequent prefix lengths per family and direction get a group.
	count := func(get func(*crule) addrTest) map[groupKey]bool {
		freq := map[groupKey]int{}
		for i := range rules {
			a := get(&rules[i])
			if addrKeyable(a) {
				freq[groupKey{a.pfx.Addr().Is6(), a.pfx.Bits()}]++
			}
		}
		keys := make([]groupKey, 0, len(freq))
		for k := range freq {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b groupKey) int {
			if freq[a] != freq[b] {
				return freq[b] - freq[a]
			}
			return b.bits - a.bits
		})
		allowed := map[groupKey]bool{}
		var n4, n6 int
		for _, k := range keys {
			if k.v6 && n6 < maxAddrGroups {
				allowed[k] = true
				n6++
			} else if !k.v6 && n4 < maxAddrGroups {
				allowed[k] = true
				n4++
			}
		}
		return allowed
	}
	srcOK := count(func(r *crule) addrTest { return r.src })
	dstOK := count(func(r *crule) addrTest { return r.dst })
	okAddr := func(a addrTest, allowed map[groupKey]bool) bool {
		return addrKeyable(a) && allowed[groupKey{a.pfx.Addr().Is6(), a.pfx.Bits()}]
	}

	// Preferences for each rule, best first.
	prefs := make([][]dim, n)
	ports := make([][]PortRange, n)
	for i := range rules {
		r := &rules[i]
		s, d := okAddr(r.src, srcOK), okAddr(r.dst, dstOK)
		ports[i] = dportKey(r)
		var pl []dim
		if s && isLong(r.src) {
			pl = append(pl, dimSrc)
		}
		if d && isLong(r.dst) {
			pl = append(pl, dimDst)
		}
		if ports[i] != nil {
			pl = append(pl, dimPort)
		}
		if s {
			pl = append(pl, dimSrc)
		}
		if d {
			pl = append(pl, dimDst)
		}
		if !r.protoAny && !r.protoInv {
			pl = append(pl, dimProto)
		}
		pl = append(pl, dimWild)
		prefs[i] = pl
	}
	choice := make([]dim, n)
	for i := range rules {
		choice[i] = prefs[i][0]
	}

	// Port index: elementary intervals per protocol.
	var bounds [256][]uint16
	for i := range rules {
		if choice[i] != dimPort {
			continue
		}
		pr := rules[i].proto
		if bounds[pr] == nil {
			bounds[pr] = []uint16{0}
		}
		for _, rg := range ports[i] {
			bounds[pr] = append(bounds[pr], rg.Lo)
			if rg.Hi < 65535 {
				bounds[pr] = append(bounds[pr], rg.Hi+1)
			}
		}
	}
	for pr := range bounds {
		if bounds[pr] != nil {
			slices.Sort(bounds[pr])
			bounds[pr] = slices.Compact(bounds[pr])
			x.ports[pr] = &portIndex{bounds: bounds[pr], lists: make([][]int32, len(bounds[pr]))}
		}
	}
	demote := func(i int) {
		pl := prefs[i]
		for j, d := range pl {
			if d == dimPort {
				choice[i] = pl[j+1]
				return
			}
		}
	}
	for i := range rules {
		if choice[i] != dimPort {
			continue
		}
		pi := x.ports[rules[i].proto]
		span := 0
		for _, rg := range ports[i] {
			lo, hi := pi.interval(rg.Lo), pi.interval(rg.Hi)
			span += hi - lo + 1
		}
		if span > maxPortSpan {
			demote(i)
			continue
		}
		for _, rg := range ports[i] {
			lo, hi := pi.interval(rg.Lo), pi.interval(rg.Hi)
			for k := lo; k <= hi; k++ {
				l := pi.lists[k]
				if len(l) == 0 || l[len(l)-1] != int32(i) {
					pi.lists[k] = append(l, int32(i))
				}
			}
		}
	}

	// Address, protocol and wildcard lists.
	addTo := func(groups *[]addrGroup, a addrTest, i int) {
		bits := a.pfx.Bits()
		for gi := range *groups {
			g := &(*groups)[gi]
			if g.bits == bits {
				g.m[a.pfx.Addr()] = append(g.m[a.pfx.Addr()], int32(i))
				return
			}
		}
		*groups = append(*groups, addrGroup{bits: bits, m: map[netip.Addr][]int32{a.pfx.Addr(): {int32(i)}}})
	}
	for i := range rules {
		r := &rules[i]
		switch choice[i] {
		case dimSrc:
			if r.src.pfx.Addr().Is4() {
				addTo(&x.src4, r.src, i)
			} else {
				addTo(&x.src6, r.src, i)
			}
		case dimDst:
			if r.dst.pfx.Addr().Is4() {
				addTo(&x.dst4, r.dst, i)
			} else {
				addTo(&x.dst6, r.dst, i)
			}
		case dimProto:
			x.proto[r.proto] = append(x.proto[r.proto], int32(i))
		case dimWild:
			x.wild = append(x.wild, int32(i))
		}
	}
	return x
}

// interval returns the index of the elementary interval holding port.
func (pi *portIndex) interval(port uint16) int {
	k, found := slices.BinarySearch(pi.bounds, port)
	if found {
		return k
	}
	return k - 1
}
