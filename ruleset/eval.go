package ruleset

import "github.com/filterd/filterd/packet"

// action is what a matched rule tells its chain walk to do.
type action uint8

const (
	actContinue action = iota // go on with the next rule
	actDecided                // a verdict was reached
	actReturn                 // leave this chain (RETURN, or a goto that came back)
)

// Evaluate runs p through the chain of p.Meta.Hook and returns the verdict
// and what decided it. It allocates nothing and takes no global lock: rule
// and policy counters are atomics, stateful matches lock only their own
// state. The packet must have Meta.Hook, the interfaces and CTState filled
// in; Meta.Time drives limit, hashlimit and recent.
func (c *Compiled) Evaluate(p *packet.Packet) Result {
	var res Result
	c.EvaluateTo(p, &res)
	return res
}

// EvaluateTo is Evaluate writing its result to *res, field by field. The
// per-packet path uses it: a returned Result is spilled by the compiler as
// narrow stores and copied with wide loads, which stall on those stores.
func (c *Compiled) EvaluateTo(p *packet.Packet, res *Result) {
	h := p.Meta.Hook
	if h >= packet.NumHooks {
		setResult(res, VerdictAccept, 0, nil, nil, 0)
		return
	}
	ch := c.hooks[h]
	if ch == nil {
		ch = c.missing[h]
		ch.ctr.add(p.Length)
		setResult(res, VerdictAccept, 0, ch.ast, nil, 0)
		return
	}
	if c.runChain(ch, p, res) == actDecided {
		return
	}
	ch.ctr.add(p.Length)
	setResult(res, ch.policy, 0, ch.ast, nil, 0)
}

// setResult fills *res field by field (see EvaluateTo).
func setResult(res *Result, v Verdict, with RejectWith, ch *Chain, r *Rule, num int) {
	res.Verdict, res.RejectWith, res.Chain, res.Rule, res.RuleNum = v, with, ch, r, num
}

// runChain walks one chain. It returns actDecided with *res filled in, or
// actReturn/actContinue when the packet leaves the chain without a verdict.
func (c *Compiled) runChain(ch *cchain, p *packet.Packet, res *Result) action {
	if ch.idx == nil {
		for i := range ch.rules {
			r := &ch.rules[i]
			if !r.matches(p) {
				continue
			}
			if a := c.fire(r, ch, p, res); a != actContinue {
				return a
			}
		}
		return actReturn
	}
	var it candidates
	ch.idx.candidates(p, &it)
	for {
		i, ok := it.next()
		if !ok {
			return actReturn
		}
		r := &ch.rules[i]
		if !r.matches(p) {
			continue
		}
		if a := c.fire(r, ch, p, res); a != actContinue {
			return a
		}
	}
}

// fire counts a matched rule and runs its target.
func (c *Compiled) fire(r *crule, ch *cchain, p *packet.Packet, res *Result) action {
	r.ctr.add(p.Length)
	switch r.target {
	case TargetNone:
		return actContinue
	case TargetLog:
		if r.log != nil {
			r.log(r.ast, p)
		}
		return actContinue
	case TargetAccept:
		setResult(res, VerdictAccept, 0, ch.ast, r.ast, r.num)
		return actDecided
	case TargetDrop:
		setResult(res, VerdictDrop, 0, ch.ast, r.ast, r.num)
		return actDecided
	case TargetReject:
		setResult(res, VerdictReject, r.reject, ch.ast, r.ast, r.num)
		return actDecided
	case TargetReturn:
		return actReturn
	case TargetJump:
		if c.runChain(r.jump, p, res) == actDecided {
			return actDecided
		}
		return actContinue
	case TargetGoto:
		if c.runChain(r.jump, p, res) == actDecided {
			return actDecided
		}
		// The goto'd chain returned: go back to whoever called this chain.
		return actReturn
	}
	return actContinue
}
