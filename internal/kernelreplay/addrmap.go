package kernelreplay

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
)

// The only address ranges the kernel replay ever sends from or to.
var (
	Range4 = netip.MustParsePrefix("198.18.0.0/15")
	Range6 = netip.MustParsePrefix("fd00:198:18::/48")
)

// InRange reports whether a is inside 198.18.0.0/15 or fd00:198:18::/48.
func InRange(a netip.Addr) bool {
	a = a.Unmap()
	return Range4.Contains(a) || Range6.Contains(a)
}

// AddrMap maps addresses into Range4 / Range6. Addresses already inside stay
// as they are. The others are mapped deterministically (same inputs, same
// map) into a block of the range that no inside address or inside prefix
// uses, such that for every prefix the map was built with (the rules'
// prefixes, plus the /24 resp. /64 around every address) an address is in
// the prefix exactly when its image is in the prefix's image (MapPrefix).
// Order is kept too: a < b implies Map(a) < Map(b) among mapped addresses.
type AddrMap struct {
	addrs    map[netip.Addr]netip.Addr
	prefixes map[netip.Prefix]netip.Prefix
	// Block4 and Block6 are the free blocks the outside addresses went into
	// (invalid when the family needed none).
	Block4, Block6 netip.Prefix
}

// NewAddrMap builds the map for the given addresses (every address of the
// capture, and the --local ones) and prefixes (every prefix and address the
// rules name; see RulePrefixes). The error says which prefix cannot be kept.
func NewAddrMap(addrs []netip.Addr, prefixes []netip.Prefix) (*AddrMap, error) {
	m := &AddrMap{addrs: map[netip.Addr]netip.Addr{}, prefixes: map[netip.Prefix]netip.Prefix{}}
	for _, fam := range []struct {
		rng   netip.Prefix
		group int
		block *netip.Prefix
	}{{Range4, 24, &m.Block4}, {Range6, 64, &m.Block6}} {
		var as []netip.Addr
		for _, a := range addrs {
			if a = a.Unmap(); a.Is4() == fam.rng.Addr().Is4() {
				as = append(as, a)
			}
		}
		var ps []netip.Prefix
		for _, p := range prefixes {
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
			}
			p = p.Masked()
			if p.Addr().Is4() == fam.rng.Addr().Is4() {
				ps = append(ps, p)
			}
		}
		if err := m.build(fam.rng, fam.group, as, ps, fam.block); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type node struct {
	p        netip.Prefix
	children []*node
}

func (m *AddrMap) build(rng netip.Prefix, group int, addrs []netip.Addr, prefixes []netip.Prefix, block *netip.Prefix) error {
	var used []netip.Prefix // inside the range: must stay clear of the mapped block
	marked := map[netip.Prefix]bool{}
	var outside []netip.Addr
	for _, a := range addrs {
		if rng.Contains(a) {
			m.addrs[a] = a
			used = append(used, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		outside = append(outside, a)
		marked[netip.PrefixFrom(a, a.BitLen())] = true
		marked[netip.PrefixFrom(a, group).Masked()] = true
	}
	var covering []netip.Prefix // rule prefixes that contain the whole range
	for _, p := range prefixes {
		switch {
		case p.Bits() == 0:
			m.prefixes[p] = p // everything is a member before and after
		case rng.Bits() <= p.Bits() && rng.Contains(p.Addr()):
			m.prefixes[p] = p
			used = append(used, p)
		case p.Bits() < rng.Bits() && p.Contains(rng.Addr()):
			m.prefixes[p] = p
			covering = append(covering, p)
		default:
			marked[p] = true
		}
	}
	if len(outside) == 0 {
		for p := range marked { // rule prefixes outside the range, with no member in the capture
			m.prefixes[p] = p
		}
		return nil
	}
	for _, p := range covering {
		for _, a := range outside {
			if !p.Contains(a) {
				return fmt.Errorf("kernelreplay: rules prefix %s contains all of %s but not the capture's address %s: mapping %s into %s cannot keep its membership", p, rng, a, a, rng)
			}
		}
	}
	free, ok := freeBlock(rng, used)
	if !ok {
		return fmt.Errorf("kernelreplay: no free block left in %s for %d outside addresses", rng, len(outside))
	}
	*block = free
	// Containment tree of the marked prefixes: parent = nearest marked ancestor.
	ps := make([]netip.Prefix, 0, len(marked))
	for p := range marked {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	root := &node{}
	stack := []*node{root}
	for _, p := range ps {
		for len(stack) > 1 {
			top := stack[len(stack)-1].p
			if top.Bits() <= p.Bits() && top.Contains(p.Addr()) {
				break
			}
			stack = stack[:len(stack)-1]
		}
		n := &node{p: p}
		parent := stack[len(stack)-1]
		parent.children = append(parent.children, n)
		stack = append(stack, n)
	}
	return m.assign(root, free)
}

// assign gives each child of n a sub-block of blk: child i gets index i in
// the next ceil(log2(#children)) bits.
func (m *AddrMap) assign(n *node, blk netip.Prefix) error {
	k := 0
	if c := len(n.children); c > 1 {
		k = bits.Len(uint(c - 1))
	}
	width := blk.Addr().BitLen()
	if blk.Bits()+k > width {
		return fmt.Errorf("kernelreplay: too many nested prefixes to keep them apart inside %s (at %s)", blk, n.p)
	}
	for i, c := range n.children {
		sub := netip.PrefixFrom(setBits(blk.Addr(), blk.Bits(), k, uint64(i)), blk.Bits()+k)
		if c.p.Bits() == width { // a host: fill the rest with its own low bits
			a := c.p.Addr()
			img := copyLowBits(sub.Addr(), a, width-sub.Bits())
			m.addrs[a] = img
			m.prefixes[c.p] = netip.PrefixFrom(img, width)
			continue
		}
		m.prefixes[c.p] = sub
		if err := m.assign(c, sub); err != nil {
			return err
		}
	}
	return nil
}

// freeBlock returns the largest block inside rng that overlaps none of used,
// preferring the highest address among blocks of the same size.
func freeBlock(rng netip.Prefix, used []netip.Prefix) (netip.Prefix, bool) {
	if len(used) == 0 {
		return rng, true
	}
	width := rng.Addr().BitLen()
	for l := rng.Bits() + 1; l <= width && l <= rng.Bits()+24; l++ {
		n := uint64(1) << (l - rng.Bits())
		for i, tries := n, 0; i > 0 && tries < 1<<16; i, tries = i-1, tries+1 {
			cand := netip.PrefixFrom(setBits(rng.Addr(), rng.Bits(), l-rng.Bits(), i-1), l)
			if !slices.ContainsFunc(used, cand.Overlaps) {
				return cand, true
			}
		}
	}
	return netip.Prefix{}, false
}

// setBits sets the k bits of a starting at bit position pos (0 = most
// significant) to v.
func setBits(a netip.Addr, pos, k int, v uint64) netip.Addr {
	b := a.AsSlice()
	for j := 0; j < k; j++ {
		bit := (v >> (k - 1 - j)) & 1
		p := pos + j
		if bit == 1 {
			b[p/8] |= 0x80 >> (p % 8)
		} else {
			b[p/8] &^= 0x80 >> (p % 8)
		}
	}
	r, _ := netip.AddrFromSlice(b)
	return r
}

// copyLowBits replaces the low n bits of dst with those of src.
func copyLowBits(dst, src netip.Addr, n int) netip.Addr {
	d, s := dst.AsSlice(), src.AsSlice()
	for p := len(d)*8 - n; p < len(d)*8; p++ {
		mask := byte(0x80 >> (p % 8))
		d[p/8] = d[p/8]&^mask | s[p/8]&mask
	}
	r, _ := netip.AddrFromSlice(d)
	return r
}

// Map returns the image of a. Addresses the map was not built with are
// returned unchanged with ok=false.
func (m *AddrMap) Map(a netip.Addr) (netip.Addr, bool) {
	img, ok := m.addrs[a.Unmap()]
	if !ok {
		return a, false
	}
	return img, true
}

// MapPrefix returns the image of a prefix the map was built with.
func (m *AddrMap) MapPrefix(p netip.Prefix) (netip.Prefix, bool) {
	if p.Bits() == p.Addr().BitLen() {
		if a, ok := m.addrs[p.Addr()]; ok {
			return netip.PrefixFrom(a, p.Bits()), true
		}
	}
	img, ok := m.prefixes[p.Masked()]
	return img, ok
}

// Pairs returns every (original, image) address pair, sorted by original.
func (m *AddrMap) Pairs() [][2]netip.Addr {
	out := make([][2]netip.Addr, 0, len(m.addrs))
	for a, b := range m.addrs {
		out = append(out, [2]netip.Addr{a, b})
	}
	slices.SortFunc(out, func(x, y [2]netip.Addr) int { return x[0].Compare(y[0]) })
	return out
}
