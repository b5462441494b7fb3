package nfqbatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/filterd/filterd/engine"
)

// Engines is filterd's batch NFQUEUE driver: one Queue, one goroutine and
// one engine.QueueHandler (the per-packet logic shared with engine.NFQueue:
// engine, REJECT replies, held fragments, LOG metadata, shadow, stats) per
// queue.
type Engines struct {
	runners []*engineRunner
	cancel  context.CancelFunc
	done    sync.WaitGroup
	stopped bool
}

type engineRunner struct {
	q    *Queue
	h    *engine.QueueHandler
	log  func(msg string, args ...any)
	warn func(msg string, args ...any)
	// ENOBUFS seen so far, and when it was last logged
	enobufs   uint64
	enobufsAt time.Time
	// payloads of the packets about to be handled, for Prefetch
	l3 [][]byte
	// the packet being handled: its verdict goes to vs[cur]
	vs    []Verdict
	cur   int
	curID uint32
	set   bool
}

// OpenEngine binds every queue of cfg (copy mode packet, UID/GID
// attributes, cfg's queue length, receive buffer, fail-open and shadow
// flags) and verdicts their packets with eng until Stop.
func OpenEngine(eng *engine.Engine, cfg engine.NFQueueConfig) (*Engines, error) {
	if len(cfg.Queues) == 0 {
		return nil, errors.New("nfqbatch: no queue given")
	}
	e := &Engines{}
	for _, num := range cfg.Queues {
		q, err := Open(Config{Queue: num, MaxLen: cfg.MaxQueueLen, CopyRange: cfg.MaxPacketLen,
			FailOpen: cfg.FailOpen, Conntrack: cfg.Shadow, UIDGID: true, RcvBuf: cfg.ReadBuffer})
		if err != nil {
			e.closeAll()
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY) {
				return nil, engine.QueueBoundError(num, err)
			}
			if cfg.Shadow && errors.Is(err, unix.EOPNOTSUPP) {
				return nil, fmt.Errorf("%w: %w", engine.ErrShadowUnsupported, err)
			}
			return nil, err
		}
		e.runners = append(e.runners, newEngineRunner(q, eng, cfg))
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	for _, r := range e.runners {
		e.done.Add(1)
		go func() {
			defer e.done.Done()
			r.run(ctx)
		}()
	}
	return e, nil
}

// newEngineRunner joins queue q and a QueueHandler of cfg's on eng.
func newEngineRunner(q *Queue, eng *engine.Engine, cfg engine.NFQueueConfig) *engineRunner {
	num := q.cfg.Queue
	r := &engineRunner{q: q, l3: make([][]byte, 0, engine.PrefetchMax)}
	r.h = engine.NewQueueHandler(eng, cfg, num, r.send)
	r.h.SetMarkSender(r.sendMark)
	// Counters and latency are published once per batch (handle).
	r.h.SetBatched(true)
	if cfg.Logger != nil {
		l := cfg.Logger.With("queue", num)
		r.log, r.warn = l.Error, l.Warn
	} else {
		r.log, r.warn = func(string, ...any) {}, func(string, ...any) {}
	}
	return r
}

// run reads and verdicts until ctx is done; a failed read or verdict send
// is logged and reading goes on.
func (r *engineRunner) run(ctx context.Context) {
	h := r.handle
	for {
		err := r.q.Run(ctx, h)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.h.Stats().RecvErrors.Add(1)
			r.log("nfqbatch: read loop", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// send is the QueueHandler's verdict function: the packet being handled
// gets its verdict in the batch, a held fragment's comes late.
func (r *engineRunner) send(id uint32, v int) error {
	if !r.set && id == r.curID && r.vs != nil {
		r.vs[r.cur] = Verdict{Action: Action(v)}
		r.set = true
		return nil
	}
	r.q.Verdict(id, Verdict{Action: Action(v)})
	return nil
}

// sendMark is the QueueHandler's verdict function for a verdict that sets
// the packet's nfmark (an offloaded flow's NF_REPEAT): sent per packet,
// never covered by the batch accept.
func (r *engineRunner) sendMark(id uint32, v int, mark uint32) error {
	vd := Verdict{Action: Action(v), Mark: mark, SetMark: true}
	if !r.set && id == r.curID && r.vs != nil {
		r.vs[r.cur] = vd
		r.set = true
		return nil
	}
	r.q.Verdict(id, vd)
	return nil
}

// handle is the Queue's Handler.
func (r *engineRunner) handle(pkts []Packet, vs []Verdict) {
	if n := r.q.st.enobufs.Load(); n != r.enobufs {
		r.enobufs = n
		r.h.Stats().ENOBUFS.Store(n)
		if now := time.Now(); now.Sub(r.enobufsAt) >= time.Second {
			r.enobufsAt = now
			r.warn("nfqueue: receive buffer overrun (ENOBUFS): packets were lost to the kernel's queue", "total", n)
		}
	}
	r.vs = vs
	for i := range pkts {
		if i%engine.PrefetchMax == 0 {
			// The conntrack buckets and entries of the next packets
			// start loading together.
			r.l3 = r.l3[:0]
			for j := i; j < len(pkts) && j < i+engine.PrefetchMax; j++ {
				r.l3 = append(r.l3, pkts[j].L3)
			}
			r.h.Prefetch(r.l3)
		}
		p := &pkts[i]
		r.cur, r.curID, r.set = i, p.ID, false
		qp := engine.QueuedPacket{
			ID: p.ID, Payload: p.L3, Hook: uint8(p.Hook), HasHook: true,
			InDev: p.InIndex, OutDev: p.OutIndex, Mark: p.Meta.Mark,
			UID: p.Meta.UID, GID: p.Meta.GID, HasOwner: p.Meta.HasOwner,
			HwProtocol: p.HWProtocol, HasHwProtocol: p.HWProtocol != 0,
			CtInfo: p.CTInfo, HasCtInfo: p.HasCTInfo,
			Received: p.Received, // one clock read per receive batch
		}
		if p.Meta.HasMAC {
			qp.HwAddr = p.Meta.SrcMAC[:]
		}
		r.h.Handle(&qp)
		if !r.set {
			vs[i] = Verdict{Defer: true}
		}
	}
	r.vs = nil
	r.q.SetBatchAccept(!r.h.Holding())
	// One clock read per batch: the counters and the verdict latency
	// (from the batch's receive time) of its packets.
	r.h.EndBatch(time.Now())
}

// Stats returns the queues' counters (live values; read them atomically).
func (e *Engines) Stats() []*engine.QueueStats {
	out := make([]*engine.QueueStats, len(e.runners))
	for i, r := range e.runners {
		s := r.h.Stats()
		s.ENOBUFS.Store(r.q.Stats().ENOBUFS)
		out[i] = s
	}
	return out
}

// Drain waits until the kernel holds no packet waiting in the queues (call
// it after removing the rules that feed them), or until ctx is done.
func (e *Engines) Drain(ctx context.Context) error {
	nums := make([]uint16, len(e.runners))
	for i, r := range e.runners {
		nums[i] = r.q.cfg.Queue
	}
	return engine.DrainQueues(ctx, nums)
}

// Stop stops reading: each queue verdicts what its socket already holds and
// sends every held verdict (waiting at most timeout), then it is unbound and
// its socket closed. Packets still in the kernel's queue then are dropped by
// the kernel: remove the rules that feed the queues and call Drain first.
func (e *Engines) Stop(timeout time.Duration) {
	if e.stopped {
		return
	}
	e.stopped = true
	e.cancel()
	done := make(chan struct{})
	go func() {
		e.done.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
	e.closeAll()
}

func (e *Engines) closeAll() {
	for _, r := range e.runners {
		_ = r.q.Close()
	}
}
