package engine

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/filterd/filterd/packet"
)

// Defragmentation as the kernel's nf_defrag_ipv4 (net/ipv4/ip_fragment.c)
// and nf_defrag_ipv6 (net/ipv6/netfilter/nf_conntrack_reasm.c) do it when
// conntrack is loaded: fragments are held until the datagram is whole, and
// only the reassembled datagram is tracked and matched.
//
// Kernel behaviour reproduced here:
//   - queues are keyed by (src, dst, id, protocol) for IPv4 and (src, dst,
//     id) for IPv6;
//   - a queue lives ipfrag_time (30 s) from its first fragment, by the packet
//     clock; an incomplete datagram never comes out;
//   - RFC 5722 (and, since Linux 4.19, for IPv4 as well): a fragment that
//     overlaps queued data kills the whole queue; an exact duplicate (a
//     fragment lying wholly inside data already queued) is dropped and the
//     queue kept;
//   - a last fragment (MF=0) that ends before queued data, or a second last
//     fragment with another end, is corrupt: IPv4 kills the queue, IPv6
//     (nf_ct_frag6_queue "goto err") drops the fragment only; data beyond a
//     known end likewise;
//   - a non-last fragment whose length is not a multiple of 8: IPv4 trims it
//     to a multiple of 8, IPv6 kills the queue (RFC 8200 says drop);
//   - an empty fragment, or an IPv6 one ending past 65535, is dropped;
//   - a reassembled IPv4 datagram over 65535 bytes is dropped with its queue;
//   - the reassembled IPv4 header is the first fragment's, with DF set only
//     when the largest fragment carried DF; the IPv6 one is the first
//     fragment's unfragmentable part with the Fragment header removed.
//
// Memory is bounded: each held fragment is charged its length plus
// FragOverhead, and when a new fragment would take the total over
// HighThresh (ipfrag_high_thresh, 4 MiB) the oldest queues are evicted
// first. (Linux since 4.17 instead refuses every fragment while over the
// threshold; evicting the oldest, as Linux did before, keeps new datagrams
// flowing under a fragment flood.) Not modelled: ipfrag_max_dist (the
// per-source disorder check, IPv4 only) and the ECN consistency check.

// Defaults from the kernel's sysctls.
const (
	DefaultFragTimeout    = 30 * time.Second // net.ipv4.ipfrag_time
	DefaultFragHighThresh = 4 << 20          // net.ipv4.ipfrag_high_thresh
	// FragOverhead is the bookkeeping charged per held fragment on top of its
	// bytes, standing for an skb's truesize overhead.
	FragOverhead = 768
	// fragQueueOverhead is charged per queue (struct ipq / frag_queue).
	fragQueueOverhead = 256
	maxIPv4Datagram   = 65535
	maxIPv6Payload    = 65535
)

// DefragConfig sets the reassembly limits. Zero fields take the defaults.
type DefragConfig struct {
	Timeout    time.Duration // queue lifetime from its first fragment (ipfrag_time)
	HighThresh int           // bytes held at most (ipfrag_high_thresh)
}

// DefragVerdict says what became of a packet given to Defrag.Add.
type DefragVerdict uint8

// Defrag verdicts.
const (
	// NotFragment: the packet is whole; process it as it is.
	NotFragment DefragVerdict = iota
	// FragQueued: the fragment is held (NF_STOLEN); nothing to process now.
	FragQueued
	// FragReassembled: the fragment completed a datagram, returned in
	// DefragResult.Datagram; process that instead.
	FragReassembled
	// FragDropped: the kernel would drop this fragment; Reason says why.
	FragDropped
)

// String names the verdict.
func (v DefragVerdict) String() string {
	switch v {
	case NotFragment:
		return "not-fragment"
	case FragQueued:
		return "queued"
	case FragReassembled:
		return "reassembled"
	case FragDropped:
		return "dropped"
	}
	return "verdict?"
}

// FragDropReason says why a fragment was dropped.
type FragDropReason uint8

// Reasons to drop a fragment.
const (
	FragDropNone      FragDropReason = iota
	FragDropOverlap                  // overlaps queued data: the queue is killed too (REASM_OVERLAPS)
	FragDropDuplicate                // lies wholly inside queued data
	FragDropBadEnd                   // inconsistent with the known end of the datagram
	FragDropBadLength                // empty, not a multiple of 8 (IPv6), or past 65535
	FragDropOversize                 // the reassembled datagram would exceed 65535 bytes
	FragDropNoMem                    // over HighThresh even after evicting older queues
	FragDropMalformed                // headers do not describe a fragment consistently
	numFragDropReasons
)

var fragDropNames = [numFragDropReasons]string{"", "overlap", "duplicate", "bad-end", "bad-length", "oversize", "no-memory", "malformed"}

// String names the reason as the engine's counters print it.
func (r FragDropReason) String() string {
	if r < numFragDropReasons {
		return fragDropNames[r]
	}
	return "reason?"
}

// DefragResult is the outcome of Defrag.Add.
type DefragResult struct {
	Verdict DefragVerdict
	Reason  FragDropReason // for FragDropped
	// Datagram is the reassembled IP packet for FragReassembled. The Defrag
	// owns it; it is valid until the next call to Add.
	Datagram []byte
	// Fragments is how many fragments made up the datagram.
	Fragments int
}

// DefragStats are the reassembly counters (as /proc/net/snmp's Reasm*).
type DefragStats struct {
	Fragments   uint64                     // fragments offered (ReasmReqds)
	Reassembled uint64                     // datagrams completed (ReasmOKs)
	Dropped     [numFragDropReasons]uint64 // fragments dropped on arrival, by reason
	TimedOut    uint64                     // queues expired after Timeout (ReasmTimeout)
	Evicted     uint64                     // queues evicted for memory
	Killed      uint64                     // queues killed by a bad fragment
	Discarded   uint64                     // held fragments freed with timed-out, evicted or killed queues
}

// DroppedTotal is the number of fragments dropped on arrival.
func (s *DefragStats) DroppedTotal() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8 // IPv4 only; 0 for IPv6
	fam      uint8
}

type fragEntry struct {
	off, end int  // byte range in the datagram payload
	pos      int  // where its bytes are in fragQueue.data
	runHead  bool // starts a run (inet_frag_queue_insert's fragrun)
}

type fragQueue struct {
	key        fragKey
	deadline   time.Time
	first      bool // offset-0 fragment seen (INET_FRAG_FIRST_IN)
	last       bool // MF=0 fragment seen (INET_FRAG_LAST_IN)
	length     int  // datagram payload length known so far (q.len)
	meat       int  // payload bytes held
	maxSize    int  // largest fragment (IPv4)
	maxDFSize  int  // largest DF fragment (IPv4)
	mem        int
	hdr        []byte // first fragment's header (IPv4) / unfragmentable part (IPv6)
	nextHdrOff int    // IPv6: offset in hdr of the next-header byte to patch
	nextHdr    uint8  // IPv6: next header from the fragment header
	frags      []fragEntry
	data       []byte
	prev, next *fragQueue // age list, oldest first
}

// Defrag reassembles IPv4 and IPv6 fragments. It is not safe for concurrent
// use. It allocates only while its pools grow (new queues, larger
// datagrams than before); steady-state reassembly allocates nothing.
type Defrag struct {
	cfg    DefragConfig
	queues map[fragKey]*fragQueue
	oldest *fragQueue
	newest *fragQueue
	free   []*fragQueue
	mem    int
	out    []byte
	stats  DefragStats
}

// NewDefrag returns a Defrag with the given limits.
func NewDefrag(cfg DefragConfig) *Defrag {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultFragTimeout
	}
	if cfg.HighThresh <= 0 {
		cfg.HighThresh = DefaultFragHighThresh
	}
	return &Defrag{cfg: cfg, queues: make(map[fragKey]*fragQueue, 256), out: make([]byte, 0, 65535+64)}
}

// Stats returns the counters so far.
func (d *Defrag) Stats() DefragStats { return d.stats }

// Pending returns how many incomplete datagrams and fragments are held.
func (d *Defrag) Pending() (queues, fragments int) {
	for q := d.oldest; q != nil; q = q.next {
		queues++
		fragments += len(q.frags)
	}
	return
}

// Memory returns the bytes charged for held fragments.
func (d *Defrag) Memory() int { return d.mem }

// Expire drops the queues whose time is up at now (the packet clock) and
// returns how many. Add calls it itself.
func (d *Defrag) Expire(now time.Time) int {
	n := 0
	for q := d.oldest; q != nil && now.After(q.deadline); q = d.oldest {
		d.stats.TimedOut++
		d.kill(q)
		n++
	}
	return n
}

// Add offers a decoded packet. p.L3 holds its bytes and p.Time is the packet
// clock. A packet that is no fragment (including an IPv6 atomic fragment,
// offset 0 without MF) comes back as NotFragment.
func (d *Defrag) Add(p *packet.Packet) DefragResult {
	if !p.Fragment && !p.MoreFrags {
		return DefragResult{Verdict: NotFragment}
	}
	d.stats.Fragments++
	d.Expire(p.Time)
	var (
		key     fragKey
		hdrLen  int // bytes before the fragment payload
		unfrag  int // IPv6: unfragmentable part length (before the Fragment header)
		nhOff   int // IPv6: offset of the next-header byte pointing at the Fragment header
		nextHdr uint8
		payload []byte
		df      bool
	)
	b := p.L3
	switch p.Family {
	case packet.IPv4:
		if len(b) < 20 {
			return d.drop(FragDropMalformed)
		}
		hdrLen = int(b[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(b[2:4]))
		if hdrLen < 20 || tot < hdrLen || len(b) < tot {
			return d.drop(FragDropMalformed)
		}
		payload = b[hdrLen:tot]
		df = b[6]&0x40 != 0
		key = fragKey{src: p.Src, dst: p.Dst, id: uint32(binary.BigEndian.Uint16(b[4:6])), proto: b[9], fam: 4}
	case packet.IPv6:
		var ok bool
		unfrag, nhOff, ok = findFragHeader(b)
		if !ok {
			return d.drop(FragDropMalformed)
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		hdrLen = unfrag + 8
		if len(b) < 40+plen || 40+plen < hdrLen {
			return d.drop(FragDropMalformed)
		}
		nextHdr = b[unfrag]
		payload = b[hdrLen : 40+plen]
		key = fragKey{src: p.Src, dst: p.Dst, id: binary.BigEndian.Uint32(b[unfrag+4 : unfrag+8]), fam: 6}
	default:
		return d.drop(FragDropMalformed)
	}
	off := int(p.FragOffset) * 8
	end := off + len(payload)
	mf := p.MoreFrags
	v6 := p.Family == packet.IPv6
	if v6 && end > maxIPv6Payload {
		return d.drop(FragDropBadLength)
	}

	q := d.queues[key]
	charge := len(payload) + FragOverhead
	if q == nil {
		charge += fragQueueOverhead
	}
	if !d.makeRoom(charge, q) {
		return d.drop(FragDropNoMem)
	}
	if q == nil {
		q = d.newQueue(key, p.Time)
	}

	if !mf {
		if end < q.length || (q.last && end != q.length) {
			if v6 {
				return d.drop(FragDropBadEnd)
			}
			return d.dropKill(q, FragDropBadEnd)
		}
		q.last = true
		q.length = end
	} else {
		if end&7 != 0 {
			if v6 {
				return d.dropKill(q, FragDropBadLength)
			}
			end &^= 7
			payload = payload[:end-off]
		}
		if end > q.length {
			if q.last {
				if v6 {
					return d.drop(FragDropBadEnd)
				}
				return d.dropKill(q, FragDropBadEnd)
			}
			q.length = end
		}
	}
	if end == off {
		if v6 {
			return d.drop(FragDropBadLength)
		}
		return d.dropKill(q, FragDropBadLength)
	}

	// Insert, judging overlaps against runs of fragments as
	// inet_frag_queue_insert does: a run grows only by fragments appended
	// in order at the tail; any other fragment starts a run of its own.
	idx, head := len(q.frags), true
	if n := len(q.frags); n > 0 {
		lastEnd := q.frags[n-1].end
		if end > lastEnd {
			if off < lastEnd {
				return d.dropKill(q, FragDropOverlap)
			}
			head = off != lastEnd
		} else {
			for i := 0; i < n; {
				rs, re := q.frags[i].off, q.frags[i].end
				j := i + 1
				for ; j < n && !q.frags[j].runHead; j++ {
					re = q.frags[j].end
				}
				if off >= rs && end <= re {
					return d.drop(FragDropDuplicate)
				}
				if off < re && end > rs {
					return d.dropKill(q, FragDropOverlap)
				}
				if end <= rs {
					idx = i
					break
				}
				i = j
			}
		}
	}
	pos := len(q.data)
	q.data = append(q.data, payload...)
	q.frags = append(q.frags, fragEntry{})
	copy(q.frags[idx+1:], q.frags[idx:])
	q.frags[idx] = fragEntry{off: off, end: end, pos: pos, runHead: head}
	q.meat += end - off
	q.mem += charge
	d.mem += charge
	if off == 0 {
		q.first = true
		q.hdr = append(q.hdr[:0], b[:hdrLen]...)
		if v6 {
			q.hdr = q.hdr[:unfrag] // without the Fragment header
			q.nextHdrOff = nhOff
			q.nextHdr = nextHdr
		}
	}
	if !v6 {
		size := len(payload) + hdrLen
		if size > q.maxSize {
			q.maxSize = size
		}
		if df && size > q.maxDFSize {
			q.maxDFSize = size
		}
	}
	if !(q.first && q.last && q.meat == q.length) {
		return DefragResult{Verdict: FragQueued}
	}
	return d.reassemble(q, v6)
}

func (d *Defrag) reassemble(q *fragQueue, v6 bool) DefragResult {
	n := len(q.frags)
	total := len(q.hdr) + q.length
	if !v6 && total > maxIPv4Datagram {
		d.stats.Killed++
		d.kill(q)
		return d.drop(FragDropOversize)
	}
	if v6 && total-40 > maxIPv6Payload {
		d.stats.Killed++
		d.kill(q)
		return d.drop(FragDropOversize)
	}
	out := append(d.out[:0], q.hdr...)
	for _, f := range q.frags {
		out = append(out, q.data[f.pos:f.pos+f.end-f.off]...)
	}
	if v6 {
		out[q.nextHdrOff] = q.nextHdr
		binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-40))
	} else {
		binary.BigEndian.PutUint16(out[2:4], uint16(len(out)))
		if q.maxDFSize == q.maxSize {
			binary.BigEndian.PutUint16(out[6:8], 0x4000)
		} else {
			binary.BigEndian.PutUint16(out[6:8], 0)
		}
		ihl := int(out[0]&0x0f) * 4
		out[10], out[11] = 0, 0
		binary.BigEndian.PutUint16(out[10:12], Checksum(0, out[:ihl]))
	}
	d.out = out
	d.stats.Reassembled++
	d.release(q)
	return DefragResult{Verdict: FragReassembled, Datagram: out, Fragments: n}
}

// findFragHeader walks the IPv6 extension headers to the Fragment header.
// It returns the offset of the Fragment header and of the next-header byte
// that names it.
func findFragHeader(b []byte) (fragOff, nhOff int, ok bool) {
	if len(b) < 40 {
		return 0, 0, false
	}
	next, off, nh := b[6], 40, 6
	for i := 0; i < 16 && isExt6(next); i++ {
		hl, ok := ext6Len(next, b[off:])
		if !ok {
			return 0, 0, false
		}
		if next == 44 {
			return off, nh, true
		}
		nh = off
		next = b[off]
		off += hl
	}
	return 0, 0, false
}

func (d *Defrag) drop(r FragDropReason) DefragResult {
	d.stats.Dropped[r]++
	return DefragResult{Verdict: FragDropped, Reason: r}
}

func (d *Defrag) dropKill(q *fragQueue, r FragDropReason) DefragResult {
	d.stats.Killed++
	d.kill(q)
	return d.drop(r)
}

// makeRoom evicts the oldest queues (never keep) until charge fits under
// HighThresh. It reports whether it fits.
func (d *Defrag) makeRoom(charge int, keep *fragQueue) bool {
	for d.mem+charge > d.cfg.HighThresh {
		q := d.oldest
		if q != nil && q == keep {
			q = q.next
		}
		if q == nil {
			return false
		}
		d.stats.Evicted++
		d.kill(q)
	}
	return true
}

func (d *Defrag) newQueue(key fragKey, now time.Time) *fragQueue {
	var q *fragQueue
	if n := len(d.free); n > 0 {
		q = d.free[n-1]
		d.free = d.free[:n-1]
	} else {
		q = &fragQueue{}
	}
	q.key = key
	q.deadline = now.Add(d.cfg.Timeout)
	d.queues[key] = q
	q.prev, q.next = d.newest, nil
	if d.newest != nil {
		d.newest.next = q
	} else {
		d.oldest = q
	}
	d.newest = q
	return q
}

// kill frees a queue and its fragments without reassembly.
func (d *Defrag) kill(q *fragQueue) {
	d.stats.Discarded += uint64(len(q.frags))
	d.release(q)
}

// maxFreeQueues bounds the pool of reusable queues.
const maxFreeQueues = 64

func (d *Defrag) release(q *fragQueue) {
	delete(d.queues, q.key)
	if q.prev != nil {
		q.prev.next = q.next
	} else {
		d.oldest = q.next
	}
	if q.next != nil {
		q.next.prev = q.prev
	} else {
		d.newest = q.prev
	}
	d.mem -= q.mem
	if len(d.free) < maxFreeQueues && cap(q.data) <= 2*65536 {
		*q = fragQueue{hdr: q.hdr[:0], frags: q.frags[:0], data: q.data[:0]}
		d.free = append(d.free, q)
	}
}
