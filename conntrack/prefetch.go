package conntrack

import (
	"unsafe"

	"github.com/filterd/filterd/internal/prefetch"
)

// Hash is a tuple's flow hash in a table, as PrefetchBucket returns it for
// PrefetchEntry.
type Hash uint64

// PrefetchBucket asks the CPU to load the hash bucket that a Track of a
// packet with tuple k (either direction) will read first, and returns the
// tuple's hash. It takes no lock and reads nothing of the table but its
// fixed layout. A caller holding a batch of packets calls it for all of
// them, then PrefetchEntry for all of them, then Track for each: the
// batch's cache misses then overlap.
func (t *Table) PrefetchBucket(k *Key) Hash {
	h := t.hash(k)
	sh, b := t.shardOf(h)
	prefetch.Line(unsafe.Pointer(&t.shards[sh].buckets[b]))
	return Hash(h)
}

// PrefetchEntry asks the CPU to load the entry a Track of the tuple with
// this hash (from PrefetchBucket) will find when it is the first of its
// bucket (chains are short); else the free entry a new flow of that shard
// would get next, or, when the table is full, the entry early drop will
// look at first; with its chain link. It reads the bucket and the shard's
// allocation state without the shard's lock: a stale value only makes the
// hint useless. In race-enabled builds it does nothing.
func (t *Table) PrefetchEntry(hash Hash) {
	if !prefetch.Racy {
		return
	}
	h := uint64(hash)
	sh, b := t.shardOf(h)
	s := &t.shards[sh]
	c := s.buckets[b]
	if c != 0 && c.tag() == hashTag(h) {
		s.prefetchEntry(c.idx1()-1, false)
		return
	}
	if t.count.Load() >= t.cfg.max {
		// A full table: early drop will evict from the first non-empty
		// bucket from b on. A lone entry without ptrCheck it evicts
		// unread, and the flow gets the shard's spare, in the cache;
		// otherwise it reads the entries of that bucket.
		for i := uint32(0); i < earlyDropRange; i++ {
			if c := s.buckets[(b+i)&uint32(t.bucketMask)]; c != 0 {
				if !c.unread() {
					s.prefetchEntry(c.idx1()-1, false)
				}
				return
			}
		}
		return
	}
	i := s.free - 1
	if i < 0 {
		i = s.nalloc
	}
	s.prefetchEntry(i, true)
}

// prefetchEntry prefetches entry i's first cache line (its key and expiry:
// what lookups, early drop and the sweep read) and its chain link, or the
// whole entry when whole (it is about to be written).
func (s *shard) prefetchEntry(i int32, whole bool) {
	if i < 0 || int(i>>chunkBits) >= len(s.chunks) {
		return // a torn read (32-bit platforms)
	}
	blk, lb := s.chunks[i>>chunkBits], s.links[i>>chunkBits]
	if blk == nil || lb == nil {
		return
	}
	e := unsafe.Pointer(&blk[i&(chunkSize-1)])
	prefetch.Line(e)
	prefetch.Line(unsafe.Pointer(&lb[i&(chunkSize-1)]))
	if whole {
		for off := uintptr(64); off < unsafe.Sizeof(entry{}); off += 64 {
			prefetch.Line(unsafe.Add(e, off))
		}
	}
}
