package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// ReplayOptions configure a Replayer.
type ReplayOptions struct {
	// Accepted and Dropped, when set, receive the frames of each verdict
	// (REJECT counts as dropped; fragments go with their datagram's verdict
	// only when it is known at the time they are read: held fragments are
	// written to neither).
	Accepted, Dropped *PcapWriter
	// TopN is how many sources Summary.TopDropped lists (default 10).
	TopN int
	// MaxSources bounds the per-source counters (default 65,536 sources,
	// a few MiB). Up to that many distinct sources the counts are exact;
	// when a new source finds the table full, the half of the sources with
	// the fewest dropped packets is forgotten (Summary.SourcesPruned says
	// so), which keeps the heaviest droppers of a flood from millions of
	// spoofed addresses.
	MaxSources int
}

// MaxReplaySeconds bounds the per-second picture (Summary.Seconds) to the
// first day of capture time, so that a capture whose timestamps span years
// cannot make it grow without bound; later packets are counted in
// Summary.SecondsBeyond.
const MaxReplaySeconds = 86400

// DefaultMaxSources is ReplayOptions.MaxSources' default.
const DefaultMaxSources = 1 << 16

// Replayer runs pcap files through an engine with the packets' own
// timestamps as the clock and accumulates a Summary.
type Replayer struct {
	e    *Engine
	w    *Worker
	opts ReplayOptions

	sum      Summary
	verdicts [4]VerdictCount
	reasons  [5]uint64
	states   [256]uint64 // by CTState value
	fam      [2]uint64
	secs     []SecondCount
	sources  srcTable
	startNS  int64 // first packet's time
	lastNS   int64 // latest packet time
	last     Verdict
	// The batch read ahead, the bytes of its frames and their L3 slices.
	batch [replayBatch]Frame
	offs  [replayBatch]int
	arena []byte
	l3    [][]byte
}

// NewReplayer returns a replayer over e.
func NewReplayer(e *Engine, opts ReplayOptions) *Replayer {
	if opts.TopN <= 0 {
		opts.TopN = 10
	}
	if opts.MaxSources <= 0 {
		opts.MaxSources = DefaultMaxSources
	}
	r := &Replayer{
		e:       e,
		w:       e.NewWorker(),
		opts:    opts,
		sources: newSrcTable(opts.MaxSources, rand.Uint64()),
		l3:      make([][]byte, 0, replayBatch),
	}
	for i := range r.verdicts {
		r.verdicts[i].Verdict = Action(i).String()
	}
	return r
}

// Worker returns the replayer's worker, for callers that inspect the last
// packet.
func (r *Replayer) Worker() *Worker { return r.w }

// ReplayFile replays the capture at path. A corrupt or truncated file stops
// the replay at the bad packet with an error naming it; everything read
// before it is counted.
func (r *Replayer) ReplayFile(ctx context.Context, path string) error {
	rd, err := OpenPcapFile(path)
	if err != nil {
		return err
	}
	defer rd.Close()
	err = r.Replay(ctx, rd, path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Replay replays every frame of rd; name is used in the summary.
func (r *Replayer) Replay(ctx context.Context, rd *PcapReader, name string) error {
	r.sum.Files = append(r.sum.Files, name)
	wall := time.Now()
	defer func() { r.sum.Elapsed += time.Since(wall) }()
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		k, rerr := r.readBatch(rd)
		r.prefetch(k)
		for i := 0; i < k; i++ {
			if err := r.Frame(&r.batch[i]); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// replayBatch is how many frames Replay reads ahead, so that Prefetch can
// overlap their cache misses.
const replayBatch = 16

// readBatch reads up to replayBatch frames into r.batch, copying their
// bytes (the reader reuses its buffer), and returns how many it read and
// the error that stopped it early.
func (r *Replayer) readBatch(rd *PcapReader) (int, error) {
	r.arena = r.arena[:0]
	k := 0
	var err error
	for k < replayBatch {
		f := &r.batch[k]
		if err = rd.Next(f); err != nil {
			break
		}
		r.offs[k] = len(r.arena)
		r.arena = append(r.arena, f.Data...)
		k++
	}
	// Point the frames at their copies (the arena may have moved while
	// growing, so only now).
	for i := 0; i < k; i++ {
		f := &r.batch[i]
		l3 := len(f.Data) - len(f.L3)
		f.Data = r.arena[r.offs[i] : r.offs[i]+len(f.Data) : r.offs[i]+len(f.Data)]
		if f.L3 != nil {
			f.L3 = f.Data[l3:]
		}
	}
	return k, err
}

// prefetch starts loading the conntrack state and the per-source counters
// the first k frames of the batch will need.
func (r *Replayer) prefetch(k int) {
	l3 := r.l3[:0]
	for i := 0; i < k; i++ {
		if f := &r.batch[i]; f.Skip == SkipNone && f.L3 != nil {
			l3 = append(l3, f.L3)
			r.sources.prefetch(f.L3, false)
		}
	}
	r.w.Prefetch(l3)
	for _, b := range l3 {
		r.sources.prefetch(b, true)
	}
	r.l3 = l3[:0]
}

// LastVerdict returns the verdict of the last frame given to Frame.
func (r *Replayer) LastVerdict() Verdict { return r.last }

// Frame runs one captured frame through the engine and counts it.
func (r *Replayer) Frame(f *Frame) error {
	if f.Skip != SkipNone {
		r.sum.Skipped++
		return nil
	}
	var meta packet.Meta
	f.FillMeta(&meta)
	meta.L2 = f.Data[:len(f.Data)-len(f.L3)]
	r.w.ProcessTo(f.L3, &meta, &r.last)
	v := r.last
	r.count(f, v)
	var w *PcapWriter
	switch v.Action {
	case Accept:
		w = r.opts.Accepted
	case Drop, Reject:
		w = r.opts.Dropped
	}
	if w != nil {
		if err := w.WriteFrame(f); err != nil {
			return fmt.Errorf("writing packet %d: %w", f.Num, err)
		}
	}
	return nil
}

func (r *Replayer) count(f *Frame, v Verdict) {
	p := r.w.Packet()
	s := &r.sum
	// Times compared as nanoseconds: time.Time's After and Sub cost more
	// than the rest of the counting.
	ns := f.Time.UnixNano()
	if s.Packets == 0 {
		r.startNS, r.lastNS = ns, ns
		s.First, s.Last = f.Time, f.Time
	}
	if ns > r.lastNS {
		r.lastNS = ns
		s.Last = f.Time
	}
	s.Packets++
	s.Bytes += uint64(len(f.L3))
	if v.Action == Held {
		s.Held++
		return
	}
	vc := &r.verdicts[v.Action]
	vc.Packets++
	vc.Bytes += uint64(v.Len)
	r.reasons[v.Reason]++
	if v.Reason == ReasonMalformed {
		return
	}
	if p.Family == packet.IPv6 {
		r.fam[1]++
	} else {
		r.fam[0]++
	}
	r.states[p.CTState]++

	sec := int((ns - r.startNS) / int64(time.Second))
	if sec < 0 {
		sec = 0
	}
	syn := p.Proto == packet.ProtoTCP && p.TCPFlags&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn
	if sec < MaxReplaySeconds {
		for len(r.secs) <= sec {
			r.secs = append(r.secs, SecondCount{})
		}
		sc := &r.secs[sec]
		sc.Offered++
		if syn {
			sc.OfferedSYN++
		}
		if v.Action == Accept {
			sc.Accepted++
			if syn {
				sc.AcceptedSYN++
			}
		}
	} else {
		s.SecondsBeyond++
	}
	src := r.sources.get(p.Src)
	src.Offered++
	if syn {
		src.SYNs++
	}
	if v.Action != Accept {
		src.Dropped++
	}
	if v.Action == Reject && RejectWouldReply(p, v.Result.RejectWith) {
		s.Rejects++
	}
}

// Summary returns the totals so far, with rule counters read from the
// engine's rule tables (files names the rules files, for the report).
func (r *Replayer) Summary(rules4, rules6 string) *Summary {
	s := r.sum
	s.Verdicts = nil
	for _, vc := range r.verdicts[:3] {
		s.Verdicts = append(s.Verdicts, vc)
	}
	s.States = nil
	for _, st := range []packet.CTState{packet.CTNew, packet.CTEstablished, packet.CTRelated, packet.CTInvalid, packet.CTUntracked} {
		s.States = append(s.States, StateCount{State: st.String(), Packets: r.states[st]})
	}
	rules := r.e.Rules()
	s.Families = []FamilyInfo{
		{Family: "ipv4", Rules: rules4, Packets: r.fam[0], Filtered: rules.V4 != nil},
		{Family: "ipv6", Rules: rules6, Packets: r.fam[1], Filtered: rules.V6 != nil},
	}
	s.Seconds = append([]SecondCount(nil), r.secs...)
	var top []SourceCount
	for i := range r.sources.srcs {
		if sc := &r.sources.srcs[i]; sc.Dropped > 0 {
			top = append(top, sc.public())
		}
	}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Dropped != top[j].Dropped {
			return top[i].Dropped > top[j].Dropped
		}
		return top[i].Addr.Less(top[j].Addr)
	})
	if len(top) > r.opts.TopN {
		top = top[:r.opts.TopN]
	}
	s.TopDropped = top
	s.SourcesPruned = r.sources.pruned
	s.Chains = chainCounters(rules)
	s.Malformed = r.reasons[ReasonMalformed]
	s.TableFull = r.reasons[ReasonTableFull]
	s.TTLExpired = r.reasons[ReasonTTLExpired]
	return &s
}

// chainCounters reads the live rule counters of both tables.
func chainCounters(rules Rules) []ChainCounters {
	var out []ChainCounters
	for _, x := range []struct {
		fam string
		f   packet.Family
		c   *ruleset.Compiled
	}{{"ipv4", packet.IPv4, rules.V4}, {"ipv6", packet.IPv6, rules.V6}} {
		if x.c == nil {
			continue
		}
		t := x.c.Snapshot()
		for _, ch := range ruleset.SaveOrder(t) {
			cc := ChainCounters{Family: x.fam, Chain: ch.Name, Policy: ch.Policy.String(),
				PolicyPackets: ch.Counters.Packets, PolicyBytes: ch.Counters.Bytes}
			for _, rl := range ch.Rules {
				cc.Rules = append(cc.Rules, RuleCounter{
					Rule:    ruleset.FormatRule(ch.Name, rl, x.f),
					Target:  targetName(rl),
					Packets: rl.Counters.Packets,
					Bytes:   rl.Counters.Bytes,
				})
			}
			out = append(out, cc)
		}
	}
	return out
}

func targetName(r *ruleset.Rule) string {
	switch r.Target.Kind {
	case ruleset.TargetAccept:
		return "ACCEPT"
	case ruleset.TargetDrop:
		return "DROP"
	case ruleset.TargetReturn:
		return "RETURN"
	case ruleset.TargetReject:
		return "REJECT"
	case ruleset.TargetLog:
		return "LOG"
	case ruleset.TargetJump, ruleset.TargetGoto:
		return r.Target.Chain
	}
	return ""
}
