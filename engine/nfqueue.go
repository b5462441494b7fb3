package engine

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/filterd/filterd/packet"
)

// NFQueueConfig configures the live NFQUEUE packet source.
type NFQueueConfig struct {
	// Queues are the queue numbers to bind, one handle and one worker each.
	Queues []uint16
	// MaxQueueLen is the kernel queue's capacity in packets (default 4096).
	MaxQueueLen uint32
	// MaxPacketLen is how many bytes of each packet the kernel copies
	// (default 65535: whole packets).
	MaxPacketLen uint32
	// ReadBuffer is the netlink socket's receive buffer in bytes, set with
	// SO_RCVBUFFORCE (default 8 MiB). ENOBUFS is left on: overload is counted.
	ReadBuffer int
	// FailOpen asks the kernel to accept packets instead of dropping them when
	// the queue is full (NFQA_CFG_F_FAIL_OPEN).
	FailOpen bool
	// Rejecter sends REJECT replies; nil rejects as a plain drop.
	Rejecter *Rejecter
	// Logger receives operational messages.
	Logger *slog.Logger
	// Local are the host's addresses as prefixes (198.18.1.1/24): their
	// subnet broadcast addresses make a packet's type broadcast.
	Local []netip.Prefix
	// Shadow asks the kernel for its own conntrack state of every packet
	// (NFQA_CFG_F_CONNTRACK) and counts the packets where filterd's state
	// differs (QueueStats.Shadow*), logging them at most once a second.
	// The kernel tracks only where conntrack is in use in the namespace
	// (e.g. a rule with -m conntrack).
	Shadow bool
	// IfaceTTL is how long interface index → name lookups are cached
	// (default 10 s).
	IfaceTTL time.Duration
	// Offload hands accepted ESTABLISHED flows to the kernel (filterd run
	// --offload established); the zero value is off.
	Offload Offload
}

// Offload is the flow offload ("bypass", as Suricata calls it): a packet
// the engine accepts while its flow is ESTABLISHED in filterd's conntrack
// is verdicted NF_REPEAT with Mark set in its nfmark (under Mask, the other
// bits kept). The kernel runs the hook's chain again from the top, where
// rules installed for it save the mark into the kernel's conntrack entry
// (CONNMARK --save-mark) and accept packets whose connmark has it, before
// the NFQUEUE rule: that packet and every later one of the flow, in either
// direction, is accepted by the kernel without being queued. Setting the
// connmark in the verdict itself (NFQA_CT) needs a kernel built with
// CONFIG_NETFILTER_NETLINK_GLUE_CT; this needs only xt_connmark.
//
// An offloaded flow is no longer seen by filterd: later rule changes, rate
// limits and LOG rules do not apply to it, and filterd's conntrack entry
// ages out.
type Offload struct {
	Mark, Mask uint32 // Mask 0: off
}

// Enabled reports whether offload is on.
func (o Offload) Enabled() bool { return o.Mask != 0 }

// mark returns the nfmark an offloaded packet carrying old gets.
func (o Offload) mark(old uint32) uint32 { return old&^o.Mask | o.Mark }

// marked reports whether a packet with nfmark m already carries the offload
// mark: it was offloaded before and came back to the queue (the connmark
// rules are missing), so it is accepted plainly instead of repeated again.
func (o Offload) marked(m uint32) bool { return m&o.Mask == o.Mark }

// LatencyBuckets are the upper bounds, in seconds, of the verdict latency
// histogram kept per queue (from the moment the packet is handed to
// filterd until its verdict is sent).
var LatencyBuckets = [...]float64{1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3}

// QueueStats are one queue's counters. All fields are updated atomically.
type QueueStats struct {
	Queue          uint16
	Packets        [4]atomic.Uint64 // by Action
	Bytes          [4]atomic.Uint64
	VerdictErrors  atomic.Uint64 // verdicts the kernel did not take
	Panics         atomic.Uint64 // packets whose processing panicked (verdicted anyway)
	ENOBUFS        atomic.Uint64 // receive overruns: the kernel dropped messages for us
	RecvErrors     atomic.Uint64 // other receive errors
	RejectSent     atomic.Uint64 // REJECT replies sent
	RejectLimited  atomic.Uint64 // REJECT replies suppressed by the ICMP rate limit or RejectWouldReply
	RejectErrors   atomic.Uint64 // replies the raw socket refused
	ShadowCompared atomic.Uint64 // packets whose kernel state was compared (Shadow)
	ShadowDiffers  atomic.Uint64 // ... and differed from filterd's
	// Offloaded counts the packets verdicted with the offload mark
	// (NF_REPEAT): one per offloaded flow, more when several packets of a
	// flow were already queued before the first one's verdict took effect.
	// They are counted as accepted too.
	Offloaded    atomic.Uint64
	Latency      [len(LatencyBuckets) + 1]atomic.Uint64
	LatencySumNs atomic.Uint64
}

// NFQueue verdicts packets from kernel NFQUEUE queues with an Engine.
type NFQueue struct {
	eng     *Engine
	cfg     NFQueueConfig
	runners []*nfqRunner
	cancel  context.CancelFunc
	stopped bool
}

type nfqRunner struct {
	q          *NFQueue
	num        uint16
	nf         *nfqueue.Nfqueue
	send       func(id uint32, verdict int) error              // nf.SetVerdict (a stub in benchmarks)
	sendMark   func(id uint32, verdict int, mark uint32) error // a verdict that sets the nfmark (offload); nil: offload off
	w          *Worker
	stats      QueueStats
	ifnames    map[uint32]ifInfo
	ifAt       time.Time
	l2         [14]byte
	rej        []byte
	log        *slog.Logger
	lastErr    time.Time
	portID     uint32
	lastShadow time.Time
	frags      map[nfqFragKey][]heldFrag
	nheld      int
	fragSweep  time.Time
	// lastIf caches the last interface looked up (most packets come in
	// on the same one): ifIdx's ifInfo, valid while ifAt is.
	lastIf    ifInfo
	lastIfIdx uint32
	// batched: the counters of the packets handled since the last
	// EndBatch, published by EndBatch (QueueHandler.SetBatched).
	batched bool
	pend    pendingStats
}

// pendingStats are a batch's counters, kept by the one goroutine handling
// the queue until EndBatch adds them to QueueStats.
type pendingStats struct {
	packets, bytes [4]uint64
	// groups of packets sharing a receive time (a batching driver reads the
	// clock once per receive call): their latency is measured together
	lat  [4]latGroup
	nlat int
}

type latGroup struct {
	received time.Time
	n        uint64
}

// ErrQueueBound is wrapped by OpenNFQueue's error when another process
// already holds a queue.
var ErrQueueBound = errors.New("queue already bound by another process")

// ErrShadowUnsupported is wrapped by OpenNFQueue's error when Shadow is
// asked of a kernel that cannot report conntrack state through NFQUEUE.
var ErrShadowUnsupported = errors.New("shadow mode unsupported by the kernel")

// OpenNFQueue binds every configured queue (copy-packet mode, UID/GID
// attributes) and starts reading. Packets are verdicted until Stop. On error
// the queues bound so far are released.
func OpenNFQueue(eng *Engine, cfg NFQueueConfig) (*NFQueue, error) {
	if len(cfg.Queues) == 0 {
		return nil, errors.New("nfqueue: no queue given")
	}
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	q := &NFQueue{eng: eng, cfg: cfg, cancel: cancel}
	for _, num := range cfg.Queues {
		r, err := q.open(ctx, num)
		if err != nil {
			q.Stop(time.Second)
			return nil, err
		}
		q.runners = append(q.runners, r)
	}
	return q, nil
}

func (cfg *NFQueueConfig) defaults() {
	if cfg.MaxQueueLen == 0 {
		cfg.MaxQueueLen = 4096
	}
	if cfg.MaxPacketLen == 0 {
		cfg.MaxPacketLen = 0xffff
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = 8 << 20
	}
	if cfg.IfaceTTL == 0 {
		cfg.IfaceTTL = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

// newRunner returns queue num's per-packet state (its socket not yet set).
func (q *NFQueue) newRunner(num uint16) *nfqRunner {
	r := &nfqRunner{
		q:       q,
		num:     num,
		w:       q.eng.NewWorker(),
		ifnames: make(map[uint32]ifInfo),
		rej:     make([]byte, 0, 1500),
		log:     q.cfg.Logger.With("queue", num),
	}
	r.stats.Queue = num
	return r
}

func (q *NFQueue) open(ctx context.Context, num uint16) (*nfqRunner, error) {
	flags := uint32(nfqueue.NfQaCfgFlagUIDGid)
	if q.cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	if q.cfg.Shadow {
		flags |= nfqueue.NfQaCfgFlagConntrack
	}
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      num,
		MaxQueueLen:  q.cfg.MaxQueueLen,
		MaxPacketLen: q.cfg.MaxPacketLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        flags,
		AfFamily:     unix.AF_INET,
	})
	if err != nil {
		return nil, fmt.Errorf("nfqueue %d: open netlink socket: %w", num, err)
	}
	if err := setRcvBufForce(nf.Con, q.cfg.ReadBuffer); err != nil {
		q.cfg.Logger.Warn("nfqueue: cannot enlarge the receive buffer", "queue", num, "err", err)
	}
	r := q.newRunner(num)
	r.nf = nf
	r.send = nf.SetVerdict
	r.sendMark = func(id uint32, verdict int, mark uint32) error {
		return nf.SetVerdictWithOption(id, verdict, nfqueue.WithMark(mark))
	}
	r.portID = nf.Con.PID()
	if err := nf.RegisterWithErrorFunc(ctx, r.handle, func(err error) int { return r.onError(ctx, err) }); err != nil {
		nf.Close()
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY) {
			return nil, QueueBoundError(num, err)
		}
		if q.cfg.Shadow && errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("nfqueue %d: %w: this kernel cannot attach its conntrack state to queued packets (built without CONFIG_NETFILTER_NETLINK_GLUE_CT): %v", num, ErrShadowUnsupported, err)
		}
		return nil, fmt.Errorf("nfqueue %d: bind: %w", num, err)
	}
	return r, nil
}

// QueueBoundError is the error for queue num bound by another process (the
// bind failed with err): it wraps ErrQueueBound and says how to find the owner.
func QueueBoundError(num uint16, err error) error {
	return fmt.Errorf("nfqueue %d: %w (%v); the owner's netlink port id (usually its PID) is the second column of queue %d's line in /proc/net/netfilter/nfnetlink_queue%s",
		num, ErrQueueBound, err, num, ownerHint(num))
}

// ownerHint names the process holding queue num, when /proc says.
func ownerHint(num uint16) string {
	qs, err := ReadQueueProc("/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		return ""
	}
	for _, s := range qs {
		if s.Queue == num {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.PortID)); err == nil {
				return fmt.Sprintf(" (now: port id %d, process %q)", s.PortID, strings.TrimSpace(string(b)))
			}
			return fmt.Sprintf(" (now: port id %d)", s.PortID)
		}
	}
	return ""
}

func setRcvBufForce(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
		if serr != nil { // without CAP_NET_ADMIN: as much as rmem_max allows
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n))
		}
	}); err != nil {
		return err
	}
	return serr
}

// onError keeps the read loop alive: ENOBUFS (the kernel could not hand us
// messages because our socket buffer was full) is counted and logged at most
// once a second; everything else is logged. The loop ends only when ctx is
// done.
func (r *nfqRunner) onError(ctx context.Context, err error) int {
	if ctx.Err() != nil {
		return 1
	}
	now := time.Now()
	if errors.Is(err, unix.ENOBUFS) {
		r.stats.ENOBUFS.Add(1)
		if now.Sub(r.lastErr) >= time.Second {
			r.lastErr = now
			r.log.Warn("nfqueue: receive buffer overrun (ENOBUFS): packets were lost to the kernel's queue",
				"total", r.stats.ENOBUFS.Load())
		}
		return 0
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0
	}
	r.stats.RecvErrors.Add(1)
	if now.Sub(r.lastErr) >= time.Second {
		r.lastErr = now
		r.log.Error("nfqueue: receive", "err", err)
	}
	if errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EBADF) {
		return 1
	}
	return 0
}

// QueuedPacket is one packet a driver read from an NFQUEUE queue, as the
// kernel's nfnetlink_queue attributes describe it. Payload (and HwAddr) are
// views into the driver's buffers, read only during Handle.
type QueuedPacket struct {
	ID      uint32 // NFQA_PACKET_HDR packet id
	Payload []byte // NFQA_PAYLOAD, the network-layer packet; nil when absent
	// Hook is the netfilter hook that queued it (HasHook when known).
	Hook    uint8
	HasHook bool
	// InDev, OutDev are the interface indexes (0 when none).
	InDev, OutDev uint32
	Mark          uint32
	// UID, GID are the owning socket's (HasOwner when the kernel said).
	UID, GID uint32
	HasOwner bool
	// HwAddr is the link-layer source address (nil when none), HwProtocol
	// the EtherType (HasHwProtocol when known).
	HwAddr        []byte
	HwProtocol    uint16
	HasHwProtocol bool
	// CtInfo is the kernel's enum ip_conntrack_info (HasCtInfo when attached).
	CtInfo    uint32
	HasCtInfo bool
	// Received is the packet's clock: when the driver read it (a batching
	// driver reads the clock once per batch), or the kernel's timestamp.
	// Zero: the handler reads the clock itself. Verdict latency is measured
	// from it.
	Received time.Time
}

// QueueHandler is the per-packet logic shared by the NFQUEUE drivers: it
// runs a queued packet through its own engine worker and sends its one
// verdict (fragments held for reassembly later, with their datagram's),
// sends REJECT replies, infers the packet type and MAC header for LOG,
// compares with the kernel's conntrack state in shadow mode and keeps the
// queue's QueueStats. One handler per queue; call it from one goroutine.
type QueueHandler struct{ r *nfqRunner }

// NewQueueHandler returns the handler of queue num. send delivers one
// verdict (NF_DROP 0, NF_ACCEPT 1) for a packet id; it is called exactly
// once per packet, for a held fragment after Handle has returned (from a
// later Handle call).
func NewQueueHandler(eng *Engine, cfg NFQueueConfig, num uint16, send func(id uint32, verdict int) error) *QueueHandler {
	cfg.defaults()
	q := &NFQueue{eng: eng, cfg: cfg}
	r := q.newRunner(num)
	r.send = send
	return &QueueHandler{r: r}
}

// SetMarkSender gives the handler a way to send a verdict that also sets
// the packet's nfmark (NFQA_MARK): NF_REPEAT for an offloaded flow (cfg's
// Offload). Without it offload stays off. Call it before the first Handle.
func (h *QueueHandler) SetMarkSender(send func(id uint32, verdict int, mark uint32) error) {
	h.r.sendMark = send
}

// Handle verdicts one packet. Every packet gets exactly one verdict,
// whatever happens (a panic in the engine is counted and the packet
// dropped, or accepted with FailOpen).
func (h *QueueHandler) Handle(p *QueuedPacket) { h.r.handlePacket(p) }

// Prefetch starts loading the conntrack state the next Handle calls will
// read for these packets' payloads (Worker.Prefetch: at most PrefetchMax
// of them): a driver holding a batch calls it before handling the batch,
// so that the batch's cache misses overlap.
func (h *QueueHandler) Prefetch(payloads [][]byte) { h.r.w.Prefetch(payloads) }

// SetBatched, for a driver that hands over packets in batches, keeps the
// packet and byte counters and the verdict latency of the packets handled
// in the handler until EndBatch, which adds them to the QueueStats at once
// (one atomic add per counter per batch instead of four per packet) and
// measures the latency with one clock read: from each packet's Received
// (which the packets of one receive call share) to EndBatch's time. Call it
// before the first Handle.
func (h *QueueHandler) SetBatched(on bool) { h.r.batched = on }

// EndBatch publishes the counters of the packets handled since the last
// EndBatch (SetBatched), their verdicts decided at now: the driver calls
// it after handling a batch, before or as it sends the batch's verdicts.
func (h *QueueHandler) EndBatch(now time.Time) { h.r.endBatch(now) }

// Stats returns the queue's counters (live values; read them atomically).
func (h *QueueHandler) Stats() *QueueStats { return &h.r.stats }

// Holding reports whether fragments are waiting for their datagram's
// verdict (their verdicts will come from a later Handle call).
func (h *QueueHandler) Holding() bool { return h.r.nheld > 0 }

// handle adapts go-nfqueue's attributes.
func (r *nfqRunner) handle(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	qp := QueuedPacket{ID: *a.PacketID}
	if a.Payload != nil {
		qp.Payload = *a.Payload
	}
	if a.Hook != nil {
		qp.Hook, qp.HasHook = *a.Hook, true
	}
	if a.InDev != nil {
		qp.InDev = *a.InDev
	}
	if a.OutDev != nil {
		qp.OutDev = *a.OutDev
	}
	if a.Mark != nil {
		qp.Mark = *a.Mark
	}
	if a.UID != nil && a.GID != nil {
		qp.UID, qp.GID, qp.HasOwner = *a.UID, *a.GID, true
	}
	if a.HwAddr != nil {
		qp.HwAddr = *a.HwAddr
	}
	if a.HwProtocol != nil {
		qp.HwProtocol, qp.HasHwProtocol = *a.HwProtocol, true
	}
	if a.CtInfo != nil {
		qp.CtInfo, qp.HasCtInfo = *a.CtInfo, true
	}
	r.handlePacket(&qp)
	return 0
}

// handlePacket verdicts one packet. Every packet gets exactly one verdict,
// whatever happens.
func (r *nfqRunner) handlePacket(a *QueuedPacket) {
	id := a.ID
	if a.Payload == nil {
		r.verdict(id, nfqueue.NfAccept)
		return
	}
	start := a.Received
	if start.IsZero() {
		start = time.Now()
	}
	data := a.Payload
	verdicted := false
	defer func() {
		if e := recover(); e != nil {
			r.panicked(id, verdicted, e, start)
		}
	}()
	meta := packet.Meta{Time: start}
	if a.HasHook && a.Hook < uint8(packet.NumHooks) {
		meta.Hook = packet.Hook(a.Hook)
	}
	var in ifInfo
	if a.InDev != 0 {
		in = r.iface(a.InDev, start)
		meta.InIface = in.name
	}
	if a.OutDev != 0 {
		meta.OutIface = r.iface(a.OutDev, start).name
	}
	meta.Mark = a.Mark
	if a.HasOwner {
		meta.UID, meta.GID, meta.HasOwner = a.UID, a.GID, true
	}
	if len(a.HwAddr) >= 6 {
		copy(meta.SrcMAC[:], a.HwAddr)
		meta.HasMAC = true
		// The Ethernet header LOG prints as MAC=: NFQUEUE hands over only
		// the source address and EtherType; the destination follows from
		// the IP destination (broadcast, multicast) or is the input
		// interface's own address.
		if in.ether && a.HasHwProtocol {
			meta.PktType = r.pktType(data, r.l2[0:6], in.mac)
			copy(r.l2[6:12], meta.SrcMAC[:])
			r.l2[12], r.l2[13] = byte(a.HwProtocol>>8), byte(a.HwProtocol)
			meta.L2 = r.l2[:]
		}
	}
	meta.Local = meta.Hook == packet.HookOutput || meta.Hook == packet.HookPostRouting
	var v Verdict
	r.w.ProcessTo(data, &meta, &v)
	if r.q.cfg.Shadow {
		var ct *uint32
		if a.HasCtInfo {
			ct = &a.CtInfo
		}
		r.shadow(ct, start)
	}
	nfv := nfqueue.NfAccept
	switch v.Action {
	case Drop:
		nfv = nfqueue.NfDrop
	case Reject:
		nfv = nfqueue.NfDrop
		r.reject(data, v)
	case Held:
		// A fragment kept for reassembly (the kernel reassembles before
		// INPUT, so this is FORWARD without the kernel's defrag): its
		// verdict waits for the whole datagram's. NFQUEUE takes verdicts
		// in any order.
		if key, ok := nfqFragKeyOf(data); ok {
			r.holdFrag(key, id, len(data), start)
			return
		}
	}
	if nfv == nfqueue.NfAccept && r.offloadable(a.Mark, data) {
		r.verdictMark(id, nfqueue.NfRepeat, r.q.cfg.Offload.mark(a.Mark))
		r.stats.Offloaded.Add(1)
	} else {
		r.verdict(id, nfv)
	}
	verdicted = true
	if len(r.frags) > 0 {
		if key, ok := nfqFragKeyOf(data); ok {
			// The last fragment (or one defrag refused): the held ones
			// share its verdict.
			r.releaseFrags(key, nfv)
		}
		if start.After(r.fragSweep) {
			r.expireFrags(start)
		}
	}
	act := v.Action
	if int(act) >= len(r.stats.Packets) {
		act = Drop
	}
	if r.batched {
		r.pend.packets[act]++
		r.pend.bytes[act] += uint64(v.Len)
		r.pendLatency(start)
		return
	}
	r.stats.Packets[act].Add(1)
	r.stats.Bytes[act].Add(uint64(v.Len))
	r.stats.observeLatency(time.Since(start), 1)
}

// pendLatency counts a batched packet received at t for the latency
// EndBatch measures; a new receive time opens a group, and when all groups
// are taken the batch's latencies are measured now.
func (r *nfqRunner) pendLatency(t time.Time) {
	p := &r.pend
	if p.nlat > 0 && p.lat[p.nlat-1].received.Equal(t) {
		p.lat[p.nlat-1].n++
		return
	}
	if p.nlat == len(p.lat) {
		r.flushLatency(time.Now())
	}
	p.lat[p.nlat] = latGroup{received: t, n: 1}
	p.nlat++
}

func (r *nfqRunner) flushLatency(now time.Time) {
	p := &r.pend
	for _, g := range p.lat[:p.nlat] {
		r.stats.observeLatency(now.Sub(g.received), g.n)
	}
	p.nlat = 0
}

// endBatch adds the batch's counters to the QueueStats.
func (r *nfqRunner) endBatch(now time.Time) {
	p := &r.pend
	for i := range p.packets {
		if p.packets[i] != 0 {
			r.stats.Packets[i].Add(p.packets[i])
			r.stats.Bytes[i].Add(p.bytes[i])
			p.packets[i], p.bytes[i] = 0, 0
		}
	}
	r.flushLatency(now)
}

// observeLatency counts n packets verdicted d after they were received.
func (s *QueueStats) observeLatency(d time.Duration, n uint64) {
	if d < 0 {
		d = 0
	}
	s.LatencySumNs.Add(uint64(d) * n)
	i := 0
	for i < len(LatencyBuckets) && d > latencyBucketNs[i] {
		i++
	}
	s.Latency[i].Add(n)
}

// latencyBucketNs are LatencyBuckets as durations.
var latencyBucketNs = func() (b [len(LatencyBuckets)]time.Duration) {
	for i, s := range LatencyBuckets {
		b[i] = time.Duration(s*1e9 + 0.5)
	}
	return b
}()

// panicked keeps a bug in the engine from killing the daemon (and with it,
// without --queue-bypass, the host's traffic): the packet still gets its one
// verdict (drop, or accept with FailOpen), the panic is counted and logged
// with its stack at most once a second.
func (r *nfqRunner) panicked(id uint32, verdicted bool, e any, now time.Time) {
	r.stats.Panics.Add(1)
	if !verdicted {
		v := nfqueue.NfDrop
		if r.q.cfg.FailOpen {
			v = nfqueue.NfAccept
		}
		r.verdict(id, v)
	}
	if now.Sub(r.lastErr) >= time.Second {
		r.lastErr = now
		r.log.Error("nfqueue: panic while processing a packet; verdicted and carrying on",
			"panic", fmt.Sprint(e), "stack", string(debug.Stack()), "total", r.stats.Panics.Load())
	}
}

func (r *nfqRunner) verdict(id uint32, v int) {
	if err := r.send(id, v); err != nil {
		r.stats.VerdictErrors.Add(1)
		now := time.Now()
		if now.Sub(r.lastErr) >= time.Second {
			r.lastErr = now
			r.log.Error("nfqueue: verdict", "id", id, "err", err)
		}
	}
}

// offloadable reports whether the packet just accepted hands its flow to
// the kernel: offload is on, filterd's conntrack calls the flow ESTABLISHED
// (never NEW, RELATED or INVALID), the packet is whole (a fragment's
// datagram shares one verdict) and does not carry the offload mark already.
func (r *nfqRunner) offloadable(mark uint32, data []byte) bool {
	o := r.q.cfg.Offload
	if !o.Enabled() || r.sendMark == nil || r.w.Packet().CTState != packet.CTEstablished || o.marked(mark) {
		return false
	}
	_, frag := nfqFragKeyOf(data)
	return !frag
}

func (r *nfqRunner) verdictMark(id uint32, v int, mark uint32) {
	if err := r.sendMark(id, v, mark); err != nil {
		r.stats.VerdictErrors.Add(1)
		now := time.Now()
		if now.Sub(r.lastErr) >= time.Second {
			r.lastErr = now
			r.log.Error("nfqueue: verdict", "id", id, "err", err)
		}
	}
}

func (r *nfqRunner) reject(data []byte, v Verdict) {
	rj := r.q.cfg.Rejecter
	if rj == nil {
		return
	}
	p := r.w.Packet()
	var ok bool
	r.rej, ok = AppendReject(r.rej[:0], data, p, v.Result.RejectWith)
	if !ok || !rj.Allow(p, v.Result.RejectWith, p.Meta.Time) {
		r.stats.RejectLimited.Add(1)
		return
	}
	if err := rj.Send(r.rej); err != nil {
		r.stats.RejectErrors.Add(1)
		r.log.Debug("reject: send", "err", err)
		return
	}
	r.stats.RejectSent.Add(1)
}

// pktType infers the link-layer packet type (-m pkttype) of an incoming
// packet from its IP destination, as the sender's Ethernet destination
// would say: the limited broadcast or a subnet broadcast of Local is
// broadcast (ff:ff:ff:ff:ff:ff), IPv4 and IPv6 multicast are multicast
// (01:00:5e:… and 33:33:…), the rest unicast to the interface's own
// address. It writes that destination MAC into dst.
func (r *nfqRunner) pktType(b []byte, dst []byte, own [6]byte) packet.PktType {
	copy(dst, own[:])
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		a := netip.AddrFrom4([4]byte(b[16:20]))
		if a.IsMulticast() {
			copy(dst, []byte{0x01, 0x00, 0x5e, b[17] & 0x7f, b[18], b[19]})
			return packet.PktMulticast
		}
		if a == broadcast4 || r.isSubnetBroadcast(a) {
			copy(dst, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			return packet.PktBroadcast
		}
	case len(b) >= 40 && b[0]>>4 == 6:
		if b[24] == 0xff {
			copy(dst, []byte{0x33, 0x33, b[36], b[37], b[38], b[39]})
			return packet.PktMulticast
		}
	}
	return packet.PktUnicast
}

func (r *nfqRunner) isSubnetBroadcast(a netip.Addr) bool {
	for _, p := range r.q.cfg.Local {
		if !p.Addr().Is4() || p.Bits() >= 31 || !p.Contains(a) {
			continue
		}
		v := binary.BigEndian.Uint32(a.AsSlice())
		if host := uint32(1)<<(32-p.Bits()) - 1; v&host == host {
			return true
		}
	}
	return false
}

// nfqFragKey identifies the datagram a fragment belongs to, as the kernel's
// reassembly does: addresses, identification and (IPv4) protocol.
type nfqFragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
}

type heldFrag struct {
	id  uint32
	len int
	at  time.Time
}

// nfqFragKeyOf returns the reassembly key of an IPv4 or IPv6 fragment; ok is
// false for a whole packet.
func nfqFragKeyOf(b []byte) (nfqFragKey, bool) {
	if len(b) >= 20 && b[0]>>4 == 4 {
		if binary.BigEndian.Uint16(b[6:8])&0x3fff == 0 { // no MF, offset 0
			return nfqFragKey{}, false
		}
		return nfqFragKey{src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])),
			id: uint32(binary.BigEndian.Uint16(b[4:6])), proto: b[9]}, true
	}
	if len(b) < 40 || b[0]>>4 != 6 {
		return nfqFragKey{}, false
	}
	next, off := b[6], 40
	for i := 0; i < 8; i++ {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < off+8 {
				return nfqFragKey{}, false
			}
			next, off = b[off], off+8+int(b[off+1])*8
		case 44: // fragment header
			if len(b) < off+8 {
				return nfqFragKey{}, false
			}
			return nfqFragKey{src: netip.AddrFrom16([16]byte(b[8:24])), dst: netip.AddrFrom16([16]byte(b[24:40])),
				id: binary.BigEndian.Uint32(b[off+4 : off+8])}, true
		default:
			return nfqFragKey{}, false
		}
	}
	return nfqFragKey{}, false
}

// maxHeldFrags bounds the fragments waiting for their datagram's verdict
// (the kernel queue holds them meanwhile); beyond it new fragments are
// dropped at once.
const maxHeldFrags = 1024

func (r *nfqRunner) holdFrag(k nfqFragKey, id uint32, n int, now time.Time) {
	if r.frags == nil {
		r.frags = make(map[nfqFragKey][]heldFrag)
	}
	if r.nheld >= maxHeldFrags {
		r.verdict(id, nfqueue.NfDrop)
		r.stats.Packets[Drop].Add(1)
		r.stats.Bytes[Drop].Add(uint64(n))
		return
	}
	if len(r.frags) == 0 {
		r.fragSweep = now.Add(time.Second)
	}
	r.frags[k] = append(r.frags[k], heldFrag{id: id, len: n, at: now})
	r.nheld++
}

// releaseFrags gives the held fragments of k the verdict v.
func (r *nfqRunner) releaseFrags(k nfqFragKey, v int) {
	held, ok := r.frags[k]
	if !ok {
		return
	}
	delete(r.frags, k)
	act := Accept
	if v == nfqueue.NfDrop {
		act = Drop
	}
	for _, f := range held {
		r.verdict(f.id, v)
		r.stats.Packets[act].Add(1)
		r.stats.Bytes[act].Add(uint64(f.len))
	}
	r.nheld -= len(held)
}

// expireFrags drops the fragments of datagrams that did not complete within
// the reassembly timeout (ipfrag_time), as the kernel does.
func (r *nfqRunner) expireFrags(now time.Time) {
	r.fragSweep = now.Add(time.Second)
	for k, held := range r.frags {
		if now.Sub(held[0].at) > DefaultFragTimeout {
			r.releaseFrags(k, nfqueue.NfDrop)
		}
	}
}

// KernelCTState maps the kernel's enum ip_conntrack_info (NFQA_CT_INFO) to
// a conntrack state; absent (nil) means the kernel found the packet INVALID
// (no conntrack entry attached).
func KernelCTState(ctinfo *uint32) packet.CTState {
	if ctinfo == nil {
		return packet.CTInvalid
	}
	switch *ctinfo {
	case 0, 3: // IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY
		return packet.CTEstablished
	case 1, 4: // IP_CT_RELATED, IP_CT_RELATED_REPLY
		return packet.CTRelated
	case 2: // IP_CT_NEW
		return packet.CTNew
	case 7: // IP_CT_UNTRACKED
		return packet.CTUntracked
	}
	return packet.CTInvalid
}

// shadow compares filterd's conntrack state of the packet just processed
// with the kernel's.
func (r *nfqRunner) shadow(ctinfo *uint32, now time.Time) {
	p := r.w.Packet()
	if p.CTState == 0 { // not tracked by filterd (malformed, held fragment)
		return
	}
	r.stats.ShadowCompared.Add(1)
	k := KernelCTState(ctinfo)
	if k == p.CTState {
		return
	}
	r.stats.ShadowDiffers.Add(1)
	if now.Sub(r.lastShadow) >= time.Second {
		r.lastShadow = now
		r.log.Warn("shadow: conntrack state differs from the kernel's",
			"filterd", p.CTState.String(), "kernel", k.String(), "hook", p.Hook.String(),
			"proto", p.Proto, "src", p.Src.String(), "sport", p.SrcPort, "dst", p.Dst.String(), "dport", p.DstPort,
			"total", r.stats.ShadowDiffers.Load())
	}
}

// ifInfo is what the runner caches about an interface.
type ifInfo struct {
	name  string
	mac   [6]byte
	ether bool
}

// iface maps an interface index to its name and MAC address, caching
// lookups for IfaceTTL.
func (r *nfqRunner) iface(idx uint32, now time.Time) ifInfo {
	if now.Sub(r.ifAt) > r.q.cfg.IfaceTTL {
		clear(r.ifnames)
		r.ifAt = now
		r.lastIfIdx = 0
	}
	if idx == r.lastIfIdx {
		return r.lastIf
	}
	if n, ok := r.ifnames[idx]; ok {
		r.lastIf, r.lastIfIdx = n, idx
		return n
	}
	var n ifInfo
	if ifc, err := net.InterfaceByIndex(int(idx)); err == nil {
		n.name = ifc.Name
		if len(ifc.HardwareAddr) == 6 {
			copy(n.mac[:], ifc.HardwareAddr)
			n.ether = true
		}
	}
	r.ifnames[idx] = n
	r.lastIf, r.lastIfIdx = n, idx
	return n
}

// Stats returns the queues' counters (live values; read them atomically).
func (q *NFQueue) Stats() []*QueueStats {
	out := make([]*QueueStats, len(q.runners))
	for i, r := range q.runners {
		out[i] = &r.stats
	}
	return out
}

// Drain waits, polling /proc/net/netfilter/nfnetlink_queue, until the
// kernel holds no packet waiting in our queues (call it after removing the
// rules that feed them), or until ctx is done.
func (q *NFQueue) Drain(ctx context.Context) error {
	nums := make([]uint16, len(q.runners))
	for i, r := range q.runners {
		nums[i] = r.num
	}
	return DrainQueues(ctx, nums)
}

// DrainQueues waits, polling /proc/net/netfilter/nfnetlink_queue, until the
// kernel holds no packet waiting in the queues nums, or until ctx is done.
func DrainQueues(ctx context.Context, nums []uint16) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		qs, err := ReadQueueProc("/proc/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		waiting := 0
		for _, s := range qs {
			for _, n := range nums {
				if s.Queue == n {
					waiting += int(s.Waiting)
				}
			}
		}
		if waiting == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nfqueue: %d packets still queued: %w", waiting, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop stops reading, unbinds the queues and closes the sockets. The read
// loops finish the batch of packets they have read (each gets its verdict)
// and unbind their queue; Stop waits, polling the kernel's queue list, until
// the queues are gone (at most timeout), then closes the sockets. Packets
// still waiting in the kernel's queue when it is unbound are dropped by the
// kernel: remove the rules that feed the queues and call Drain first.
func (q *NFQueue) Stop(timeout time.Duration) {
	if q.stopped {
		return
	}
	q.stopped = true
	q.cancel()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		qs, err := ReadQueueProc("/proc/net/netfilter/nfnetlink_queue")
		if err != nil {
			break
		}
		bound := false
		for _, s := range qs {
			for _, r := range q.runners {
				if s.Queue == r.num && s.PortID == r.portID {
					bound = true
				}
			}
		}
		if !bound {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, r := range q.runners {
		r.nf.Close()
	}
}

// QueueProc is one line of /proc/net/netfilter/nfnetlink_queue.
type QueueProc struct {
	Queue       uint16
	PortID      uint32 // netlink port id of the bound socket (usually its PID)
	Waiting     uint32 // packets waiting for a verdict
	CopyMode    uint8
	CopyRange   uint32
	Dropped     uint64 // dropped because the queue was full
	UserDropped uint64 // dropped because netlink could not deliver them (our receive buffer was full)
	IDSequence  uint32 // last packet id handed out
}

// ReadQueueProc parses /proc/net/netfilter/nfnetlink_queue (path given for
// tests).
func ReadQueueProc(path string) ([]QueueProc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseQueueProc(f)
}

// ParseQueueProc parses the format of /proc/net/netfilter/nfnetlink_queue:
// queue, portid, waiting, copy mode, copy range, queue dropped, user
// dropped, id sequence, 1.
func ParseQueueProc(r io.Reader) ([]QueueProc, error) {
	var out []QueueProc
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return out, fmt.Errorf("nfnetlink_queue line %d: %d fields, want 9", line, len(f))
		}
		var n [8]uint64
		for i := 0; i < 8; i++ {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return out, fmt.Errorf("nfnetlink_queue line %d field %d: %w", line, i+1, err)
			}
			n[i] = v
		}
		out = append(out, QueueProc{Queue: uint16(n[0]), PortID: uint32(n[1]), Waiting: uint32(n[2]),
			CopyMode: uint8(n[3]), CopyRange: uint32(n[4]), Dropped: n[5], UserDropped: n[6], IDSequence: uint32(n[7])})
	}
	return out, sc.Err()
}
