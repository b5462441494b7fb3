package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// seg describes a synthetic packet.
type seg struct {
	src, dst     string
	sport, dport uint16
	proto        uint8
	flags        uint8
	seq, ack     uint32
	win          uint16
	n            int           // payload length
	at           time.Duration // since t0
	ws           int8          // window scale option, -1 none (0 means none too unless opt)
	opt          bool          // header carries options (ws/sackperm)
	sackPerm     bool
	icmpType     uint8
	icmpCode     uint8
	icmpID       uint16
	payload      []byte
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func (s seg) packet() *packet.Packet {
	p := &packet.Packet{}
	p.Reset()
	p.Meta.Time = t0.Add(s.at)
	p.Src, p.Dst = mustAddr(s.src), mustAddr(s.dst)
	p.Family = packet.IPv4
	hdr := 20
	if p.Src.Is6() {
		p.Family = packet.IPv6
		hdr = 40
	}
	p.Proto = s.proto
	if p.Proto == 0 {
		p.Proto = packet.ProtoTCP
	}
	if s.payload != nil {
		p.Payload = s.payload
	} else {
		p.Payload = make([]byte, s.n)
	}
	switch p.Proto {
	case packet.ProtoTCP:
		p.SrcPort, p.DstPort = s.sport, s.dport
		p.TCPFlags, p.Seq, p.Ack, p.Window = s.flags, s.seq, s.ack, s.win
		p.TCPDataOff = 20
		if s.opt {
			p.TCPDataOff = 32
			p.TCPOpt.WScale = s.ws
			p.TCPOpt.SACKPerm = s.sackPerm
		}
		p.Length = hdr + int(p.TCPDataOff) + len(p.Payload)
	case packet.ProtoUDP, packet.ProtoUDPLite, packet.ProtoSCTP:
		p.SrcPort, p.DstPort = s.sport, s.dport
		p.Length = hdr + 8 + len(p.Payload)
	case packet.ProtoICMP, packet.ProtoICMPv6:
		p.ICMPType, p.ICMPCode, p.ICMPID = s.icmpType, s.icmpCode, s.icmpID
		p.Length = hdr + 8 + len(p.Payload)
	default:
		p.Length = hdr + len(p.Payload)
	}
	return p
}

// track runs p through the table and confirms it (the rules accept all).
func track(tab *Table, p *packet.Packet) packet.CTState {
	r := tab.Track(p)
	r.Confirm(p)
	return p.CTState
}

// entryOf returns the entry holding k (either direction), if any.
func entryOf(tab *Table, k Key) (Entry, bool) { return tab.Get(k) }

func tcpKey(src, dst string, sport, dport uint16) Key {
	return Key{Family: familyOf(src), Proto: packet.ProtoTCP, Src: mustAddr(src), Dst: mustAddr(dst), SrcPort: sport, DstPort: dport}
}

func familyOf(s string) packet.Family {
	if mustAddr(s).Is6() {
		return packet.IPv6
	}
	return packet.IPv4
}

// tconn drives one TCP connection between a client (dir 0) and a server
// (dir 1) with correct sequence numbers.
type tconn struct {
	t    testing.TB
	tab  *Table
	addr [2]string
	port [2]uint16
	nxt  [2]uint32
	win  [2]uint16
	at   time.Duration
}

func newTConn(t testing.TB, tab *Table) *tconn {
	return &tconn{t: t, tab: tab, addr: [2]string{"198.18.1.2", "198.18.2.2"}, port: [2]uint16{40000, 80},
		nxt: [2]uint32{1000, 5000}, win: [2]uint16{64240, 65160}}
}

func (c *tconn) key() Key { return tcpKey(c.addr[0], c.addr[1], c.port[0], c.port[1]) }

// pkt builds a segment from side dir with the connection's numbers.
func (c *tconn) pkt(dir int, flags uint8, n int) *packet.Packet {
	s := seg{src: c.addr[dir], dst: c.addr[1-dir], sport: c.port[dir], dport: c.port[1-dir],
		flags: flags, seq: c.nxt[dir], win: c.win[dir], n: n, at: c.at}
	if flags&packet.TCPAck != 0 {
		s.ack = c.nxt[1-dir]
	}
	return s.packet()
}

// send sends a segment and advances the sender's sequence like a TCP stack.
func (c *tconn) send(dir int, flags uint8, n int) packet.CTState {
	c.at += time.Millisecond
	p := c.pkt(dir, flags, n)
	st := track(c.tab, p)
	adv := uint32(n)
	if flags&packet.TCPSyn != 0 {
		adv++
	}
	if flags&packet.TCPFin != 0 {
		adv++
	}
	c.nxt[dir] += adv
	return st
}

func (c *tconn) state() string {
	en, ok := entryOf(c.tab, c.key())
	if !ok {
		return "gone"
	}
	return en.State
}

const (
	fS  = packet.TCPSyn
	fSA = packet.TCPSyn | packet.TCPAck
	fA  = packet.TCPAck
	fPA = packet.TCPPsh | packet.TCPAck
	fFA = packet.TCPFin | packet.TCPAck
	fR  = packet.TCPRst
	fRA = packet.TCPRst | packet.TCPAck
	fF  = packet.TCPFin
)
