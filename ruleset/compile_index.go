package ruleset

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/filterd/filterd/packet"
)

// The candidate index.
//
// Every rule of an indexed chain is filed under exactly one key that is a
// necessary condition for the rule to match: its source prefix, its
// destination prefix, its protocol + destination port range(s), its
// protocol, or nothing (the wildcard list). Prefixes and port ranges are cut
// into elementary intervals (binary search, one lookup whatever the prefix
// lengths). For a packet, the lists under the keys the
// packet satisfies are merged in rule order; every rule left out fails its
// key's condition and so cannot match. The chain walk therefore sees exactly
// the rules plain first-match evaluation would see match, in the same order,
// and stateful matches run for exactly the same packets.

const (
	maxCursors = 5  // src, dst, port, proto, wildcard
	maxSpan    = 64 // elementary intervals a rule may be copied into
	longV4     = 16 // prefixes at least this long are preferred keys
	longV6     = 48
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

// u128 is an IPv6 address as a number.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) next() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return a, false
}

func addr128(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func addr32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// ivIndex maps elementary intervals of a key space (ports, IPv4 addresses,
// IPv6 addresses) to the sorted rule lists whose key range covers them.
// bounds[k] is the first key of interval k (bounds[0] is the smallest key);
// the lists are stored flat: rules of interval k are flat[start[k]:start[k+1]].
type ivIndex[K any] struct {
	bounds []K
	start  []int32
	flat   []int32
	less   func(a, b K) bool
}

// interval returns k with bounds[k] <= key < bounds[k+1].
func (x *ivIndex[K]) interval(key K) int {
	lo, hi := 0, len(x.bounds)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if x.less(key, x.bounds[mid]) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return lo
}

// keyRange is a rule's inclusive key range.
type keyRange[K any] struct{ lo, hi K }

// ivBuilder collects ranges and builds an ivIndex.
type ivBuilder[K any] struct {
	less   func(a, b K) bool
	next   func(K) (K, bool)
	zero   K
	bounds []K
	idx    *ivIndex[K]
	lists  [][]int32
}

func (b *ivBuilder[K]) addBounds(r keyRange[K]) {
	b.bounds = append(b.bounds, r.lo)
	if n, ok := b.next(r.hi); ok {
		b.bounds = append(b.bounds, n)
	}
}

func (b *ivBuilder[K]) freeze() {
	b.bounds = append(b.bounds, b.zero)
	slices.SortFunc(b.bounds, func(x, y K) int {
		switch {
		case b.less(x, y):
			return -1
		case b.less(y, x):
			return 1
		}
		return 0
	})
	b.bounds = slices.CompactFunc(b.bounds, func(x, y K) bool { return !b.less(x, y) && !b.less(y, x) })
	b.idx = &ivIndex[K]{bounds: b.bounds, less: b.less}
	b.lists = make([][]int32, len(b.bounds))
}

func (b *ivBuilder[K]) span(rs []keyRange[K]) int {
	n := 0
	for _, r := range rs {
		n += b.idx.interval(r.hi) - b.idx.interval(r.lo) + 1
	}
	return n
}

func (b *ivBuilder[K]) insert(rs []keyRange[K], rule int32) {
	for _, r := range rs {
		for k, hi := b.idx.interval(r.lo), b.idx.interval(r.hi); k <= hi; k++ {
			if l := b.lists[k]; len(l) == 0 || l[len(l)-1] != rule {
				b.lists[k] = append(l, rule)
			}
		}
	}
}

func (b *ivBuilder[K]) build() *ivIndex[K] {
	x := b.idx
	x.start = make([]int32, len(b.lists)+1)
	n := 0
	for _, l := range b.lists {
		n += len(l)
	}
	x.flat = make([]int32, 0, n)
	for k, l := range b.lists {
		x.start[k] = int32(len(x.flat))
		x.flat = append(x.flat, l...)
	}
	x.start[len(b.lists)] = int32(len(x.flat))
	return x
}

func newBuilder16() *ivBuilder[uint16] {
	return &ivBuilder[uint16]{less: func(a, b uint16) bool { return a < b },
		next: func(a uint16) (uint16, bool) { return a + 1, a != 0xffff }}
}

func newBuilder32() *ivBuilder[uint32] {
	return &ivBuilder[uint32]{less: func(a, b uint32) bool { return a < b },
		next: func(a uint32) (uint32, bool) { return a + 1, a != 0xffffffff }}
}

func newBuilder128() *ivBuilder[u128] {
	return &ivBuilder[u128]{less: u128.less, next: u128.next}
}

// Specialised lookups (no function-value calls on the packet path).

// lookupN is the lookup for the unsigned integer keys (ports, IPv4
// addresses); each key type gets its own instantiation, so the comparison
// is a plain machine compare.
func lookupN[T uint16 | uint32](x *ivIndex[T], k T) []int32 {
	b := x.bounds
	lo, hi := 0, len(b)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if k < b[mid] {
			hi = mid
		} else {
			lo = mid
		}
	}
	return x.flat[x.start[lo]:x.start[lo+1]]
}

func lookup128(x *ivIndex[u128], k u128) []int32 {
	b := x.bounds
	lo, hi := 0, len(b)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if k.less(b[mid]) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return x.flat[x.start[lo]:x.start[lo+1]]
}

// chainIndex is the candidate index of one chain.
type chainIndex struct {
	src4, dst4 *ivIndex[uint32]
	src6, dst6 *ivIndex[u128]
	ports      [256]*ivIndex[uint16]
	proto      [256][]int32
	wild       []int32
}

// candidates fills it with the lists of rules that may match p.
func (x *chainIndex) candidates(p *packet.Packet, it *candidates) {
	if p.Src.Is4() {
		if x.src4 != nil {
			it.add(lookupN(x.src4, addr32(p.Src)))
		}
	} else if p.Src.Is6() && x.src6 != nil {
		it.add(lookup128(x.src6, addr128(p.Src)))
	}
	if p.Dst.Is4() {
		if x.dst4 != nil {
			it.add(lookupN(x.dst4, addr32(p.Dst)))
		}
	} else if p.Dst.Is6() && x.dst6 != nil {
		it.add(lookup128(x.dst6, addr128(p.Dst)))
	}
	if pi := x.ports[p.Proto]; pi != nil && !p.Fragment {
		it.add(lookupN(pi, p.DstPort))
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

// addrIndexes builds the source or destination index of one family.
type addrIndexes struct {
	b4   *ivBuilder[uint32]
	b6   *ivBuilder[u128]
	r4   [][]keyRange[uint32] // per rule; nil when not keyable
	r6   [][]keyRange[u128]
	used bool
}

func newAddrIndexes(n int) *addrIndexes {
	return &addrIndexes{b4: newBuilder32(), b6: newBuilder128(), r4: make([][]keyRange[uint32], n), r6: make([][]keyRange[u128], n)}
}

func (ai *addrIndexes) add(i int, a addrTest) {
	p := a.pfx
	if p.Addr().Is4() {
		lo := addr32(p.Addr())
		hi := lo | (1<<(32-p.Bits()) - 1)
		if p.Bits() == 0 {
			hi = ^uint32(0)
		}
		r := keyRange[uint32]{lo, hi}
		ai.r4[i] = []keyRange[uint32]{r}
		ai.b4.addBounds(r)
		return
	}
	lo := addr128(p.Addr())
	hi := lo
	host := 128 - p.Bits()
	switch {
	case host >= 64:
		hi.lo = ^uint64(0)
		if host > 64 {
			hi.hi |= 1<<(host-64) - 1
		}
	case host > 0:
		hi.lo |= 1<<host - 1
	}
	r := keyRange[u128]{lo, hi}
	ai.r6[i] = []keyRange[u128]{r}
	ai.b6.addBounds(r)
}

func (ai *addrIndexes) freeze() {
	ai.b4.freeze()
	ai.b6.freeze()
}

func (ai *addrIndexes) span(i int) int {
	if ai.r4[i] != nil {
		return ai.b4.span(ai.r4[i])
	}
	return ai.b6.span(ai.r6[i])
}

func (ai *addrIndexes) insert(i int) {
	if ai.r4[i] != nil {
		ai.b4.insert(ai.r4[i], int32(i))
	} else {
		ai.b6.insert(ai.r6[i], int32(i))
	}
}

func (ai *addrIndexes) build() (*ivIndex[uint32], *ivIndex[u128]) {
	var x4 *ivIndex[uint32]
	var x6 *ivIndex[u128]
	if len(ai.b4.bounds) > 1 {
		x4 = ai.b4.build()
	}
	if len(ai.b6.bounds) > 1 {
		x6 = ai.b6.build()
	}
	return x4, x6
}

// buildIndex builds the candidate index for a chain's rules.
func buildIndex(rules []crule) *chainIndex {
	x := &chainIndex{}
	n := len(rules)
	src, dst := newAddrIndexes(n), newAddrIndexes(n)
	var ports [256]*ivBuilder[uint16]
	portRanges := make([][]keyRange[uint16], n)

	// Preferences for each rule, best first, and the key ranges of each.
	prefs := make([][]dim, n)
	for i := range rules {
		r := &rules[i]
		s, d := addrKeyable(r.src), addrKeyable(r.dst)
		if s {
			src.add(i, r.src)
		}
		if d {
			dst.add(i, r.dst)
		}
		if pr := dportKey(r); pr != nil {
			b := ports[r.proto]
			if b == nil {
				b = newBuilder16()
				ports[r.proto] = b
			}
			for _, rg := range pr {
				kr := keyRange[uint16]{rg.Lo, max(rg.Hi, rg.Lo)}
				portRanges[i] = append(portRanges[i], kr)
				b.addBounds(kr)
			}
		}
		var pl []dim
		if s && isLong(r.src) {
			pl = append(pl, dimSrc)
		}
		if d && isLong(r.dst) {
			pl = append(pl, dimDst)
		}
		if portRanges[i] != nil {
			pl = append(pl, dimPort)
		}
		if s && !isLong(r.src) {
			pl = append(pl, dimSrc)
		}
		if d && !isLong(r.dst) {
			pl = append(pl, dimDst)
		}
		if !r.protoAny && !r.protoInv {
			pl = append(pl, dimProto)
		}
		pl = append(pl, dimWild)
		prefs[i] = pl
	}
	src.freeze()
	dst.freeze()
	for _, b := range ports {
		if b != nil {
			b.freeze()
		}
	}

	// A rule goes under its first key whose range covers few enough
	// elementary intervals (a /8 over thousands of /32s is not copied into
	// each of them).
	for i := range rules {
		choice := dimWild
		for _, d := range prefs[i] {
			ok := true
			switch d {
			case dimSrc:
				ok = src.span(i) <= maxSpan
			case dimDst:
				ok = dst.span(i) <= maxSpan
			case dimPort:
				ok = ports[rules[i].proto].span(portRanges[i]) <= maxSpan
			}
			if ok {
				choice = d
				break
			}
		}
		switch choice {
		case dimSrc:
			src.insert(i)
		case dimDst:
			dst.insert(i)
		case dimPort:
			ports[rules[i].proto].insert(portRanges[i], int32(i))
		case dimProto:
			x.proto[rules[i].proto] = append(x.proto[rules[i].proto], int32(i))
		default:
			x.wild = append(x.wild, int32(i))
		}
	}
	x.src4, x.src6 = src.build()
	x.dst4, x.dst6 = dst.build()
	for pr, b := range ports {
		if b != nil {
			x.ports[pr] = b.build()
		}
	}
	return x
}
