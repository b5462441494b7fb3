package engine

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
	"unsafe"

	"github.com/filterd/filterd/internal/prefetch"
	"github.com/filterd/filterd/packet"
)

// srcTable holds the replay's per-source counters: the counters in one
// slice and an open-addressing index over it (linear probing), bounded by
// max sources. Counting a packet of a known source allocates nothing and
// touches two cache lines; the table grows by doubling up to its bound.
type srcTable struct {
	srcs    []srcCount
	slots   []int32 // index+1 into srcs, 0 when empty; a power of two, at least twice len(srcs)
	seed    uint64
	max     int
	pruned  uint64   // entries forgotten to stay within max
	scratch []uint64 // dropped counts, for pruning
}

// srcCount is a SourceCount as the table keeps it: the address as its
// 16-byte form's two words and whether it is IPv4, so that the counters
// hold no pointer (a netip.Addr has one) and the garbage collector never
// scans them nor do appends go through its write barrier.
type srcCount struct {
	hi, lo                 uint64
	is4                    bool
	Offered, Dropped, SYNs uint64
}

// srcPresize is how many sources a table makes room for at once: up to
// that many (the default bound, DefaultMaxSources), a flood of new sources
// neither copies the counters as they grow nor rebuilds the index; pages
// the table never reaches are never touched.
const srcPresize = DefaultMaxSources

// newSrcTable returns an empty table bounded by max sources.
func newSrcTable(max int, seed uint64) srcTable {
	n := min(max, srcPresize)
	slots := 16
	for slots < 2*n {
		slots <<= 1
	}
	return srcTable{srcs: make([]srcCount, 0, n), slots: make([]int32, slots), seed: seed, max: max}
}

func srcKey(a netip.Addr) (hi, lo uint64, is4 bool) {
	hi, lo = packet.AddrWords(a)
	return hi, lo, a.Is4()
}

// addr returns the source's address.
func (c *srcCount) addr() netip.Addr { return packet.AddrFromWords(c.hi, c.lo, c.is4) }

// public returns the counters as a SourceCount.
func (c *srcCount) public() SourceCount {
	return SourceCount{Addr: c.addr(), Offered: c.Offered, Dropped: c.Dropped, SYNs: c.SYNs}
}

func (t *srcTable) hash(hi, lo uint64, is4 bool) uint64 {
	if is4 {
		hi = 1
	}
	x, y := bits.Mul64(hi^t.seed, lo^0x9e3779b97f4a7c15)
	x, y = bits.Mul64(x^y, 0xbf58476d1ce4e5b9)
	return x ^ y
}

// get returns the counters of source a, adding it (after pruning, when the
// table is full) when it is new.
func (t *srcTable) get(a netip.Addr) *srcCount {
	hi, lo, is4 := srcKey(a)
	if len(t.slots) > 0 {
		mask := uint64(len(t.slots) - 1)
		for i := t.hash(hi, lo, is4) & mask; ; i = (i + 1) & mask {
			j := t.slots[i]
			if j == 0 {
				break
			}
			if c := &t.srcs[j-1]; c.lo == lo && c.hi == hi && c.is4 == is4 {
				return c
			}
		}
	}
	if len(t.srcs) >= t.max {
		t.prune()
	}
	t.srcs = append(t.srcs, srcCount{hi: hi, lo: lo, is4: is4})
	if 2*len(t.srcs) > len(t.slots) {
		t.reindex(max(16, 2*len(t.slots)))
	} else {
		t.insert(len(t.srcs) - 1)
	}
	return &t.srcs[len(t.srcs)-1]
}

func (t *srcTable) insert(idx int) {
	mask := uint64(len(t.slots) - 1)
	c := &t.srcs[idx]
	i := t.hash(c.hi, c.lo, c.is4) & mask
	for t.slots[i] != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = int32(idx + 1)
}

// reindex rebuilds the index with n slots (reusing the old ones when n is
// their number).
func (t *srcTable) reindex(n int) {
	if n == len(t.slots) {
		clear(t.slots)
	} else {
		t.slots = make([]int32, n)
	}
	for i := range t.srcs {
		t.insert(i)
	}
}

// prune forgets the sources with the fewest dropped packets: every source
// whose count is at or below the median, so at least half of the table.
func (t *srcTable) prune() {
	t.scratch = t.scratch[:0]
	for i := range t.srcs {
		t.scratch = append(t.scratch, t.srcs[i].Dropped)
	}
	slices.Sort(t.scratch)
	median := t.scratch[len(t.scratch)/2]
	kept := t.srcs[:0]
	for _, sc := range t.srcs {
		if sc.Dropped > median {
			kept = append(kept, sc)
		}
	}
	t.pruned += uint64(len(t.srcs) - len(kept))
	clear(t.srcs[len(kept):])
	t.srcs = kept
	t.reindex(len(t.slots))
}

// prefetch asks the CPU to load the index slot of the source of l3 (an IPv4
// or IPv6 packet), or, with entry, the counters that slot points to (call
// it later, once the slot has arrived).
func (t *srcTable) prefetch(l3 []byte, entry bool) {
	if len(t.slots) == 0 || len(l3) < 20 {
		return
	}
	var hi, lo uint64
	is4 := false
	switch {
	case l3[0]>>4 == 4:
		lo, is4 = 0xffff<<32|uint64(binary.BigEndian.Uint32(l3[12:16])), true
	case l3[0]>>4 == 6 && len(l3) >= 40:
		hi, lo = binary.BigEndian.Uint64(l3[8:16]), binary.BigEndian.Uint64(l3[16:24])
	default:
		return
	}
	i := t.hash(hi, lo, is4) & uint64(len(t.slots)-1)
	if !entry {
		prefetch.Line(unsafe.Pointer(&t.slots[i]))
		return
	}
	if j := t.slots[i]; j > 0 && int(j) <= len(t.srcs) {
		prefetch.Line(unsafe.Pointer(&t.srcs[j-1]))
	}
}
