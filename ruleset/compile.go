package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/filterd/filterd/packet"
)

// ErrUnsupported is wrapped by compile errors for rules that are valid
// iptables but use something filterd cannot enforce (for example
// --ctstatus, or -m connlimit without a connection counter).
var ErrUnsupported = errors.New("not supported by filterd")

// CompileError is one problem found while compiling a table. Compile returns
// all of them joined with errors.Join.
type CompileError struct {
	Pos Pos
	Msg string
	// Err is ErrUnsupported for valid rules filterd cannot enforce; nil for
	// errors in the rule set itself (unknown chain, jump loop, ...).
	Err error
}

// Error formats the error as the parser's diagnostics are formatted:
// "file:line:col: error: msg" (or "unsupported: msg").
func (e *CompileError) Error() string {
	sev := "error"
	if e.Err != nil {
		sev = "unsupported"
	}
	if e.Pos.Line > 0 || e.Pos.File != "" {
		return e.Pos.String() + ": " + sev + ": " + e.Msg
	}
	return sev + ": " + e.Msg
}

// Unwrap returns ErrUnsupported for unsupported options.
func (e *CompileError) Unwrap() error { return e.Err }

// ConnCounter counts tracked connections for -m connlimit. The engine
// implements it on top of its conntrack table.
type ConnCounter interface {
	// ConnCount returns the number of tracked connections whose
	// original-direction source address (dest false) or destination address
	// (dest true) lies in key, counting the connection p belongs to as the
	// kernel's nf_conncount does (it adds the packet's own connection).
	ConnCount(p *packet.Packet, key netip.Prefix, dest bool) int
}

// CompileOptions configure Compile.
type CompileOptions struct {
	// Log is called for every packet that matches a LOG rule. nil: LOG
	// rules only count.
	Log func(rule *Rule, p *packet.Packet)
	// LocalAddr reports whether an address belongs to this host, for
	// -m addrtype LOCAL. LocalPrefixes is an alternative (or addition):
	// addresses of the host given as prefixes (198.18.0.2/24 means the host
	// has 198.18.0.2, and 198.18.0.255 is its subnet broadcast).
	LocalAddr     func(netip.Addr) bool
	LocalPrefixes []netip.Prefix
	// ConnCounter serves -m connlimit; if nil, connlimit rules are an error.
	ConnCounter ConnCounter
	// State holds hashlimit tables and recent lists that outlive one
	// compiled table (rule reloads). nil: a fresh State.
	State *State
	// KeepCounters starts the live counters from the counters read from the
	// file (iptables-restore -c); otherwise they start at zero.
	KeepCounters bool
	// RecentListSize is the number of addresses each -m recent list keeps
	// (xt_recent ip_list_tot, default 100); RecentPktList the number of
	// timestamps per address (ip_pkt_list_tot, default 20). They apply to
	// lists created by this compilation.
	RecentListSize int
	RecentPktList  int

	// linearOnly disables the candidate index (tests compare both walks).
	linearOnly bool
}

// Verdict is the final decision for a packet.
type Verdict uint8

// Verdicts.
const (
	VerdictAccept Verdict = iota
	VerdictDrop
	VerdictReject
)

// String returns the verdict as iptables names it.
func (v Verdict) String() string {
	switch v {
	case VerdictAccept:
		return "ACCEPT"
	case VerdictDrop:
		return "DROP"
	case VerdictReject:
		return "REJECT"
	}
	return "VERDICT?"
}

// Result is the outcome of evaluating one packet.
type Result struct {
	Verdict Verdict
	// RejectWith is the REJECT type when Verdict is VerdictReject.
	RejectWith RejectWith
	// Chain is the chain whose rule or policy decided. For a hook whose
	// built-in chain is not in the table it is a synthetic built-in chain
	// with policy ACCEPT.
	Chain *Chain
	// Rule is the rule that decided; nil when Chain's policy decided.
	Rule *Rule
	// RuleNum is Rule's 1-based position in Chain (as iptables -L
	// --line-numbers shows it); 0 when the policy decided.
	RuleNum int
}

// ByPolicy reports whether a chain policy (not a rule) decided.
func (r Result) ByPolicy() bool { return r.Rule == nil }

// counter is a packet and byte counter updated without locks, padded to a
// cache line.
type counter struct {
	pkts, bytes atomic.Uint64
	_           [48]byte
}

func (c *counter) add(n int) {
	c.pkts.Add(1)
	c.bytes.Add(uint64(n))
}

func (c *counter) load() Counters {
	return Counters{Packets: c.pkts.Load(), Bytes: c.bytes.Load()}
}

func (c *counter) reset(to Counters) {
	c.pkts.Store(to.Packets)
	c.bytes.Store(to.Bytes)
}

// Compiled is an immutable, compiled filter table. Evaluate is safe for
// concurrent use; counters and stateful matches update in place.
type Compiled struct {
	table  *Table
	chains []*cchain // parallel to table.Chains
	hooks  [packet.NumHooks]*cchain
	// missing holds synthetic built-in chains (policy ACCEPT) for hooks
	// whose chain is not in the table.
	missing [packet.NumHooks]*cchain
	keep    bool
	state   *State
	nrules  int
	// recentHits is, while compiling, the largest --hitcount per recent list.
	recentHits map[string]int
}

// cchain is a compiled chain.
type cchain struct {
	ast     *Chain
	builtin bool
	policy  Verdict
	rules   []crule
	idx     *chainIndex // nil: linear scan
	ctr     *counter
}

// crule is a compiled rule.
type crule struct {
	ast *Rule
	num int // 1-based

	family   packet.Family
	protoAny bool
	proto    uint8
	protoInv bool
	src, dst addrTest
	in, out  ifaceTest
	frag     TriState

	matchers []matcher

	target TargetKind
	jump   *cchain
	reject RejectWith
	log    func(*Rule, *packet.Packet)

	// ctr lives apart from the read-mostly rule data, on its own cache
	// line, so that counting does not slow other workers reading rules.
	ctr *counter
}

// addrTest is a compiled -s/-d.
type addrTest struct {
	set bool
	all bool // /0: matches every address
	pfx netip.Prefix
	inv bool
}

func (a *addrTest) match(x netip.Addr) bool {
	if a.all {
		return !a.inv
	}
	return a.pfx.Contains(x) != a.inv
}

// ifaceTest is a compiled -i/-o.
type ifaceTest struct {
	set    bool
	name   string // without the trailing '+'
	prefix bool
	inv    bool
}

func (t *ifaceTest) match(name string) bool {
	var m bool
	if t.prefix {
		m = strings.HasPrefix(name, t.name)
	} else {
		m = name == t.name
	}
	return m != t.inv
}

// header reports whether the rule's IP-header part (-4/-6, -p, -s, -d, -i,
// -o, -f) matches.
func (r *crule) header(p *packet.Packet) bool {
	if r.family != packet.FamilyAny && r.family != p.Family {
		return false
	}
	if !r.protoAny && (p.Proto == r.proto) == r.protoInv {
		return false
	}
	if r.src.set && !r.src.match(p.Src) {
		return false
	}
	if r.dst.set && !r.dst.match(p.Dst) {
		return false
	}
	if r.in.set && !r.in.match(p.InIface) {
		return false
	}
	if r.out.set && !r.out.match(p.OutIface) {
		return false
	}
	switch r.frag {
	case True:
		if !p.Fragment {
			return false
		}
	case False:
		if p.Fragment {
			return false
		}
	}
	return true
}

// matches reports whether the whole rule matches, running its match modules
// in order (stateful ones update their state only when reached, as in the
// kernel).
func (r *crule) matches(p *packet.Packet) bool {
	if !r.header(p) {
		return false
	}
	for _, m := range r.matchers {
		if !m.match(p) {
			return false
		}
	}
	return true
}

// Table returns the table c was compiled from. It must not be modified.
func (c *Compiled) Table() *Table { return c.table }

// State returns the State holding c's hashlimit tables and recent lists.
func (c *Compiled) State() *State { return c.state }

// NumRules returns the number of rules in c.
func (c *Compiled) NumRules() int { return c.nrules }

// linearMax is the rule count up to which a chain is scanned linearly;
// longer chains get a candidate index.
const linearMax = 8

// Compile turns a parsed table into an immutable compiled table. All errors
// are returned at once (errors.Join of *CompileError); errors for valid but
// unenforceable options wrap ErrUnsupported.
//
// Evaluation follows the kernel's ipt_do_table: the first matching rule
// decides; LOG and rules without a target count and go on; a jump returns
// to the next rule when the user chain RETURNs or ends; a goto's chain
// returns to the caller of the chain that did the goto; a built-in chain
// ends in its policy; a hook whose built-in chain is not in the table
// accepts. Any jump/goto cycle is refused. Rule counters count every match
// (jumps, LOG and counting rules included); chain counters count policy
// decisions.
//
// Where filterd differs from the kernel, or cannot see what it sees:
//   - hashlimit: a full table (--hashlimit-htable-max) evicts its least
//     recently used bucket (expired ones first) where the kernel drops the
//     packet; expired buckets are renewed when next used rather than by a
//     garbage collector every --hashlimit-htable-gcinterval; byte mode uses
//     a bucket of one second of the rate plus --hashlimit-burst bytes.
//   - limit/hashlimit clocks are the packets' timestamps and never go back.
//   - addrtype: LOCAL from CompileOptions, BROADCAST from 255.255.255.255,
//     0.0.0.0/8 and the broadcast address of local IPv4 prefixes; no routing
//     table, so BLACKHOLE, UNREACHABLE, PROHIBIT, THROW, NAT and XRESOLVE
//     never match and --limit-iface-in/out are ignored.
//   - conntrack: --ctstatus is unsupported (the packet view has no status);
//     without NAT the reply tuple is the original one reversed.
//   - recent: lists hold DefaultRecentListSize addresses (ip_list_tot) and
//     grow their per-address history to the largest --hitcount, as current
//     kernels do.
func Compile(t *Table, opts CompileOptions) (*Compiled, error) {
	if t == nil {
		return nil, errors.New("compile: nil table")
	}
	if opts.State == nil {
		opts.State = NewState()
	}
	c := &Compiled{table: t, keep: opts.KeepCounters, state: opts.State}
	var errs []error
	fail := func(pos Pos, unsupported bool, format string, args ...any) {
		e := &CompileError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
		if unsupported {
			e.Err = ErrUnsupported
		}
		errs = append(errs, e)
	}

	byName := make(map[string]*cchain, len(t.Chains))
	c.chains = make([]*cchain, len(t.Chains))
	for i, ch := range t.Chains {
		cc := &cchain{ast: ch, builtin: ch.Builtin, policy: VerdictAccept, ctr: new(counter)}
		if ch.Policy == PolicyDrop {
			cc.policy = VerdictDrop
		}
		if c.keep {
			cc.ctr.reset(ch.Counters)
		}
		if _, dup := byName[ch.Name]; dup {
			fail(ch.Pos, false, "chain %q declared twice", ch.Name)
		}
		byName[ch.Name] = cc
		c.chains[i] = cc
		if ch.Builtin {
			h := ch.Hook
			if hh, ok := packet.ParseHook(ch.Name); ok {
				h = hh
			}
			if h < packet.NumHooks {
				c.hooks[h] = cc
			}
		}
	}
	for h := packet.Hook(0); h < packet.NumHooks; h++ {
		if c.hooks[h] == nil {
			c.missing[h] = &cchain{
				ast:     &Chain{Name: h.String(), Builtin: true, Hook: h, Policy: PolicyAccept},
				builtin: true,
				policy:  VerdictAccept,
				ctr:     new(counter),
			}
		}
	}

	c.recentHits = map[string]int{}
	for _, ch := range t.Chains {
		for _, r := range ch.Rules {
			for _, m := range r.Matches {
				if rm, ok := m.(*RecentMatch); ok {
					name := rm.Name
					if name == "" {
						name = "DEFAULT"
					}
					c.recentHits[name] = max(c.recentHits[name], int(rm.Hitcount))
				}
			}
		}
	}

	fam := t.Family
	for ci, ch := range t.Chains {
		cc := c.chains[ci]
		cc.rules = make([]crule, len(ch.Rules))
		ctrs := make([]counter, len(ch.Rules))
		for ri, r := range ch.Rules {
			cr := &cc.rules[ri]
			cr.ctr = &ctrs[ri]
			c.nrules++
			if err := c.compileRule(cr, r, ri+1, fam, byName, opts); err != nil {
				for _, e := range flatten(err) {
					errs = append(errs, e)
				}
			}
		}
	}
	if err := detectLoops(c.chains); err != nil {
		errs = append(errs, err)
	}
	c.recentHits = nil
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, cc := range c.chains {
		if len(cc.rules) > linearMax && !opts.linearOnly {
			cc.idx = buildIndex(cc.rules)
		}
	}
	return c, nil
}

// OnlyUnsupported reports whether err (as returned by Compile) consists only
// of errors for valid options filterd cannot enforce (exit status 3 rather
// than 2).
func OnlyUnsupported(err error) bool {
	if err == nil {
		return false
	}
	for _, e := range flatten(err) {
		if !errors.Is(e, ErrUnsupported) {
			return false
		}
	}
	return true
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (c *Compiled) compileRule(cr *crule, r *Rule, num int, fam packet.Family, byName map[string]*cchain, opts CompileOptions) error {
	var errs []error
	fail := func(pos Pos, unsupported bool, format string, args ...any) {
		e := &CompileError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
		if unsupported {
			e.Err = ErrUnsupported
		}
		errs = append(errs, e)
	}
	cr.ast = r
	cr.num = num
	cr.family = r.Family
	if c.keep {
		cr.ctr.reset(r.Counters)
	}
	cr.protoAny = r.Proto.Any || r.Proto.Num == 0
	cr.proto = r.Proto.Num
	cr.protoInv = r.Proto.Invert
	cr.src = compileAddr(r.Src)
	cr.dst = compileAddr(r.Dst)
	cr.in = compileIface(r.InIface)
	cr.out = compileIface(r.OutIface)
	cr.frag = r.Frag

	ruleFam := fam
	if r.Family != packet.FamilyAny {
		ruleFam = r.Family
	}
	for _, m := range r.Matches {
		mm, err := c.compileMatch(m, r, ruleFam, opts)
		if err != nil {
			fail(r.Pos, errors.Is(err, ErrUnsupported), "%v", err)
			continue
		}
		if mm != nil {
			cr.matchers = append(cr.matchers, mm)
		}
	}

	cr.target = r.Target.Kind
	cr.reject = r.Target.Reject
	pos := r.Target.Pos
	if pos.Line == 0 {
		pos = r.Pos
	}
	switch r.Target.Kind {
	case TargetNone, TargetAccept, TargetDrop, TargetReturn, TargetReject:
	case TargetLog:
		cr.log = opts.Log
	case TargetJump, TargetGoto:
		tc, ok := byName[r.Target.Chain]
		switch {
		case !ok:
			fail(pos, false, "rule jumps to unknown chain %q", r.Target.Chain)
		case tc.builtin:
			fail(pos, false, "rule jumps to built-in chain %q; only user-defined chains can be a jump target", r.Target.Chain)
		default:
			cr.jump = tc
		}
	default:
		fail(pos, true, "target kind %d is not supported", r.Target.Kind)
	}
	return errors.Join(errs...)
}

func compileAddr(a AddrMatch) addrTest {
	if !a.Prefix.IsValid() {
		return addrTest{}
	}
	p := a.Prefix.Masked()
	return addrTest{set: true, all: p.Bits() == 0, pfx: p, inv: a.Invert}
}

func compileIface(m IfaceMatch) ifaceTest {
	if m.Name == "" {
		return ifaceTest{}
	}
	if strings.HasSuffix(m.Name, "+") {
		return ifaceTest{set: true, name: strings.TrimSuffix(m.Name, "+"), prefix: true, inv: m.Invert}
	}
	return ifaceTest{set: true, name: m.Name, inv: m.Invert}
}

// detectLoops rejects any cycle of jumps and gotos between chains, as
// iptables-restore does ("too many levels of symbolic links").
func detectLoops(chains []*cchain) error {
	const (
		white = iota
		grey
		black
	)
	color := make(map[*cchain]int, len(chains))
	var path []*cchain
	var visit func(c *cchain) error
	visit = func(c *cchain) error {
		color[c] = grey
		path = append(path, c)
		for i := range c.rules {
			r := &c.rules[i]
			if r.jump == nil {
				continue
			}
			switch color[r.jump] {
			case grey:
				var names []string
				start := 0
				for j, pc := range path {
					if pc == r.jump {
						start = j
					}
				}
				for _, pc := range path[start:] {
					names = append(names, pc.ast.Name)
				}
				names = append(names, r.jump.ast.Name)
				return &CompileError{Pos: r.ast.Pos, Msg: fmt.Sprintf("jump loop: %s", strings.Join(names, " -> "))}
			case white:
				if err := visit(r.jump); err != nil {
					return err
				}
			}
		}
		path = path[:len(path)-1]
		color[c] = black
		return nil
	}
	for _, c := range chains {
		if color[c] == white {
			if err := visit(c); err != nil {
				return err
			}
		}
	}
	return nil
}
