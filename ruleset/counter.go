package ruleset

import "github.com/filterd/filterd/packet"

// Snapshot returns a copy of the compiled table's Table with the live
// counters filled into every Rule and Chain (chain Counters are the policy
// counters), ready for save -c. The table's chains come first, in their
// order; then, in hook order, the table's built-in chains that the rules did
// not name, with policy ACCEPT and their counters, as the kernel always has
// them (iptables-save prints :INPUT, :FORWARD and :OUTPUT for every filter
// table). Matches and targets are shared with the original table and must
// not be modified. Counters of rules matched while the snapshot is taken may
// be read in any order (each counter is consistent on its own, as with
// iptables -L -v -x on a busy host).
func (c *Compiled) Snapshot() *Table {
	t := &Table{Name: c.table.Name, Family: c.table.Family, Chains: make([]*Chain, len(c.chains), len(c.chains)+3)}
	for i, cc := range c.chains {
		ch := *cc.ast
		ch.Counters = cc.ctr.load()
		ch.Rules = make([]*Rule, len(cc.rules))
		for j := range cc.rules {
			r := *cc.rules[j].ast
			r.Counters = cc.rules[j].ctr.load()
			ch.Rules[j] = &r
		}
		t.Chains[i] = &ch
	}
	for h, cc := range c.missing {
		if cc != nil && tableHasHook(c.table.Name, packet.Hook(h)) {
			ch := *cc.ast
			ch.Counters = cc.ctr.load()
			t.Chains = append(t.Chains, &ch)
		}
	}
	return t
}

// tableHasHook reports whether the kernel's table name has a built-in chain
// at hook h (iptable_filter: INPUT, FORWARD, OUTPUT; raw: PREROUTING,
// OUTPUT; nat: all but FORWARD; mangle: all).
func tableHasHook(name string, h packet.Hook) bool {
	switch name {
	case "raw":
		return h == packet.HookPreRouting || h == packet.HookOutput
	case "nat":
		return h != packet.HookForward
	case "mangle":
		return true
	}
	return h == packet.HookInput || h == packet.HookForward || h == packet.HookOutput
}

// ChainCounters returns the live policy counters of the chain name and
// whether it exists (a built-in chain missing from the table exists with
// policy ACCEPT).
func (c *Compiled) ChainCounters(name string) (Counters, bool) {
	for _, cc := range c.chains {
		if cc.ast.Name == name {
			return cc.ctr.load(), true
		}
	}
	for _, cc := range c.missing {
		if cc != nil && cc.ast.Name == name {
			return cc.ctr.load(), true
		}
	}
	return Counters{}, false
}

// RuleCounters returns the live counters of rule num (1-based) of chain name.
func (c *Compiled) RuleCounters(chain string, num int) (Counters, bool) {
	for _, cc := range c.chains {
		if cc.ast.Name == chain {
			if num < 1 || num > len(cc.rules) {
				return Counters{}, false
			}
			return cc.rules[num-1].ctr.load(), true
		}
	}
	return Counters{}, false
}

// ResetCounters sets every rule and policy counter to zero (iptables -Z).
func (c *Compiled) ResetCounters() {
	for _, cc := range c.chains {
		cc.ctr.reset(Counters{})
		for j := range cc.rules {
			cc.rules[j].ctr.reset(Counters{})
		}
	}
	for _, cc := range c.missing {
		if cc != nil {
			cc.ctr.reset(Counters{})
		}
	}
}
