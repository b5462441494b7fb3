package conntrack

import (
	"encoding/binary"

	"github.com/filterd/filterd/packet"
)

// TCP conntrack states (enum tcp_conntrack).
const (
	tcpNone uint8 = iota
	tcpSynSent
	tcpSynRecv
	tcpEstablished
	tcpFinWait
	tcpCloseWait
	tcpLastAck
	tcpTimeWait
	tcpClose
	tcpSynSent2
	tcpStateCount // TCP_CONNTRACK_MAX, used as the INVALID pseudo-state
	tcpIgnore     // TCP_CONNTRACK_IGNORE
)

const (
	sNO = tcpNone
	sSS = tcpSynSent
	sSR = tcpSynRecv
	sES = tcpEstablished
	sFW = tcpFinWait
	sCW = tcpCloseWait
	sLA = tcpLastAck
	sTW = tcpTimeWait
	sCL = tcpClose
	sS2 = tcpSynSent2
	sIV = tcpStateCount
	sIG = tcpIgnore
)

var tcpStateNames = [tcpStateCount]string{
	"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
	"CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
}

// Flag-set indexes (enum tcp_bit_set).
const (
	tcpSynSet uint8 = iota
	tcpSynAckSet
	tcpFinSet
	tcpAckSet
	tcpRstSet
	tcpNoneSet
)

// tcpConntracks is tcp_conntracks[2][6][TCP_CONNTRACK_MAX] of
// net/netfilter/nf_conntrack_proto_tcp.c (Linux 6.x).
var tcpConntracks = [2][6][tcpStateCount]uint8{
	{ // ORIGINAL
		/*         sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
		/*syn*/ {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2},
		/*synack*/ {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR},
		/*fin*/ {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		/*ack*/ {sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV},
		/*rst*/ {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		/*none*/ {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
	{ // REPLY
		/*         sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
		/*syn*/ {sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2},
		/*synack*/ {sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR},
		/*fin*/ {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		/*ack*/ {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG},
		/*rst*/ {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		/*none*/ {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
}

// ip_ct_tcp_state flags (IP_CT_TCP_FLAG_*) and the last_flags extras.
const (
	flagWindowScale  uint8 = 0x01
	flagSackPerm     uint8 = 0x02
	flagCloseInit    uint8 = 0x04
	flagBeLiberal    uint8 = 0x08
	flagDataUnack    uint8 = 0x10
	flagMaxAckSet    uint8 = 0x20
	flagExpChallenge uint8 = 0x40 // IP_CT_EXP_CHALLENGE_ACK
	flagSimOpen      uint8 = 0x80 // IP_CT_TCP_SIMULTANEOUS_OPEN
)

const (
	maxAckWinConst = 66000 // MAXACKWINCONST
	tcpMaxWScale   = 14    // TCP_MAX_WSCALE
)

// tcpSeen is struct ip_ct_tcp_state: what we know of one direction.
type tcpSeen struct {
	end, maxend, maxwin, maxack uint32
	scale, flags                uint8
}

// tcpConn is struct ip_ct_tcp.
type tcpConn struct {
	seen                      [2]tcpSeen
	lastSeq, lastAck, lastEnd uint32
	lastWin                   uint16
	state                     uint8
	lastDir                   uint8
	lastIndex                 uint8
	lastWscale                uint8
	lastFlags                 uint8
	retrans                   uint8
}

// Actions of tcp_in_window (enum nf_ct_tcp_action).
const (
	actIgnore = iota
	actInvalid
	actAccept
)

func before(a, b uint32) bool { return int32(a-b) < 0 }
func after(a, b uint32) bool  { return int32(b-a) < 0 }

// tcpValidFlags is tcp_valid_flags[]: PSH, ECE and CWR are always valid.
var tcpValidFlags = func() (v [0x40]bool) {
	const fin, syn, rst, ack, urg = packet.TCPFin, packet.TCPSyn, packet.TCPRst, packet.TCPAck, packet.TCPUrg
	for _, f := range []uint8{syn, syn | urg, syn | ack, rst, rst | ack, fin | ack, fin | ack | urg, ack, ack | urg} {
		v[f] = true
	}
	return v
}()

// tcpValid is tcp_error minus the checksum: a truncated header or a bad
// flag combination is INVALID.
func tcpValid(p *packet.Packet) bool {
	if p.TCPDataOff < 20 {
		return false
	}
	f := p.TCPFlags &^ (packet.TCPEce | packet.TCPCwr | packet.TCPPsh)
	return tcpValidFlags[f&0x3f]
}

func tcpIndex(f uint8) uint8 {
	switch {
	case f&packet.TCPRst != 0:
		return tcpRstSet
	case f&packet.TCPSyn != 0:
		if f&packet.TCPAck != 0 {
			return tcpSynAckSet
		}
		return tcpSynSet
	case f&packet.TCPFin != 0:
		return tcpFinSet
	case f&packet.TCPAck != 0:
		return tcpAckSet
	}
	return tcpNoneSet
}

// segEnd is segment_seq_plus_len.
func segEnd(p *packet.Packet) uint32 {
	end := p.Seq + uint32(len(p.Payload))
	if p.TCPFlags&packet.TCPSyn != 0 {
		end++
	}
	if p.TCPFlags&packet.TCPFin != 0 {
		end++
	}
	return end
}

// tcpOptions is tcp_options(): window scale and SACK-permitted. Like the
// kernel it leaves the state alone when the header has no options.
func tcpOptions(p *packet.Packet, st *tcpSeen) {
	if p.TCPDataOff <= 20 {
		return
	}
	st.scale = 0
	st.flags &= flagBeLiberal
	if p.TCPOpt.SACKPerm {
		st.flags |= flagSackPerm
	}
	if ws := p.TCPOpt.WScale; ws >= 0 {
		if ws > tcpMaxWScale {
			ws = tcpMaxWScale
		}
		st.scale = uint8(ws)
		st.flags |= flagWindowScale
	}
}

// tcpHeader returns the raw TCP header of p when it can be located in p.L3
// (the payload is the tail of the IP packet), else nil.
func tcpHeader(p *packet.Packet) []byte {
	end := len(p.L3) - len(p.Payload)
	start := end - int(p.TCPDataOff)
	if p.TCPDataOff < 20 || start < 0 || end > len(p.L3) {
		return nil
	}
	h := p.L3[start:end]
	if binary.BigEndian.Uint16(h[0:]) != p.SrcPort || binary.BigEndian.Uint16(h[2:]) != p.DstPort ||
		binary.BigEndian.Uint32(h[4:]) != p.Seq {
		return nil
	}
	return h
}

// tcpSack is tcp_sack(): raise sack to the highest right edge of the SACK
// blocks in the options.
func tcpSack(p *packet.Packet, sack *uint32) {
	if p.TCPDataOff <= 20 {
		return
	}
	h := tcpHeader(p)
	if h == nil {
		return
	}
	opt := h[20:]
	// Fast path for timestamp-only option.
	if len(opt) == 12 && opt[0] == 1 && opt[1] == 1 && opt[2] == 8 && opt[3] == 10 {
		return
	}
	for len(opt) > 0 {
		switch opt[0] {
		case 0: // EOL
			return
		case 1: // NOP
			opt = opt[1:]
			continue
		}
		if len(opt) < 2 {
			return
		}
		size := int(opt[1])
		if size < 2 || size > len(opt) {
			return
		}
		if opt[0] == 5 && size >= 10 && (size-2)%8 == 0 {
			for i := 2; i < size; i += 8 {
				if tmp := binary.BigEndian.Uint32(opt[i+4:]); after(tmp, *sack) {
					*sack = tmp
				}
			}
			return
		}
		opt = opt[size:]
	}
}

func maxAckWindow(s *tcpSeen) uint32 {
	if s.maxwin > maxAckWinConst {
		return s.maxwin
	}
	return maxAckWinConst
}

// tcpInitSender is tcp_init_sender.
func tcpInitSender(sender, receiver *tcpSeen, p *packet.Packet, end, win uint32, dir uint8) {
	sender.end = end
	sender.maxend = end
	sender.maxwin = win
	if win == 0 {
		sender.maxwin = 1
	}
	tcpOptions(p, sender)
	// RFC 1323: both sides must send the Window Scale option to enable
	// window scaling in either direction.
	if dir == 1 && !(sender.flags&flagWindowScale != 0 && receiver.flags&flagWindowScale != 0) {
		sender.scale = 0
		receiver.scale = 0
	}
}

func (t *Table) tcpLogInvalid(sender *tcpSeen, ret int) int {
	if sender.flags&flagBeLiberal != 0 || t.cfg.beLiberal {
		return actAccept
	}
	return ret
}

// tcpInWindow is tcp_in_window.
func (t *Table) tcpInWindow(c *tcpConn, dir, index uint8, p *packet.Packet) int {
	sender := &c.seen[dir]
	receiver := &c.seen[1-dir]
	syn := p.TCPFlags&packet.TCPSyn != 0
	ackf := p.TCPFlags&packet.TCPAck != 0
	seq := p.Seq
	ack := p.Ack
	sack := ack
	winRaw := p.Window
	win := uint32(winRaw)
	end := segEnd(p)

	if receiver.flags&flagSackPerm != 0 {
		tcpSack(p, &sack)
	}

	if sender.maxwin == 0 {
		// Initialize sender data.
		if syn {
			tcpInitSender(sender, receiver, p, end, win, dir)
			if !ackf {
				return actAccept // simultaneous open
			}
		} else {
			// Mid-connection: history lost, use the packet.
			sender.end = end
			swin := win << sender.scale
			if swin == 0 {
				swin = 1
			}
			sender.maxwin = swin
			sender.maxend = end + sender.maxwin
			if receiver.maxwin == 0 {
				// No traffic seen the other way yet: let III and IV pass.
				receiver.end = sack
				receiver.maxend = sack
			} else if sack == receiver.end+1 {
				// Likely a reply to a keepalive.
				receiver.end++
			}
		}
	} else if syn && after(end, sender.end) && (c.state == tcpSynSent || c.state == tcpSynRecv) {
		// Re-initialized connection (RFC 793): new SYN/SYN-ACK.
		tcpInitSender(sender, receiver, p, end, win, dir)
		if dir == 1 && !ackf {
			return actAccept
		}
	}

	if !ackf {
		ack = receiver.end
		sack = ack
	} else if p.TCPFlags&(packet.TCPAck|packet.TCPRst) == packet.TCPAck|packet.TCPRst && ack == 0 {
		// Broken stacks that send RST+ACK with a zero ack.
		ack = receiver.end
		sack = ack
	}

	if p.TCPFlags&packet.TCPRst != 0 && seq == 0 && c.state == tcpSynSent {
		// RST sent answering SYN.
		seq = sender.end
		end = seq
	}

	if !before(seq, sender.maxend+1) {
		overshot := end - sender.maxend + 1
		ackOK := after(sack, receiver.end-maxAckWindow(sender)-1)
		inRecvWin := receiver.maxwin != 0 && after(end, sender.end-receiver.maxwin-1)
		if inRecvWin && ackOK && overshot <= receiver.maxwin && before(sack, receiver.end+1) {
			// Peer sent more than the window allows; remember the data
			// so that its ACK does not look like ACKing unseen data.
			sender.end = end
			sender.flags |= flagDataUnack
			return t.tcpLogInvalid(sender, actIgnore)
		}
		return t.tcpLogInvalid(sender, actInvalid) // SEQ is over upper bound
	}
	if !before(sack, receiver.end+1) {
		return t.tcpLogInvalid(sender, actInvalid) // ACK is over upper bound (ACKed data not seen yet)
	}
	if !(receiver.maxwin == 0 || after(end, sender.end-receiver.maxwin-1)) {
		return t.tcpLogInvalid(sender, actIgnore) // SEQ under lower bound (old retransmission)
	}
	if !after(sack, receiver.end-maxAckWindow(sender)-1) {
		return t.tcpLogInvalid(sender, actIgnore) // ACK under lower bound
	}

	if !syn {
		win <<= sender.scale
	}
	// Update sender data.
	swin := win + (sack - ack)
	if sender.maxwin < swin {
		sender.maxwin = swin
	}
	if after(end, sender.end) {
		sender.end = end
		sender.flags |= flagDataUnack
	}
	if ackf {
		if sender.flags&flagMaxAckSet == 0 {
			sender.maxack = ack
			sender.flags |= flagMaxAckSet
		} else if after(ack, sender.maxack) {
			sender.maxack = ack
		}
	}
	// Update receiver data.
	if receiver.maxwin != 0 && after(end, sender.maxend) {
		receiver.maxwin += end - sender.maxend
	}
	if after(sack+win, receiver.maxend-1) {
		receiver.maxend = sack + win
		if win == 0 {
			receiver.maxend++
		}
	}
	if ack == receiver.end {
		receiver.flags &^= flagDataUnack
	}
	// Check retransmissions.
	if index == tcpAckSet {
		if c.lastDir == dir && c.lastSeq == seq && c.lastAck == ack && c.lastEnd == end && c.lastWin == winRaw {
			if c.retrans < 255 {
				c.retrans++
			}
		} else {
			c.lastDir = dir
			c.lastSeq = seq
			c.lastAck = ack
			c.lastEnd = end
			c.lastWin = winRaw
			c.retrans = 0
		}
	}
	return actAccept
}

// tcpNew is tcp_new: may this packet start an entry?
func (t *Table) tcpNew(c *tcpConn, p *packet.Packet) bool {
	newState := tcpConntracks[0][tcpIndex(p.TCPFlags)][tcpNone]
	if newState >= sIV {
		return false
	}
	end := segEnd(p)
	win := uint32(p.Window)
	if win == 0 {
		win = 1
	}
	switch {
	case newState == tcpSynSent:
		*c = tcpConn{}
		c.seen[0].end = end
		c.seen[0].maxwin = win
		c.seen[0].maxend = end
		tcpOptions(p, &c.seen[0])
	case !t.cfg.loose:
		return false
	default:
		// Picking up a connection mid-stream: assume SACK and be liberal,
		// since the window scale is unknown.
		*c = tcpConn{}
		c.seen[0].end = end
		c.seen[0].maxwin = win
		c.seen[0].maxend = end + win
		c.seen[0].flags = flagSackPerm | flagBeLiberal
		c.seen[1].flags = flagSackPerm | flagBeLiberal
	}
	c.lastIndex = tcpNoneSet
	return true
}

func tcpCanEarlyDrop(state uint8) bool {
	switch state {
	case tcpFinWait, tcpLastAck, tcpTimeWait, tcpClose, tcpCloseWait:
		return true
	}
	return false
}

func (e *entry) tcpEstablished() bool {
	return e.tcp.state == tcpEstablished && e.status&stAssured != 0
}

// tcpHandleInvalid is nf_tcp_handle_invalid: an out-of-window FIN/RST
// answering the peer's FIN/RST shortens an assured entry's timeout.
func (t *Table) tcpHandleInvalid(e *entry, dir, index uint8, now int64) {
	c := &e.tcp
	if e.status&stAssured == 0 || (index != tcpRstSet && index != tcpFinSet) {
		return
	}
	if c.lastDir != dir && (c.lastIndex == tcpFinSet || c.lastIndex == tcpRstSet) {
		left := e.expires - now
		if left < int64(120e9) {
			return
		}
		if left > t.cfg.tcpUnack {
			e.expires = now + t.cfg.tcpUnack
		}
	} else {
		c.lastIndex = index
		c.lastDir = dir
	}
}

// tcpPacket is nf_conntrack_tcp_packet.
func (t *Table) tcpPacket(e *entry, p *packet.Packet, dir uint8, now int64, isNew bool) int {
	c := &e.tcp
	if isNew && !t.tcpNew(c, p) {
		return vInvalid
	}
	oldState := c.state
	index := tcpIndex(p.TCPFlags)
	newState := tcpConntracks[dir][index][oldState]
	skipWindow := false

	ignore := false
	switch newState {
	case tcpSynSent:
		if oldState < tcpTimeWait {
			break
		}
		// RFC 1122: reopening from TIME_WAIT, or a client that aborted
		// and starts again: delete the entry and look up again.
		if (c.seen[dir].flags|c.seen[1-dir].flags)&flagCloseInit != 0 ||
			(c.lastDir == dir && c.lastIndex == tcpRstSet) {
			return vRepeat
		}
		ignore = true
	case sIG:
		ignore = true
	case sIV:
		return vInvalid
	case tcpTimeWait:
		// RFC 5961 challenge ACK must not be taken as ACKing the last FIN.
		if oldState == tcpLastAck && index == tcpAckSet && c.lastDir != dir &&
			c.lastIndex == tcpSynSet && c.lastFlags&flagExpChallenge != 0 {
			c.lastFlags &^= flagExpChallenge
			return vIgnore
		}
	case tcpSynSent2:
		c.lastFlags |= flagSimOpen
	case tcpSynRecv:
		if dir == 1 && index == tcpAckSet && c.lastFlags&flagSimOpen != 0 {
			newState = tcpEstablished
		}
	case tcpClose:
		if index != tcpRstSet {
			break
		}
		if tcpCanEarlyDrop(c.state) {
			// Closing: the tuple may be reused already; skip checks.
			skipWindow = true
			break
		}
		if c.seen[1-dir].flags&flagMaxAckSet != 0 && c.lastIndex != tcpSynSet {
			seq := p.Seq
			if seq == 0 && !e.tcpEstablished() {
				break
			}
			if before(seq, c.seen[1-dir].maxack) && !t.cfg.ignoreRST {
				return vInvalid // invalid rst
			}
			if !e.tcpEstablished() || seq == c.seen[1-dir].maxack {
				break
			}
			// RST that ends a train: data, then RST at its end.
			if c.lastIndex == tcpAckSet && c.lastDir == dir && seq == c.lastEnd {
				break
			}
			// RST sequence doesn't match exactly: keep the state to allow
			// a possible challenge ACK.
			newState = oldState
		}
		if ((e.status&stSeenReply != 0 && c.lastIndex == tcpSynSet) ||
			(e.status&stAssured == 0 && c.lastIndex == tcpAckSet)) &&
			p.Ack == c.lastEnd {
			// RST answering a SYN or ACK we let through as ignored.
			skipWindow = true
			break
		}
		if oldState == tcpSynSent && c.lastIndex == tcpAckSet && c.lastDir == 1 && p.Seq == c.lastAck {
			// RST answering a challenge ACK we let through.
			skipWindow = true
		}
	}

	if ignore {
		if index == tcpSynAckSet && c.lastIndex == tcpSynSet && c.lastDir != dir && p.Ack == c.lastEnd {
			// This SYN/ACK acknowledges a SYN we ignored: the ends are in
			// sync and we are not. Resync from the annotated values.
			oldState = tcpSynSent
			newState = tcpSynRecv
			ld := c.lastDir
			c.seen[ld].end = c.lastEnd
			c.seen[ld].maxend = c.lastEnd
			c.seen[ld].maxwin = uint32(c.lastWin)
			if c.lastWin == 0 {
				c.seen[ld].maxwin = 1
			}
			c.seen[ld].scale = c.lastWscale
			c.lastFlags &^= flagExpChallenge
			c.seen[ld].flags = c.lastFlags
			c.seen[dir] = tcpSeen{flags: c.seen[dir].flags & flagBeLiberal}
		} else {
			c.lastIndex = index
			c.lastDir = dir
			c.lastSeq = p.Seq
			c.lastEnd = segEnd(p)
			c.lastWin = p.Window
			if index == tcpSynSet && dir == 0 {
				// A SYN in ORIGINAL: annotate its options; if the server
				// answers with SYN/ACK we get in sync.
				var seen tcpSeen
				c.lastFlags = 0
				c.lastWscale = 0
				tcpOptions(p, &seen)
				if seen.flags&flagWindowScale != 0 {
					c.lastFlags |= flagWindowScale
					c.lastWscale = seen.scale
				}
				if seen.flags&flagSackPerm != 0 {
					c.lastFlags |= flagSackPerm
				}
				if oldState == tcpLastAck {
					c.lastFlags |= flagExpChallenge
				}
			}
			if oldState == tcpSynSent && index == tcpAckSet && dir == 1 {
				c.lastAck = p.Ack // possible challenge ACK answering the SYN
			}
			return vIgnore
		}
	}

	if !skipWindow {
		switch t.tcpInWindow(c, dir, index, p) {
		case actIgnore:
			return vIgnore
		case actInvalid:
			t.tcpHandleInvalid(e, dir, index, now)
			return vInvalid
		}
	}

	// In-window packet from here on.
	c.lastIndex = index
	c.lastDir = dir
	c.state = newState
	if oldState != newState && newState == tcpFinWait {
		c.seen[dir].flags |= flagCloseInit
	}
	to := &t.cfg.tcpTimeout
	var timeout int64
	switch {
	case c.retrans >= t.cfg.maxRetrans && to[newState] > t.cfg.tcpRetrans:
		timeout = t.cfg.tcpRetrans
	case index == tcpRstSet:
		timeout = to[tcpClose]
	case (c.seen[0].flags|c.seen[1].flags)&flagDataUnack != 0 && to[newState] > t.cfg.tcpUnack:
		timeout = t.cfg.tcpUnack
	case c.lastWin == 0 && to[newState] > t.cfg.tcpRetrans:
		timeout = t.cfg.tcpRetrans
	default:
		timeout = to[newState]
	}

	if e.status&stSeenReply == 0 {
		// If the only reply is a RST, there is no connection: delete.
		if p.TCPFlags&packet.TCPRst != 0 {
			e.packets[dir]++
			e.bytes[dir] += uint64(p.Length)
			return vKill
		}
		// Do not renew the timeout on a SYN retransmission.
		if index == tcpSynSet && oldState == tcpSynSent {
			return vIgnore
		}
		// Mid-stream pickup without a reply yet: no long timeout.
		if newState == tcpEstablished && timeout > t.cfg.tcpUnack {
			timeout = t.cfg.tcpUnack
		}
	} else if e.status&stAssured == 0 && (oldState == tcpSynRecv || oldState == tcpEstablished) &&
		newState == tcpEstablished {
		e.status |= stAssured
	}
	t.refresh(e, p, dir, now, timeout)
	return vAccept
}
