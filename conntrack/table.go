// Package conntrack is a connection tracker that agrees with Linux
// nf_conntrack: the same tuples, the same TCP state machine and window
// tracking (net/netfilter/nf_conntrack_proto_tcp.c), the same UDP, ICMP,
// ICMPv6 and generic handling, RELATED ICMP errors, an FTP helper with
// expectations, confirmation of new entries only for accepted packets
// (__nf_conntrack_confirm), a capacity with early drop, and lazy expiry plus
// an incremental sweep instead of per-flow timers.
//
// Time comes from the packet (p.Meta.Time), so pcap replay runs on capture
// timestamps. A Table is safe for concurrent use: it is split into shards by
// a seeded, direction-independent flow hash and each shard has its own lock.
package conntrack

import (
	"crypto/rand"
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/filterd/filterd/packet"
)

// Entry status bits (a subset of the kernel's IPS_* bits).
const (
	stConfirmed uint16 = 1 << iota
	stSeenReply
	stAssured
	stExpected
	stHelper
	stFTPInfo // ftp holds the helper's state (set at confirmation)
)

// ctinfo values, as the kernel's enum ip_conntrack_info.
const (
	ctEstablished uint8 = iota
	ctRelated
	ctNew
	ctEstablishedReply
	ctRelatedReply
)

// Verdicts of a protocol tracker.
const (
	vAccept  = iota // accepted and refreshed
	vIgnore         // accepted, entry not refreshed
	vInvalid        // INVALID, entry unchanged
	vRepeat         // kill the entry and track the packet as a new flow
	vKill           // accepted, then the entry is deleted (nf_ct_kill_acct)
)

const (
	chunkBits = 8
	chunkSize = 1 << chunkBits
	// earlyDropRange is the buckets early drop samples: twice the kernel's
	// NF_CT_EVICTION_RANGE (8). The kernel has as many buckets as Max
	// (nf_conntrack_buckets = nf_conntrack_max = 262144 here) and its hash
	// holds every entry twice, a node per direction, so a full table has
	// two nodes per bucket; ours holds each entry once (both directions
	// hash alike), one per bucket: 16 of our buckets hold as many entries
	// as 8 of the kernel's. (With 8, a flood into a full table of unassured
	// flows was refused about e^-8 of the time, the kernel about e^-16.)
	earlyDropRange = 16
)

type entry struct {
	// What a lookup reads of a matching entry (the key and the expiry)
	// comes first, together. The chain links are in the shard's links, so
	// that walking past other flows' entries touches no entry at all.
	key       tuple
	expires   int64 // ns, same clock as packet timestamps
	self      int32 // own index in the shard
	bucket    uint32
	gen       uint32 // bumped when the entry is freed; guards stale Refs
	status    uint16
	tag       uint32 // hashTag of the flow, as the pointers to it in chains hold it
	packets   [2]uint64
	bytes     [2]uint64
	udpStream int64   // UDP: stream_ts, the time after which a reply makes the flow a stream
	ftp       ftpInfo // the FTP helper's state, when status has stFTPInfo
	tcp       tcpConn
}

// shardStats are counted with the shard lock held.
type shardStats struct {
	found, new, insert, invalid, ignore, drop, earlyDrop, insertFailed, expired uint64
}

type shard struct {
	mu      sync.Mutex
	buckets []cptr // the first entry of each chain, 0 when empty
	// chunks and links hold the entries and their chain links in blocks of
	// chunkSize, allocated as the shard grows. Both slices have their final
	// length from the start (enough blocks for the table's Max entries in
	// this one shard), so their headers never change and a block pointer,
	// once set, stays: Prefetch may compute an entry's address without the
	// lock.
	chunks  []*[chunkSize]entry
	links   []*[chunkSize]link
	nchunks int32
	nalloc  int32
	free    int32
	// spare is an entry (index+1) that early drop evicted without reading
	// it (see retire), not yet released; 0 when none.
	spare int32
	// prefault is Config.Prefault (a copy here: alloc has only the shard).
	prefault bool
	n        int   // confirmed entries
	now      int64 // latest packet time seen
	stats    shardStats
	_        [64]byte
}

// Table is a connection tracking table.
type Table struct {
	cfg        config
	shards     []shard
	shardBits  uint
	bucketMask uint64
	seed       [4]uint64
	count      atomic.Int64 // entries allocated (tentative + confirmed), as the kernel's ct count

	invalidEarly atomic.Uint64 // INVALID before any lookup (flags, checksum, ...)
	related      atomic.Uint64
	untracked    atomic.Uint64

	exp expectations

	sweepMu     sync.Mutex
	sweepShard  int
	sweepBucket int
	// A sweep pass (over every bucket) notes when it started and the
	// earliest expiry it saw; at its end, sweepIdle becomes a time before
	// which no entry can expire (see Sweep). Guarded by sweepMu, but
	// sweepIdle is also read without it.
	passStart, passMin int64
	sweepIdle          atomic.Int64
	// gcEarlyDrop is conntrack_gc_work.early_drop: set when a new flow was
	// refused because the table was full; the sweep then also evicts
	// entries that gc_worker_can_early_drop while above 95% of Max.
	gcEarlyDrop atomic.Bool
}

// New returns an empty table configured by cfg.
func New(cfg Config) *Table {
	t := &Table{cfg: cfg.resolve()}
	n := cfg.Shards
	if n <= 0 {
		n = defaultShards
	}
	for 1<<t.shardBits < n {
		t.shardBits++
	}
	n = 1 << t.shardBits
	per := int(t.cfg.max) / n
	// One bucket per entry of a full table, as the kernel sizes its hash
	// (which holds each entry twice). Two would shorten the chains, but
	// early drop would find fewer candidates in the buckets it samples.
	nb := 16
	for nb < per {
		nb <<= 1
	}
	t.bucketMask = uint64(nb - 1)
	t.shards = make([]shard, n)
	blocks := (t.cfg.max + chunkSize - 1) / chunkSize
	for i := range t.shards {
		t.shards[i].prefault = t.cfg.prefault
		t.shards[i].buckets = make([]cptr, nb)
		t.shards[i].chunks = make([]*[chunkSize]entry, blocks)
		t.shards[i].links = make([]*[chunkSize]link, blocks)
	}
	if cfg.Preallocate {
		// Each shard's share of Max and an eighth more (shards fill
		// unevenly); a shard that needs more grows as usual.
		pre := min(blocks, (t.cfg.max/int64(n)+t.cfg.max/int64(n)/8+chunkSize-1)/chunkSize)
		for i := range t.shards {
			s := &t.shards[i]
			for s.nchunks < int32(pre) {
				s.chunks[s.nchunks] = new([chunkSize]entry)
				s.links[s.nchunks] = new([chunkSize]link)
				s.nchunks++
			}
		}
	}
	seed := cfg.HashSeed
	var b [32]byte
	if seed == 0 {
		_, _ = rand.Read(b[:])
	} else {
		for i := 0; i < 4; i++ {
			seed = seed*6364136223846793005 + 1442695040888963407
			binary.LittleEndian.PutUint64(b[i*8:], seed^seed>>29)
		}
	}
	for i := range t.seed {
		t.seed[i] = binary.LittleEndian.Uint64(b[i*8:]) | 1
	}
	return t
}

// Ref is what Track returns: a handle on the packet's entry that the engine
// passes back with the verdict (Confirm or Drop). The zero Ref is valid and
// does nothing.
type Ref struct {
	// At most four fields, so that the compiler keeps a Ref in registers
	// (a wider struct lives in memory and is copied with wide loads of
	// narrow, just-stored fields: a store-forwarding stall per packet).
	t    *Table
	e    *entry
	gen  uint32
	info uint64 // shard<<32 | ctinfo<<8 | flags
}

func newRef(t *Table, e *entry, gen, sh uint32, ctinfo, flags uint8) Ref {
	return Ref{t: t, e: e, gen: gen, info: uint64(sh)<<32 | uint64(ctinfo)<<8 | uint64(flags)}
}

func (r Ref) sh() uint32    { return uint32(r.info >> 32) }
func (r Ref) ctinfo() uint8 { return uint8(r.info >> 8) }
func (r Ref) flags() uint8  { return uint8(r.info) }

const (
	refTentative uint8 = 1 << iota
	refMustDrop
	refHelper // the entry has a helper that wants the accepted packet
)

// MustDrop reports whether the kernel itself would drop this packet in the
// conntrack hook (NF_DROP), whatever the rules say: the table was full and
// no entry could be evicted.
func (r Ref) MustDrop() bool { return r.flags()&refMustDrop != 0 }

// Tentative reports whether the packet created a new entry that is not yet
// confirmed.
func (r Ref) Tentative() bool { return r.flags()&refTentative != 0 }

func timeNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (t *Table) shardOf(h uint64) (uint32, uint32) {
	sh := uint32(h >> (64 - t.shardBits))
	if t.shardBits == 0 {
		sh = 0
	}
	return sh, uint32(h & t.bucketMask)
}

// link is an entry's place in its bucket chain (or in the free list), kept
// apart from the entries in a dense array: a chain walk reads 8 bytes per
// entry passed, from a few MiB that stay in the caches, instead of a cache
// line of each entry (a miss to memory each in a large table), and looks at
// an entry only when its hash tag matches.
type link struct {
	next cptr // the next entry in the bucket chain, or in the free list
}

// cptr points into a chain: the low 32 bits are an entry's index+1 (0: end
// of the chain), the high 32 bits that entry's hash tag, whose lowest bit
// says whether the entry has a successor and whose next bit is ptrCheck. A
// lookup thus compares the tag of each entry where the pointer to it lies
// (the bucket for the first), and stops at a chain's last entry without
// reading that entry's link: a miss in a bucket of one flow reads the
// bucket alone, a hit the bucket and the entry.
type cptr uint64

// ptrCheck is set in the pointer to an entry that early drop must look at
// before evicting it: one that is ASSURED (which it spares unless expired)
// or has a helper (whose expectations go with it). A lone entry without it
// is evicted from its bucket's pointer alone (see earlyDrop).
const ptrCheck cptr = 2 << 32

func mkptr(idx1 int32, tag uint32, more bool) cptr {
	c := cptr(uint32(idx1)) | cptr(tag&^3)<<32
	if more {
		c |= 1 << 32
	}
	return c
}

// idx1 is the entry's index+1 (0 when c ends the chain).
func (c cptr) idx1() int32 { return int32(uint32(c)) }

func (c cptr) tag() uint32 { return uint32(c>>32) &^ 3 }

// more reports whether the entry c points to has a successor.
func (c cptr) more() bool { return c&(1<<32) != 0 }

// unread reports whether early drop may evict the entry c points to from
// c alone: the entry is the last of its chain and has no ptrCheck.
func (c cptr) unread() bool { return c != 0 && c&(ptrCheck|1<<32) == 0 }

// hashTag is the part of a flow hash a chain walk compares before the key
// (its two lowest bits are cptr's "more" flag and ptrCheck).
func hashTag(h uint64) uint32 { return uint32(h>>24) &^ 3 }

// at and lnk return entry i and its link. They index the block with
// unsafe.Add: &blk[j] would nil-check blk by loading its first byte, a
// cache miss of its own (the block's first line, which no prefetch asked
// for) in a table larger than the caches. Every index below nalloc lies
// in an allocated block.
func (s *shard) at(i int32) *entry {
	blk := s.chunks[i>>chunkBits]
	return (*entry)(unsafe.Add(unsafe.Pointer(blk), uintptr(i&(chunkSize-1))*unsafe.Sizeof(entry{})))
}

func (s *shard) lnk(i int32) *link {
	blk := s.links[i>>chunkBits]
	return (*link)(unsafe.Add(unsafe.Pointer(blk), uintptr(i&(chunkSize-1))*unsafe.Sizeof(link{})))
}

// alloc returns a free entry (nil if the shard has no room left, which
// the table's bound on its count makes unreachable).
func (s *shard) alloc() *entry {
	if s.free != 0 {
		i := s.free - 1
		l := s.lnk(i)
		s.free = l.next.idx1()
		*l = link{}
		return s.at(i)
	}
	if s.nalloc == s.nchunks*chunkSize {
		// The table's count never passes Max and freed entries are reused
		// first, so nalloc stays below Max and the block exists; were it
		// not so, the new flow is refused as when the table is full.
		if int(s.nchunks) == len(s.chunks) {
			return nil
		}
		s.chunks[s.nchunks] = new([chunkSize]entry)
		s.links[s.nchunks] = new([chunkSize]link)
		s.nchunks++
	}
	if s.prefault && s.nalloc&(chunkSize-1) == 0 {
		// The block's first entry: map its pages now, all at once.
		blk := s.chunks[s.nalloc>>chunkBits]
		prefault(unsafe.Pointer(blk), unsafe.Sizeof(*blk))
	}
	e := s.at(s.nalloc)
	e.self = s.nalloc
	s.nalloc++
	if s.nalloc < s.nchunks*chunkSize {
		// The shard's next new flow takes the next entry: ask for it now
		// (it is written whole, and read back at once by the tracker).
		s.prefetchEntry(s.nalloc, true)
	}
	return e
}

// retire frees entry i, which early drop evicted without reading it, also
// without reading it: it becomes the shard's spare, asked for now, and the
// spare before it, long in the cache, is released. Until then its
// generation is unchanged, but no Ref that acts on an entry it did not
// create can point to it: early drop takes this way only for an entry
// without a helper, and a tentative entry is never in a chain.
func (s *shard) retire(i int32) {
	if s.spare != 0 {
		s.release(s.at(s.spare - 1))
	}
	s.spare = i + 1
	s.prefetchEntry(i, true)
}

func (s *shard) release(e *entry) {
	*e = entry{self: e.self, gen: e.gen + 1}
	*s.lnk(e.self) = link{next: mkptr(s.free, 0, false)}
	s.free = e.self + 1
}

// find looks k (hash tag tag) up, and its inverse when it has one, in
// bucket b. An expired entry found on the way is removed (lazy expiry, as
// the kernel's lookup does with nf_ct_gc_expired).
func (t *Table) find(s *shard, b, tag uint32, k *tuple, now int64) (*entry, uint8) {
	for c := s.buckets[b]; c != 0; {
		i := c.idx1() - 1
		if c.tag() == tag {
			e := s.at(i)
			var dir uint8
			switch {
			case e.key == *k:
				dir = 0
			case e.key.isInverseOf(k):
				dir = 1
			default:
				goto next
			}
			if e.expires <= now {
				t.remove(s, e)
				s.stats.expired++
				return nil, 0
			}
			return e, dir
		}
	next:
		if !c.more() {
			break
		}
		c = s.lnk(i).next
	}
	return nil, 0
}

func (s *shard) link(e *entry) {
	head := s.buckets[e.bucket]
	s.lnk(e.self).next = head
	c := mkptr(e.self+1, e.tag, head != 0)
	if e.status&(stAssured|stHelper) != 0 {
		c |= ptrCheck
	}
	s.buckets[e.bucket] = c
	e.status |= stConfirmed
	s.n++
}

// assured sets ptrCheck in the pointer to e, a confirmed entry that has
// just become ASSURED.
func (s *shard) assured(e *entry) {
	for p := &s.buckets[e.bucket]; *p != 0; p = &s.lnk(p.idx1() - 1).next {
		if p.idx1() == e.self+1 {
			*p |= ptrCheck
			return
		}
	}
}

// remove unlinks a confirmed entry and frees it.
func (t *Table) remove(s *shard, e *entry) {
	// p holds the pointer to the entry looked at, prev the pointer to its
	// predecessor (nil for the first), whose "more" flag clears when e was
	// the last.
	var prev *cptr
	for p := &s.buckets[e.bucket]; *p != 0; {
		if p.idx1() == e.self+1 {
			next := s.lnk(e.self).next
			*p = next
			if next == 0 && prev != nil {
				*prev &^= 1 << 32
			}
			break
		}
		prev, p = p, &s.lnk(p.idx1()-1).next
	}
	s.n--
	if e.status&stHelper != 0 {
		t.exp.removeMaster(e)
	}
	s.release(e)
	t.count.Add(-1)
}

// Track looks the packet's flow up, or creates a tentative entry for a new
// flow, runs the protocol tracker (state changes of an existing entry apply
// at once, as in the kernel's conntrack hook) and sets p.CTState and
// p.CTDir. The returned Ref must be passed to Confirm when the rules accept
// the packet or to Drop when they drop it.
func (t *Table) Track(p *packet.Packet) Ref {
	p.CTState, p.CTDir = 0, packet.DirOriginal
	if p.Family != packet.IPv4 && p.Family != packet.IPv6 {
		return t.invalid(p)
	}
	// nf_defrag reassembles before conntrack; a fragment that reaches us was
	// never reassembled, and the kernel would not let it through.
	if p.Fragment || p.MoreFrags || p.Truncated {
		return t.invalid(p)
	}
	// nf_conntrack_checksum: only packets from the network are judged.
	if t.cfg.checksum && !p.Meta.Local && p.Checksum == packet.ChecksumBad {
		switch p.Proto {
		case packet.ProtoTCP, packet.ProtoUDP, packet.ProtoUDPLite, packet.ProtoICMP, packet.ProtoICMPv6:
			return t.invalid(p)
		}
	}
	now := timeNS(p.Meta.Time)
	switch p.Proto {
	case packet.ProtoTCP:
		if !tcpValid(p) {
			return t.invalid(p)
		}
	case packet.ProtoICMP:
		// nf_conntrack_icmpv4_error
		if p.ICMPType > 18 {
			return t.invalid(p)
		}
		if icmpIsError(p.ICMPType) {
			return t.relatedError(p, now)
		}
	case packet.ProtoICMPv6:
		// nf_conntrack_icmpv6_error
		if icmpv6NoTrack(p.ICMPType) {
			p.CTState = packet.CTUntracked
			t.untracked.Add(1)
			return Ref{}
		}
		if p.ICMPType < 128 || p.ICMPType == 137 {
			return t.relatedError(p, now)
		}
	}

	var kt tuple
	kt.set(p)
	h := t.hashTuple(&kt)
	sh, b := t.shardOf(h)
	s := &t.shards[sh]
	s.mu.Lock()
	if now > s.now {
		s.now = now
	}
	for repeat := 0; repeat < 2; repeat++ {
		e, dir := t.find(s, b, hashTag(h), &kt, now)
		if e == nil {
			break
		}
		var ctinfo uint8
		switch {
		case dir == 1:
			ctinfo = ctEstablishedReply
		case e.status&stSeenReply != 0:
			ctinfo = ctEstablished
		case e.status&stExpected != 0:
			ctinfo = ctRelated
		default:
			ctinfo = ctNew
		}
		was := e.status
		switch t.protoPacket(e, p, dir, now, false) {
		case vInvalid:
			s.stats.invalid++
			s.mu.Unlock()
			p.CTState = packet.CTInvalid
			return Ref{}
		case vRepeat:
			// tcp: reopening a closed/aborted connection; delete and retry.
			t.remove(s, e)
			continue
		case vKill:
			t.remove(s, e)
			s.stats.found++
			s.mu.Unlock()
			setState(p, ctinfo, dir)
			return Ref{}
		case vIgnore:
			s.stats.ignore++
		}
		if dir == 1 {
			e.status |= stSeenReply
		}
		if (e.status&^was)&stAssured != 0 {
			s.assured(e)
		}
		s.stats.found++
		gen := e.gen
		var flags uint8
		if e.status&stHelper != 0 {
			flags = refHelper
		}
		s.mu.Unlock()
		setState(p, ctinfo, dir)
		return newRef(t, e, gen, sh, ctinfo, flags)
	}
	return t.newFlow(s, sh, b, hashTag(h), &kt, p, now)
}

// newFlow is init_conntrack plus the first run of the protocol tracker on
// the unconfirmed entry. Called with s locked; unlocks it.
func (t *Table) newFlow(s *shard, sh, b, tag uint32, kt *tuple, p *packet.Packet, now int64) Ref {
	k := kt.key()
	if !k.invertible() {
		// nf_ct_invert_tuple failed (ICMP type without a reply type).
		s.stats.invalid++
		s.mu.Unlock()
		p.CTState = packet.CTInvalid
		return Ref{}
	}
	var e *entry
	if t.count.Add(1) <= t.cfg.max || t.earlyDrop(s, b, now) {
		e = s.alloc()
	}
	if e == nil {
		t.gcEarlyDrop.Store(true)
		t.count.Add(-1)
		s.stats.drop++
		s.stats.invalid++
		s.mu.Unlock()
		p.CTState = packet.CTInvalid
		return newRef(nil, nil, 0, 0, 0, refMustDrop)
	}
	e.key = *kt
	e.bucket = b
	e.tag = tag
	ctinfo := ctNew
	if t.exp.n.Load() > 0 && t.exp.match(&k, now) {
		e.status |= stExpected
		ctinfo = ctRelated
	}
	if v := t.protoPacket(e, p, 0, now, true); v == vInvalid {
		s.release(e)
		t.count.Add(-1)
		s.stats.invalid++
		s.mu.Unlock()
		p.CTState = packet.CTInvalid
		return Ref{}
	}
	if t.cfg.ftp && k.Proto == packet.ProtoTCP && e.status&stExpected == 0 {
		for _, port := range t.cfg.ftpPorts {
			if k.DstPort == port {
				e.status |= stHelper
				break
			}
		}
	}
	s.stats.new++
	gen := e.gen
	s.mu.Unlock()
	setState(p, ctinfo, 0)
	return newRef(t, e, gen, sh, ctinfo, refTentative)
}

func setState(p *packet.Packet, ctinfo, dir uint8) {
	switch ctinfo {
	case ctNew:
		p.CTState = packet.CTNew
	case ctRelated, ctRelatedReply:
		p.CTState = packet.CTRelated
	default:
		p.CTState = packet.CTEstablished
	}
	p.CTDir = packet.CTDir(dir)
}

func (t *Table) invalid(p *packet.Packet) Ref {
	t.invalidEarly.Add(1)
	p.CTState = packet.CTInvalid
	return Ref{}
}

// relatedError is nf_conntrack_inet_error: an ICMP/ICMPv6 error is RELATED to
// the flow its quoted header belongs to, or INVALID. It refreshes nothing.
func (t *Table) relatedError(p *packet.Packet, now int64) Ref {
	if !p.Inner.Valid {
		return t.invalid(p)
	}
	orig := innerKey(p)
	// The quoted packet travelled the other way; look up its inverse.
	inner, ok := orig.Invert()
	if !ok {
		return t.invalid(p)
	}
	h := t.hash(&inner)
	sh, b := t.shardOf(h)
	s := &t.shards[sh]
	s.mu.Lock()
	it := inner.tuple()
	e, dir := t.find(s, b, hashTag(h), &it, now)
	if e == nil {
		s.mu.Unlock()
		return t.invalid(p)
	}
	// The outer destination must be the destination of the found tuple.
	ctDst := e.key.dst
	if dir == 1 {
		ctDst = e.key.src
	}
	s.mu.Unlock()
	if ctDst != addr128Of(p.Dst) {
		return t.invalid(p)
	}
	t.related.Add(1)
	p.CTState = packet.CTRelated
	p.CTDir = packet.CTDir(dir)
	return Ref{}
}

// earlyDrop is the kernel's early_drop: sample earlyDropRange buckets from
// the new flow's bucket and evict every entry there that is not ASSURED.
// Expired entries met on the way are reclaimed too. Called with s locked.
func (t *Table) earlyDrop(s *shard, b uint32, now int64) bool {
	for i := uint32(0); i < earlyDropRange; i++ {
		bi := (b + i) & uint32(t.bucketMask)
		if c := s.buckets[bi]; c.unread() {
			// A lone entry, not ASSURED and without a helper: evicted
			// whatever its expiry (counted as an early drop even if it
			// had just expired), and from the bucket alone. Reading it
			// would be a cache miss in a large table, the second of the
			// new flow's after its bucket.
			s.buckets[bi] = 0
			s.n--
			t.count.Add(-1)
			s.retire(c.idx1() - 1)
			s.stats.earlyDrop++
			return true
		}
		freed := 0
		for c := s.buckets[bi]; c != 0; {
			e := s.at(c.idx1() - 1)
			c = s.lnk(c.idx1() - 1).next
			if e.expires <= now {
				t.remove(s, e)
				s.stats.expired++
				freed++
				continue
			}
			if e.status&stAssured != 0 {
				continue
			}
			t.remove(s, e)
			s.stats.earlyDrop++
			freed++
		}
		if freed > 0 {
			return true
		}
	}
	return false
}

// Confirm is called when the rules accepted the packet. A new entry is
// inserted into the table only now (__nf_conntrack_confirm); for an entry
// with the FTP helper the helper parses the accepted packet.
func (r Ref) Confirm(p *packet.Packet) {
	if r.e == nil || r.flags()&(refTentative|refHelper) == 0 {
		return // an existing entry without helper: nothing to do, no lock
	}
	t := r.t
	s := &t.shards[r.sh()]
	now := timeNS(p.Meta.Time)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := r.e
	if e.gen != r.gen {
		return // entry went away meanwhile
	}
	if r.flags()&refTentative != 0 {
		if other, _ := t.find(s, e.bucket, e.tag, &e.key, now); other != nil {
			// Another worker confirmed the same flow first.
			s.release(e)
			t.count.Add(-1)
			s.stats.insertFailed++
			return
		}
		s.link(e)
		s.stats.insert++
		if e.status&stHelper != 0 {
			e.ftp = ftpInfo{}
			e.status |= stFTPInfo
		}
		return
	}
	if e.status&stFTPInfo != 0 &&
		(r.ctinfo() == ctEstablished || r.ctinfo() == ctEstablishedReply) {
		dir := uint8(0)
		if r.ctinfo() == ctEstablishedReply {
			dir = 1
		}
		t.ftpHelp(e, p, dir, now)
	}
}

// Drop is called when the rules dropped the packet: a tentative entry is
// freed and leaves no trace.
func (r Ref) Drop() {
	if r.e == nil || r.flags()&refTentative == 0 {
		return
	}
	s := &r.t.shards[r.sh()]
	s.mu.Lock()
	if r.e.gen == r.gen {
		s.release(r.e)
		r.t.count.Add(-1)
	}
	s.mu.Unlock()
}

// Sweep reclaims expired entries incrementally: it visits at most budget
// buckets and entries, resuming where the previous call stopped, and
// returns the number of entries removed. Expired expectations are removed
// too. The engine calls it periodically with the current packet time.
//
// Between passes it may do nothing at all: a pass that saw no expiry
// before some time E, started at S, proves that no entry expires before
// min(E, S + the shortest timeout) (every expiry is set to a packet's time
// plus a timeout, and packet times do not go back), so sweeps before then
// skip the walk, unless the table is evicting for early drop.
func (t *Table) Sweep(now time.Time, budget int) int {
	n := timeNS(now)
	t.exp.expire(n)
	if n < t.sweepIdle.Load() && !t.gcEarlyDrop.Load() {
		return 0
	}
	t.sweepMu.Lock()
	defer t.sweepMu.Unlock()
	removed, visited := 0, 0
	total := len(t.shards) * len(t.shards[0].buckets)
	steps := 0
	max95 := int64(-1)
	if t.gcEarlyDrop.Load() {
		max95 = t.cfg.max / 100 * 95
	}
	for visited < budget && steps < total {
		if t.sweepShard == 0 && t.sweepBucket == 0 {
			t.passStart, t.passMin = n, int64(math.MaxInt64)
		}
		s := &t.shards[t.sweepShard]
		s.mu.Lock()
		// Ask for the first entries of the buckets about to be walked all
		// at once, so that their cache misses overlap.
		for bi, end := t.sweepBucket, min(len(s.buckets), t.sweepBucket+budget-visited); bi < end; bi++ {
			if c := s.buckets[bi]; c != 0 {
				s.prefetchEntry(c.idx1()-1, false)
			}
		}
		for t.sweepBucket < len(s.buckets) && visited < budget && steps < total {
			for c := s.buckets[t.sweepBucket]; c != 0; {
				e := s.at(c.idx1() - 1)
				c = s.lnk(c.idx1() - 1).next
				visited++
				switch {
				case e.expires <= n:
					t.remove(s, e)
					s.stats.expired++
					removed++
				case max95 >= 0 && t.count.Load() > max95 && e.gcCanEarlyDrop():
					t.remove(s, e)
					s.stats.earlyDrop++
					removed++
				default:
					t.passMin = min(t.passMin, e.expires)
				}
			}
			visited++
			steps++
			t.sweepBucket++
		}
		s.mu.Unlock()
		if t.sweepBucket >= len(s.buckets) {
			t.sweepBucket = 0
			t.sweepShard = (t.sweepShard + 1) % len(t.shards)
			if t.sweepShard == 0 {
				t.sweepIdle.Store(min(t.passMin, t.passStart+t.cfg.minTimeout))
			}
			if t.sweepShard == 0 && max95 >= 0 {
				// A full pass is done (gc_worker clears early_drop).
				t.gcEarlyDrop.Store(false)
				max95 = -1
			}
		}
	}
	return removed
}

// gcCanEarlyDrop is gc_worker_can_early_drop: not assured, or a TCP
// connection that is closing (tcp_can_early_drop).
func (e *entry) gcCanEarlyDrop() bool {
	if e.status&stAssured == 0 {
		return true
	}
	return e.key.proto == packet.ProtoTCP && tcpCanEarlyDrop(e.tcp.state)
}

// protoPacket runs the protocol tracker on e (nf_conntrack_handle_packet).
func (t *Table) protoPacket(e *entry, p *packet.Packet, dir uint8, now int64, isNew bool) int {
	switch e.key.proto {
	case packet.ProtoTCP:
		return t.tcpPacket(e, p, dir, now, isNew)
	case packet.ProtoUDP, packet.ProtoUDPLite:
		return t.udpPacket(e, p, dir, now, isNew)
	case packet.ProtoICMP:
		// nf_conntrack_icmp_packet: only query types may create an entry.
		if !icmpValidNew(e.key.icmpType()) {
			return vInvalid
		}
		t.refresh(e, p, dir, now, t.cfg.icmp)
	case packet.ProtoICMPv6:
		if isNew && !icmpv6ValidNew(e.key.icmpType()) {
			return vInvalid
		}
		t.refresh(e, p, dir, now, t.cfg.icmpv6)
	default:
		t.refresh(e, p, dir, now, t.cfg.generic)
	}
	return vAccept
}

// refresh is nf_ct_refresh_acct with accounting on (nf_conntrack_acct=1).
func (t *Table) refresh(e *entry, p *packet.Packet, dir uint8, now, timeout int64) {
	e.expires = now + timeout
	e.packets[dir]++
	e.bytes[dir] += uint64(p.Length)
}

// udpPacket is nf_conntrack_udp_packet.
func (t *Table) udpPacket(e *entry, p *packet.Packet, dir uint8, now int64, isNew bool) int {
	if isNew {
		e.udpStream = now + int64(2*time.Second)
	}
	if e.status&stSeenReply != 0 {
		extra := t.cfg.udp
		stream := false
		if now > e.udpStream {
			extra = t.cfg.udpStream
			stream = e.status&stAssured == 0
		}
		t.refresh(e, p, dir, now, extra)
		if stream {
			e.status |= stAssured
		}
	} else {
		t.refresh(e, p, dir, now, t.cfg.udp)
	}
	return vAccept
}
