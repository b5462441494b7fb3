package engine

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// Rules are the compiled rule tables the engine applies: iptables' IPv4
// table and ip6tables' IPv6 table. A nil table lets that family pass
// unfiltered (still tracked and counted).
type Rules struct {
	V4, V6 *ruleset.Compiled
}

func (r *Rules) forFamily(f packet.Family) *ruleset.Compiled {
	if f == packet.IPv6 {
		return r.V6
	}
	return r.V4
}

// Config configures an Engine.
type Config struct {
	Rules     Rules
	Conntrack *conntrack.Table
	// Local holds the protected host's addresses (as prefixes: a /32 or /128
	// for a single address). When it is non-empty the engine picks each
	// packet's hook itself, as the kernel's routing would: to a local address
	// INPUT, from one OUTPUT, both (loopback) OUTPUT then INPUT, else FORWARD.
	// When it is empty the hook and interfaces come with the packet (NFQUEUE),
	// unless Route is set.
	Local []netip.Prefix
	// Route makes the engine pick hooks as a router would even when Local
	// is empty: every packet is then forwarded (pcap replay sets it). A
	// non-empty Local implies it. Forwarded packets are judged as the
	// kernel's ip_forward / ip6_forward pass them to the FORWARD hook: with
	// the TTL / hop limit already decremented, and not at all when it would
	// run out.
	Route bool
	// InIface is the interface packets arrive on when the engine picks the
	// hook (default "eth0"), and the one OUTPUT packets leave by.
	InIface string
	// FwdOutIface is the interface forwarded packets leave by (default "eth1").
	FwdOutIface string
	// SweepEvery is how many packets a worker handles between incremental
	// conntrack sweeps (default 64); SweepBudget how many entries a sweep
	// examines (default 64).
	SweepEvery  int
	SweepBudget int
	// Logger receives operational messages (not LOG target lines).
	Logger *slog.Logger
}

// Engine is filterd's packet pipeline: decode → track → match → verdict. It
// is safe for concurrent use through one Worker per goroutine; the rule
// tables can be swapped atomically while workers run.
type Engine struct {
	cfg   Config
	local localSet
	rules atomic.Pointer[Rules]
}

// New returns an engine. cfg.Conntrack is required.
func New(cfg Config) (*Engine, error) {
	if cfg.Conntrack == nil {
		return nil, errors.New("engine: a conntrack table is required")
	}
	if len(cfg.Local) > 0 {
		cfg.Route = true
	}
	if cfg.InIface == "" {
		cfg.InIface = "eth0"
	}
	if cfg.FwdOutIface == "" {
		cfg.FwdOutIface = "eth1"
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 64
	}
	if cfg.SweepBudget <= 0 {
		cfg.SweepBudget = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, local: newLocalSet(cfg.Local)}
	r := cfg.Rules
	e.rules.Store(&r)
	return e, nil
}

// SetRules atomically replaces the rule tables. Packets being evaluated
// finish with the tables they started with.
func (e *Engine) SetRules(r Rules) { e.rules.Store(&r) }

// Rules returns the rule tables in force.
func (e *Engine) Rules() Rules { return *e.rules.Load() }

// Conntrack returns the engine's connection tracking table.
func (e *Engine) Conntrack() *conntrack.Table { return e.cfg.Conntrack }

// isLocal reports whether a belongs to the protected host.
func (e *Engine) isLocal(a netip.Addr) bool { return e.local.contains(a) }

// localSet is Config.Local prepared for a test per packet address: IPv4
// prefixes as masked 32-bit words (no netip.Prefix.Contains per packet).
type localSet struct {
	v4 []v4Net
	v6 []netip.Prefix
}

type v4Net struct{ net, mask uint32 }

func newLocalSet(pfx []netip.Prefix) localSet {
	var s localSet
	for _, p := range pfx {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		if p.Addr().Is4() {
			b := p.Addr().As4()
			mask := ^uint32(0)
			if p.Bits() < 32 {
				mask = ^(^uint32(0) >> p.Bits())
			}
			s.v4 = append(s.v4, v4Net{net: binary.BigEndian.Uint32(b[:]), mask: mask})
		} else {
			s.v6 = append(s.v6, p)
		}
	}
	return s
}

func (s *localSet) contains(a netip.Addr) bool {
	if a.Is4() {
		b := a.As4()
		w := binary.BigEndian.Uint32(b[:])
		for _, n := range s.v4 {
			if w&n.mask == n.net {
				return true
			}
		}
		return false
	}
	for _, p := range s.v6 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Action is what happens to a packet.
type Action uint8

// Actions.
const (
	// Accept lets the packet pass.
	Accept Action = iota
	// Drop discards it.
	Drop
	// Reject discards it and answers with Verdict.Result.RejectWith.
	Reject
	// Held means the packet is a fragment kept for reassembly; the
	// reassembled datagram gets the verdict when it is complete.
	Held
)

var actionNames = [...]string{"ACCEPT", "DROP", "REJECT", "HELD"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "ACTION?"
}

// Reason says why a packet got its action, beyond the rules.
type Reason uint8

// Reasons.
const (
	ReasonRules      Reason = iota // a rule or chain policy decided
	ReasonMalformed                // the IP header was unusable: the kernel's IP layer drops it before netfilter
	ReasonTableFull                // conntrack table full and nothing evictable (the kernel drops it)
	ReasonFragment                 // fragment held or dropped by reassembly
	ReasonTTLExpired               // forwarded with TTL/hop limit <= 1: ip_forward drops it before FORWARD
)

// Verdict is the engine's decision for one packet.
type Verdict struct {
	// (Nine scalar fields at most, Result's included, so that a Verdict is
	// returned in registers.)
	Action Action
	Reason Reason
	// Hook is the hook whose chain decided (the last one, for loopback).
	Hook packet.Hook
	// Result is the rule evaluation's outcome when Reason is ReasonRules and
	// the family has rules; Result.Chain is nil when the family passed
	// unfiltered.
	Result ruleset.Result
	// Len is the packet's L3 length (of the reassembled datagram for
	// fragments), as the kernel's byte counters count it.
	Len int
}

// Worker processes packets for one goroutine. It owns the decoder, the
// packet view and the reassembly state; it allocates nothing per packet.
type Worker struct {
	e      *Engine
	dec    *Decoder
	defrag *Defrag
	pkt    packet.Packet
	// sweepIn counts packets down to the next incremental conntrack sweep
	// (every cfg.SweepEvery packets, without a division per packet).
	sweepIn int
	// pf holds the flow hashes of the batch being prefetched.
	pf [PrefetchMax]conntrack.Hash
}

// NewWorker returns a worker bound to e.
func (e *Engine) NewWorker() *Worker {
	w := &Worker{e: e, dec: NewDecoder(), defrag: NewDefrag(DefragConfig{}), sweepIn: e.cfg.SweepEvery}
	w.pkt.ExtHeaders = make([]uint8, 0, maxExtHeaders)
	w.pkt.Reset()
	return w
}

// Packet returns the decoded view of the packet last processed (valid until
// the next call to Process).
func (w *Worker) Packet() *packet.Packet { return &w.pkt }

// Process runs one packet (raw L3 bytes, IPv4 or IPv6) through the pipeline
// and returns its verdict. meta.Time is the clock for conntrack timeouts and
// rate limits. data is only read, and only during the call.
func (w *Worker) Process(data []byte, meta packet.Meta) (v Verdict) {
	w.ProcessTo(data, &meta, &v)
	return v
}

// ProcessTo is Process with the metadata passed and the verdict returned
// through pointers, for packet sources' loops: a Verdict or Meta passed by
// value is copied with wide loads of fields just written one by one, and
// such a load waits until those stores reach the cache (store forwarding
// fails). *meta is only read, and only during the call.
func (w *Worker) ProcessTo(data []byte, meta *packet.Meta, v *Verdict) {
	p := &w.pkt
	setMeta(&p.Meta, meta) // Decode resets every other field
	err := w.dec.Decode(data, p)
	if err != nil && isL3Error(err) {
		*v = Verdict{Action: Drop, Reason: ReasonMalformed, Len: len(data)}
		return
	}
	if p.MoreFrags || p.FragOffset != 0 {
		res := w.defrag.Add(p)
		switch res.Verdict {
		case FragQueued:
			*v = Verdict{Action: Held, Reason: ReasonFragment, Len: len(data)}
			return
		case FragDropped:
			*v = Verdict{Action: Drop, Reason: ReasonFragment, Len: len(data)}
			return
		case FragReassembled:
			setMeta(&p.Meta, meta)
			if err = w.dec.Decode(res.Datagram, p); err != nil && isL3Error(err) {
				*v = Verdict{Action: Drop, Reason: ReasonMalformed, Len: len(res.Datagram)}
				return
			}
		}
	}
	if err != nil {
		// The IP header was usable but the transport header was not: the
		// kernel's conntrack calls such a packet INVALID; the rules still see it.
		p.Truncated = true
	}
	if w.sweepIn--; w.sweepIn == 0 {
		w.sweepIn = w.e.cfg.SweepEvery
		w.e.cfg.Conntrack.Sweep(meta.Time, w.e.cfg.SweepBudget)
	}
	w.decide(p, v)
}

// setMeta copies m into dst field by field: a struct copy moves it with
// wide loads, which stall on the caller's narrow stores of the same fields
// (store forwarding fails), a few per packet.
func setMeta(dst, m *packet.Meta) {
	dst.Time = m.Time
	dst.Hook = m.Hook
	dst.InIface = m.InIface
	dst.OutIface = m.OutIface
	dst.Mark = m.Mark
	dst.UID, dst.GID, dst.HasOwner = m.UID, m.GID, m.HasOwner
	// SrcMAC is 6 bytes, copied as a 4-byte and a 2-byte load; the first
	// straddles the 8-byte stores that zero a Meta built as a literal, and
	// waits for them to reach the cache. It is read only when it is valid.
	dst.SrcMAC, dst.HasMAC = [6]byte{}, m.HasMAC
	if m.HasMAC {
		dst.SrcMAC = m.SrcMAC
	}
	dst.L2 = m.L2
	dst.PktType = m.PktType
	dst.Local = m.Local
}

// decide tracks and matches a decoded packet and writes its verdict to *v.
// Results travel through pointers and are written field by field: the
// compiler spills a returned struct as narrow stores and copies it with wide
// loads, which stall on those stores (store forwarding fails), twice per
// packet when decide and Evaluate returned their results.
func (w *Worker) decide(p *packet.Packet, v *Verdict) {
	e := w.e
	hooks := [2]packet.Hook{p.Hook, packet.NumHooks}
	if e.cfg.Route {
		srcLocal, dstLocal := e.isLocal(p.Src), e.isLocal(p.Dst)
		switch {
		case srcLocal && dstLocal:
			hooks = [2]packet.Hook{packet.HookOutput, packet.HookInput}
			p.Local = true
		case dstLocal:
			hooks[0] = packet.HookInput
		case srcLocal:
			hooks[0] = packet.HookOutput
			p.Local = true
		default:
			hooks[0] = packet.HookForward
		}
	}
	ref := e.cfg.Conntrack.Track(p)
	// Every field of v is written on every path (callers reuse v from
	// packet to packet), one by one.
	v.Hook, v.Len, v.Reason = hooks[0], p.Length, ReasonRules
	if ref.MustDrop() {
		ref.Drop()
		v.Action, v.Reason, v.Result = Drop, ReasonTableFull, ruleset.Result{}
		return
	}
	if hooks[0] == packet.HookForward && e.cfg.Route {
		if p.TTL <= 1 {
			// The kernel's ip_forward / ip6_forward drop a packet whose TTL or
			// hop limit runs out (and answer Time Exceeded) after PREROUTING's
			// conntrack saw it and before the FORWARD hook: no FORWARD rule or
			// policy counts it, and its conntrack entry is never confirmed.
			ref.Drop()
			v.Action, v.Reason, v.Result = Drop, ReasonTTLExpired, ruleset.Result{}
			return
		}
		// They decrement it before the FORWARD hook: -m ttl, -m hl and LOG
		// there see the decremented value.
		p.TTL--
	}
	rules := e.rules.Load().forFamily(p.Family)
	res := &v.Result
	if rules == nil {
		// The family passes unfiltered (EvaluateTo writes every field
		// otherwise).
		*res = ruleset.Result{Verdict: ruleset.VerdictAccept}
	}
	for _, h := range hooks {
		if h == packet.NumHooks {
			break
		}
		if e.cfg.Route {
			e.setIfaces(p, h, hooks[1] != packet.NumHooks)
		}
		p.Hook = h
		v.Hook = h
		if rules == nil {
			continue
		}
		rules.EvaluateTo(p, res)
		if res.Verdict != ruleset.VerdictAccept {
			break
		}
		if h == packet.HookOutput && hooks[1] == packet.HookInput {
			// Loopback: the kernel confirms the entry in POSTROUTING, before
			// the packet comes back in on lo; a drop in INPUT leaves it.
			ref.Confirm(p)
			ref = conntrack.Ref{}
		}
	}
	switch res.Verdict {
	case ruleset.VerdictAccept:
		v.Action = Accept
		ref.Confirm(p)
	case ruleset.VerdictReject:
		v.Action = Reject
		ref.Drop()
	default:
		v.Action = Drop
		ref.Drop()
	}
}

// setIfaces fills the interfaces a packet has at hook h when the engine picks
// hooks itself.
func (e *Engine) setIfaces(p *packet.Packet, h packet.Hook, loopback bool) {
	switch {
	case loopback && h == packet.HookOutput:
		p.InIface, p.OutIface = "", "lo"
	case loopback:
		p.InIface, p.OutIface = "lo", ""
	case h == packet.HookInput:
		p.InIface, p.OutIface = e.cfg.InIface, ""
	case h == packet.HookOutput:
		p.InIface, p.OutIface = "", e.cfg.InIface
	default:
		p.InIface, p.OutIface = e.cfg.InIface, e.cfg.FwdOutIface
	}
}

// isL3Error reports whether a decode error is in the IP header itself: the
// kernel's IP layer (ip_rcv, ipv6_rcv) drops such packets before netfilter's
// hooks, so they reach neither conntrack nor the rules.
func isL3Error(err error) bool {
	var de *DecodeError
	if !errors.As(err, &de) {
		return true
	}
	switch de.Layer {
	case "ip", "ipv4", "ipv6":
		return true
	}
	return false
}
