package ruleset

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/filterd/filterd/packet"
)

// optDef is one option of a match or target extension.
type optDef struct {
	name        string // long name without "--"
	nargs       int
	invert      bool // may follow '!'
	unsupported bool // valid iptables option filterd does not implement yet
	apply       func(rs *ruleState, m *modState, opt token, args []token, inv bool)
}

// modDef describes a match or target extension filterd implements.
type modDef struct {
	name   string
	family packet.Family // FamilyAny: both
	opts   []optDef
	init   func(rs *ruleState) any
	finish func(rs *ruleState, m *modState)
}

// modState is one -m (or -j) instance in a rule being parsed.
type modState struct {
	def      *modDef // nil: unsupported extension
	name     string
	tok      token
	val      any // *TCPMatch, ..., or *Target for targets
	seen     map[string]bool
	implicit bool
	isTarget bool
}

func (m *modState) label() string {
	if m.isTarget || (m.def != nil && tdefs[m.def.name] == m.def) {
		return "-j " + m.name
	}
	return "-m " + m.name
}

var modDefs map[string]*modDef
var tdefs map[string]*modDef

// parseUint parses a number up to max as iptables' xtables_strtoui does
// (strtoul with base 0): decimal, 0x hex or 0-prefixed octal.
func parseUint(s string, max uint64) (uint64, bool) {
	if s == "" || strings.ContainsAny(s, "_+-") {
		return 0, false
	}
	if len(s) > 1 && s[0] == '0' && strings.ContainsAny(s[1:2], "bBoO") {
		return 0, false // Go's base-0 prefixes that C does not know
	}
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil || v > max {
		return 0, false
	}
	return v, true
}

// parsePort parses a port number or a service name.
func parsePort(s string) (uint16, bool) {
	if v, ok := parseUint(s, 65535); ok {
		return uint16(v), true
	}
	if v, ok := services[strings.ToLower(s)]; ok {
		return v, true
	}
	return 0, false
}

// parsePortRange parses "p", "lo:hi", "lo:" or ":hi".
func (rs *ruleState) parsePortRange(t token) (lo, hi uint16, ok bool) {
	s := t.text
	a, b, isRange := strings.Cut(s, ":")
	if !isRange {
		p, ok := parsePort(s)
		if !ok {
			rs.badPort(t, s)
			return 0, 0, false
		}
		return p, p, true
	}
	lo, hi = 0, 65535
	if a != "" {
		if lo, ok = parsePort(a); !ok {
			rs.badPort(t, a)
			return 0, 0, false
		}
	}
	if b != "" {
		if hi, ok = parsePort(b); !ok {
			rs.badPort(t, b)
			return 0, 0, false
		}
	}
	if lo > hi {
		rs.errorf(t, fmt.Sprintf("write %d:%d", hi, lo), "invalid port range %q (min > max)", s)
		return 0, 0, false
	}
	return lo, hi, true
}

func (rs *ruleState) badPort(t token, s string) {
	hint := ""
	if strings.Contains(s, "-") {
		hint = "port ranges are written with a colon: 1024:65535"
	} else if strings.Contains(s, ",") {
		hint = "for a list of ports use -m multiport --dports a,b,c"
	} else if _, err := strconv.Atoi(s); err != nil {
		hint = "filterd knows the common service names of /etc/services; write the port number"
	}
	rs.errorf(t, hint, "invalid port/service %q", s)
}

func (rs *ruleState) portMatch(t token, inv bool) (PortMatch, bool) {
	lo, hi, ok := rs.parsePortRange(t)
	if !ok {
		return PortMatch{}, false
	}
	if lo == 0 && hi == 65535 && !inv {
		return PortMatch{}, true // iptables drops a full range
	}
	return PortMatch{Set: true, Lo: lo, Hi: hi, Invert: inv}, true
}

var tcpFlagNames = []struct {
	name string
	bits uint8
}{{"FIN", 0x01}, {"SYN", 0x02}, {"RST", 0x04}, {"PSH", 0x08}, {"ACK", 0x10}, {"URG", 0x20}, {"ALL", 0x3F}, {"NONE", 0}}

func (rs *ruleState) tcpFlags(t token) (uint8, bool) {
	var v uint8
	for _, f := range strings.Split(t.text, ",") {
		found := false
		for _, n := range tcpFlagNames {
			if strings.EqualFold(f, n.name) {
				v |= n.bits
				found = true
			}
		}
		if !found {
			rs.errorf(t, "flags are FIN, SYN, RST, PSH, ACK, URG, ALL and NONE", "unknown TCP flag %q", f)
			return 0, false
		}
	}
	return v, true
}

// rate scales, as the kernel stores rates: limit uses XT_LIMIT_SCALE, hashlimit
// revision 2 and later XT_HASHLIMIT_SCALE_v2.
const (
	limitScale     = 10000
	hashlimitScale = 1000000
)

var unitSeconds = [...]uint64{PerSecond: 1, PerMinute: 60, PerHour: 3600, PerDay: 86400}

// rateCost is the kernel's "avg" for a rate: scale*seconds/count.
func rateCost(r Rate, scale uint64) uint64 {
	if r.Count == 0 {
		return 0
	}
	return scale * unitSeconds[r.Unit] / uint64(r.Count)
}

// canonRate converts a cost back to the rate iptables prints (print_rate).
func canonRate(cost, scale uint64) Rate {
	if cost == 0 {
		return Rate{}
	}
	order := [...]RateUnit{PerDay, PerHour, PerMinute, PerSecond}
	i := 1
	for ; i < len(order); i++ {
		mult := scale * unitSeconds[order[i]]
		if cost > mult || mult/cost < mult%cost {
			break
		}
	}
	u := order[i-1]
	return Rate{Count: uint32(scale * unitSeconds[u] / cost), Unit: u}
}

// parseRate parses "N[/second|minute|hour|day]" (any prefix of the unit) and
// returns it normalized as the kernel stores it.
func (rs *ruleState) parseRate(t token, scale uint64) (Rate, bool) {
	s := t.text
	num, unit, hasUnit := strings.Cut(s, "/")
	u := PerSecond
	if hasUnit {
		l := strings.ToLower(unit)
		switch {
		case l == "":
			rs.errorf(t, "", "bad rate %q", s)
			return Rate{}, false
		case strings.HasPrefix("second", l):
			u = PerSecond
		case strings.HasPrefix("minute", l):
			u = PerMinute
		case strings.HasPrefix("hour", l):
			u = PerHour
		case strings.HasPrefix("day", l):
			u = PerDay
		default:
			rs.errorf(t, "units are second, minute, hour and day (or s, m, h, d)", "bad rate %q", s)
			return Rate{}, false
		}
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n == 0 {
		rs.errorf(t, "write a positive count, like 5/second", "bad rate %q", s)
		return Rate{}, false
	}
	r := Rate{Count: uint32(n), Unit: u}
	cost := rateCost(r, scale)
	if cost == 0 {
		rs.errorf(t, "", "rate too fast %q", s)
		return Rate{}, false
	}
	return canonRate(cost, scale), true
}

func needProto(rs *ruleState, m *modState, want ...uint8) bool {
	pr := rs.rule.Proto
	if !rs.protoSet || pr.Any || pr.Invert {
		return false
	}
	for _, w := range want {
		if pr.Num == w {
			return true
		}
	}
	return false
}

func parseState(rs *ruleState, t token) (packet.CTState, bool) {
	var st packet.CTState
	for _, s := range strings.Split(t.text, ",") {
		switch strings.ToUpper(s) {
		case "INVALID":
			st |= packet.CTInvalid
		case "ESTABLISHED":
			st |= packet.CTEstablished
		case "RELATED":
			st |= packet.CTRelated
		case "NEW":
			st |= packet.CTNew
		case "UNTRACKED":
			st |= packet.CTUntracked
		case "SNAT", "DNAT":
			rs.unsupportedf(t, "conntrack state %s is not supported by filterd yet", s)
			return 0, false
		default:
			hint := "states are NEW, ESTABLISHED, RELATED, INVALID and UNTRACKED"
			if s == "" {
				hint = "separate states with single commas and no blanks"
			}
			rs.errorf(t, hint, "bad state %q", s)
			return 0, false
		}
	}
	return st, true
}

func (rs *ruleState) icmpType(t token, v6 bool, inv bool) (*ICMPMatch, bool) {
	s := t.text
	types, aliases := icmpTypes, icmpAliases
	if v6 {
		types, aliases = icmp6Types, icmp6Aliases
	}
	name := s
	if a, ok := aliases[strings.ToLower(name)]; ok {
		name = a
	}
	for _, it := range types {
		if strings.EqualFold(it.name, name) {
			if it.name == "any" {
				return &ICMPMatch{V6: v6, Any: true, Type: 0xFF, CodeLo: 0, CodeHi: 0xFF, Invert: inv}, true
			}
			return &ICMPMatch{V6: v6, Type: it.typ, CodeLo: it.codeLo, CodeHi: it.codeHi, Invert: inv}, true
		}
	}
	ts, cs, hasCode := strings.Cut(s, "/")
	ty, ok := parseUint(ts, 255)
	if !ok {
		hint := "use a type number, type/code, or a name such as echo-request"
		var cands []string
		for _, it := range types {
			cands = append(cands, it.name)
		}
		if c := suggestName(s, cands); c != "" {
			hint = fmt.Sprintf("did you mean %q?", c)
		}
		rs.errorf(t, hint, "unknown ICMP%s type %q", map[bool]string{true: "v6", false: ""}[v6], s)
		return nil, false
	}
	m := &ICMPMatch{V6: v6, Type: uint8(ty), CodeLo: 0, CodeHi: 0xFF, Invert: inv}
	if hasCode {
		c, ok := parseUint(cs, 255)
		if !ok {
			rs.errorf(t, "", "invalid ICMP code %q", cs)
			return nil, false
		}
		m.CodeLo, m.CodeHi = uint8(c), uint8(c)
	}
	if !v6 && ty == 0xFF && !hasCode {
		m.Any = true
	}
	return m, true
}

var addrTypeNames = []string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}

// rejectTable and reject6Table are REJECT's --reject-with names and aliases
// in iptables' table order: iptables takes the first entry that the argument
// is a case-insensitive prefix of ("icmp-host-unreach", "tcp-").
var rejectTable = []struct {
	name, alias string
	v           RejectWith
}{
	{"icmp-net-unreachable", "net-unreach", RejectICMPNetUnreachable},
	{"icmp-host-unreachable", "host-unreach", RejectICMPHostUnreachable},
	{"icmp-proto-unreachable", "proto-unreach", RejectICMPProtoUnreachable},
	{"icmp-port-unreachable", "port-unreach", RejectICMPPortUnreachable},
	{"icmp-net-prohibited", "net-prohib", RejectICMPNetProhibited},
	{"icmp-host-prohibited", "host-prohib", RejectICMPHostProhibited},
	{"tcp-reset", "tcp-rst", RejectTCPReset},
	{"icmp-admin-prohibited", "admin-prohib", RejectICMPAdminProhibited},
}

var reject6Table = []struct {
	name, alias string
	v           RejectWith
}{
	{"icmp6-no-route", "no-route", RejectICMP6NoRoute},
	{"icmp6-adm-prohibited", "adm-prohibited", RejectICMP6AdmProhibited},
	{"icmp6-addr-unreachable", "addr-unreach", RejectICMP6AddrUnreachable},
	{"icmp6-port-unreachable", "port-unreach", RejectICMP6PortUnreachable},
	{"tcp-reset", "tcp-reset", RejectTCPReset},
	{"icmp6-policy-fail", "policy-fail", 255},
	{"icmp6-reject-route", "reject-route", 255},
}

// lookupReject finds a --reject-with argument as iptables does.
func lookupReject(arg string, v6 bool) (RejectWith, string, bool) {
	tbl := rejectTable
	if v6 {
		tbl = reject6Table
	}
	l := strings.ToLower(arg)
	for _, e := range tbl {
		if strings.HasPrefix(e.name, l) || strings.HasPrefix(e.alias, l) {
			return e.v, e.name, true
		}
	}
	return 0, "", false
}

var logLevels = map[string]uint8{"emerg": 0, "panic": 0, "alert": 1, "crit": 2, "err": 3, "error": 3,
	"warn": 4, "warning": 4, "notice": 5, "info": 6, "debug": 7}

func parseIDRange(rs *ruleState, t token, lookup func(string) (uint32, error), what string, inv bool) (IDRange, bool) {
	a, b, isRange := strings.Cut(t.text, "-")
	lo, err1 := strconv.ParseUint(a, 10, 32)
	if err1 != nil {
		if isRange {
			rs.errorf(t, "", "invalid %s range %q", what, t.text)
			return IDRange{}, false
		}
		if lookup == nil {
			rs.unsupportedf(t, "%s name %q: filterd does not look up names here; write the number", what, t.text)
			return IDRange{}, false
		}
		id, err := lookup(t.text)
		if err != nil {
			rs.unsupportedf(t, "%s %q cannot be looked up (%v); write the number", what, t.text, err)
			return IDRange{}, false
		}
		return IDRange{Set: true, Lo: id, Hi: id, Invert: inv}, true
	}
	hi := lo
	if isRange {
		h, err := strconv.ParseUint(b, 10, 32)
		if err != nil || h < lo {
			rs.errorf(t, "", "invalid %s range %q", what, t.text)
			return IDRange{}, false
		}
		hi = h
	}
	return IDRange{Set: true, Lo: uint32(lo), Hi: uint32(hi), Invert: inv}, true
}

func init() {
	portOpt := func(name string, src bool) optDef {
		return optDef{name: name, nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
			pm, ok := rs.portMatch(a[0], inv)
			if !ok {
				return
			}
			switch v := m.val.(type) {
			case *TCPMatch:
				if src {
					v.Sport = pm
				} else {
					v.Dport = pm
				}
			case *UDPMatch:
				if src {
					v.Sport = pm
				} else {
					v.Dport = pm
				}
			}
		}}
	}
	dupPorts := func(rs *ruleState, m *modState) {
		if m.seen["sport"] && m.seen["source-port"] || m.seen["dport"] && m.seen["destination-port"] {
			rs.errorf(m.tok, "", "%s: a port option is given twice", m.name)
		}
	}
	protoFinish := func(proto uint8, msg string) func(rs *ruleState, m *modState) {
		return func(rs *ruleState, m *modState) {
			dupPorts(rs, m)
			if !needProto(rs, m, proto) {
				rs.errorf(m.tok, "add "+msg[strings.Index(msg, "'")+1:len(msg)-1]+" before -m "+m.name, "%s", msg)
			}
		}
	}
	multiportOpt := func(name string, dir MultiportDir) optDef {
		return optDef{name: name, nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
			v := m.val.(*MultiportMatch)
			if len(v.Ports) > 0 {
				rs.errorf(o, "", "multiport: only one of --sports, --dports and --ports")
				return
			}
			v.Dir, v.Invert = dir, inv
			count := 0
			for _, e := range strings.Split(a[0].text, ",") {
				if lo, hi, isRange := strings.Cut(e, ":"); isRange && (lo == "" || hi == "") {
					rs.errorf(a[0], "multiport ranges need both ends, like 1024:65535", "multiport: invalid port range %q", e)
					return
				}
				lo, hi, ok := rs.parsePortRange(token{text: e, col: a[0].col, width: a[0].width})
				if !ok {
					return
				}
				count++
				if lo != hi || strings.Contains(e, ":") {
					count++
				}
				v.Ports = append(v.Ports, PortRange{Lo: lo, Hi: hi})
			}
			if count > 15 {
				rs.errorf(a[0], "split the list over several rules", "multiport: too many ports (%d; at most 15, a range counts as two)", count)
			}
		}}
	}
	ttlOpt := func(name string, op CmpOp, inv bool) optDef {
		return optDef{name: name, nargs: 1, invert: inv, apply: func(rs *ruleState, m *modState, o token, a []token, i bool) {
			v := m.val.(*TTLMatch)
			if m.seen["__cmp"] {
				rs.errorf(o, "", "%s: only one comparison", m.name)
				return
			}
			m.seen["__cmp"] = true
			n, ok := parseUint(a[0].text, 255)
			if !ok {
				rs.errorf(a[0], "", "%s: invalid value %q (0 to 255)", m.name, a[0].text)
				return
			}
			v.Op, v.Value = op, uint8(n)
			if i {
				v.Op = CmpNe
			}
		}}
	}
	ctAddr := func(name string, f func(c *ConntrackMatch) *AddrMatch) optDef {
		return optDef{name: name, nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
			pf, err := parseAddrOrPrefix(a[0].text, rs.p.opts.Family)
			if err != nil {
				rs.errorf(a[0], "", "conntrack --%s: %v", name, err)
				return
			}
			*f(m.val.(*ConntrackMatch)) = AddrMatch{Prefix: pf, Invert: inv}
		}}
	}
	ctPort := func(name string, f func(c *ConntrackMatch) *PortMatch) optDef {
		return optDef{name: name, nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
			lo, hi, ok := rs.parsePortRange(a[0])
			if !ok {
				return
			}
			*f(m.val.(*ConntrackMatch)) = PortMatch{Set: true, Lo: lo, Hi: hi, Invert: inv}
		}}
	}
	hlRate := func(above bool) func(rs *ruleState, m *modState, o token, a []token, inv bool) {
		return func(rs *ruleState, m *modState, o token, a []token, inv bool) {
			v := m.val.(*HashlimitMatch)
			if m.seen["__rate"] {
				rs.errorf(o, "", "hashlimit: only one of --hashlimit-upto and --hashlimit-above")
				return
			}
			m.seen["__rate"] = true
			v.Above = above != inv
			s := strings.ToLower(a[0].text)
			if strings.HasSuffix(s, "b/s") {
				num := strings.TrimSuffix(s, "b/s")
				mult := uint64(1)
				switch {
				case strings.HasSuffix(num, "k"):
					mult, num = 1<<10, strings.TrimSuffix(num, "k")
				case strings.HasSuffix(num, "m"):
					mult, num = 1<<20, strings.TrimSuffix(num, "m")
				}
				n, err := strconv.ParseUint(num, 10, 32)
				if err != nil || n == 0 || n*mult > 1<<32-1 {
					rs.errorf(a[0], "", "hashlimit: bad byte rate %q", a[0].text)
					return
				}
				v.Bytes = true
				v.Rate = Rate{Count: uint32(n * mult), Unit: PerSecond}
				return
			}
			r, ok := rs.parseRate(a[0], hashlimitScale)
			if ok {
				v.Rate = r
			}
		}
	}
	u32opt := func(name string, max uint64, set func(v *HashlimitMatch, n uint32)) optDef {
		return optDef{name: name, nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
			n, ok := parseUint(a[0].text, max)
			if !ok {
				rs.errorf(a[0], "", "hashlimit --%s: invalid number %q", name, a[0].text)
				return
			}
			set(m.val.(*HashlimitMatch), uint32(n))
		}}
	}
	recentCmd := func(name string, cmd RecentCmd) optDef {
		return optDef{name: name, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
			v := m.val.(*RecentMatch)
			if m.seen["__cmd"] {
				rs.errorf(o, "", "recent: use only one of --set, --rcheck, --update and --remove")
				return
			}
			m.seen["__cmd"] = true
			v.Cmd, v.Invert = cmd, inv
		}}
	}
	flag := func(name string, set func(m *modState)) optDef {
		return optDef{name: name, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) { set(m) }}
	}

	modDefs = map[string]*modDef{
		"tcp": {name: "tcp", init: func(*ruleState) any { return &TCPMatch{} },
			opts: []optDef{portOpt("sport", true), portOpt("source-port", true), portOpt("dport", false), portOpt("destination-port", false),
				{name: "syn", invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					v := m.val.(*TCPMatch)
					if v.Flags.Set {
						rs.errorf(o, "", "tcp: only one of --syn and --tcp-flags")
					}
					v.Flags = TCPFlagsMatch{Set: true, Mask: packet.TCPSyn | packet.TCPRst | packet.TCPAck | packet.TCPFin, Comp: packet.TCPSyn, Invert: inv}
				}},
				{name: "tcp-flags", nargs: 2, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					v := m.val.(*TCPMatch)
					if v.Flags.Set {
						rs.errorf(o, "", "tcp: only one of --syn and --tcp-flags")
					}
					mask, ok1 := rs.tcpFlags(a[0])
					comp, ok2 := rs.tcpFlags(a[1])
					if ok1 && ok2 {
						v.Flags = TCPFlagsMatch{Set: true, Mask: mask, Comp: comp, Invert: inv}
					}
				}},
				{name: "tcp-option", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					n, ok := parseUint(a[0].text, 255)
					if !ok {
						rs.errorf(a[0], "", "tcp: invalid TCP option %q", a[0].text)
						return
					}
					v := m.val.(*TCPMatch)
					v.Option, v.OptionSet, v.OptionInvert = uint8(n), true, inv
				}},
			},
			finish: protoFinish(packet.ProtoTCP, "TCP match requires '-p tcp'")},
		"udp": {name: "udp", init: func(*ruleState) any { return &UDPMatch{} },
			opts:   []optDef{portOpt("sport", true), portOpt("source-port", true), portOpt("dport", false), portOpt("destination-port", false)},
			finish: protoFinish(packet.ProtoUDP, "UDP match requires '-p udp'")},
		"multiport": {name: "multiport", init: func(*ruleState) any { return &MultiportMatch{} },
			opts: []optDef{multiportOpt("sports", MultiportSrc), multiportOpt("source-ports", MultiportSrc),
				multiportOpt("dports", MultiportDst), multiportOpt("destination-ports", MultiportDst), multiportOpt("ports", MultiportBoth)},
			finish: func(rs *ruleState, m *modState) {
				if !needProto(rs, m, packet.ProtoTCP, packet.ProtoUDP, packet.ProtoUDPLite, packet.ProtoSCTP, 33) {
					rs.errorf(m.tok, "add -p tcp or -p udp before -m multiport", "multiport needs `-p tcp', `-p udp', `-p udplite', `-p sctp' or `-p dccp'")
				}
				if len(m.val.(*MultiportMatch).Ports) == 0 {
					rs.errorf(m.tok, "", "multiport: one of --sports, --dports or --ports is required")
				}
				if needProto(rs, m, packet.ProtoSCTP, packet.ProtoUDPLite, 33) {
					rs.unsupportedf(m.tok, "multiport with -p %s is not supported by filterd yet", protoName[rs.rule.Proto.Num])
				}
			}},
		"icmp": {name: "icmp", family: packet.IPv4, init: func(*ruleState) any { return &ICMPMatch{} },
			opts: []optDef{{name: "icmp-type", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				if v, ok := rs.icmpType(a[0], false, inv); ok {
					m.val = v
				}
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !needProto(rs, m, packet.ProtoICMP) {
					rs.errorf(m.tok, "add -p icmp before -m icmp", "icmp match requires '-p icmp'")
				}
				if !m.seen["icmp-type"] {
					rs.errorf(m.tok, "", "icmp: option \"--icmp-type\" must be specified")
				}
			}},
		"icmp6": {name: "icmp6", family: packet.IPv6, init: func(*ruleState) any { return &ICMPMatch{V6: true} },
			opts: []optDef{{name: "icmpv6-type", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				if v, ok := rs.icmpType(a[0], true, inv); ok {
					m.val = v
				}
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !needProto(rs, m, packet.ProtoICMPv6) {
					rs.errorf(m.tok, "add -p icmpv6 before -m icmp6", "icmp6 match requires '-p icmpv6'")
				}
				if !m.seen["icmpv6-type"] {
					rs.errorf(m.tok, "", "icmp6: option --icmpv6-type must be specified")
				}
			}},
		"state": {name: "state", init: func(*ruleState) any { return &StateMatch{} },
			opts: []optDef{{name: "state", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				if st, ok := parseState(rs, a[0]); ok {
					*m.val.(*StateMatch) = StateMatch{States: st, Invert: inv}
				}
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["state"] {
					rs.errorf(m.tok, "", "state: option \"--state\" must be specified")
				}
			}},
		"conntrack": {name: "conntrack", init: func(*ruleState) any { return &ConntrackMatch{} },
			opts: []optDef{
				{name: "ctstate", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if st, ok := parseState(rs, a[0]); ok {
						v := m.val.(*ConntrackMatch)
						v.State, v.HasState = StateMatch{States: st, Invert: inv}, true
					}
				}},
				{name: "ctproto", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					num, any, ok := parseProto(a[0].text)
					if !ok || any {
						rs.errorf(a[0], "", "conntrack: bad protocol %q", a[0].text)
						return
					}
					v := m.val.(*ConntrackMatch)
					v.Proto, v.HasProto, v.ProtoInvert = num, true, inv
				}},
				ctAddr("ctorigsrc", func(c *ConntrackMatch) *AddrMatch { return &c.OrigSrc }),
				ctAddr("ctorigdst", func(c *ConntrackMatch) *AddrMatch { return &c.OrigDst }),
				ctAddr("ctreplsrc", func(c *ConntrackMatch) *AddrMatch { return &c.ReplSrc }),
				ctAddr("ctrepldst", func(c *ConntrackMatch) *AddrMatch { return &c.ReplDst }),
				ctPort("ctorigsrcport", func(c *ConntrackMatch) *PortMatch { return &c.OrigSrcPort }),
				ctPort("ctorigdstport", func(c *ConntrackMatch) *PortMatch { return &c.OrigDstPort }),
				ctPort("ctreplsrcport", func(c *ConntrackMatch) *PortMatch { return &c.ReplSrcPort }),
				ctPort("ctrepldstport", func(c *ConntrackMatch) *PortMatch { return &c.ReplDstPort }),
				{name: "ctstatus", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					var st uint8
					for _, s := range strings.Split(a[0].text, ",") {
						switch strings.ToUpper(s) {
						case "NONE":
						case "EXPECTED":
							st |= CTStatusExpected
						case "SEEN_REPLY":
							st |= CTStatusSeenReply
						case "ASSURED":
							st |= CTStatusAssured
						case "CONFIRMED":
							st |= CTStatusConfirmed
						default:
							rs.errorf(a[0], "statuses are NONE, EXPECTED, SEEN_REPLY, ASSURED and CONFIRMED", "conntrack: bad status %q", s)
							return
						}
					}
					v := m.val.(*ConntrackMatch)
					v.Status, v.StatusInvert, v.HasStatus = st, inv, true
				}},
				{name: "ctexpire", nargs: 1, invert: true, unsupported: true},
				{name: "ctdir", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					v := m.val.(*ConntrackMatch)
					switch strings.ToUpper(a[0].text) {
					case "ORIGINAL":
						v.Dir = packet.DirOriginal
					case "REPLY":
						v.Dir = packet.DirReply
					default:
						rs.errorf(a[0], "", "conntrack: --ctdir is ORIGINAL or REPLY, not %q", a[0].text)
						return
					}
					v.HasDir = true
				}},
			},
			finish: func(rs *ruleState, m *modState) {
				if len(m.seen) == 0 {
					rs.errorf(m.tok, "", "conntrack: at least one option is required")
				}
			}},
		"limit": {name: "limit", init: func(*ruleState) any { return &LimitMatch{Rate: Rate{Count: 3, Unit: PerHour}, Burst: 5} },
			opts: []optDef{
				{name: "limit", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if r, ok := rs.parseRate(a[0], limitScale); ok {
						m.val.(*LimitMatch).Rate = r
					}
				}},
				{name: "limit-burst", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					n, ok := parseUint(a[0].text, 10000)
					if !ok {
						rs.errorf(a[0], "", "limit: bad --limit-burst %q (0 to 10000)", a[0].text)
						return
					}
					m.val.(*LimitMatch).Burst = uint32(n)
				}},
			}},
		"hashlimit": {name: "hashlimit", init: func(rs *ruleState) any {
			mask := 32
			if rs.p.opts.Family == packet.IPv6 {
				mask = 128
			}
			return &HashlimitMatch{Burst: 5, SrcMask: mask, DstMask: mask, HtableExpire: 10000, GCInterval: 1000}
		},
			opts: []optDef{
				{name: "hashlimit-upto", nargs: 1, invert: true, apply: hlRate(false)},
				{name: "hashlimit", nargs: 1, apply: hlRate(false)},
				{name: "hashlimit-above", nargs: 1, invert: true, apply: hlRate(true)},
				u32opt("hashlimit-burst", 1<<32-1, func(v *HashlimitMatch, n uint32) { v.Burst = n }),
				{name: "hashlimit-mode", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					v := m.val.(*HashlimitMatch)
					v.Mode = 0
					for _, s := range strings.Split(a[0].text, ",") {
						switch s {
						case "srcip":
							v.Mode |= HashSrcIP
						case "dstip":
							v.Mode |= HashDstIP
						case "srcport":
							v.Mode |= HashSrcPort
						case "dstport":
							v.Mode |= HashDstPort
						default:
							rs.errorf(a[0], "modes are srcip, dstip, srcport and dstport, comma separated", "hashlimit: bad mode %q", s)
							return
						}
					}
				}},
				{name: "hashlimit-srcmask", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					v := m.val.(*HashlimitMatch)
					max := uint64(v.SrcMask)
					if rs.p.opts.Family == packet.IPv6 {
						max = 128
					} else {
						max = 32
					}
					n, ok := parseUint(a[0].text, max)
					if !ok {
						rs.errorf(a[0], "", "hashlimit: bad --hashlimit-srcmask %q", a[0].text)
						return
					}
					v.SrcMask = int(n)
				}},
				{name: "hashlimit-dstmask", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					v := m.val.(*HashlimitMatch)
					max := uint64(32)
					if rs.p.opts.Family == packet.IPv6 {
						max = 128
					}
					n, ok := parseUint(a[0].text, max)
					if !ok {
						rs.errorf(a[0], "", "hashlimit: bad --hashlimit-dstmask %q", a[0].text)
						return
					}
					v.DstMask = int(n)
				}},
				{name: "hashlimit-name", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if len(a[0].text) == 0 || len(a[0].text) > 255 {
						rs.errorf(a[0], "", "hashlimit: bad --hashlimit-name %q", a[0].text)
						return
					}
					m.val.(*HashlimitMatch).Name = a[0].text
				}},
				u32opt("hashlimit-htable-size", 1<<32-1, func(v *HashlimitMatch, n uint32) { v.HtableSize = n }),
				u32opt("hashlimit-htable-max", 1<<32-1, func(v *HashlimitMatch, n uint32) { v.HtableMax = n }),
				u32opt("hashlimit-htable-expire", 1<<32-1, func(v *HashlimitMatch, n uint32) { v.HtableExpire = n }),
				u32opt("hashlimit-htable-gcinterval", 1<<32-1, func(v *HashlimitMatch, n uint32) { v.GCInterval = n }),
				{name: "hashlimit-rate-match", unsupported: true},
				{name: "hashlimit-rate-interval", nargs: 1, unsupported: true},
			},
			finish: func(rs *ruleState, m *modState) {
				v := m.val.(*HashlimitMatch)
				if !m.seen["__rate"] {
					rs.errorf(m.tok, "", "hashlimit: --hashlimit-upto or --hashlimit-above is required")
				}
				if v.Name == "" {
					rs.errorf(m.tok, "", "hashlimit: --hashlimit-name is required")
				}
				if v.Bytes && m.seen["hashlimit-burst"] {
					rs.unsupportedf(m.tok, "hashlimit: --hashlimit-burst with a byte rate is not supported by filterd yet")
				}
			}},
		"recent": {name: "recent", init: func(rs *ruleState) any {
			mask := netip.MustParseAddr("255.255.255.255")
			if rs.p.opts.Family == packet.IPv6 {
				mask = netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
			}
			return &RecentMatch{Name: "DEFAULT", Mask: mask}
		},
			opts: []optDef{
				{name: "name", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if a[0].text == "" || len(a[0].text) > 200 {
						rs.errorf(a[0], "", "recent: bad --name %q", a[0].text)
						return
					}
					m.val.(*RecentMatch).Name = a[0].text
				}},
				recentCmd("set", RecentSet), recentCmd("rcheck", RecentCheck), recentCmd("update", RecentUpdate), recentCmd("remove", RecentRemove),
				{name: "seconds", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					n, ok := parseUint(a[0].text, 1<<32-1)
					if !ok {
						rs.errorf(a[0], "", "recent: bad --seconds %q", a[0].text)
						return
					}
					m.val.(*RecentMatch).Seconds = uint32(n)
				}},
				{name: "hitcount", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					n, ok := parseUint(a[0].text, 1<<32-1)
					if !ok {
						rs.errorf(a[0], "", "recent: bad --hitcount %q", a[0].text)
						return
					}
					m.val.(*RecentMatch).Hitcount = uint32(n)
				}},
				flag("reap", func(m *modState) { m.val.(*RecentMatch).Reap = true }),
				flag("rttl", func(m *modState) { m.val.(*RecentMatch).RTTL = true }),
				flag("rsource", func(m *modState) { m.val.(*RecentMatch).Dest = false }),
				flag("rdest", func(m *modState) { m.val.(*RecentMatch).Dest = true }),
				{name: "mask", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					ad, err := netip.ParseAddr(a[0].text)
					if err != nil || (ad.Is4() != (rs.p.opts.Family == packet.IPv4)) {
						rs.errorf(a[0], "", "recent: bad --mask %q", a[0].text)
						return
					}
					m.val.(*RecentMatch).Mask = ad
				}},
			},
			finish: func(rs *ruleState, m *modState) {
				v := m.val.(*RecentMatch)
				if !m.seen["__cmd"] {
					rs.errorf(m.tok, "", "recent: you must specify one of --set, --rcheck, --update or --remove")
				}
				if v.Reap && v.Seconds == 0 {
					rs.errorf(m.tok, "", "recent: --reap requires --seconds")
				}
				if (v.Seconds != 0 || v.Hitcount != 0) && (v.Cmd == RecentSet || v.Cmd == RecentRemove) && m.seen["__cmd"] {
					rs.errorf(m.tok, "", "recent: --seconds and --hitcount go with --rcheck or --update")
				}
				if v.RTTL && v.Cmd != RecentCheck && v.Cmd != RecentUpdate {
					rs.errorf(m.tok, "", "recent: --rttl is only valid with --rcheck or --update")
				}
			}},
		"comment": {name: "comment", init: func(*ruleState) any { return &CommentMatch{} },
			opts: []optDef{{name: "comment", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				if len(a[0].text) > 255 {
					rs.errorf(a[0], "", "comment: a comment is at most 255 characters")
					return
				}
				m.val.(*CommentMatch).Text = a[0].text
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["comment"] {
					rs.errorf(m.tok, "", "comment: option \"--comment\" must be specified")
				}
			}},
		"iprange": {name: "iprange", init: func(*ruleState) any { return &IPRangeMatch{} },
			opts: []optDef{
				{name: "src-range", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if r, ok := rs.addrRange(a[0], inv); ok {
						m.val.(*IPRangeMatch).Src = r
					}
				}},
				{name: "dst-range", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if r, ok := rs.addrRange(a[0], inv); ok {
						m.val.(*IPRangeMatch).Dst = r
					}
				}},
			}},
		"addrtype": {name: "addrtype", init: func(*ruleState) any { return &AddrtypeMatch{} },
			opts: []optDef{
				{name: "src-type", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if t, ok := rs.addrTypes(a[0]); ok {
						v := m.val.(*AddrtypeMatch)
						v.Src, v.SrcInvert = t, inv
					}
				}},
				{name: "dst-type", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if t, ok := rs.addrTypes(a[0]); ok {
						v := m.val.(*AddrtypeMatch)
						v.Dst, v.DstInvert = t, inv
					}
				}},
				flag("limit-iface-in", func(m *modState) { m.val.(*AddrtypeMatch).LimitIfaceIn = true }),
				flag("limit-iface-out", func(m *modState) { m.val.(*AddrtypeMatch).LimitIfaceOut = true }),
			},
			finish: func(rs *ruleState, m *modState) {
				v := m.val.(*AddrtypeMatch)
				if v.LimitIfaceIn && v.LimitIfaceOut {
					rs.errorf(m.tok, "", "addrtype: --limit-iface-in and --limit-iface-out are exclusive")
				}
			}},
		"connlimit": {name: "connlimit", init: func(rs *ruleState) any {
			mask := 32
			if rs.p.opts.Family == packet.IPv6 {
				mask = 128
			}
			return &ConnlimitMatch{Mask: mask}
		},
			opts: []optDef{
				{name: "connlimit-upto", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					rs.connlimit(m, o, a[0], inv)
				}},
				{name: "connlimit-above", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					rs.connlimit(m, o, a[0], !inv)
				}},
				{name: "connlimit-mask", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					max := uint64(32)
					if rs.p.opts.Family == packet.IPv6 {
						max = 128
					}
					n, ok := parseUint(a[0].text, max)
					if !ok {
						rs.errorf(a[0], "", "connlimit: bad --connlimit-mask %q", a[0].text)
						return
					}
					m.val.(*ConnlimitMatch).Mask = int(n)
				}},
				flag("connlimit-saddr", func(m *modState) { m.val.(*ConnlimitMatch).Dest = false }),
				flag("connlimit-daddr", func(m *modState) { m.val.(*ConnlimitMatch).Dest = true }),
			},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["__limit"] {
					rs.errorf(m.tok, "", "connlimit: --connlimit-upto or --connlimit-above is required")
				}
			}},
		"mark": {name: "mark", init: func(*ruleState) any { return &MarkMatch{Mask: 0xFFFFFFFF} },
			opts: []optDef{{name: "mark", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				vs, ms, hasMask := strings.Cut(a[0].text, "/")
				v, ok := parseUint(vs, 1<<32-1)
				mask := uint64(0xFFFFFFFF)
				if hasMask {
					mask, ok = parseUint(ms, 1<<32-1)
				}
				if !ok {
					rs.errorf(a[0], "write VALUE or VALUE/MASK, like 0x1/0xff", "mark: bad value %q", a[0].text)
					return
				}
				*m.val.(*MarkMatch) = MarkMatch{Value: uint32(v), Mask: uint32(mask), Invert: inv}
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["mark"] {
					rs.errorf(m.tok, "", "mark: option \"--mark\" must be specified")
				}
			}},
		"owner": {name: "owner", init: func(*ruleState) any { return &OwnerMatch{} },
			opts: []optDef{
				{name: "uid-owner", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if r, ok := parseIDRange(rs, a[0], rs.p.opts.LookupUser, "user", inv); ok {
						m.val.(*OwnerMatch).UID = r
					}
				}},
				{name: "gid-owner", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if r, ok := parseIDRange(rs, a[0], rs.p.opts.LookupGroup, "group", inv); ok {
						m.val.(*OwnerMatch).GID = r
					}
				}},
				{name: "socket-exists", invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					if inv {
						m.val.(*OwnerMatch).SocketExists = False
					} else {
						m.val.(*OwnerMatch).SocketExists = True
					}
				}},
				{name: "suppl-groups", unsupported: true},
			},
			finish: func(rs *ruleState, m *modState) {
				if c := rs.chain; c != nil && c.Builtin && c.Hook != packet.HookOutput {
					rs.errorf(m.tok, "the socket owner is known only for locally generated packets", "owner match is only valid in the OUTPUT chain (and POSTROUTING)")
				}
			}},
		"length": {name: "length", init: func(*ruleState) any { return &LengthMatch{} },
			opts: []optDef{{name: "length", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				ls, hs, isRange := strings.Cut(a[0].text, ":")
				lo, ok1 := parseUint(ls, 65535)
				hi, ok2 := lo, true
				if isRange {
					if ls == "" {
						lo, ok1 = 0, true
					}
					hi, ok2 = 65535, true
					if hs != "" {
						hi, ok2 = parseUint(hs, 65535)
					}
				}
				if !ok1 || !ok2 || lo > hi {
					rs.errorf(a[0], "", "length: bad range %q", a[0].text)
					return
				}
				*m.val.(*LengthMatch) = LengthMatch{Lo: uint16(lo), Hi: uint16(hi), Invert: inv}
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["length"] {
					rs.errorf(m.tok, "", "length: option \"--length\" must be specified")
				}
			}},
		"ttl": {name: "ttl", family: packet.IPv4, init: func(*ruleState) any { return &TTLMatch{} },
			opts: []optDef{ttlOpt("ttl-eq", CmpEq, true), ttlOpt("ttl-lt", CmpLt, false), ttlOpt("ttl-gt", CmpGt, false)},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["__cmp"] {
					rs.errorf(m.tok, "", "ttl: one of --ttl-eq, --ttl-lt and --ttl-gt is required")
				}
			}},
		"hl": {name: "hl", family: packet.IPv6, init: func(*ruleState) any { return &TTLMatch{V6: true} },
			opts: []optDef{ttlOpt("hl-eq", CmpEq, true), ttlOpt("hl-lt", CmpLt, false), ttlOpt("hl-gt", CmpGt, false)},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["__cmp"] {
					rs.errorf(m.tok, "", "hl: one of --hl-eq, --hl-lt and --hl-gt is required")
				}
			}},
		"pkttype": {name: "pkttype", init: func(*ruleState) any { return &PkttypeMatch{} },
			opts: []optDef{{name: "pkt-type", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				var t packet.PktType
				switch strings.ToLower(a[0].text) {
				case "unicast", "host":
					t = packet.PktUnicast
				case "broadcast":
					t = packet.PktBroadcast
				case "multicast":
					t = packet.PktMulticast
				case "otherhost", "outgoing", "loopback", "fastroute":
					rs.unsupportedf(a[0], "pkttype %s is not supported by filterd yet", a[0].text)
					return
				default:
					rs.errorf(a[0], "types are unicast, broadcast and multicast", "pkttype: bad type %q", a[0].text)
					return
				}
				*m.val.(*PkttypeMatch) = PkttypeMatch{Type: t, Invert: inv}
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["pkt-type"] {
					rs.errorf(m.tok, "", "pkttype: option \"--pkt-type\" must be specified")
				}
			}},
		"mac": {name: "mac", init: func(*ruleState) any { return &MACMatch{} },
			opts: []optDef{{name: "mac-source", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				mac, ok := parseMAC(a[0].text)
				if !ok {
					hint := "write six hex bytes separated by colons, like 02:00:00:00:00:01"
					if strings.Contains(strings.ToUpper(a[0].text), "XX") {
						hint = "this looks like an anonymised address; iptables-restore rejects it too"
					}
					rs.errorf(a[0], hint, "mac: invalid MAC address %q", a[0].text)
					return
				}
				*m.val.(*MACMatch) = MACMatch{Addr: mac, Invert: inv}
			}}},
			finish: func(rs *ruleState, m *modState) {
				if !m.seen["mac-source"] {
					rs.errorf(m.tok, "", "mac: option \"--mac-source\" must be specified")
				}
				if c := rs.chain; c != nil && c.Builtin && c.Hook == packet.HookOutput {
					rs.errorf(m.tok, "", "mac match is not valid in the OUTPUT chain")
				}
			}},
		"frag": {name: "frag", family: packet.IPv6, init: func(*ruleState) any { return &FragMatch{IDHi: 0xFFFFFFFF} },
			opts: []optDef{
				{name: "fragid", nargs: 1, invert: true, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					ls, hs, isRange := strings.Cut(a[0].text, ":")
					lo, ok1 := parseUint(ls, 1<<32-1)
					hi, ok2 := lo, true
					if isRange {
						if ls == "" {
							lo, ok1 = 0, true
						}
						hi, ok2 = 1<<32-1, true
						if hs != "" {
							hi, ok2 = parseUint(hs, 1<<32-1)
						}
					}
					if !ok1 || !ok2 || lo > hi {
						rs.errorf(a[0], "", "frag: bad --fragid %q", a[0].text)
						return
					}
					v := m.val.(*FragMatch)
					v.IDLo, v.IDHi, v.HasID, v.IDInvert = uint32(lo), uint32(hi), true, inv
				}},
				{name: "fraglen", nargs: 1, invert: true, unsupported: true},
				{name: "fragres", unsupported: true},
				flag("fragfirst", func(m *modState) { m.val.(*FragMatch).First = true }),
				flag("fragmore", func(m *modState) { m.val.(*FragMatch).More = true }),
				flag("fraglast", func(m *modState) { m.val.(*FragMatch).Last = true }),
			},
			finish: func(rs *ruleState, m *modState) {
				v := m.val.(*FragMatch)
				if v.More && v.Last {
					rs.errorf(m.tok, "", "frag: option \"--fragmore\" cannot be used together with \"--fraglast\"")
				}
				if !v.HasID {
					v.IDLo, v.IDHi = 0, 0xFFFFFFFF
				}
			}},
	}
	tdefs = map[string]*modDef{
		"REJECT": {name: "REJECT", init: func(rs *ruleState) any {
			t := &rs.rule.Target
			t.Kind = TargetReject
			t.Reject = RejectICMPPortUnreachable
			if rs.p.opts.Family == packet.IPv6 {
				t.Reject = RejectICMP6PortUnreachable
			}
			return t
		},
			opts: []optDef{{name: "reject-with", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
				v6 := rs.p.opts.Family == packet.IPv6
				rw, name, ok := lookupReject(a[0].text, v6)
				if ok && rw == 255 {
					rs.unsupportedf(a[0], "REJECT --reject-with %s is not supported by filterd yet", name)
					return
				}
				if !ok {
					var cands []string
					tbl := rejectTable
					if v6 {
						tbl = reject6Table
					}
					for _, e := range tbl {
						cands = append(cands, e.name)
					}
					hint := "types are " + strings.Join(cands, ", ")
					if s := suggestName(a[0].text, cands); s != "" {
						hint = fmt.Sprintf("did you mean %q?", s)
					}
					rs.errorf(a[0], hint, "REJECT: unknown --reject-with type %q", a[0].text)
					return
				}
				m.val.(*Target).Reject = rw
			}}},
			finish: func(rs *ruleState, m *modState) {
				if rs.rule.Target.Reject == RejectTCPReset && !needProto(rs, m, packet.ProtoTCP) {
					rs.errorf(m.tok, "add -p tcp to the rule", "REJECT --reject-with tcp-reset is valid only for -p tcp")
				}
			}},
		"LOG": {name: "LOG", init: func(rs *ruleState) any {
			t := &rs.rule.Target
			t.Kind = TargetLog
			t.Log.Level = 4
			return t
		},
			opts: []optDef{
				{name: "log-level", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					l, ok := logLevels[strings.ToLower(a[0].text)]
					if !ok {
						n, ok2 := parseUint(a[0].text, 7)
						if !ok2 {
							rs.errorf(a[0], "levels are 0-7 or emerg, alert, crit, error, warning, notice, info, debug", "LOG: bad --log-level %q", a[0].text)
							return
						}
						l = uint8(n)
					}
					m.val.(*Target).Log.Level = l
				}},
				{name: "log-prefix", nargs: 1, apply: func(rs *ruleState, m *modState, o token, a []token, inv bool) {
					pre := a[0].text
					if len(pre) > 29 {
						rs.p.diag(SevWarning, a[0], "shorten the prefix", "LOG: --log-prefix is cut to its first 29 characters %q, as iptables does", pre[:29])
						pre = pre[:29]
					}
					if a[0].text == "" {
						rs.errorf(a[0], "", "LOG: --log-prefix must not be empty")
						return
					}
					m.val.(*Target).Log.Prefix = pre
				}},
				flag("log-tcp-sequence", func(m *modState) { m.val.(*Target).Log.TCPSequence = true }),
				flag("log-tcp-options", func(m *modState) { m.val.(*Target).Log.TCPOptions = true }),
				flag("log-ip-options", func(m *modState) { m.val.(*Target).Log.IPOptions = true }),
				flag("log-uid", func(m *modState) { m.val.(*Target).Log.UID = true }),
				flag("log-macdecode", func(m *modState) { m.val.(*Target).Log.MACDecode = true }),
			}},
	}
}

func (rs *ruleState) connlimit(m *modState, o token, a token, above bool) {
	if m.seen["__limit"] {
		rs.errorf(o, "", "connlimit: only one of --connlimit-upto and --connlimit-above")
		return
	}
	m.seen["__limit"] = true
	n, ok := parseUint(a.text, 1<<32-1)
	if !ok {
		rs.errorf(a, "", "connlimit: bad limit %q", a.text)
		return
	}
	v := m.val.(*ConnlimitMatch)
	v.Limit, v.Above = uint32(n), above
}

func (rs *ruleState) addrRange(t token, inv bool) (AddrRange, bool) {
	a, b, ok := strings.Cut(t.text, "-")
	from, err1 := netip.ParseAddr(a)
	to := from
	var err2 error
	if ok {
		to, err2 = netip.ParseAddr(b)
	}
	fam4 := rs.p.opts.Family == packet.IPv4
	if err1 != nil || err2 != nil || from.Is4() != fam4 || to.Is4() != fam4 {
		rs.errorf(t, "write FROM-TO, like 198.18.0.1-198.18.0.9", "iprange: bad range %q", t.text)
		return AddrRange{}, false
	}
	if to.Less(from) {
		rs.errorf(t, "", "iprange: range %q ends before it starts", t.text)
		return AddrRange{}, false
	}
	return AddrRange{From: from, To: to, Invert: inv}, true
}

func (rs *ruleState) addrTypes(t token) (uint16, bool) {
	var v uint16
	for _, s := range strings.Split(t.text, ",") {
		found := false
		for i, n := range addrTypeNames {
			if strings.EqualFold(s, n) {
				v |= 1 << i
				found = true
			}
		}
		if !found {
			rs.errorf(t, "types are "+strings.Join(addrTypeNames, ", "), "addrtype: bad type %q", s)
			return 0, false
		}
	}
	return v, true
}

func parseMAC(s string) ([6]byte, bool) {
	var mac [6]byte
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return mac, false
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 16, 8)
		if err != nil || len(p) == 0 || len(p) > 2 {
			return mac, false
		}
		mac[i] = byte(n)
	}
	return mac, true
}
