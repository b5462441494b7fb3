package nfqbatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Config says which queue to bind and how.
type Config struct {
	// Queue is the queue number (iptables -j NFQUEUE --queue-num).
	Queue uint16
	// MaxLen is the kernel's queue length (NFQA_CFG_QUEUE_MAXLEN, default
	// 4096); packets beyond it are dropped by the kernel (queue_dropped) or
	// accepted with FailOpen.
	MaxLen uint32
	// CopyRange is how many bytes of each packet the kernel copies (default
	// 65531, NFQNL_MAX_COPY_RANGE).
	CopyRange uint32
	// FailOpen, Conntrack, GSO, UIDGID set the queue flags NFQA_CFG_F_*.
	FailOpen, Conntrack, GSO, UIDGID bool
	// RcvBuf is the socket receive buffer in bytes, set with SO_RCVBUFFORCE
	// (default 8 MiB).
	RcvBuf int
	// Batch is how many messages one recvmmsg reads at most (default 64).
	Batch int
	// VerdictBatch is how many verdicts are held before they are sent
	// (default Batch); they are also sent whenever the socket is empty.
	VerdictBatch int
	// MsgBuf is the size of each receive buffer (default CopyRange + 4 KiB
	// for the metadata). A longer message is truncated (Packet.Truncated).
	MsgBuf int
}

func (c *Config) flags() uint32 {
	var f uint32
	if c.FailOpen {
		f |= FlagFailOpen
	}
	if c.Conntrack {
		f |= FlagConntrack
	}
	if c.GSO {
		f |= FlagGSO
	}
	if c.UIDGID {
		f |= FlagUIDGID
	}
	return f
}

func (c *Config) defaults() {
	if c.MaxLen == 0 {
		c.MaxLen = 4096
	}
	if c.CopyRange == 0 || c.CopyRange > maxCopyRange {
		c.CopyRange = maxCopyRange
	}
	if c.RcvBuf == 0 {
		c.RcvBuf = 8 << 20
	}
	if c.Batch <= 0 {
		c.Batch = 64
	}
	if c.VerdictBatch <= 0 {
		c.VerdictBatch = c.Batch
	}
	if c.MsgBuf <= 0 {
		c.MsgBuf = int(c.CopyRange) + 4096
	}
}

// Handler decides the packets of one batch: it sets verdicts[i] for
// pkts[i]. verdicts arrive preset to Accept. Both slices and every byte the
// packets point to are reused after the handler returns.
type Handler func(pkts []Packet, verdicts []Verdict)

// Stats are the driver's counters.
type Stats struct {
	Packets      uint64 // packet messages received (each got exactly one verdict)
	Accepted     uint64 // verdicts NF_ACCEPT
	Dropped      uint64 // verdicts NF_DROP
	Other        uint64 // other verdicts (NF_REPEAT)
	RecvCalls    uint64 // recvmmsg calls that returned messages
	VerdictSends uint64 // verdict datagrams sent
	ENOBUFS      uint64 // receive overruns: the kernel could not queue a message to the socket
	Truncated    uint64 // messages cut by the receive buffer size
	NetlinkErrs  uint64 // NLMSG_ERROR messages with a non-zero error from the kernel
	BadMessages  uint64 // messages that did not parse (their packets, if any id was read, were verdicted)
	LastErrno    int32  // last kernel error (negative errno) seen in an NLMSG_ERROR
}

// Queue is one bound nfnetlink queue. Run it from one goroutine.
type Queue struct {
	cfg   Config
	fd    int
	file  *os.File
	rc    syscall.RawConn
	names map[uint32]string
	seq   uint32

	bufs  [][]byte
	iovs  []unix.Iovec
	hdrs  []unix.Mmsghdr
	pkts  []Packet
	verds []Verdict
	enc   *encoder
	ps    parser

	// results of the read callback (a method value bound once, so reading
	// allocates nothing)
	readFn  func(fd uintptr) bool
	send    func(b []byte) error // writes a verdict datagram (the socket; replaced in benchmarks)
	nread   int
	rerrno  unix.Errno
	sendErr error

	st struct {
		packets, accepted, dropped, other, recvCalls, sends, enobufs, trunc, nlerrs, bad atomic.Uint64
		lastErrno                                                                        atomic.Int32
	}
}

// Open binds queue cfg.Queue in the calling thread's network namespace and
// configures it (copy mode packet, range, queue length, flags). The queue
// must not be bound by another socket.
func Open(cfg Config) (*Queue, error) {
	cfg.defaults()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nfqbatch: netlink socket: %w", err)
	}
	q := &Queue{cfg: cfg, fd: fd}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("nfqbatch: bind netlink socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.RcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.RcvBuf); err != nil {
			return nil, fmt.Errorf("nfqbatch: receive buffer %d bytes: %w", cfg.RcvBuf, err)
		}
	}
	q.initBuffers(interfaceNames())
	if err := q.config(cfgCmdBind, true); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("nfqbatch: queue %d is bound by another process (see the peer_portid column of /proc/net/netfilter/nfnetlink_queue, then `ss -f netlink -p`): %w", cfg.Queue, err)
		}
		if errors.Is(err, unix.EOPNOTSUPP) && cfg.Conntrack {
			return nil, fmt.Errorf("nfqbatch: bind queue %d: the conntrack flag needs a kernel with CONFIG_NETFILTER_NETLINK_GLUE_CT and nf_conntrack_netlink: %w", cfg.Queue, err)
		}
		return nil, fmt.Errorf("nfqbatch: bind queue %d: %w", cfg.Queue, err)
	}
	q.file = os.NewFile(uintptr(fd), fmt.Sprintf("nfqueue-%d", cfg.Queue))
	rc, err := q.file.SyscallConn()
	if err != nil {
		q.file.Close()
		ok = true // the file owns fd now
		return nil, fmt.Errorf("nfqbatch: %w", err)
	}
	q.rc = rc
	q.readFn = q.readCallback
	ok = true
	return q, nil
}

// initBuffers allocates everything the read loop uses, once.
func (q *Queue) initBuffers(names map[uint32]string) {
	cfg := &q.cfg
	q.names = names
	q.ps.names = q.names
	q.enc = newEncoder(cfg.Queue, cfg.VerdictBatch+cfg.Batch)
	q.bufs = make([][]byte, cfg.Batch)
	q.iovs = make([]unix.Iovec, cfg.Batch)
	q.hdrs = make([]unix.Mmsghdr, cfg.Batch)
	for i := range q.bufs {
		q.bufs[i] = make([]byte, cfg.MsgBuf)
		q.iovs[i].Base = &q.bufs[i][0]
		q.iovs[i].SetLen(cfg.MsgBuf)
		q.hdrs[i].Hdr.Iov = &q.iovs[i]
		q.hdrs[i].Hdr.SetIovlen(1)
	}
	q.pkts = make([]Packet, cfg.Batch)
	q.verds = make([]Verdict, cfg.Batch)
	q.send = q.write
}

// interfaceNames maps the interface indexes of the calling thread's network
// namespace to their names.
func interfaceNames() map[uint32]string {
	m := map[uint32]string{}
	ifs, err := net.Interfaces()
	if err != nil {
		return m
	}
	for _, i := range ifs {
		m[uint32(i.Index)] = i.Name
	}
	return m
}

// config sends one config message and waits for its acknowledgement.
// Packet messages that arrive meanwhile are handed back to the kernel with
// NF_REPEAT, so they are queued again and reach Run.
func (q *Queue) config(cmd uint8, bind bool) error {
	q.seq++
	seq := q.seq
	msg := configMsg(seq, q.cfg.Queue, cmd, bind, &q.cfg)
	if _, err := unix.Write(q.fd, msg); err != nil {
		return fmt.Errorf("send config: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := q.recvNonblock()
		if err == unix.EAGAIN {
			left := time.Until(deadline)
			if left <= 0 {
				return fmt.Errorf("no acknowledgement from the kernel within 5s")
			}
			fds := []unix.PollFd{{Fd: int32(q.fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
				return fmt.Errorf("poll: %w", err)
			}
			continue
		}
		if err == unix.ENOBUFS || err == unix.EINTR {
			if err == unix.ENOBUFS {
				q.st.enobufs.Add(1)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("receive acknowledgement: %w", err)
		}
		var acked bool
		var ackErr error
		for i := 0; i < n; i++ {
			b := q.bufs[i][:q.hdrs[i].Len]
			for len(b) > 0 {
				msg, rest, err := nextMsg(b)
				if err != nil {
					break
				}
				b = rest
				var p Packet
				info, err := q.ps.parseMsg(msg, &p)
				switch {
				case info.kind == nlmsgError && info.seq == seq:
					acked = true
					if info.errno != 0 {
						ackErr = unix.Errno(-info.errno)
					}
				case info.kind == msgPacket && err == nil:
					q.enc.add(p.ID, Verdict{Action: Repeat})
					q.st.packets.Add(1)
					q.st.other.Add(1)
				}
			}
		}
		if err := q.flush(); err != nil {
			return err
		}
		if acked {
			return ackErr
		}
	}
}

// recvNonblock reads up to Batch datagrams without blocking.
func (q *Queue) recvNonblock() (int, error) {
	n, errno := q.recvmmsg(uintptr(q.fd))
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

func (q *Queue) recvmmsg(fd uintptr) (int, unix.Errno) {
	for i := range q.hdrs {
		q.hdrs[i].Hdr.Flags = 0
	}
	// RawSyscall: MSG_DONTWAIT never blocks (see write).
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&q.hdrs[0])), uintptr(len(q.hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// readCallback is the RawConn.Read callback: it reads a batch, and when the
// socket is empty sends the held verdicts before Run parks on the poller.
func (q *Queue) readCallback(fd uintptr) bool {
	q.nread, q.rerrno = q.recvmmsg(fd)
	if q.rerrno == unix.EAGAIN {
		if q.enc.pending > 0 {
			q.sendErr = q.flush()
			return q.sendErr != nil
		}
		return false
	}
	return true
}

// flush sends the held verdicts.
func (q *Queue) flush() error {
	b := q.enc.finish()
	if b == nil {
		return nil
	}
	err := q.send(b)
	q.enc.reset()
	q.st.sends.Add(1)
	if err != nil {
		return fmt.Errorf("nfqbatch: send verdicts for queue %d: %w", q.cfg.Queue, err)
	}
	return nil
}

// write sends one datagram to the kernel.
//
// It is a raw system call, as recvmmsg is: neither blocks (a message to the
// kernel is handled synchronously, no buffer to wait for), but a verdict
// batch reinjects its packets within the call, which takes tens of
// microseconds. Through the runtime's syscall path, the scheduler's monitor
// would see the worker in a system call for that long, take its P away
// (another thread woken, the worker waiting for a P again on return), and
// keep waking every 20 µs to do so again: at 100k pps (filterd run, one
// queue) the worker's CPU per packet was about a quarter lower with raw
// calls. Waiting for packets still goes through the runtime (the network
// poller), so other goroutines run meanwhile.
func (q *Queue) write(b []byte) error {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(q.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e != unix.EINTR {
			if e != 0 {
				return e
			}
			return nil
		}
	}
}

// Run reads packets and verdicts them with h until ctx is cancelled or the
// socket fails. On cancellation it reads what is already waiting in the
// socket (at most MaxLen packets more), verdicts it, sends every held
// verdict and returns nil: every packet it read got exactly one verdict.
// ENOBUFS (the socket overflowed; the kernel counts those packets as
// user_dropped) is counted and reading goes on.
func (q *Queue) Run(ctx context.Context, h Handler) error {
	stop := context.AfterFunc(ctx, func() { _ = q.file.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		if ctx.Err() != nil {
			return q.drain(h)
		}
		q.nread, q.rerrno, q.sendErr = 0, 0, nil
		err := q.rc.Read(q.readFn)
		if q.sendErr != nil {
			return q.sendErr
		}
		if err != nil {
			if ctx.Err() != nil {
				return q.drain(h)
			}
			ferr := q.flush()
			return errors.Join(fmt.Errorf("nfqbatch: read queue %d: %w", q.cfg.Queue, err), ferr)
		}
		switch q.rerrno {
		case 0:
			if err := q.process(q.nread, h); err != nil {
				return err
			}
		case unix.ENOBUFS:
			q.st.enobufs.Add(1)
		case unix.EINTR:
		default:
			ferr := q.flush()
			return errors.Join(fmt.Errorf("nfqbatch: recvmmsg queue %d: %w", q.cfg.Queue, q.rerrno), ferr)
		}
	}
}

// drain verdicts what the socket already holds, then flushes.
func (q *Queue) drain(h Handler) error {
	budget := int(q.cfg.MaxLen)
	for budget > 0 {
		n, err := q.recvNonblock()
		if err == unix.ENOBUFS || err == unix.EINTR {
			if err == unix.ENOBUFS {
				q.st.enobufs.Add(1)
			}
			continue
		}
		if err != nil {
			break
		}
		if err := q.process(n, h); err != nil {
			return err
		}
		budget -= n
	}
	return q.flush()
}

// process parses n received datagrams, calls h for their packets and
// records the verdicts; the verdicts are sent when VerdictBatch are held
// (and by the read callback when the socket is empty).
func (q *Queue) process(n int, h Handler) error {
	q.st.recvCalls.Add(1)
	q.ps.now = time.Now()
	k := 0
	var bad, nlerrs, trunc uint64
	for i := 0; i < n; i++ {
		b := q.bufs[i][:min(int(q.hdrs[i].Len), len(q.bufs[i]))]
		truncated := q.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
		if truncated {
			trunc++
		}
		for len(b) > 0 {
			msg, rest, err := nextMsg(b)
			if err != nil {
				if truncated && len(b) >= nlmsgHdrLen {
					msg, rest = b, nil // the header's length runs past the buffer: parse what arrived
				} else {
					bad++
					break
				}
			}
			b = rest
			p := &q.pkts[k]
			q.ps.truncated = truncated
			info, err := q.ps.parseMsg(msg, p)
			if info.kind == nlmsgError && info.errno != 0 {
				nlerrs++
				q.st.lastErrno.Store(info.errno)
			}
			if info.kind != msgPacket {
				continue
			}
			if err != nil {
				bad++
				// A packet whose id was read still needs its verdict.
				if p.ID == 0 {
					continue
				}
			}
			p.Truncated = truncated
			k++
			if k == len(q.pkts) {
				if err := q.decide(k, h); err != nil {
					return err
				}
				k = 0
			}
		}
	}
	q.st.bad.Add(bad)
	q.st.nlerrs.Add(nlerrs)
	q.st.trunc.Add(trunc)
	if k > 0 {
		return q.decide(k, h)
	}
	return nil
}

// decide runs the handler on the first k packets and records their verdicts.
func (q *Queue) decide(k int, h Handler) error {
	pk, vs := q.pkts[:k], q.verds[:k]
	for i := range vs {
		vs[i] = Verdict{Action: Accept}
	}
	h(pk, vs)
	var acc, drop, other uint64
	n := uint64(0)
	for i := range pk {
		if vs[i].Defer {
			continue
		}
		n++
		q.enc.add(pk[i].ID, vs[i])
		switch vs[i].Action {
		case Accept:
			acc++
		case Drop:
			drop++
		default:
			other++
		}
	}
	q.st.packets.Add(n)
	q.st.accepted.Add(acc)
	q.st.dropped.Add(drop)
	q.st.other.Add(other)
	if q.enc.pending >= q.cfg.VerdictBatch {
		return q.flush()
	}
	return nil
}

// Verdict records the verdict of a packet the Handler deferred (Verdict.Defer)
// in an earlier call. Call it only from the Handler.
func (q *Queue) Verdict(id uint32, v Verdict) {
	q.enc.add(id, v)
	q.st.packets.Add(1)
	switch v.Action {
	case Accept:
		q.st.accepted.Add(1)
	case Drop:
		q.st.dropped.Add(1)
	default:
		q.st.other.Add(1)
	}
}

// SetBatchAccept turns the batch accept (one NFQNL_MSG_VERDICT_BATCH up to
// the highest accepted id) on or off. A Handler holding deferred packets
// turns it off: the batch would accept them too. Call it only from the
// Handler; it applies to the verdicts of the batch being decided.
func (q *Queue) SetBatchAccept(on bool) { q.enc.perPacket = !on }

// Stats returns the driver's counters (safe from any goroutine).
func (q *Queue) Stats() Stats {
	return Stats{
		Packets: q.st.packets.Load(), Accepted: q.st.accepted.Load(), Dropped: q.st.dropped.Load(),
		Other: q.st.other.Load(), RecvCalls: q.st.recvCalls.Load(), VerdictSends: q.st.sends.Load(),
		ENOBUFS: q.st.enobufs.Load(), Truncated: q.st.trunc.Load(), NetlinkErrs: q.st.nlerrs.Load(),
		BadMessages: q.st.bad.Load(), LastErrno: q.st.lastErrno.Load(),
	}
}

// Close unbinds the queue and closes the socket. Call it after Run has
// returned; packets the kernel queued after that are dropped by the kernel
// when the queue goes away (remove the NFQUEUE rule first, or use
// --queue-bypass).
func (q *Queue) Close() error {
	q.seq++
	_, _ = unix.Write(q.fd, configMsg(q.seq, q.cfg.Queue, cfgCmdUnbind, false, &q.cfg))
	return q.file.Close()
}
