// Package nfqbatch is a batched NFQUEUE driver that speaks the
// nfnetlink_queue protocol itself: it binds and configures a queue on a
// NETLINK_NETFILTER socket, receives many packet messages per system call
// (recvmmsg into preallocated buffers), parses them in place without
// allocating, and sends the verdicts of a whole batch in one datagram
// (per-packet NFQNL_MSG_VERDICT for non-accepts first, then one
// NFQNL_MSG_VERDICT_BATCH accepting everything else up to the highest
// accepted id).
//
// Message layouts follow linux/netfilter/nfnetlink_queue.h and
// linux/netfilter/nfnetlink.h; the kernel side is
// net/netfilter/nfnetlink_queue.c.
package nfqbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/filterd/filterd/packet"
)

// Netlink and nfnetlink constants (linux/netlink.h, linux/netfilter/nfnetlink.h).
const (
	nlmsgHdrLen   = 16 // struct nlmsghdr
	nfgenHdrLen   = 4  // struct nfgenmsg
	nlaHdrLen     = 4  // struct nlattr
	nlmsgError    = 2  // NLMSG_ERROR
	nlmsgDone     = 3  // NLMSG_DONE
	nlmFRequest   = 0x1
	nlmFAck       = 0x4
	nlaFNested    = 0x8000
	nlaFNetOrder  = 0x4000
	nlaTypeMask   = ^uint16(nlaFNested | nlaFNetOrder)
	nfnlSubsysQ   = 3 // NFNL_SUBSYS_QUEUE
	nfnetlinkV0   = 0
	afUnspec      = 0
	msgPacket     = nfnlSubsysQ<<8 | 0 // NFQNL_MSG_PACKET
	msgVerdict    = nfnlSubsysQ<<8 | 1 // NFQNL_MSG_VERDICT
	msgConfig     = nfnlSubsysQ<<8 | 2 // NFQNL_MSG_CONFIG
	msgVerdictBat = nfnlSubsysQ<<8 | 3 // NFQNL_MSG_VERDICT_BATCH
)

// enum nfqnl_attr_type.
const (
	attrPacketHdr    = 1
	attrVerdictHdr   = 2
	attrMark         = 3
	attrTimestamp    = 4
	attrIfIndexIn    = 5
	attrIfIndexOut   = 6
	attrIfPhysIn     = 7
	attrIfPhysOut    = 8
	attrHWAddr       = 9
	attrPayload      = 10
	attrCT           = 11
	attrCTInfo       = 12
	attrCapLen       = 13
	attrSKBInfo      = 14
	attrUID          = 16
	attrGID          = 17
	cfgCmd           = 1                                         // NFQA_CFG_CMD
	cfgParams        = 2                                         // NFQA_CFG_PARAMS
	cfgQueueMaxLen   = 3                                         // NFQA_CFG_QUEUE_MAXLEN
	cfgMask          = 4                                         // NFQA_CFG_MASK
	cfgFlags         = 5                                         // NFQA_CFG_FLAGS
	cfgCmdBind       = 1                                         // NFQNL_CFG_CMD_BIND
	cfgCmdUnbind     = 2                                         // NFQNL_CFG_CMD_UNBIND
	copyPacket       = 2                                         // NFQNL_COPY_PACKET
	maxCopyRange     = 0xffff - nlaHdrLen                        // NFQNL_MAX_COPY_RANGE
	verdictMsgLen    = nlmsgHdrLen + nfgenHdrLen + nlaHdrLen + 8 // 32
	verdictMarkLen   = verdictMsgLen + nlaHdrLen + 4             // 40
	packetHdrAttrLen = 7                                         // struct nfqnl_msg_packet_hdr, packed
)

// Queue configuration flags (NFQA_CFG_F_*).
const (
	FlagFailOpen  uint32 = 1 << 0 // NFQA_CFG_F_FAIL_OPEN: accept instead of drop when the queue is full
	FlagConntrack uint32 = 1 << 1 // NFQA_CFG_F_CONNTRACK: attach NFQA_CT / NFQA_CT_INFO
	FlagGSO       uint32 = 1 << 2 // NFQA_CFG_F_GSO: hand over GSO packets unsegmented
	FlagUIDGID    uint32 = 1 << 3 // NFQA_CFG_F_UID_GID: attach the socket owner
	flagsKnown           = FlagFailOpen | FlagConntrack | FlagGSO | FlagUIDGID
)

// Action is a kernel verdict (NF_DROP, NF_ACCEPT, NF_REPEAT in linux/netfilter.h).
type Action uint32

// Verdict actions, with the kernel's numbers.
const (
	Drop   Action = 0 // NF_DROP
	Accept Action = 1 // NF_ACCEPT
	Repeat Action = 4 // NF_REPEAT: run the hook again (the packet is queued anew)
)

func (a Action) String() string {
	switch a {
	case Drop:
		return "DROP"
	case Accept:
		return "ACCEPT"
	case Repeat:
		return "REPEAT"
	}
	return fmt.Sprintf("verdict(%d)", uint32(a))
}

// Verdict is the decision for one packet. SetMark also sets the packet's
// nfmark to Mark (such a verdict is sent per packet, never in a batch).
type Verdict struct {
	Action  Action
	Mark    uint32
	SetMark bool
	// Defer, set by a Handler, sends nothing now: the handler gives the
	// packet its verdict later with (*Queue).Verdict (a fragment held until
	// its datagram is whole).
	Defer bool
}

// Packet is one queued packet as the kernel handed it over. It is a view
// into the driver's receive buffer: L3 and CT are valid only during the
// handler call that received it.
type Packet struct {
	ID         uint32      // the kernel's packet id in this queue
	HWProtocol uint16      // EtherType of the packet (0x0800 IPv4, 0x86dd IPv6)
	Hook       packet.Hook // netfilter hook that queued it
	// L3 is the network-layer packet (NFQA_PAYLOAD), possibly truncated to
	// the queue's copy range; then OrigLen is the full length (NFQA_CAP_LEN).
	L3      []byte
	OrigLen uint32
	// InIndex, OutIndex are the interface indexes (0 when none).
	InIndex, OutIndex uint32
	// Meta is what the engine reads: time (NFQA_TIMESTAMP, or the receive
	// time when absent), hook, interface names, mark, owner, source MAC.
	Meta packet.Meta
	// CT holds the NFQA_CT nested attributes (ctnetlink layout), CTInfo the
	// enum ip_conntrack_info, when the queue was opened with FlagConntrack.
	CT        []byte
	CTInfo    uint32
	HasCTInfo bool
	SKBInfo   uint32 // NFQA_SKB_INFO (NFQA_SKB_CSUMNOTREADY, ...)
	// Truncated is true when the netlink message did not fit the receive
	// buffer (MSG_TRUNC): the id is valid, L3 may be cut.
	Truncated bool
	// Received is when the driver read the packet's batch (the clock is read
	// once per receive call).
	Received time.Time
}

// ErrShort is returned (wrapped) for a message shorter than its headers say.
var ErrShort = errors.New("nfqbatch: short netlink message")

// parser turns packet messages into Packet views. names maps interface
// indexes to names (read-only while parsing).
type parser struct {
	names map[uint32]string
	now   time.Time // used when a message has no NFQA_TIMESTAMP
	// truncated says the message was cut by the receive buffer: a payload
	// attribute running past the end is then taken as far as it arrived.
	truncated bool
}

// msgInfo is what parseMsg found in one netlink message.
type msgInfo struct {
	kind  uint16 // nlmsg_type
	errno int32  // for NLMSG_ERROR: the negative errno (0 is an ACK)
	seq   uint32
}

// nextMsg splits the first netlink message off b. It returns the message
// (header included, without trailing alignment) and the rest.
func nextMsg(b []byte) (msg, rest []byte, err error) {
	if len(b) < nlmsgHdrLen {
		return nil, nil, fmt.Errorf("%w: %d bytes left, need a %d-byte header", ErrShort, len(b), nlmsgHdrLen)
	}
	l := int(binary.NativeEndian.Uint32(b))
	if l < nlmsgHdrLen || l > len(b) {
		return nil, nil, fmt.Errorf("%w: nlmsg_len %d with %d bytes left", ErrShort, l, len(b))
	}
	al := align4(l)
	if al > len(b) {
		al = len(b)
	}
	return b[:l], b[al:], nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// parseMsg parses one netlink message. For a packet message (kind ==
// msgPacket) it fills p; other kinds leave p alone.
func (ps *parser) parseMsg(msg []byte, p *Packet) (msgInfo, error) {
	typ := binary.NativeEndian.Uint16(msg[4:])
	info := msgInfo{kind: typ, seq: binary.NativeEndian.Uint32(msg[8:])}
	switch typ {
	case nlmsgError:
		if len(msg) < nlmsgHdrLen+4 {
			return info, fmt.Errorf("%w: NLMSG_ERROR of %d bytes", ErrShort, len(msg))
		}
		info.errno = int32(binary.NativeEndian.Uint32(msg[nlmsgHdrLen:]))
		// The echoed request header follows: its seq says which request failed.
		if len(msg) >= nlmsgHdrLen+4+nlmsgHdrLen {
			info.seq = binary.NativeEndian.Uint32(msg[nlmsgHdrLen+4+8:])
		}
		return info, nil
	case msgPacket:
	default:
		return info, nil
	}
	if len(msg) < nlmsgHdrLen+nfgenHdrLen {
		return info, fmt.Errorf("%w: packet message of %d bytes", ErrShort, len(msg))
	}
	*p = Packet{}
	p.Meta.Time = ps.now
	p.Received = ps.now
	seenHdr := false
	b := msg[nlmsgHdrLen+nfgenHdrLen:]
	for len(b) >= nlaHdrLen {
		al := int(binary.NativeEndian.Uint16(b))
		at := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if ps.truncated && at == attrPayload && al > len(b) {
			p.L3 = b[nlaHdrLen:]
			break
		}
		if al < nlaHdrLen || al > len(b) {
			return info, fmt.Errorf("%w: attribute %d length %d with %d bytes left", ErrShort, at, al, len(b))
		}
		v := b[nlaHdrLen:al]
		switch at {
		case attrPacketHdr:
			if len(v) < packetHdrAttrLen {
				return info, fmt.Errorf("%w: NFQA_PACKET_HDR of %d bytes", ErrShort, len(v))
			}
			p.ID = binary.BigEndian.Uint32(v)
			p.HWProtocol = binary.BigEndian.Uint16(v[4:])
			p.Hook = packet.Hook(v[6])
			p.Meta.Hook = p.Hook
			seenHdr = true
		case attrMark:
			if len(v) >= 4 {
				p.Meta.Mark = binary.BigEndian.Uint32(v)
			}
		case attrTimestamp:
			if len(v) >= 16 {
				sec := int64(binary.BigEndian.Uint64(v))
				usec := int64(binary.BigEndian.Uint64(v[8:]))
				p.Meta.Time = time.Unix(sec, usec*1000)
			}
		case attrIfIndexIn:
			if len(v) >= 4 {
				p.InIndex = binary.BigEndian.Uint32(v)
				p.Meta.InIface = ps.names[p.InIndex]
			}
		case attrIfIndexOut:
			if len(v) >= 4 {
				p.OutIndex = binary.BigEndian.Uint32(v)
				p.Meta.OutIface = ps.names[p.OutIndex]
			}
		case attrHWAddr:
			// struct nfqnl_msg_packet_hw { __be16 hw_addrlen; __u16 _pad; __u8 hw_addr[8]; }
			if len(v) >= 12 && binary.BigEndian.Uint16(v) == 6 {
				copy(p.Meta.SrcMAC[:], v[4:10])
				p.Meta.HasMAC = true
			}
		case attrPayload:
			p.L3 = v
		case attrCT:
			p.CT = v
		case attrCTInfo:
			if len(v) >= 4 {
				p.CTInfo = binary.BigEndian.Uint32(v)
				p.HasCTInfo = true
			}
		case attrCapLen:
			if len(v) >= 4 {
				p.OrigLen = binary.BigEndian.Uint32(v)
			}
		case attrSKBInfo:
			if len(v) >= 4 {
				p.SKBInfo = binary.BigEndian.Uint32(v)
			}
		case attrUID:
			if len(v) >= 4 {
				p.Meta.UID = binary.BigEndian.Uint32(v)
				p.Meta.HasOwner = true
			}
		case attrGID:
			if len(v) >= 4 {
				p.Meta.GID = binary.BigEndian.Uint32(v)
			}
		}
		a := align4(al)
		if a > len(b) {
			a = len(b)
		}
		b = b[a:]
	}
	if !seenHdr {
		return info, fmt.Errorf("nfqbatch: packet message without NFQA_PACKET_HDR")
	}
	p.Meta.Local = p.Hook == packet.HookOutput
	return info, nil
}

// encoder builds the verdict datagram for a batch: per-packet verdicts for
// anything but a plain accept, then one batch accept up to the highest
// accepted id. The kernel handles the messages of one datagram in order, so
// a dropped packet below that id is already gone when the batch accept
// runs. Packets never get two verdicts.
type encoder struct {
	queue     uint16
	seq       uint32
	buf       []byte // per-packet messages so far; the batch message is appended at flush
	accepts   int    // accepts covered by the batch message
	maxAccept uint32
	pending   int // packets with a verdict not yet sent
	// perPacket sends accepts one by one too (no batch accept, which
	// would also accept the deferred packets below its id).
	perPacket bool
}

func newEncoder(queue uint16, batch int) *encoder {
	return &encoder{queue: queue, buf: make([]byte, 0, batch*verdictMarkLen+verdictMsgLen)}
}

// idAfter reports whether a comes after b in the queue's id sequence
// (serial number arithmetic, as the kernel's nfq_id_after).
func idAfter(a, b uint32) bool { return int32(b-a) < 0 }

// add records the verdict for packet id.
func (e *encoder) add(id uint32, v Verdict) {
	e.pending++
	if v.Action == Accept && !v.SetMark && !e.perPacket {
		if e.accepts == 0 || idAfter(id, e.maxAccept) {
			e.maxAccept = id
		}
		e.accepts++
		return
	}
	e.buf = e.appendVerdict(e.buf, msgVerdict, id, v)
}

// finish returns the datagram to send (nil when nothing is pending) and
// resets the encoder for the next batch once the caller has sent it.
func (e *encoder) finish() []byte {
	if e.pending == 0 {
		return nil
	}
	if e.accepts > 0 {
		e.buf = e.appendVerdict(e.buf, msgVerdictBat, e.maxAccept, Verdict{Action: Accept})
	}
	return e.buf
}

func (e *encoder) reset() {
	e.buf = e.buf[:0]
	e.accepts, e.pending = 0, 0
}

// appendVerdict appends one NFQNL_MSG_VERDICT or NFQNL_MSG_VERDICT_BATCH.
func (e *encoder) appendVerdict(b []byte, typ uint16, id uint32, v Verdict) []byte {
	l := verdictMsgLen
	if v.SetMark {
		l = verdictMarkLen
	}
	e.seq++
	b = appendNlmsgHdr(b, uint32(l), typ, nlmFRequest, e.seq)
	b = appendNfgen(b, e.queue)
	b = appendAttrHdr(b, 4+8, attrVerdictHdr)
	b = binary.BigEndian.AppendUint32(b, uint32(v.Action))
	b = binary.BigEndian.AppendUint32(b, id)
	if v.SetMark {
		b = appendAttrHdr(b, 4+4, attrMark)
		b = binary.BigEndian.AppendUint32(b, v.Mark)
	}
	return b
}

func appendNlmsgHdr(b []byte, l uint32, typ, flags uint16, seq uint32) []byte {
	b = binary.NativeEndian.AppendUint32(b, l)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0) // nlmsg_pid: 0, the kernel
}

func appendNfgen(b []byte, queue uint16) []byte {
	b = append(b, afUnspec, nfnetlinkV0)
	return binary.BigEndian.AppendUint16(b, queue) // res_id: the queue number
}

func appendAttrHdr(b []byte, l, typ uint16) []byte {
	b = binary.NativeEndian.AppendUint16(b, l)
	return binary.NativeEndian.AppendUint16(b, typ)
}

// appendAttr appends an attribute with its value and alignment padding.
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = appendAttrHdr(b, uint16(nlaHdrLen+len(v)), typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// configMsg builds one NFQNL_MSG_CONFIG message with NLM_F_ACK: the command
// (cmd 0: none), then, when bind is true, the copy parameters, queue length
// and flags, which the kernel applies in that order within the message.
func configMsg(seq uint32, queue uint16, cmd uint8, bind bool, cfg *Config) []byte {
	b := appendNlmsgHdr(nil, 0, msgConfig, nlmFRequest|nlmFAck, seq)
	b = appendNfgen(b, queue)
	if cmd != 0 {
		b = appendAttr(b, cfgCmd, []byte{cmd, 0, 0, 0}) // struct nfqnl_msg_config_cmd: command, _pad, pf (unused since 3.8)
	}
	if bind {
		var params [5]byte // struct nfqnl_msg_config_params (packed): __be32 copy_range; __u8 copy_mode
		binary.BigEndian.PutUint32(params[:], cfg.CopyRange)
		params[4] = copyPacket
		b = appendAttr(b, cfgParams, params[:])
		b = appendAttr(b, cfgQueueMaxLen, binary.BigEndian.AppendUint32(nil, cfg.MaxLen))
		b = appendAttr(b, cfgMask, binary.BigEndian.AppendUint32(nil, flagsKnown))
		b = appendAttr(b, cfgFlags, binary.BigEndian.AppendUint32(nil, cfg.flags()))
	}
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}
