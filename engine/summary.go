package engine

import (
	"net/netip"
	"time"
)

// Summary is what a replay reports: verdict totals, per-rule counters, conntrack
// state counts, the SYN-flood picture and the top dropped sources. It is
// plain data, printed as text, JSON or an HTML report by the CLI.
type Summary struct {
	Files    []string       `json:"files"`
	Packets  uint64         `json:"packets"`
	Bytes    uint64         `json:"bytes"`
	First    time.Time      `json:"first"`
	Last     time.Time      `json:"last"`
	Elapsed  time.Duration  `json:"elapsed_ns"` // wall-clock time the replay took
	Skipped  uint64         `json:"skipped"`    // non-IP frames (ARP, STP, ...)
	Held     uint64         `json:"held"`       // fragments still waiting for reassembly at the end
	Verdicts []VerdictCount `json:"verdicts"`
	States   []StateCount   `json:"states"`
	// Families says per family whether rules were loaded ("filtered") or the
	// family passed unfiltered but tracked.
	Families []FamilyInfo `json:"families"`
	// Seconds is the per-second picture, indexed from First, for the first
	// MaxReplaySeconds; SecondsBeyond counts the packets after that.
	Seconds       []SecondCount `json:"seconds"`
	SecondsBeyond uint64        `json:"seconds_beyond,omitempty"`
	// TopDropped lists the sources with the most dropped packets.
	TopDropped []SourceCount `json:"top_dropped"`
	// SourcesPruned counts per-source entries forgotten to keep the table
	// within ReplayOptions.MaxSources; when it is not zero TopDropped may
	// undercount (see MaxSources).
	SourcesPruned uint64 `json:"sources_pruned,omitempty"`
	// Chains holds the rule counters after the replay, per family.
	Chains []ChainCounters `json:"chains"`
	// Rejects counts the replies REJECT would have sent.
	Rejects uint64 `json:"rejects"`
	// Logged counts LOG lines written.
	Logged uint64 `json:"logged"`
	// Malformed counts packets whose IP header was unusable (the kernel's IP
	// layer drops them before netfilter sees them).
	Malformed uint64 `json:"malformed"`
	// TableFull counts packets dropped because the conntrack table was full.
	TableFull uint64 `json:"table_full"`
	// TTLExpired counts packets to be forwarded with a TTL or hop limit of 1
	// or less: the kernel drops them before the FORWARD chain.
	TTLExpired uint64 `json:"ttl_expired"`
	// Error is set when the replay stopped early (e.g. a corrupt pcap); the
	// counts above are those of the packets before it.
	Error string `json:"error,omitempty"`
}

// VerdictCount is a packet and byte total for one verdict.
type VerdictCount struct {
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// StateCount counts packets by the conntrack state they were given.
type StateCount struct {
	State   string `json:"state"`
	Packets uint64 `json:"packets"`
}

// FamilyInfo says how one address family was handled.
type FamilyInfo struct {
	Family   string `json:"family"`
	Rules    string `json:"rules,omitempty"` // rules file, empty when unfiltered
	Packets  uint64 `json:"packets"`
	Filtered bool   `json:"filtered"`
}

// SecondCount is the traffic of one second of packet time.
type SecondCount struct {
	Offered     uint64 `json:"offered"`
	Accepted    uint64 `json:"accepted"`
	OfferedSYN  uint64 `json:"offered_syn"`
	AcceptedSYN uint64 `json:"accepted_syn"`
}

// SourceCount is one source address with its offered and dropped packets.
type SourceCount struct {
	Addr    netip.Addr `json:"addr"`
	Offered uint64     `json:"offered"`
	Dropped uint64     `json:"dropped"`
	SYNs    uint64     `json:"syns"`
}

// ChainCounters are a chain's policy and rule counters after a replay.
type ChainCounters struct {
	Family        string        `json:"family"`
	Chain         string        `json:"chain"`
	Policy        string        `json:"policy"`
	PolicyPackets uint64        `json:"policy_packets"`
	PolicyBytes   uint64        `json:"policy_bytes"`
	Rules         []RuleCounter `json:"rules"`
}

// RuleCounter is one rule's counters and its iptables-save text.
type RuleCounter struct {
	Rule    string `json:"rule"`
	Target  string `json:"target"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}
