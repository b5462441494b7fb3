package conntrack

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/filterd/filterd/packet"
)

// Entry is a snapshot of one confirmed conntrack entry.
type Entry struct {
	Orig, Reply Key
	// State is the TCP state name (ESTABLISHED, ...), empty for other protocols.
	State     string
	Expires   time.Time
	Timeout   time.Duration // time left, relative to the table's latest packet time
	Packets   [2]uint64     // per direction: original, reply
	Bytes     [2]uint64
	SeenReply bool // false: [UNREPLIED]
	Assured   bool // [ASSURED]
	Expected  bool // created by an expectation (RELATED data connection)
	Helper    string
}

// Range calls f for every confirmed entry until f returns false. It takes
// one shard lock at a time and never calls f with a lock held.
func (t *Table) Range(f func(Entry) bool) {
	now := t.Now()
	var buf []Entry
	for i := range t.shards {
		s := &t.shards[i]
		buf = buf[:0]
		s.mu.Lock()
		for _, head := range s.buckets {
			for c := head; c != 0; {
				e := s.at(c.idx1() - 1)
				c = s.lnk(c.idx1() - 1).next
				buf = append(buf, e.snapshot(now))
			}
		}
		s.mu.Unlock()
		for _, en := range buf {
			if !f(en) {
				return
			}
		}
	}
}

func (e *entry) snapshot(now int64) Entry {
	orig := e.key.key()
	rep, _ := orig.Invert()
	en := Entry{
		Orig:      orig,
		Reply:     rep,
		Expires:   time.Unix(0, e.expires),
		Timeout:   time.Duration(e.expires - now),
		Packets:   e.packets,
		Bytes:     e.bytes,
		SeenReply: e.status&stSeenReply != 0,
		Assured:   e.status&stAssured != 0,
		Expected:  e.status&stExpected != 0,
	}
	if en.Timeout < 0 {
		en.Timeout = 0
	}
	if e.key.proto == packet.ProtoTCP {
		en.State = tcpStateNames[e.tcp.state]
	}
	if e.status&stHelper != 0 {
		en.Helper = "ftp"
	}
	return en
}

// Now returns the latest packet time the table has seen.
func (t *Table) Now() int64 {
	var now int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		if s.now > now {
			now = s.now
		}
		s.mu.Unlock()
	}
	return now
}

// Len returns the number of confirmed entries.
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

func protoName(p uint8) string {
	switch p {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	case packet.ProtoUDPLite:
		return "udplite"
	case packet.ProtoICMP:
		return "icmp"
	case packet.ProtoICMPv6:
		return "icmpv6"
	case packet.ProtoSCTP:
		return "sctp"
	case packet.ProtoGRE:
		return "gre"
	case 33:
		return "dccp"
	}
	return "unknown"
}

func writeTuple(b *strings.Builder, k Key) {
	fmt.Fprintf(b, "src=%s dst=%s ", k.Src, k.Dst)
	switch {
	case isICMP(k.Proto):
		fmt.Fprintf(b, "type=%d code=%d id=%d ", k.ICMPType(), k.ICMPCode(), k.ICMPID())
	case hasPorts(k.Proto):
		fmt.Fprintf(b, "sport=%d dport=%d ", k.SrcPort, k.DstPort)
	}
}

// String formats the entry as a line of `conntrack -L` (conntrack-tools'
// default output with accounting on).
func (en Entry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %d %d ", protoName(en.Orig.Proto), en.Orig.Proto, int64(en.Timeout/time.Second))
	if en.State != "" {
		b.WriteString(en.State)
		b.WriteByte(' ')
	}
	writeTuple(&b, en.Orig)
	fmt.Fprintf(&b, "packets=%d bytes=%d ", en.Packets[0], en.Bytes[0])
	if !en.SeenReply {
		b.WriteString("[UNREPLIED] ")
	}
	writeTuple(&b, en.Reply)
	fmt.Fprintf(&b, "packets=%d bytes=%d ", en.Packets[1], en.Bytes[1])
	if en.Assured {
		b.WriteString("[ASSURED] ")
	}
	b.WriteString("mark=0 ")
	if en.Helper != "" {
		b.WriteString("helper=" + en.Helper + " ")
	}
	b.WriteString("use=1")
	return b.String()
}

// List returns `conntrack -L` lines for all entries.
func (t *Table) List() []string {
	var out []string
	t.Range(func(en Entry) bool {
		out = append(out, en.String())
		return true
	})
	return out
}

// Counts returns the number of entries per protocol and state: "tcp
// ESTABLISHED", "tcp SYN_SENT", ..., and "udp", "icmp", "icmpv6", or the
// protocol name for the others.
func (t *Table) Counts() map[string]int {
	m := map[string]int{}
	t.Range(func(en Entry) bool {
		k := protoName(en.Orig.Proto)
		if k == "unknown" {
			k = "proto-" + strconv.Itoa(int(en.Orig.Proto))
		}
		if en.State != "" {
			k += " " + en.State
		}
		m[k]++
		return true
	})
	return m
}

// Stats are the table's counters, as `conntrack -S` shows them.
type Stats struct {
	Entries      int    // confirmed entries
	Found        uint64 // packets that matched an existing entry
	New          uint64 // tentative entries created
	Insert       uint64 // entries confirmed
	InsertFailed uint64 // confirmations that lost a race with an identical flow
	Invalid      uint64 // packets given INVALID
	Ignore       uint64 // packets accepted without touching the entry (TCP IGNORE)
	Drop         uint64 // new flows refused because the table was full
	EarlyDrop    uint64 // entries evicted to make room
	Expired      uint64 // entries reclaimed by expiry (lazy or Sweep)
	Related      uint64 // ICMP errors found RELATED
	Untracked    uint64 // packets left untracked (ICMPv6 ND/MLD)
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	st := Stats{
		Invalid:   t.invalidEarly.Load(),
		Related:   t.related.Load(),
		Untracked: t.untracked.Load(),
	}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Entries += s.n
		st.Found += s.stats.found
		st.New += s.stats.new
		st.Insert += s.stats.insert
		st.InsertFailed += s.stats.insertFailed
		st.Invalid += s.stats.invalid
		st.Ignore += s.stats.ignore
		st.Drop += s.stats.drop
		st.EarlyDrop += s.stats.earlyDrop
		st.Expired += s.stats.expired
		s.mu.Unlock()
	}
	return st
}

// Get returns the entry holding tuple k in either direction, like
// `conntrack -G`. Expired entries are not returned.
func (t *Table) Get(k Key) (Entry, bool) {
	now := t.Now()
	kinv, hasInv := k.Invert()
	kt, kinvt := k.tuple(), kinv.tuple()
	sh, b := t.shardOf(t.hash(&k))
	s := &t.shards[sh]
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := s.buckets[b]; c != 0; {
		e := s.at(c.idx1() - 1)
		c = s.lnk(c.idx1() - 1).next
		if e.key == kt || (hasInv && e.key == kinvt) {
			if e.expires <= now {
				return Entry{}, false
			}
			return e.snapshot(now), true
		}
	}
	return Entry{}, false
}
