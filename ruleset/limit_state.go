package ruleset

import "sync"

// State holds the state of -m hashlimit tables and -m recent lists that
// outlives one compiled table: pass the same State in CompileOptions when
// recompiling (a rule reload) and tables with the same name and parameters,
// and lists with the same name, keep their buckets and addresses. It is
// locked only while compiling, never per packet.
type State struct {
	mu        sync.Mutex
	hashlimit map[hashlimitConfig]*hashTable
	recent    map[string]*recentList
}

// NewState returns an empty State.
func NewState() *State {
	return &State{hashlimit: map[hashlimitConfig]*hashTable{}, recent: map[string]*recentList{}}
}

func (s *State) hashTable(cfg hashlimitConfig) *hashTable {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.hashlimit[cfg]
	if !ok {
		t = newHashTable(cfg)
		s.hashlimit[cfg] = t
	}
	return t
}

// recentList returns the list name, creating it with room for size
// addresses of pkts timestamps each.
func (s *State) recentList(name string, size, pkts int) *recentList {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.recent[name]
	if !ok || l.pkts < pkts {
		// New, or it must remember more packets per address than it can:
		// start it anew, as reloading xt_recent with a larger
		// ip_pkt_list_tot would.
		l = newRecentList(name, size, pkts)
		s.recent[name] = l
	}
	return l
}

// HashlimitLen returns the number of buckets in the hashlimit tables named
// name (all parameter sets), or -1 if there is none.
func (s *State) HashlimitLen(name string) int {
	s.mu.Lock()
	var ts []*hashTable
	for cfg, t := range s.hashlimit {
		if cfg.name == name {
			ts = append(ts, t)
		}
	}
	s.mu.Unlock()
	if len(ts) == 0 {
		return -1
	}
	n := 0
	for _, t := range ts {
		n += t.Len()
	}
	return n
}

// RecentLen returns the number of addresses in the recent list name, or -1
// if there is none.
func (s *State) RecentLen(name string) int {
	s.mu.Lock()
	l := s.recent[name]
	s.mu.Unlock()
	if l == nil {
		return -1
	}
	return l.Len()
}

// Prune drops the tables and lists that none of keep uses (call it after a
// reload with the new compiled table).
func (s *State) Prune(keep ...*Compiled) {
	usedH := map[*hashTable]bool{}
	usedR := map[*recentList]bool{}
	for _, c := range keep {
		if c == nil {
			continue
		}
		for _, ch := range c.chains {
			for i := range ch.rules {
				for _, m := range ch.rules[i].matchers {
					switch m := m.(type) {
					case *hashlimitMatcher:
						usedH[m.t] = true
					case *recentMatcher:
						usedR[m.l] = true
					}
				}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.hashlimit {
		if !usedH[t] {
			delete(s.hashlimit, k)
		}
	}
	for k, l := range s.recent {
		if !usedR[l] {
			delete(s.recent, k)
		}
	}
}
