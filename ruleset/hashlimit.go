package ruleset

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/filterd/filterd/packet"
	"golang.org/x/time/rate"
)

// hashlimitConfig identifies a hashlimit table: rules with the same name and
// parameters share one table, and a reload keeps it.
type hashlimitConfig struct {
	name             string
	family           packet.Family
	rate             Rate
	bytes            bool
	burst            uint32
	mode             uint8
	srcMask, dstMask int
	size, max        uint32
	expire           uint32 // ms
}

func hashlimitConfigOf(m *HashlimitMatch, fam packet.Family) (hashlimitConfig, error) {
	c := hashlimitConfig{
		name: m.Name, family: fam, rate: m.Rate, bytes: m.Bytes, burst: m.Burst, mode: m.Mode,
		srcMask: m.SrcMask, dstMask: m.DstMask, size: m.HtableSize, max: m.HtableMax, expire: m.HtableExpire,
	}
	if c.name == "" {
		return c, fmt.Errorf("-m hashlimit needs --hashlimit-name")
	}
	if c.rate.Count == 0 {
		return c, fmt.Errorf("-m hashlimit needs --hashlimit-upto or --hashlimit-above")
	}
	if c.burst == 0 && !c.bytes {
		c.burst = DefaultLimitBurst
	}
	if c.srcMask < 0 || c.srcMask > 128 || c.dstMask < 0 || c.dstMask > 128 {
		return c, fmt.Errorf("-m hashlimit: mask out of range (srcmask %d, dstmask %d)", c.srcMask, c.dstMask)
	}
	if c.size == 0 {
		c.size = DefaultHashlimitSize
	}
	if c.max == 0 {
		c.max = 8 * c.size
	} else if c.max < c.size {
		c.max = c.size
	}
	if c.expire == 0 {
		c.expire = DefaultHashlimitExpire
	}
	return c, nil
}

// hlKey is the bucket key: the address and port parts selected by
// --hashlimit-mode, masked. Addresses are their 16-byte form's two
// big-endian words (zero when not selected): no pointer (a netip.Addr has
// one), so the map hashes and compares plain memory and the collector
// never scans it.
type hlKey struct {
	src, dst     [2]uint64
	sport, dport uint16
}

// addrWords returns a masked to its first bits as hlKey holds it.
func addrWords(a netip.Addr, bits int) [2]uint64 {
	hi, lo := packet.AddrWords(a)
	if a.Is4() {
		if bits < 32 {
			lo &^= uint64(^uint32(0) >> max(bits, 0))
		}
		return [2]uint64{hi, lo}
	}
	switch {
	case bits <= 0:
		hi, lo = 0, 0
	case bits < 64:
		hi &= ^(^uint64(0) >> bits)
		lo = 0
	case bits < 128:
		lo &= ^(^uint64(0) >> (bits - 64))
	}
	return [2]uint64{hi, lo}
}

func (k *hlKey) shardHash() uint64 {
	h := k.src[0] ^ k.src[1]*0x9e3779b97f4a7c15
	h ^= k.dst[0]*0xc2b2ae3d27d4eb4f ^ k.dst[1]
	h ^= uint64(k.sport)<<16 | uint64(k.dport)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// hlEntry is one bucket; entries of a shard form an LRU list (head = least
// recently used), so the head is the first to expire.
type hlEntry struct {
	key     hlKey
	lim     rate.Limiter
	expires int64 // UnixNano
	last    int64 // latest packet time (UnixNano): the bucket's clock never goes back
	lruLinks
}

func (e *hlEntry) links() *lruLinks { return &e.lruLinks }

type hlShard struct {
	mu   sync.Mutex
	m    map[hlKey]int32
	ents []hlEntry
	free []int32
	lru
	max int
	_   [40]byte // keep shards on separate cache lines
}

// hashTable is one --hashlimit-name table: sharded maps of token buckets,
// bounded by --hashlimit-htable-max.
type hashTable struct {
	cfg       hashlimitConfig
	perSecond float64
	burst     int
	expire    int64 // ns
	shards    []hlShard
	mask      uint64
}

const maxHashShards = 16

func newHashTable(cfg hashlimitConfig) *hashTable {
	t := &hashTable{cfg: cfg, expire: int64(cfg.expire) * int64(time.Millisecond)}
	t.perSecond = cfg.rate.PerSecond()
	t.burst = int(cfg.burst)
	if cfg.bytes {
		// Byte mode: one second's worth of the rate plus the burst, in bytes.
		t.burst = int(t.perSecond) + int(cfg.burst)
		if t.burst < 1 {
			t.burst = 1
		}
	}
	n := maxHashShards
	for n > 1 && uint32(n) > cfg.max {
		n /= 2
	}
	t.shards = make([]hlShard, n)
	t.mask = uint64(n - 1)
	per := int(cfg.max) / n
	for i := range t.shards {
		s := &t.shards[i]
		s.m = make(map[hlKey]int32)
		s.head, s.tail = -1, -1
		s.max = per
	}
	return t
}

// Len returns the number of buckets in the table.
func (t *hashTable) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (s *hlShard) unlink(i int32)   { lruUnlink(&s.lru, s.ents, i) }
func (s *hlShard) pushTail(i int32) { lruPushTail(&s.lru, s.ents, i) }

func (s *hlShard) remove(i int32) {
	s.unlink(i)
	delete(s.m, s.ents[i].key)
	s.free = append(s.free, i)
}

// allow charges cost to the bucket of key at time now and reports whether it
// had the tokens.
func (t *hashTable) allow(key hlKey, now time.Time, cost int) bool {
	s := &t.shards[key.shardHash()&t.mask]
	ns := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.m[key]
	if ok {
		e := &s.ents[i]
		if ns >= e.expires {
			// The kernel's garbage collector would have freed it: a new, full bucket.
			e.lim = *rate.NewLimiter(rate.Limit(t.perSecond), t.burst)
			e.last = ns
		}
		e.expires = max(e.expires, ns+t.expire)
		s.unlink(i)
		s.pushTail(i)
	} else {
		// Free up to two expired buckets (the LRU head expires first), then,
		// if still full, the least recently used one.
		for k := 0; k < 2 && s.head >= 0 && ns >= s.ents[s.head].expires; k++ {
			s.remove(s.head)
		}
		if len(s.m) >= s.max && s.head >= 0 {
			s.remove(s.head)
		}
		if n := len(s.free); n > 0 {
			i = s.free[n-1]
			s.free = s.free[:n-1]
		} else {
			if len(s.ents) == cap(s.ents) {
				// Grow by doubling, but never past the shard's share of
				// --hashlimit-htable-max.
				n := min(max(2*cap(s.ents), 64), max(s.max, 1))
				ents := make([]hlEntry, len(s.ents), n)
				copy(ents, s.ents)
				s.ents = ents
			}
			s.ents = append(s.ents, hlEntry{})
			i = int32(len(s.ents) - 1)
		}
		e := &s.ents[i]
		e.key = key
		e.lim = *rate.NewLimiter(rate.Limit(t.perSecond), t.burst)
		e.expires = ns + t.expire
		e.last = ns
		s.m[key] = i
		s.pushTail(i)
	}
	if cost > t.burst {
		cost = t.burst
	}
	e := &s.ents[i]
	if ns < e.last {
		now = time.Unix(0, e.last)
	} else {
		e.last = ns
	}
	return e.lim.AllowN(now, cost)
}

// hashlimitMatcher is -m hashlimit (xt_hashlimit): a token bucket per key.
// Deviation from the kernel: when the table is at --hashlimit-htable-max the
// kernel drops the packet of a new key; filterd evicts the least recently
// used (expired first) bucket instead, so a flood of spoofed sources cannot
// lock legitimate ones out.
type hashlimitMatcher struct {
	t     *hashTable
	above bool
}

func (*hashlimitMatcher) stateful() {}

func (c *Compiled) newHashlimitMatcher(m *HashlimitMatch, fam packet.Family) (matcher, error) {
	cfg, err := hashlimitConfigOf(m, fam)
	if err != nil {
		return nil, err
	}
	t := c.state.hashTable(cfg)
	return &hashlimitMatcher{t: t, above: m.Above}, nil
}

func (m *hashlimitMatcher) match(p *packet.Packet) bool {
	cfg := &m.t.cfg
	var k hlKey
	if cfg.mode&HashSrcIP != 0 {
		k.src = addrWords(p.Src, cfg.srcMask)
	}
	if cfg.mode&HashDstIP != 0 {
		k.dst = addrWords(p.Dst, cfg.dstMask)
	}
	if cfg.mode&(HashSrcPort|HashDstPort) != 0 && p.HasPorts() && !p.Fragment {
		if cfg.mode&HashSrcPort != 0 {
			k.sport = p.SrcPort
		}
		if cfg.mode&HashDstPort != 0 {
			k.dport = p.DstPort
		}
	}
	cost := 1
	if cfg.bytes {
		cost = p.Length
	}
	ok := m.t.allow(k, p.Meta.Time, cost)
	if m.above {
		return !ok
	}
	return ok
}
