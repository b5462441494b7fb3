package ruleset

import (
	"fmt"
	"net/netip"

	"github.com/filterd/filterd/packet"
)

// This file holds the parsed form of an iptables-restore file: tables, chains,
// rules, matches and targets as data. The parser (parse.go) produces it, the
// printer (save.go) prints it back in iptables-save form, and the compiler
// (compile.go) turns a Table into an immutable matching structure.

// Pos is a place in a rules file: 1-based line and column.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string {
	if p.Col > 0 {
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Counters are a packet and byte count, as in iptables-save -c "[pkts:bytes]".
type Counters struct {
	Packets uint64
	Bytes   uint64
}

// File is one parsed rules file.
type File struct {
	Name   string
	Family packet.Family // family the file was read as (IPv4 unless -6)
	// Filter is the *filter table; nil if the file has none.
	Filter *Table
	// Skipped lists other tables (*nat, *mangle, *raw, *security) that were
	// read and left to the kernel.
	Skipped []SkippedTable
}

// SkippedTable is a table section filterd does not implement.
type SkippedTable struct {
	Name string
	Pos  Pos
}

// Table is a netfilter table with its chains.
type Table struct {
	Name   string
	Family packet.Family
	// Chains in iptables-save order: built-in chains first in hook order, then
	// user chains in the order they were declared.
	Chains []*Chain
}

// Chain returns the chain with the given name, or nil.
func (t *Table) Chain(name string) *Chain {
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Policy is a built-in chain's policy.
type Policy uint8

// Chain policies. PolicyNone is a user chain's "-".
const (
	PolicyNone Policy = iota
	PolicyAccept
	PolicyDrop
)

func (p Policy) String() string {
	switch p {
	case PolicyAccept:
		return "ACCEPT"
	case PolicyDrop:
		return "DROP"
	}
	return "-"
}

// Chain is a built-in or user-defined chain.
type Chain struct {
	Name     string
	Builtin  bool
	Hook     packet.Hook // valid when Builtin
	Policy   Policy
	Counters Counters // policy counters as read from the file
	Rules    []*Rule
	Pos      Pos // where it was declared
}

// Rule is one rule (one line of "-A CHAIN ..."; comma lists in -s/-d expand
// into several rules as iptables-restore expands them).
type Rule struct {
	Pos      Pos
	Counters Counters // "[pkts:bytes]" prefix or -c, as read
	// Family restricts the rule to one family when the line had a -4/-6 prefix.
	Family packet.Family

	Proto    ProtoMatch
	Src, Dst AddrMatch
	InIface  IfaceMatch
	OutIface IfaceMatch
	// Frag is -f (non-first fragments only) or ! -f.
	Frag TriState

	// Matches are the -m modules and implicit protocol matches, in order.
	Matches []Match
	Target  Target
}

// TriState is an optional boolean test: unset, must be true, must be false.
type TriState uint8

// TriState values.
const (
	Unset TriState = iota
	True
	False
)

// ProtoMatch is -p. Any is true for "all"/0 or when -p is absent.
type ProtoMatch struct {
	Any    bool
	Num    uint8
	Invert bool
}

// AddrMatch is -s or -d. An invalid Prefix means any address.
type AddrMatch struct {
	Prefix netip.Prefix
	Invert bool
}

// IfaceMatch is -i or -o. An empty Name means any interface; a trailing '+'
// in Name matches every interface with that prefix.
type IfaceMatch struct {
	Name   string
	Invert bool
}

// Match is one match module of a rule.
type Match interface {
	// Module is the iptables module name, as after -m ("tcp", "state", ...).
	Module() string
}

// PortMatch is one port or a port range; Set is false when absent.
type PortMatch struct {
	Set    bool
	Lo, Hi uint16
	Invert bool
}

// TCPFlagsMatch is --tcp-flags MASK COMP (--syn is SYN,RST,ACK,FIN SYN).
type TCPFlagsMatch struct {
	Set    bool
	Mask   uint8
	Comp   uint8
	Invert bool
}

// TCPMatch is -m tcp (or -p tcp with tcp options).
type TCPMatch struct {
	Sport, Dport PortMatch
	Flags        TCPFlagsMatch
	// Option is --tcp-option N.
	Option       uint8
	OptionSet    bool
	OptionInvert bool
}

// Module implements Match.
func (*TCPMatch) Module() string { return "tcp" }

// UDPMatch is -m udp.
type UDPMatch struct {
	Sport, Dport PortMatch
}

// Module implements Match.
func (*UDPMatch) Module() string { return "udp" }

// PortRange is an inclusive port range; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

// MultiportDir says which ports -m multiport compares.
type MultiportDir uint8

// Multiport directions.
const (
	MultiportSrc  MultiportDir = iota // --sports
	MultiportDst                      // --dports
	MultiportBoth                     // --ports
)

// MultiportMatch is -m multiport (at most 15 ports, a range counting as two).
type MultiportMatch struct {
	Dir    MultiportDir
	Ports  []PortRange
	Invert bool
}

// Module implements Match.
func (*MultiportMatch) Module() string { return "multiport" }

// ICMPMatch is -m icmp --icmp-type (Any for "any"), or -m icmp6
// --icmpv6-type when V6 is set. Codes are an inclusive range: a type without a
// code matches every code (0..255).
type ICMPMatch struct {
	V6     bool
	Any    bool
	Type   uint8
	CodeLo uint8
	CodeHi uint8
	Invert bool
}

// Module implements Match.
func (m *ICMPMatch) Module() string {
	if m.V6 {
		return "icmp6"
	}
	return "icmp"
}

// StateMatch is -m state --state, or the --ctstate part of -m conntrack.
type StateMatch struct {
	States packet.CTState
	Invert bool
}

// Module implements Match.
func (*StateMatch) Module() string { return "state" }

// ConntrackMatch is -m conntrack. Fields other than the state are optional.
type ConntrackMatch struct {
	State    StateMatch
	HasState bool

	Proto       uint8
	HasProto    bool
	ProtoInvert bool

	OrigSrc, OrigDst AddrMatch // invalid prefix: absent
	ReplSrc, ReplDst AddrMatch
	OrigSrcPort      PortMatch
	OrigDstPort      PortMatch
	ReplSrcPort      PortMatch
	ReplDstPort      PortMatch
	Status           uint8 // bit set of CTStatus*
	StatusInvert     bool
	HasStatus        bool
	Dir              packet.CTDir
	HasDir           bool
}

// Conntrack status bits for --ctstatus.
const (
	CTStatusExpected uint8 = 1 << iota
	CTStatusSeenReply
	CTStatusAssured
	CTStatusConfirmed
)

// Module implements Match.
func (*ConntrackMatch) Module() string { return "conntrack" }

// RateUnit is the time unit of a --limit style rate.
type RateUnit uint8

// Rate units.
const (
	PerSecond RateUnit = iota
	PerMinute
	PerHour
	PerDay
)

// Rate is "N/unit" as in --limit 5/second.
type Rate struct {
	Count uint32
	Unit  RateUnit
}

// LimitMatch is -m limit. iptables' defaults are 3/hour, burst 5.
type LimitMatch struct {
	Rate   Rate
	Burst  uint32
	Invert bool // ! --limit
}

// Module implements Match.
func (*LimitMatch) Module() string { return "limit" }

// Hashlimit modes (--hashlimit-mode).
const (
	HashSrcIP uint8 = 1 << iota
	HashDstIP
	HashSrcPort
	HashDstPort
)

// HashlimitMatch is -m hashlimit.
type HashlimitMatch struct {
	Name  string
	Above bool // --hashlimit-above; otherwise --hashlimit-upto
	Rate  Rate
	// Bytes is set when the rate is in bytes (e.g. "1kb/s"); Rate.Count is then bytes.
	Bytes        bool
	Burst        uint32 // default 5
	Mode         uint8  // Hash* bits; 0 means one bucket for everything
	SrcMask      int    // default 32 (IPv4) / 128 (IPv6)
	DstMask      int
	HtableSize   uint32
	HtableMax    uint32
	HtableExpire uint32 // milliseconds; default 10000
	GCInterval   uint32 // milliseconds; default 1000
}

// Module implements Match.
func (*HashlimitMatch) Module() string { return "hashlimit" }

// RecentCmd is the action of -m recent.
type RecentCmd uint8

// Recent commands.
const (
	RecentSet RecentCmd = iota
	RecentCheck
	RecentUpdate
	RecentRemove
)

// RecentMatch is -m recent.
type RecentMatch struct {
	Name     string // default "DEFAULT"
	Cmd      RecentCmd
	Seconds  uint32
	Reap     bool
	Hitcount uint32
	RTTL     bool
	Dest     bool       // --rdest; otherwise --rsource
	Mask     netip.Addr // --mask; invalid means all ones
	Invert   bool
}

// Module implements Match.
func (*RecentMatch) Module() string { return "recent" }

// CommentMatch is -m comment --comment.
type CommentMatch struct{ Text string }

// Module implements Match.
func (*CommentMatch) Module() string { return "comment" }

// AddrRange is an inclusive address range.
type AddrRange struct {
	From, To netip.Addr
	Invert   bool
}

// IPRangeMatch is -m iprange; a range with invalid From is absent.
type IPRangeMatch struct {
	Src, Dst AddrRange
}

// Module implements Match.
func (*IPRangeMatch) Module() string { return "iprange" }

// Address types for -m addrtype (bit set).
const (
	AddrUnspec uint16 = 1 << iota
	AddrUnicast
	AddrLocal
	AddrBroadcast
	AddrAnycast
	AddrMulticast
	AddrBlackhole
	AddrUnreachable
	AddrProhibit
	AddrThrow
	AddrNAT
	AddrXResolve
)

// AddrtypeMatch is -m addrtype.
type AddrtypeMatch struct {
	Src, Dst             uint16 // 0: not tested
	SrcInvert, DstInvert bool
	LimitIfaceIn         bool
	LimitIfaceOut        bool
}

// Module implements Match.
func (*AddrtypeMatch) Module() string { return "addrtype" }

// ConnlimitMatch is -m connlimit.
type ConnlimitMatch struct {
	Limit uint32
	Above bool // --connlimit-above; otherwise --connlimit-upto
	Mask  int  // prefix length; -1 for the family's full length
	Dest  bool // --connlimit-daddr; otherwise saddr
}

// Module implements Match.
func (*ConnlimitMatch) Module() string { return "connlimit" }

// MarkMatch is -m mark --mark VALUE[/MASK].
type MarkMatch struct {
	Value, Mask uint32
	Invert      bool
}

// Module implements Match.
func (*MarkMatch) Module() string { return "mark" }

// IDRange is an inclusive uid/gid range.
type IDRange struct {
	Set    bool
	Lo, Hi uint32
	Invert bool
}

// OwnerMatch is -m owner.
type OwnerMatch struct {
	UID, GID     IDRange
	SocketExists TriState
}

// Module implements Match.
func (*OwnerMatch) Module() string { return "owner" }

// LengthMatch is -m length --length LO[:HI].
type LengthMatch struct {
	Lo, Hi uint16
	Invert bool
}

// Module implements Match.
func (*LengthMatch) Module() string { return "length" }

// CmpOp is the comparison of -m ttl / -m hl.
type CmpOp uint8

// Comparisons.
const (
	CmpEq CmpOp = iota
	CmpNe
	CmpLt
	CmpGt
)

// TTLMatch is -m ttl (V6 false) or -m hl (V6 true).
type TTLMatch struct {
	V6    bool
	Op    CmpOp
	Value uint8
}

// Module implements Match.
func (m *TTLMatch) Module() string {
	if m.V6 {
		return "hl"
	}
	return "ttl"
}

// PkttypeMatch is -m pkttype --pkt-type.
type PkttypeMatch struct {
	Type   packet.PktType
	Invert bool
}

// Module implements Match.
func (*PkttypeMatch) Module() string { return "pkttype" }

// MACMatch is -m mac --mac-source.
type MACMatch struct {
	Addr   [6]byte
	Invert bool
}

// Module implements Match.
func (*MACMatch) Module() string { return "mac" }

// FragMatch is ip6tables -m frag.
type FragMatch struct {
	IDLo, IDHi uint32
	HasID      bool
	IDInvert   bool
	First      bool // --fragfirst
	More       bool // --fragmore
	Last       bool // --fraglast
}

// Module implements Match.
func (*FragMatch) Module() string { return "frag" }

// TargetKind is what a rule does when it matches.
type TargetKind uint8

// Targets.
const (
	TargetNone   TargetKind = iota // no -j: the rule only counts
	TargetAccept                   // ACCEPT
	TargetDrop                     // DROP
	TargetReturn                   // RETURN
	TargetJump                     // -j USERCHAIN
	TargetGoto                     // -g USERCHAIN
	TargetReject                   // REJECT
	TargetLog                      // LOG (non-terminating)
)

// RejectWith is REJECT's --reject-with.
type RejectWith uint8

// Reject types, as iptables names them.
const (
	RejectICMPPortUnreachable RejectWith = iota // IPv4 default
	RejectICMPNetUnreachable
	RejectICMPHostUnreachable
	RejectICMPProtoUnreachable
	RejectICMPNetProhibited
	RejectICMPHostProhibited
	RejectICMPAdminProhibited
	RejectTCPReset
	RejectICMP6NoRoute
	RejectICMP6AdmProhibited
	RejectICMP6AddrUnreachable
	RejectICMP6PortUnreachable // IPv6 default
)

// LogOptions are the options of the LOG target.
type LogOptions struct {
	Prefix      string
	Level       uint8 // syslog level; default 4 (warning)
	TCPSequence bool
	TCPOptions  bool
	IPOptions   bool
	UID         bool
	MACDecode   bool
}

// Target is the -j/-g part of a rule.
type Target struct {
	Kind   TargetKind
	Chain  string // for TargetJump and TargetGoto
	Reject RejectWith
	Log    LogOptions
	Pos    Pos
}
