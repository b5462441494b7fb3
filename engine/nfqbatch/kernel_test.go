package nfqbatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/filterd/filterd/internal/netns"
	"github.com/filterd/filterd/packet"
)

// The kernel tests run the driver against the real nfnetlink_queue in two
// throwaway namespaces: snd (198.18.0.1, s0) → veth → rcv (198.18.0.2, r0)
// with `iptables -A INPUT -p udp -j NFQUEUE --queue-num N` in rcv. They need
// root; they skip without it unless CI=true, where they fail.

const (
	sndAddr   = "198.18.0.1"
	rcvAddr   = "198.18.0.2"
	portAcc   = 9001 // the verdict function accepts
	portDrop  = 9002 // the verdict function drops
	udpPayLen = 32   // 20 + 8 + 32 = 60-byte IP packets
)

type kernelEnv struct {
	t        *testing.T
	snd, rcv *netns.NS
	ctx      context.Context
}

func newKernelEnv(t *testing.T) *kernelEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &kernelEnv{t: t, ctx: ctx}
	e.snd = netns.ForTest(t, "nfqsnd")
	e.rcv = netns.ForTest(t, "nfqrcv")
	must(t, netns.Veth(ctx, e.snd, "s0", "02:00:00:00:00:01", e.rcv, "r0", "02:00:00:00:00:02"))
	e.run(e.snd, "ip", "addr", "add", sndAddr+"/24", "dev", "s0")
	e.run(e.rcv, "ip", "addr", "add", rcvAddr+"/24", "dev", "r0")
	// Static neighbours: no ARP in front of the burst.
	e.run(e.snd, "ip", "neigh", "replace", rcvAddr, "lladdr", "02:00:00:00:00:02", "dev", "s0", "nud", "permanent")
	e.run(e.rcv, "ip", "neigh", "replace", sndAddr, "lladdr", "02:00:00:00:00:01", "dev", "r0", "nud", "permanent")
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *kernelEnv) run(ns *netns.NS, cmd string, args ...string) string {
	e.t.Helper()
	out, err := ns.Run(e.ctx, cmd, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(out)
}

// ruleCount is the packet counter of the first rule of INPUT in rcv: the
// packets the NFQUEUE target saw.
func (e *kernelEnv) ruleCount() uint64 {
	e.t.Helper()
	out := e.run(e.rcv, "iptables", "-w", "-L", "INPUT", "-v", "-x", "-n")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 {
		e.t.Fatalf("iptables -L INPUT: no rule:\n%s", out)
	}
	n, err := strconv.ParseUint(strings.Fields(lines[2])[0], 10, 64)
	if err != nil {
		e.t.Fatalf("iptables -L INPUT: %v:\n%s", err, out)
	}
	return n
}

func (e *kernelEnv) kstats(queue uint16) KernelStats {
	e.t.Helper()
	var m map[uint16]KernelStats
	must(e.t, e.rcv.Do(func() error {
		var err error
		m, err = ReadKernelStats()
		return err
	}))
	s, ok := m[queue]
	if !ok {
		e.t.Fatalf("queue %d not in %s: %+v", queue, KernelStatsPath, m)
	}
	return s
}

// receiver counts the sequence numbers that arrive on a UDP port in rcv.
type receiver struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  map[uint64]int
	done chan struct{}
}

func (e *kernelEnv) listen(port int) *receiver {
	e.t.Helper()
	r := &receiver{got: map[uint64]int{}, done: make(chan struct{})}
	must(e.t, e.rcv.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(rcvAddr), Port: port})
		if err != nil {
			return err
		}
		r.conn = c
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		}); err != nil {
			return err
		}
		return serr
	}))
	go func() {
		defer close(r.done)
		buf := make([]byte, 2048)
		for {
			n, err := r.conn.Read(buf)
			if err != nil {
				return
			}
			if n >= 8 {
				r.mu.Lock()
				r.got[binary.BigEndian.Uint64(buf)]++
				r.mu.Unlock()
			}
		}
	}()
	e.t.Cleanup(func() { r.conn.Close(); <-r.done })
	return r
}

func (r *receiver) snapshot() map[uint64]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[uint64]int, len(r.got))
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

// send sends count 60-byte datagrams from snd, sequence numbers from first,
// to portAcc when port(seq) says so, else portDrop. The loop is bounded.
func (e *kernelEnv) send(first, count uint64, port func(seq uint64) int) {
	e.t.Helper()
	conns := map[int]*net.UDPConn{}
	must(e.t, e.snd.Do(func() error {
		for _, p := range []int{portAcc, portDrop} {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(sndAddr)}, &net.UDPAddr{IP: net.ParseIP(rcvAddr), Port: p})
			if err != nil {
				return err
			}
			conns[p] = c
		}
		return nil
	}))
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, udpPayLen)
	for s := first; s < first+count; s++ {
		binary.BigEndian.PutUint64(buf, s)
		if _, err := conns[port(s)].Write(buf); err != nil {
			e.t.Fatalf("send %d: %v", s, err)
		}
	}
}

// eventually polls cond until it holds or d passes (kernel state has no
// event to wait on); it returns the last description on failure.
func eventually(d time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(d)
	for {
		ok, desc := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New(desc)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// seqOf returns the sequence number in a queued 60-byte UDP packet and its
// destination port.
func seqOf(l3 []byte) (uint64, uint16, bool) {
	if len(l3) < 20 || l3[0]>>4 != 4 || l3[9] != packet.ProtoUDP {
		return 0, 0, false
	}
	ihl := int(l3[0]&0xf) * 4
	if len(l3) < ihl+8+8 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(l3[ihl+8:]), binary.BigEndian.Uint16(l3[ihl+2:]), true
}

// verdictLog is the handler of the kernel tests: accept portAcc, drop
// everything else; it records every decision by sequence number.
type verdictLog struct {
	accepted, dropped map[uint64]int
	badMeta           []string
	hold              chan struct{} // when non-nil, the first call waits for it to close
	calls             int
}

func newVerdictLog() *verdictLog {
	return &verdictLog{accepted: map[uint64]int{}, dropped: map[uint64]int{}}
}

func (l *verdictLog) handle(pkts []Packet, vs []Verdict) {
	l.calls++
	if l.calls == 1 && l.hold != nil {
		<-l.hold
	}
	for i := range pkts {
		p := &pkts[i]
		if p.Hook != packet.HookInput || p.Meta.InIface != "r0" || p.HWProtocol != 0x0800 || !p.Meta.HasMAC ||
			p.Meta.SrcMAC != [6]byte{2, 0, 0, 0, 0, 1} || len(p.L3) != 60 {
			l.badMeta = append(l.badMeta, fmt.Sprintf("id %d hook %v in %q proto %#x mac %v len %d", p.ID, p.Hook, p.Meta.InIface, p.HWProtocol, p.Meta.SrcMAC, len(p.L3)))
		}
		seq, port, ok := seqOf(p.L3)
		if ok && port == portAcc {
			l.accepted[seq]++
			continue
		}
		vs[i].Action = Drop
		if ok {
			l.dropped[seq]++
		}
	}
}

// runQueue opens queue cfg.Queue in rcv, installs the NFQUEUE rule and
// starts Run. stop cancels Run and returns its error; the queue is closed
// in the test's cleanup, so the kernel's counters stay readable.
func (e *kernelEnv) runQueue(cfg Config, h Handler) (q *Queue, stop func() error) {
	e.t.Helper()
	must(e.t, e.rcv.Do(func() error {
		var err error
		q, err = Open(cfg)
		return err
	}))
	e.run(e.rcv, "iptables", "-w", "-A", "INPUT", "-p", "udp", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(cfg.Queue)))
	ctx, cancel := context.WithCancel(e.ctx)
	errc := make(chan error, 1)
	go func() { errc <- q.Run(ctx, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-errc
		})
		return err
	}
	e.t.Cleanup(func() {
		_ = stop()
		if err := q.Close(); err != nil {
			e.t.Errorf("close queue %d: %v", cfg.Queue, err)
		}
	})
	return q, stop
}

// settle waits until every packet the NFQUEUE rule saw is accounted for:
// either dropped by the kernel (queue full, socket full) or read by the
// driver, and none is waiting for a verdict.
func (e *kernelEnv) settle(q *Queue, queue uint16, sent uint64) (KernelStats, uint64) {
	e.t.Helper()
	var ks KernelStats
	var rule uint64
	err := eventually(20*time.Second, func() (bool, string) {
		ks, rule = e.kstats(queue), e.ruleCount()
		st := q.Stats()
		desc := fmt.Sprintf("sent %d, rule saw %d, kernel %+v, driver %+v", sent, rule, ks, st)
		return rule == sent && uint64(ks.IDSequence)+uint64(ks.QueueDropped) == rule &&
			st.Packets+uint64(ks.UserDropped) == uint64(ks.IDSequence) && ks.Waiting == 0, desc
	})
	if err != nil {
		e.t.Fatalf("packets not accounted for: %v", err)
	}
	return ks, rule
}

// checkExactlyOnce compares the handler's decisions with what arrived.
func checkExactlyOnce(t *testing.T, l *verdictLog, acc, drop *receiver, st Stats) {
	t.Helper()
	if len(l.badMeta) > 0 {
		t.Errorf("%d packets with wrong metadata, first: %s", len(l.badMeta), l.badMeta[0])
	}
	for s, n := range l.accepted {
		if n != 1 {
			t.Errorf("seq %d decided %d times", s, n)
		}
	}
	if st.NetlinkErrs != 0 {
		t.Errorf("kernel refused %d verdict messages (last errno %d): a packet got two verdicts or none", st.NetlinkErrs, st.LastErrno)
	}
	if st.Accepted != uint64(len(l.accepted)) || st.Dropped != uint64(len(l.dropped)) || st.Other != 0 {
		t.Errorf("driver stats %+v, handler accepted %d dropped %d", st, len(l.accepted), len(l.dropped))
	}
	// Accepted packets arrive once each, dropped ones never.
	err := eventually(5*time.Second, func() (bool, string) {
		got := acc.snapshot()
		return len(got) == len(l.accepted), fmt.Sprintf("port %d received %d distinct, %d accepted", portAcc, len(got), len(l.accepted))
	})
	if err != nil {
		t.Error(err)
	}
	for s, n := range acc.snapshot() {
		if n != 1 || l.accepted[s] != 1 {
			t.Errorf("seq %d arrived %d times, accepted %d times", s, n, l.accepted[s])
		}
	}
	if got := drop.snapshot(); len(got) != 0 {
		t.Errorf("port %d received %d datagrams, all were dropped", portDrop, len(got))
	}
}

func alternate(s uint64) int {
	if s%2 == 0 {
		return portAcc
	}
	return portDrop
}

// TestKernelAcceptDrop: a burst of 4000 datagrams to two ports, one accepted
// and one dropped by the verdict function; every packet is verdicted once.
func TestKernelAcceptDrop(t *testing.T) {
	e := newKernelEnv(t)
	acc, drop := e.listen(portAcc), e.listen(portDrop)
	l := newVerdictLog()
	const queue, n = 3, 4000
	q, stop := e.runQueue(Config{Queue: queue, MaxLen: 8192}, l.handle)
	e.send(0, n, alternate)
	ks, rule := e.settle(q, queue, n)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := q.Stats()
	t.Logf("rule %d, kernel %+v, driver %+v", rule, ks, st)
	if ks.QueueDropped != 0 || ks.UserDropped != 0 || st.ENOBUFS != 0 {
		t.Logf("kernel dropped %d (queue full) + %d (socket full) of %d on this loaded machine", ks.QueueDropped, ks.UserDropped, n)
	}
	if st.Packets == 0 || len(l.accepted) == 0 || len(l.dropped) == 0 {
		t.Fatalf("no traffic verdicted: %+v", st)
	}
	if st.RecvCalls >= st.Packets {
		t.Logf("one recvmmsg per packet (%d calls for %d packets): the reader was never behind", st.RecvCalls, st.Packets)
	}
	checkExactlyOnce(t, l, acc, drop, st)
}

// TestKernelQueueFull: the handler holds the first batch while a burst of
// 1000 goes to a queue of 64: the kernel queues exactly 64 and counts the
// rest as queue_dropped; after release everything queued is verdicted and a
// second burst passes.
func TestKernelQueueFull(t *testing.T) {
	e := newKernelEnv(t)
	acc, drop := e.listen(portAcc), e.listen(portDrop)
	l := newVerdictLog()
	l.hold = make(chan struct{})
	const queue, maxLen, n = 4, 64, 1000
	q, stop := e.runQueue(Config{Queue: queue, MaxLen: maxLen}, l.handle)
	e.send(0, n, func(uint64) int { return portAcc })
	var ks KernelStats
	err := eventually(20*time.Second, func() (bool, string) {
		ks = e.kstats(queue)
		rule := e.ruleCount()
		return rule == n && uint64(ks.IDSequence)+uint64(ks.QueueDropped) == n,
			fmt.Sprintf("rule %d kernel %+v", rule, ks)
	})
	close(l.hold)
	if err != nil {
		t.Fatal(err)
	}
	if ks.IDSequence != maxLen || ks.QueueDropped != n-maxLen || ks.UserDropped != 0 {
		t.Errorf("held queue: kernel %+v, want id_sequence %d, queue_dropped %d", ks, maxLen, n-maxLen)
	}
	ks, _ = e.settle(q, queue, n)
	// A second burst after the overload passes completely.
	e.send(n, 500, alternate)
	ks, rule := e.settle(q, queue, n+500)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := q.Stats()
	t.Logf("rule %d, kernel %+v, driver %+v", rule, ks, st)
	if st.Packets != uint64(ks.IDSequence) || st.Packets < maxLen+1 {
		t.Errorf("driver read %d, kernel gave out %d ids", st.Packets, ks.IDSequence)
	}
	checkExactlyOnce(t, l, acc, drop, st)
}

// TestKernelSocketFull: with a tiny socket buffer and the handler held,
// the kernel cannot deliver (user_dropped) and the driver sees ENOBUFS; the
// read loop survives and verdicts what it got and a later burst.
func TestKernelSocketFull(t *testing.T) {
	e := newKernelEnv(t)
	acc, drop := e.listen(portAcc), e.listen(portDrop)
	l := newVerdictLog()
	l.hold = make(chan struct{})
	const queue, n = 5, 1000
	q, stop := e.runQueue(Config{Queue: queue, MaxLen: 8192, RcvBuf: 4096}, l.handle)
	e.send(0, n, func(uint64) int { return portAcc })
	var ks KernelStats
	err := eventually(20*time.Second, func() (bool, string) {
		ks = e.kstats(queue)
		return e.ruleCount() == n && ks.IDSequence == n, fmt.Sprintf("kernel %+v", ks)
	})
	close(l.hold)
	if err != nil {
		t.Fatal(err)
	}
	if ks.UserDropped == 0 {
		t.Fatalf("socket never overflowed: %+v", ks)
	}
	e.settle(q, queue, n)
	e.send(n, 200, alternate)
	ks, rule := e.settle(q, queue, n+200)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := q.Stats()
	t.Logf("rule %d, kernel %+v, driver %+v", rule, ks, st)
	if st.ENOBUFS == 0 {
		t.Errorf("driver saw no ENOBUFS while the kernel counted %d user drops", ks.UserDropped)
	}
	checkExactlyOnce(t, l, acc, drop, st)
}

// TestKernelCancelDrains: packets waiting in the socket when the context
// is cancelled are verdicted before Run returns.
func TestKernelCancelDrains(t *testing.T) {
	e := newKernelEnv(t)
	acc, drop := e.listen(portAcc), e.listen(portDrop)
	l := newVerdictLog()
	l.hold = make(chan struct{})
	const queue, n = 6, 300
	q, stop := e.runQueue(Config{Queue: queue, MaxLen: 8192, Batch: 8}, l.handle)
	e.send(0, n, alternate)
	err := eventually(20*time.Second, func() (bool, string) {
		ks := e.kstats(queue)
		return ks.IDSequence == n, fmt.Sprintf("kernel %+v", ks)
	})
	if err != nil {
		close(l.hold)
		t.Fatal(err)
	}
	// Cancel while the handler holds its first batch, then let it go: Run
	// must read and verdict the rest before it returns.
	errc := make(chan error, 1)
	go func() { errc <- stop() }()
	close(l.hold)
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	ks := e.kstats(queue)
	st := q.Stats()
	t.Logf("kernel %+v, driver %+v", ks, st)
	if st.Packets != n || ks.Waiting != 0 {
		t.Fatalf("after cancel: driver read %d of %d, %d still waiting", st.Packets, n, ks.Waiting)
	}
	checkExactlyOnce(t, l, acc, drop, st)
}

// TestKernelOutputOwnerConntrack: packets the receiver itself sends, queued
// on OUTPUT with the UID_GID and CONNTRACK flags, carry the socket owner,
// the output interface and the kernel's conntrack state (IP_CT_NEW for the
// first packets of a flow with no reply yet). A kernel built without
// CONFIG_NETFILTER_NETLINK_GLUE_CT refuses the CONNTRACK flag: then the
// error must say so, the queue must not stay bound, and the rest is checked
// without it.
func TestKernelOutputOwnerConntrack(t *testing.T) {
	e := newKernelEnv(t)
	const queue, n = 8, 20
	type seen struct {
		hook              packet.Hook
		out               string
		local, owner, ctI bool
		uid, ctinfo       uint32
		ctLen             int
	}
	var got []seen
	var q *Queue
	var openErr error
	must(t, e.rcv.Do(func() error {
		q, openErr = Open(Config{Queue: queue, UIDGID: true, Conntrack: true})
		return nil
	}))
	withCT := openErr == nil
	if !withCT {
		if !errors.Is(openErr, unix.EOPNOTSUPP) || !strings.Contains(openErr.Error(), "CONFIG_NETFILTER_NETLINK_GLUE_CT") {
			t.Fatalf("Open with Conntrack: %v", openErr)
		}
		var m map[uint16]KernelStats
		must(t, e.rcv.Do(func() error {
			var err error
			m, err = ReadKernelStats()
			return err
		}))
		if _, bound := m[queue]; bound {
			t.Fatalf("refused configuration left queue %d bound: %+v", queue, m)
		}
		t.Logf("this kernel has no conntrack glue (%v); checking the owner without it", openErr)
		must(t, e.rcv.Do(func() error {
			var err error
			q, err = Open(Config{Queue: queue, UIDGID: true})
			return err
		}))
	}
	// The conntrack match makes the namespace track connections.
	e.run(e.rcv, "iptables", "-w", "-A", "OUTPUT", "-p", "udp", "-d", sndAddr, "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED",
		"-j", "NFQUEUE", "--queue-num", strconv.Itoa(queue))
	ctx, cancel := context.WithCancel(e.ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- q.Run(ctx, func(pkts []Packet, vs []Verdict) {
			for i := range pkts {
				p := &pkts[i]
				got = append(got, seen{p.Hook, p.Meta.OutIface, p.Meta.Local, p.Meta.HasOwner, p.HasCTInfo, p.Meta.UID, p.CTInfo, len(p.CT)})
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-errc; q.Close() })
	var c *net.UDPConn
	must(t, e.rcv.Do(func() error {
		var err error
		// Unconnected: the port unreachable errors from snd are not reported.
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(rcvAddr), Port: 5353})
		return err
	}))
	defer c.Close()
	dst := &net.UDPAddr{IP: net.ParseIP(sndAddr), Port: 9}
	for i := 0; i < n; i++ {
		if _, err := c.WriteToUDP(make([]byte, udpPayLen), dst); err != nil {
			t.Fatal(err)
		}
	}
	if err := eventually(10*time.Second, func() (bool, string) {
		st := q.Stats()
		return st.Packets == n, fmt.Sprintf("driver %+v", st)
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	errc <- nil // for the cleanup
	if len(got) != n {
		t.Fatalf("%d packets seen, want %d", len(got), n)
	}
	for i, s := range got {
		// enum ip_conntrack_info: IP_CT_NEW = 2.
		if s.hook != packet.HookOutput || s.out != "r0" || !s.local || !s.owner || s.uid != 0 {
			t.Errorf("packet %d: %+v", i, s)
		}
		if withCT && (!s.ctI || s.ctinfo != 2 || s.ctLen == 0) {
			t.Errorf("packet %d conntrack: %+v", i, s)
		}
		if !withCT && (s.ctI || s.ctLen != 0) {
			t.Errorf("packet %d has conntrack attributes without the flag: %+v", i, s)
		}
	}
}
