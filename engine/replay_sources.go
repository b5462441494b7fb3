package engine

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
	"unsafe"

	"github.com/filterd/filterd/internal/prefetch"
)

// srcTable holds the replay's per-source counters: the counters in one
// slice and an open-addressing index over it (linear probing), bounded by
// max sources. Counting a packet of a known source allocates nothing and
// touches two cache lines; the table grows by doubling up to its bound.
type srcTable struct {
	srcs    []SourceCount
	slots   []int32 // index+1 into srcs, 0 when empty; a power of two, at least twice len(srcs)
	seed    uint64
	max     int
	pruned  uint64   // entries forgotten to stay within max
	scratch []uint64 // dropped counts, for pruning
}

func (t *srcTable) hash(a netip.Addr) uint64 {
	var h uint64
	if a.Is4() {
		b := a.As4()
		h = uint64(binary.LittleEndian.Uint32(b[:])) ^ t.seed
	} else {
		b := a.As16()
		hi, lo := bits.Mul64(binary.LittleEndian.Uint64(b[:8])^t.seed, binary.LittleEndian.Uint64(b[8:])^0x9e3779b97f4a7c15)
		h = hi ^ lo
	}
	hi, lo := bits.Mul64(h, 0xbf58476d1ce4e5b9)
	return hi ^ lo
}

// get returns the counters of source a, adding it (after pruning, when the
// table is full) when it is new.
func (t *srcTable) get(a netip.Addr) *SourceCount {
	if len(t.slots) > 0 {
		mask := uint64(len(t.slots) - 1)
		for i := t.hash(a) & mask; ; i = (i + 1) & mask {
			j := t.slots[i]
			if j == 0 {
				break
			}
			if t.srcs[j-1].Addr == a {
				return &t.srcs[j-1]
			}
		}
	}
	if len(t.srcs) >= t.max {
		t.prune()
	}
	t.srcs = append(t.srcs, SourceCount{Addr: a})
	if 2*len(t.srcs) > len(t.slots) {
		t.reindex(max(16, 2*len(t.slots)))
	} else {
		t.insert(len(t.srcs) - 1)
	}
	return &t.srcs[len(t.srcs)-1]
}

func (t *srcTable) insert(idx int) {
	mask := uint64(len(t.slots) - 1)
	i := t.hash(t.srcs[idx].Addr) & mask
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
	var a netip.Addr
	switch {
	case l3[0]>>4 == 4:
		a = netip.AddrFrom4([4]byte(l3[12:16]))
	case l3[0]>>4 == 6 && len(l3) >= 40:
		a = netip.AddrFrom16([16]byte(l3[8:24]))
	default:
		return
	}
	i := t.hash(a) & uint64(len(t.slots)-1)
	if !entry {
		prefetch.Line(unsafe.Pointer(&t.slots[i]))
		return
	}
	if j := t.slots[i]; j > 0 && int(j) <= len(t.srcs) {
		prefetch.Line(unsafe.Pointer(&t.srcs[j-1]))
	}
}
