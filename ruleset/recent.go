package ruleset

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/filterd/filterd/packet"
)

// Defaults of xt_recent's module parameters.
const (
	DefaultRecentListSize = 100 // ip_list_tot
	DefaultRecentPktList  = 20  // ip_pkt_list_tot
	maxRecentPktList      = 255 // largest ip_pkt_list_tot the kernel allows
)

// recentEntry is one address of a recent list.
type recentEntry struct {
	addr     netip.Addr
	ttl      uint8
	stamps   []int64 // ring of UnixNano timestamps
	n, index int     // stamps in use; next slot (kernel: nstamps, index)
	lruLinks         // head = least recently updated
	used     bool
}

func (e *recentEntry) links() *lruLinks { return &e.lruLinks }

// recentList is one --name list of -m recent, shared by every rule naming it
// and kept across reloads (as the kernel keeps /proc/net/xt_recent/NAME).
type recentList struct {
	name string
	mu   sync.Mutex
	m    map[netip.Addr]int32
	ents []recentEntry
	free []int32
	lru
	pkts int
}

func newRecentList(name string, size, pkts int) *recentList {
	if size <= 0 {
		size = DefaultRecentListSize
	}
	if pkts <= 0 {
		pkts = DefaultRecentPktList
	}
	l := &recentList{name: name, m: make(map[netip.Addr]int32, size), ents: make([]recentEntry, size),
		lru: lru{head: -1, tail: -1}, pkts: pkts}
	backing := make([]int64, size*pkts)
	for i := range l.ents {
		l.ents[i].stamps = backing[i*pkts : (i+1)*pkts : (i+1)*pkts]
		l.ents[i].prev, l.ents[i].next = -1, -1
		l.free = append(l.free, int32(size-1-i))
	}
	return l
}

func (l *recentList) unlink(i int32)   { lruUnlink(&l.lru, l.ents, i) }
func (l *recentList) pushTail(i int32) { lruPushTail(&l.lru, l.ents, i) }

func (l *recentList) remove(i int32) {
	l.unlink(i)
	delete(l.m, l.ents[i].addr)
	l.ents[i].used = false
	l.free = append(l.free, i)
}

// add is recent_entry_init: a new entry with one timestamp, evicting the
// least recently updated entry when the list is full.
func (l *recentList) add(a netip.Addr, ttl uint8, now int64) {
	if len(l.free) == 0 {
		l.remove(l.head)
	}
	i := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	e := &l.ents[i]
	e.addr, e.ttl, e.used = a, ttl, true
	e.stamps[0] = now
	e.n, e.index = 1, 1
	l.m[a] = i
	l.pushTail(i)
}

// update is recent_entry_update.
func (l *recentList) update(i int32, now int64) {
	e := &l.ents[i]
	e.index %= l.pkts
	e.stamps[e.index] = now
	e.index++
	if e.index > e.n {
		e.n = e.index
	}
	l.unlink(i)
	l.pushTail(i)
}

// Len returns the number of addresses in the list.
func (l *recentList) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// Contains reports whether a is in the list.
func (l *recentList) Contains(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.m[a]
	return ok
}

// recentMatcher is -m recent (xt_recent).
type recentMatcher struct {
	l        *recentList
	cmd      RecentCmd
	seconds  int64 // ns
	hitcount int
	reap     bool
	rttl     bool
	dest     bool
	mask     netip.Addr
	inv      bool
}

func (*recentMatcher) stateful() {}

func (c *Compiled) newRecentMatcher(m *RecentMatch, opts CompileOptions) (matcher, error) {
	name := m.Name
	if name == "" {
		name = "DEFAULT"
	}
	if m.Hitcount > maxRecentPktList {
		// iptables-restore --test accepts it; the kernel refuses it when the
		// rule is committed (hitcount >= XT_RECENT_MAX_NSTAMPS).
		return nil, fmt.Errorf("-m recent --hitcount %d: %w: the kernel remembers at most %d packets per address", m.Hitcount, ErrUnsupported, maxRecentPktList)
	}
	// The kernel refuses a --hitcount above its ip_pkt_list_tot module
	// parameter (default 20); a file using one runs on a host where it was
	// raised, so the list remembers as many packets as the largest
	// --hitcount that uses it needs.
	pkts := opts.RecentPktList
	if pkts <= 0 {
		pkts = DefaultRecentPktList
	}
	pkts = max(pkts, c.recentHits[name], int(m.Hitcount))
	l := c.state.recentList(name, opts.RecentListSize, pkts)
	if m.Reap && m.Seconds == 0 {
		return nil, fmt.Errorf("-m recent --reap needs --seconds")
	}
	if (m.Cmd == RecentSet || m.Cmd == RecentRemove) && (m.Seconds != 0 || m.Hitcount != 0 || m.Reap || m.RTTL) {
		return nil, fmt.Errorf("-m recent --seconds, --hitcount, --reap and --rttl go only with --rcheck or --update")
	}
	return &recentMatcher{l: l, cmd: m.Cmd, seconds: int64(m.Seconds) * int64(time.Second), hitcount: int(m.Hitcount),
		reap: m.Reap, rttl: m.RTTL, dest: m.Dest, mask: m.Mask, inv: m.Invert}, nil
}

func applyMask(a, mask netip.Addr) netip.Addr {
	if !mask.IsValid() || mask.BitLen() != a.BitLen() {
		return a
	}
	if a.Is4() {
		x, y := a.As4(), mask.As4()
		for i := range x {
			x[i] &= y[i]
		}
		return netip.AddrFrom4(x)
	}
	x, y := a.As16(), mask.As16()
	for i := range x {
		x[i] &= y[i]
	}
	return netip.AddrFrom16(x)
}

func (m *recentMatcher) match(p *packet.Packet) bool {
	a := p.Src
	if m.dest {
		a = p.Dst
	}
	a = applyMask(a, m.mask)
	ttl := p.TTL
	if p.OutIface != "" && !p.Meta.Local {
		ttl++ // the TTL as seen before forwarding
	}
	now := p.Meta.Time.UnixNano()
	ret := m.inv
	l := m.l
	l.mu.Lock()
	defer l.mu.Unlock()
	i, found := l.m[a]
	if found && m.rttl && l.ents[i].ttl != 0 && l.ents[i].ttl != ttl {
		found = false // recent_entry_lookup compares the TTL under --rttl
	}
	if !found {
		if m.cmd != RecentSet {
			return ret
		}
		l.add(a, ttl, now)
		return !ret
	}
	switch m.cmd {
	case RecentSet:
		ret = !ret
	case RecentRemove:
		l.remove(i)
		return !ret
	case RecentCheck, RecentUpdate:
		window := now - m.seconds
		e := &l.ents[i]
		hits := 0
		for k := 0; k < e.n; k++ {
			if m.seconds != 0 && e.stamps[k] < window {
				continue
			}
			hits++
			if m.hitcount == 0 || hits >= m.hitcount {
				ret = !ret
				break
			}
		}
		if m.reap {
			// recent_entry_reap: drop the least recently updated entry if its
			// newest timestamp is outside the window (not the one about to be
			// updated).
			update := m.cmd == RecentUpdate && ret
			if h := l.head; h >= 0 && !(h == i && update) {
				he := &l.ents[h]
				last := he.stamps[he.index-1]
				if last < window {
					l.remove(h)
					if h == i {
						return ret
					}
				}
			}
		}
	}
	if m.cmd == RecentSet || (m.cmd == RecentUpdate && ret) {
		l.update(i, now)
		l.ents[i].ttl = ttl
	}
	return ret
}
