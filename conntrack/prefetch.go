package conntrack

import (
	"unsafe"

	"github.com/filterd/filterd/internal/prefetch"
)

// PrefetchBucket asks the CPU to load the hash bucket that a Track of a
// packet with tuple k (either direction) will read first. It takes no lock
// and reads nothing of the table but its fixed layout. A caller holding a
// batch of packets calls it for all of them, then PrefetchEntry for all of
// them, then Track for each: the batch's cache misses then overlap.
func (t *Table) PrefetchBucket(k *Key) {
	sh, b := t.shardOf(t.hash(k))
	prefetch.Line(unsafe.Pointer(&t.shards[sh].buckets[b]))
}

// PrefetchEntry asks the CPU to load the entry a Track of k will find,
// when it is the first of its bucket (chains are short). It reads the
// bucket without the shard's lock: a stale value only makes the hint
// useless. In race-enabled builds it does nothing.
func (t *Table) PrefetchEntry(k *Key) {
	if !prefetch.Racy {
		return
	}
	h := t.hash(k)
	sh, b := t.shardOf(h)
	s := &t.shards[sh]
	c := s.buckets[b]
	if c == 0 || c.tag() != hashTag(h) {
		return
	}
	i := c.idx1() - 1
	if i < 0 || int(i>>chunkBits) >= len(s.chunks) {
		return // a torn read (32-bit platforms)
	}
	if blk := s.chunks[i>>chunkBits]; blk != nil {
		prefetch.Line(unsafe.Pointer(&blk[i&(chunkSize-1)]))
	}
}
