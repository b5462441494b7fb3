package ruleset

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/filterd/filterd/packet"
)

// commands as iptables-restore accepts them inside a table.
var commandNames = map[string]string{
	"-A": "A", "--append": "A",
	"-I": "I", "--insert": "I",
	"-N": "N", "--new-chain": "N", "--new": "N",
	"-P": "P", "--policy": "P",
	"-F": "F", "--flush": "F",
	"-X": "X", "--delete-chain": "X",
	"-Z": "Z", "--zero": "Z",
	"-E": "E", "--rename-chain": "E",
	"-D": "D", "--delete": "D",
	"-R": "R", "--replace": "R",
	"-L": "L", "--list": "L", "-S": "S", "--list-rules": "S", "-C": "C", "--check": "C",
}

// fixDash recognises an option written with a typographic dash (as word
// processors and web pages print "-p") and returns the ASCII spelling: the
// dash stands for "-" before a one-letter option and for "--" before a long
// one.
func fixDash(s string) (fixed string, dash rune, ok bool) {
	r, size := utf8.DecodeRuneInString(s)
	switch r {
	case '\u2010', '\u2011', '\u2013', '\u2014', '\u2212':
	default:
		return s, 0, false
	}
	rest := s[size:]
	if len(rest) > 1 && !strings.HasPrefix(rest, "-") {
		return "--" + rest, r, true
	}
	return "-" + rest, r, true
}

func dashName(r rune) string {
	switch r {
	case '\u2013':
		return "an en dash (U+2013)"
	case '\u2014':
		return "an em dash (U+2014)"
	case '\u2212':
		return "a minus sign (U+2212)"
	}
	return fmt.Sprintf("a Unicode hyphen (U+%04X)", r)
}

// command handles one command line inside a table.
func (p *parser) command(toks []token) {
	var ctr *Counters
	fam := packet.FamilyAny
	i := 0
	for i < len(toks) {
		t := toks[i]
		if c, ok := parseCounters(t.text); ok && i == 0 && !t.quoted {
			ctr = &c
			i++
			continue
		}
		if t.text == "-4" || t.text == "--ipv4" {
			fam = packet.IPv4
			i++
			continue
		}
		if t.text == "-6" || t.text == "--ipv6" {
			fam = packet.IPv6
			i++
			continue
		}
		break
	}
	if i >= len(toks) {
		p.errorf(toks[len(toks)-1], "a rule line starts with -A CHAIN or -I CHAIN", "missing command")
		return
	}
	if fam != packet.FamilyAny && fam != p.opts.Family {
		return // the other family's line, as iptables-restore ignores it
	}
	ct := toks[i]
	name := ct.text
	if fixed, r, ok := fixDash(name); ok {
		if _, isCmd := commandNames[fixed]; isCmd {
			p.errorf(ct, "retype the dash as a plain ASCII '-'", "%q starts with %s; did you mean %q?", name, dashName(r), fixed)
			name = fixed
		}
	}
	cmd, ok := commandNames[name]
	if !ok || ct.quoted {
		hint := "a rule line starts with -A CHAIN or -I CHAIN"
		if strings.HasPrefix(name, "-") {
			p.errorf(ct, hint, "unknown command %q", name)
		} else {
			p.errorf(ct, hint, "unexpected %q: expected a command, a chain declaration (:CHAIN), a table (*filter) or COMMIT", firstWords(name, 1))
		}
		return
	}
	rest := toks[i+1:]
	tb := p.table
	switch cmd {
	case "A", "I", "R":
		p.ruleCommand(cmd, ct, rest, ctr, fam)
	case "N":
		if len(rest) != 1 {
			p.argCount(ct, rest, 1)
			return
		}
		n := rest[0].text
		if why := validChainName(n); why != "" {
			p.errorf(rest[0], "", "%s", why)
			return
		}
		if tb.Chain(n) != nil {
			p.errorf(rest[0], "", "chain %s already exists", n)
			return
		}
		tb.Chains = append(tb.Chains, &Chain{Name: n, Pos: p.pos(rest[0].col)})
	case "P":
		if len(rest) < 2 {
			p.argCount(ct, rest, 2)
			return
		}
		c := tb.Chain(rest[0].text)
		if c == nil || !c.Builtin {
			p.errorf(rest[0], "only INPUT, FORWARD and OUTPUT have a policy in the filter table", "-P: %q is not a built-in chain", rest[0].text)
			return
		}
		switch rest[1].text {
		case "ACCEPT":
			c.Policy = PolicyAccept
		case "DROP":
			c.Policy = PolicyDrop
		default:
			p.errorf(rest[1], "a built-in chain's policy is ACCEPT or DROP", "bad policy %q", rest[1].text)
			return
		}
		if len(rest) > 2 {
			p.errorf(rest[2], "", "unexpected %q after the policy", rest[2].text)
		}
	case "F", "Z":
		if len(rest) > 1 {
			p.argCount(ct, rest, 1)
			return
		}
		for _, c := range tb.Chains {
			if len(rest) == 1 && c.Name != rest[0].text {
				continue
			}
			if cmd == "F" {
				c.Rules = nil
			} else {
				c.Counters = Counters{}
				for _, r := range c.Rules {
					r.Counters = Counters{}
				}
			}
		}
		if len(rest) == 1 && tb.Chain(rest[0].text) == nil {
			p.unknownChain(rest[0])
		}
	case "X":
		if len(rest) > 1 {
			p.argCount(ct, rest, 1)
			return
		}
		var keep []*Chain
		for _, c := range tb.Chains {
			if c.Builtin || (len(rest) == 1 && c.Name != rest[0].text) {
				keep = append(keep, c)
				continue
			}
			if len(rest) == 1 {
				if len(c.Rules) > 0 {
					p.errorf(rest[0], "flush it first with -F "+c.Name, "-X %s: chain is not empty", c.Name)
					keep = append(keep, c)
					continue
				}
				if n := countRefs(tb, c.Name); n > 0 {
					p.errorf(rest[0], "", "-X %s: chain is still referenced by %d rule(s)", c.Name, n)
					keep = append(keep, c)
					continue
				}
			}
		}
		if len(rest) == 1 {
			if c := tb.Chain(rest[0].text); c != nil && c.Builtin {
				p.errorf(rest[0], "", "-X: cannot delete built-in chain %s", c.Name)
			} else if c == nil {
				p.unknownChain(rest[0])
			}
		}
		tb.Chains = keep
	case "E":
		if len(rest) != 2 {
			p.argCount(ct, rest, 2)
			return
		}
		c := tb.Chain(rest[0].text)
		if c == nil {
			p.unknownChain(rest[0])
			return
		}
		if c.Builtin {
			p.errorf(rest[0], "", "-E: cannot rename built-in chain %s", c.Name)
			return
		}
		n := rest[1].text
		if why := validChainName(n); why != "" {
			p.errorf(rest[1], "", "%s", why)
			return
		}
		if tb.Chain(n) != nil {
			p.errorf(rest[1], "", "chain %s already exists", n)
			return
		}
		for _, cc := range tb.Chains {
			for _, r := range cc.Rules {
				if (r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto) && r.Target.Chain == c.Name {
					r.Target.Chain = n
				}
			}
		}
		c.Name = n
	case "D":
		if len(rest) == 2 {
			c := tb.Chain(rest[0].text)
			if c == nil {
				p.unknownChain(rest[0])
				return
			}
			n, err := strconv.Atoi(rest[1].text)
			if err == nil {
				if n < 1 || n > len(c.Rules) {
					p.errorf(rest[1], "", "-D %s %d: chain has %d rule(s)", c.Name, n, len(c.Rules))
					return
				}
				c.Rules = append(c.Rules[:n-1], c.Rules[n:]...)
				return
			}
		}
		p.diag(SevUnsupported, ct, "", "-D with a rule specification is not supported by filterd yet (use -D CHAIN NUMBER)")
	default:
		p.errorf(ct, "a restore file holds only table, chain and rule lines", "command %s is not allowed in a rules file", name)
	}
}

func countRefs(tb *Table, name string) int {
	n := 0
	for _, c := range tb.Chains {
		for _, r := range c.Rules {
			if (r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto) && r.Target.Chain == name {
				n++
			}
		}
	}
	return n
}

func (p *parser) argCount(ct token, rest []token, want int) {
	t := ct
	if len(rest) > want {
		t = rest[want]
		p.errorf(t, "", "too many arguments for %s", ct.text)
		return
	}
	p.errorf(t, "", "%s needs %d argument(s)", ct.text, want)
}

// shortOpts are the one-letter rule options, for the "-A FWALL-INPUT-p" check.
const shortOpts = "psdiojgmfc"

// unknownChain reports a chain name that does not exist, with a suggestion.
// It returns the chain the name most likely meant and, if the name swallowed
// an option ("FWALL-INPUT-p"), that option.
func (p *parser) unknownChain(t token) (*Chain, string) {
	name := t.text
	tb := p.table
	var best *Chain
	for _, c := range tb.Chains {
		if strings.HasPrefix(name, c.Name+"-") && (best == nil || len(c.Name) > len(best.Name)) {
			rest := name[len(c.Name)+1:]
			if len(rest) == 1 && strings.Contains(shortOpts, rest) {
				best = c
			}
		}
	}
	if best != nil {
		opt := name[len(best.Name):]
		p.errorf(t, "a space is missing between the chain name and the option", "unknown chain %q; did you mean %q?", name, best.Name+" "+opt)
		return best, opt
	}
	if s := suggestName(name, chainNames(tb)); s != "" {
		p.errorf(t, "", "unknown chain %q; did you mean %q?", name, s)
		return tb.Chain(s), ""
	}
	p.errorf(t, "declare it first with :"+name+" - [0:0] or -N "+name, "unknown chain %q", name)
	return nil, ""
}

// ruleCommand handles -A, -I and -R.
func (p *parser) ruleCommand(cmd string, ct token, rest []token, ctr *Counters, fam packet.Family) {
	if len(rest) == 0 {
		p.errorf(ct, "write "+ct.text+" CHAIN followed by the rule", "%s needs a chain name", ct.text)
		return
	}
	tb := p.table
	chainTok := rest[0]
	rest = rest[1:]
	c := tb.Chain(chainTok.text)
	ok := true
	if c == nil {
		ok = false
		var opt string
		c, opt = p.unknownChain(chainTok)
		if opt != "" {
			// recover: check the rest of the line as "CHAIN -p ..."
			n := utf8.RuneCountInString(c.Name)
			rest = append([]token{{text: opt, col: chainTok.col + n, width: 2}}, rest...)
		}
	}
	pos := -1
	if cmd == "I" || cmd == "R" {
		if len(rest) > 0 {
			if n, err := strconv.Atoi(rest[0].text); err == nil && !rest[0].quoted {
				pos = n
				if c != nil && (n < 1 || n > len(c.Rules)+1 || (cmd == "R" && n > len(c.Rules))) {
					p.errorf(rest[0], "", "%s %s %d: index out of range (chain has %d rule(s))", ct.text, c.Name, n, len(c.Rules))
					ok = false
				}
				rest = rest[1:]
			}
		}
		if cmd == "I" && pos < 0 {
			pos = 1
		}
		if cmd == "R" && pos < 0 {
			p.errorf(ct, "write -R CHAIN NUMBER rule", "-R needs a rule number")
			return
		}
	}
	rs := &ruleState{p: p, chain: c}
	rs.rule.Pos = p.pos(ct.col)
	rs.rule.Proto.Any = true
	rs.rule.Family = fam
	if ctr != nil {
		rs.rule.Counters = *ctr
	}
	rs.parse(rest)
	if !ok || c == nil || rs.bad || rs.unsupported || rs.skip {
		return
	}
	rules := rs.expand()
	for _, r := range rules {
		p.ruleSrc[r] = p.src
	}
	switch cmd {
	case "A":
		c.Rules = append(c.Rules, rules...)
	case "I":
		// iptables inserts every expanded rule at the same position.
		for _, r := range rules {
			at := pos - 1
			if at > len(c.Rules) {
				at = len(c.Rules)
			}
			c.Rules = append(c.Rules[:at], append([]*Rule{r}, c.Rules[at:]...)...)
		}
	case "R":
		if len(rules) != 1 {
			p.errorf(ct, "", "-R needs a rule that expands to exactly one rule")
			return
		}
		c.Rules[pos-1] = rules[0]
	}
}

// ruleState is a rule being parsed.
type ruleState struct {
	p     *parser
	chain *Chain
	rule  Rule

	srcs, dsts []netip.Prefix // expanded -s/-d lists (nil: any)
	mods       []*modState
	target     *modState // REJECT, LOG or an unsupported target
	targetSet  bool
	protoSet   bool

	bad, unsupported, skip bool
	singleQuoteShown       bool
}

func (rs *ruleState) errorf(t token, hint, format string, args ...any) {
	rs.bad = true
	rs.p.errorf(t, hint, format, args...)
}

func (rs *ruleState) unsupportedf(t token, format string, args ...any) {
	rs.unsupported = true
	rs.p.diag(SevUnsupported, t, "", format, args...)
}

// coreOpt describes an iptables option that is not part of an extension.
type coreOpt struct {
	key    string
	nargs  int
	invert bool
}

var coreOpts = map[string]coreOpt{
	"-p": {"p", 1, true}, "--protocol": {"p", 1, true}, "--proto": {"p", 1, true},
	"-s": {"s", 1, true}, "--source": {"s", 1, true}, "--src": {"s", 1, true},
	"-d": {"d", 1, true}, "--destination": {"d", 1, true}, "--dst": {"d", 1, true},
	"-i": {"i", 1, true}, "--in-interface": {"i", 1, true},
	"-o": {"o", 1, true}, "--out-interface": {"o", 1, true},
	"-f": {"f", 0, true}, "--fragment": {"f", 0, true}, "--fragments": {"f", 0, true},
	"-j": {"j", 1, false}, "--jump": {"j", 1, false},
	"-g": {"g", 1, false}, "--goto": {"g", 1, false},
	"-m": {"m", 1, false}, "--match": {"m", 1, false},
	"-c": {"c", 2, false}, "--set-counters": {"c", 2, false},
	"-4": {"4", 0, false}, "--ipv4": {"4", 0, false},
	"-6": {"6", 0, false}, "--ipv6": {"6", 0, false},
}

// parse reads the options of a rule.
func (rs *ruleState) parse(toks []token) {
	inv := false
	var invTok token
	seen := map[string]bool{}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.text == "!" && !t.quoted {
			if inv {
				rs.errorf(t, "", "multiple '!' flags")
			}
			inv, invTok = true, t
			continue
		}
		name := t.text
		if fixed, r, ok := fixDash(name); ok && !t.quoted {
			rs.errorf(t, "retype the dash as a plain ASCII '-'", "%q starts with %s; did you mean %q?", name, dashName(r), fixed)
			name = fixed
		}
		if !strings.HasPrefix(name, "-") || name == "-" || name == "--" || t.quoted {
			rs.strayArg(t, toks, i)
			inv = false
			continue
		}
		var eqArg *token
		if strings.HasPrefix(name, "--") {
			if k := strings.IndexByte(name, '='); k > 0 {
				eqArg = &token{text: name[k+1:], col: t.col + k + 1, width: t.width - k - 1}
				name = name[:k]
			}
		}
		if co, ok := coreOpts[name]; ok {
			args, next, ok := rs.takeArgs(t, name, toks, i, co.nargs, eqArg, &inv, &invTok, co.invert)
			i = next
			if !ok {
				inv = false
				continue
			}
			if inv && !co.invert {
				rs.errorf(invTok, "", "option %s cannot be inverted", name)
			}
			if seen[co.key] && co.key != "m" && co.key != "4" && co.key != "6" {
				rs.errorf(t, "", "option %s given twice", name)
			}
			seen[co.key] = true
			rs.core(co.key, t, args, inv)
			inv = false
			continue
		}
		if cmd, ok := commandNames[name]; ok && (cmd == "A" || cmd == "I") {
			rs.errorf(t, "put each rule on its own line", "several rules run together on one line: a second %s", name)
			rs.skip = true
			return
		}
		// extension option
		m, od := rs.findOpt(name)
		if od == nil && m == nil {
			if rs.loadImplicit(name, t) {
				m, od = rs.findOpt(name)
			}
		}
		if od == nil && m != nil && m.def == nil {
			// an option of an unsupported module or target: swallow its arguments
			j := i + 1
			if eqArg == nil {
				for j < len(toks) && !strings.HasPrefix(toks[j].text, "-") && toks[j].text != "!" {
					j++
				}
			}
			i = j - 1
			inv = false
			continue
		}
		if od == nil {
			rs.unknownOption(t, name)
			inv = false
			// skip arguments so that they are not reported as stray
			for i+1 < len(toks) && !strings.HasPrefix(toks[i+1].text, "-") && toks[i+1].text != "!" {
				i++
			}
			continue
		}
		args, next, ok := rs.takeArgs(t, name, toks, i, od.nargs, eqArg, &inv, &invTok, od.invert)
		i = next
		if !ok {
			inv = false
			continue
		}
		if inv && !od.invert {
			rs.errorf(invTok, "", "%s: option --%s cannot be inverted", m.name, od.name)
		}
		if m.seen[od.name] {
			rs.errorf(t, "", "%s: option --%s given twice", m.name, od.name)
		}
		m.seen[od.name] = true
		if od.unsupported {
			rs.unsupportedf(t, "option --%s of %s is not supported by filterd yet", od.name, m.label())
		} else if od.apply != nil {
			od.apply(rs, m, t, args, inv)
		}
		inv = false
	}
	if inv {
		rs.errorf(invTok, "'!' goes right before the option it inverts", "'!' at the end of the rule")
	}
	rs.finish()
}

// takeArgs collects n arguments of the option at toks[i].
func (rs *ruleState) takeArgs(t token, name string, toks []token, i, n int, eqArg *token, inv *bool, invTok *token, invertible bool) ([]token, int, bool) {
	if n == 0 {
		if eqArg != nil {
			rs.errorf(*eqArg, "", "option %s takes no argument", name)
		}
		return nil, i, true
	}
	var args []token
	if eqArg != nil {
		args = append(args, *eqArg)
	}
	j := i + 1
	for len(args) < n {
		if j >= len(toks) {
			rs.errorf(t, "", "option %s needs an argument", name)
			return nil, j - 1, false
		}
		a := toks[j]
		if a.text == "!" && !a.quoted && len(args) == 0 {
			// old intrapositioned negation: "-d ! addr" / "--dport ! 22"
			good := "! " + name
			if j+1 < len(toks) {
				good += " " + toks[j+1].text
			}
			rs.errorf(a, fmt.Sprintf("write %q: iptables 1.8 rejects the old \"%s ! ...\" form", good, name),
				"old-style negation: '!' after %s", name)
			if !invertible {
				rs.errorf(a, "", "option %s cannot be inverted", name)
			}
			*inv, *invTok = true, a
			j++
			continue
		}
		args = append(args, a)
		j++
	}
	return args, j - 1, true
}

// strayArg reports an argument that belongs to no option.
func (rs *ruleState) strayArg(t token, toks []token, i int) {
	txt := t.text
	for k := i - 1; k >= 0; k-- {
		if pt := toks[k].text; strings.HasPrefix(pt, "'") && !(len(pt) > 1 && strings.HasSuffix(pt, "'")) && !toks[k].quoted {
			if rs.singleQuoteShown {
				rs.bad = true
				return
			}
			rs.singleQuoteShown = true
			rs.errorf(t, "iptables-restore understands only double quotes: write \"...\"", "unexpected %q: single quotes do not group words, so the argument %s ended at the blank before it", txt, pt)
			return
		}
		if strings.HasPrefix(toks[k].text, "-") {
			break
		}
	}
	switch {
	case i > 0 && (toks[i-1].text == "-j" || toks[i-1].text == "--jump" || toks[i-1].text == "-g"):
		rs.errorf(t, "", "unexpected %q after the target", txt)
	case i > 0 && strings.HasPrefix(toks[i-1].text, "--log-prefix") && !toks[i-1].quoted:
		rs.errorf(t, "iptables-restore understands only double quotes: --log-prefix \"...\"", "unexpected %q: the --log-prefix argument ends at the blank before it", txt)
	case strings.HasPrefix(txt, "'") || strings.HasSuffix(txt, "'"):
		rs.errorf(t, "iptables-restore understands only double quotes: write \"...\"", "unexpected %q: single quotes do not group words", txt)
	default:
		rs.errorf(t, "every argument follows an option, like -p tcp or --dport 22", "unexpected argument %q", txt)
	}
}

// unknownOption reports an option that no loaded match or target knows.
func (rs *ruleState) unknownOption(t token, name string) {
	long := strings.TrimPrefix(name, "--")
	var owners []string
	for _, d := range modDefs {
		for _, o := range d.opts {
			if o.name == long {
				owners = append(owners, d.name)
				break
			}
		}
	}
	hint := ""
	if len(owners) > 0 {
		switch owners[0] {
		case "tcp", "udp":
			hint = fmt.Sprintf("%s needs -p tcp or -p udp before it (or -m tcp / -m udp)", name)
		case "icmp":
			hint = "--icmp-type needs -p icmp before it"
		case "icmp6":
			hint = "--icmpv6-type needs -p icmpv6 before it"
		default:
			hint = fmt.Sprintf("%s belongs to -m %s; load the match first", name, owners[0])
			if od := tdefs[owners[0]]; od != nil {
				hint = fmt.Sprintf("%s belongs to -j %s; put it after the target", name, owners[0])
			}
		}
	}
	for _, d := range tdefs {
		for _, o := range d.opts {
			if o.name == long && hint == "" {
				hint = fmt.Sprintf("%s belongs to -j %s; put it after -j %s", name, d.name, d.name)
			}
		}
	}
	if rep, ok := obsoleteOpts[long]; ok {
		hint = rep
	}
	rs.errorf(t, hint, "unknown option %q", name)
}

// obsoleteOpts are options of old iptables versions with their modern form.
var obsoleteOpts = map[string]string{
	"days":        "old iptables spelling; -m time now takes --weekdays",
	"monthday":    "-m time now takes --monthdays",
	"log-tcp-seq": "write --log-tcp-sequence",
}

// core applies a core option.
func (rs *ruleState) core(key string, t token, args []token, inv bool) {
	p := rs.p
	r := &rs.rule
	switch key {
	case "p":
		num, any, ok := parseProto(args[0].text)
		if !ok {
			hint := ""
			if s := suggestName(strings.ToLower(args[0].text), protoNamesList()); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			rs.errorf(args[0], hint, "unknown protocol %q", args[0].text)
			return
		}
		rs.protoSet = true
		r.Proto = ProtoMatch{Any: any, Num: num, Invert: inv}
	case "s", "d":
		list, ok := rs.parseAddrs(args[0], inv)
		if !ok {
			return
		}
		if inv && len(list) > 1 {
			rs.errorf(args[0], "write one rule per address, or use -m iprange / an ipset", "! not allowed with multiple source or destination IP addresses")
			return
		}
		if key == "s" {
			rs.srcs = list
			r.Src.Invert = inv
		} else {
			rs.dsts = list
			r.Dst.Invert = inv
		}
	case "i", "o":
		name := args[0].text
		if len(name) > 15 {
			rs.errorf(args[0], "", "interface name %q is longer than 15 characters", name)
			return
		}
		if name == "" || strings.ContainsAny(name, "/ \t") {
			rs.errorf(args[0], "", "invalid interface name %q", name)
			return
		}
		if rs.chain != nil && rs.chain.Builtin {
			if key == "i" && rs.chain.Hook == packet.HookOutput {
				rs.errorf(t, "OUTPUT packets have no input interface; use -o", "can't use -i with OUTPUT")
				return
			}
			if key == "o" && rs.chain.Hook == packet.HookInput {
				rs.errorf(t, "INPUT packets have no output interface; use -i", "can't use -o with INPUT")
				return
			}
		}
		if key == "i" {
			r.InIface = IfaceMatch{Name: name, Invert: inv}
		} else {
			r.OutIface = IfaceMatch{Name: name, Invert: inv}
		}
	case "f":
		if p.opts.Family == packet.IPv6 {
			rs.errorf(t, "use -m frag in ip6tables files", "-f is not available in IPv6 rules")
			return
		}
		if inv {
			r.Frag = False
		} else {
			r.Frag = True
		}
	case "j", "g":
		rs.setTarget(key, t, args[0])
	case "m":
		rs.loadMatch(args[0], false)
	case "c":
		pk, err1 := strconv.ParseUint(args[0].text, 10, 64)
		by, err2 := strconv.ParseUint(args[1].text, 10, 64)
		if err1 != nil || err2 != nil {
			rs.errorf(t, "write -c PACKETS BYTES", "invalid counters %q %q", args[0].text, args[1].text)
			return
		}
		r.Counters = Counters{Packets: pk, Bytes: by}
	case "4", "6":
		fam := packet.IPv4
		if key == "6" {
			fam = packet.IPv6
		}
		if fam != p.opts.Family {
			rs.skip = true
		}
		r.Family = fam
	}
}

// setTarget handles -j and -g.
func (rs *ruleState) setTarget(key string, t, a token) {
	if rs.targetSet {
		rs.errorf(t, "a rule has one target", "second target %q", a.text)
		return
	}
	rs.targetSet = true
	name := a.text
	tg := &rs.rule.Target
	tg.Pos = rs.p.pos(a.col)
	if fixed, r, ok := fixDash(name); ok {
		rs.errorf(a, "", "%q starts with %s", name, dashName(r))
		name = fixed
	}
	if key == "g" {
		if builtinTargets[name] || isKnownTarget(name) {
			rs.errorf(a, "-g takes a user-defined chain; use -j "+name, "-g %s: goto needs a user-defined chain", name)
			return
		}
		tg.Kind, tg.Chain = TargetGoto, name
		return
	}
	switch name {
	case "ACCEPT":
		tg.Kind = TargetAccept
		return
	case "DROP":
		tg.Kind = TargetDrop
		return
	case "RETURN":
		tg.Kind = TargetReturn
		return
	case "":
		rs.errorf(a, "", "empty target name")
		return
	}
	if d := tdefs[name]; d != nil {
		m := &modState{def: d, name: name, tok: a, seen: map[string]bool{}}
		m.val = d.init(rs)
		rs.target = m
		return
	}
	if fam, ok := knownTargets[name]; ok {
		if (fam == "4" && rs.p.opts.Family == packet.IPv6) || (fam == "6" && rs.p.opts.Family == packet.IPv4) {
			rs.errorf(a, "", "target %s does not exist for this address family", name)
			return
		}
		rs.target = &modState{name: name, tok: a, seen: map[string]bool{}, isTarget: true}
		if name == "QUEUE" || name == "NFQUEUE" || name == "NFLOG" || name == "ULOG" {
			rs.unsupportedf(a, "target -j %s is not supported by filterd yet", name)
		} else {
			rs.unsupportedf(a, "target -j %s is not supported by filterd yet (filterd implements the filter table's ACCEPT, DROP, REJECT, LOG, RETURN and chain jumps)", name)
		}
		return
	}
	if strings.ToUpper(name) != name && builtinTargets[strings.ToUpper(name)] {
		// "-j accept": not a chain name anyone means
		tg.Kind, tg.Chain = TargetJump, name
		return
	}
	if strings.HasSuffix(name, "$") {
		rs.errorf(a, "the line ends in '$', the mark a terminal or pager puts on a cut-off line: copy the whole line", "-j %s: the rule looks truncated", name)
		return
	}
	tg.Kind, tg.Chain = TargetJump, name
}

// loadMatch handles -m NAME (and implicit protocol matches).
func (rs *ruleState) loadMatch(a token, implicit bool) *modState {
	name := a.text
	canon := name
	if canon == "icmpv6" || canon == "ipv6-icmp" {
		canon = "icmp6"
	}
	if d := modDefs[canon]; d != nil {
		if d.family != packet.FamilyAny && d.family != rs.p.opts.Family {
			alt := ""
			switch canon {
			case "icmp":
				alt = "; in IPv6 rules use -m icmp6 --icmpv6-type"
			case "icmp6":
				alt = "; in IPv4 rules use -m icmp --icmp-type"
			case "ttl":
				alt = "; in IPv6 rules use -m hl"
			case "hl":
				alt = "; in IPv4 rules use -m ttl"
			}
			rs.errorf(a, "", "match -m %s does not exist for %s%s", name, rs.p.opts.Family, alt)
			return nil
		}
		m := &modState{def: d, name: canon, tok: a, seen: map[string]bool{}, implicit: implicit}
		m.val = d.init(rs)
		rs.mods = append(rs.mods, m)
		return m
	}
	if fam, ok := knownMatches[name]; ok {
		if (fam == "4" && rs.p.opts.Family == packet.IPv6) || (fam == "6" && rs.p.opts.Family == packet.IPv4) {
			rs.errorf(a, "", "match -m %s does not exist for %s", name, rs.p.opts.Family)
			return nil
		}
		m := &modState{name: name, tok: a, seen: map[string]bool{}}
		rs.mods = append(rs.mods, m)
		rs.unsupportedf(a, "match -m %s is not supported by filterd yet", name)
		return m
	}
	hint := ""
	var cands []string
	for n := range modDefs {
		cands = append(cands, n)
	}
	for n := range knownMatches {
		cands = append(cands, n)
	}
	if s := suggestName(name, cands); s != "" {
		hint = fmt.Sprintf("did you mean -m %s?", s)
	}
	rs.errorf(a, hint, "unknown match module %q", name)
	return nil
}

// findOpt finds the loaded match or target that owns the option --name:
// the target first, then matches from the most recent, by exact name and
// then by unique prefix (as getopt_long does).
func (rs *ruleState) findOpt(name string) (*modState, *optDef) {
	if !strings.HasPrefix(name, "--") {
		return nil, nil
	}
	long := name[2:]
	order := make([]*modState, 0, len(rs.mods)+1)
	if rs.target != nil {
		order = append(order, rs.target)
	}
	for i := len(rs.mods) - 1; i >= 0; i-- {
		order = append(order, rs.mods[i])
	}
	for _, m := range order {
		if m.def == nil {
			continue
		}
		for k := range m.def.opts {
			if m.def.opts[k].name == long {
				return m, &m.def.opts[k]
			}
		}
	}
	var pm *modState
	var po *optDef
	n := 0
	for _, m := range order {
		if m.def == nil {
			continue
		}
		for k := range m.def.opts {
			if strings.HasPrefix(m.def.opts[k].name, long) && len(long) >= 2 {
				if po == nil || po.name != m.def.opts[k].name {
					n++
				}
				if pm == nil {
					pm, po = m, &m.def.opts[k]
				}
			}
		}
	}
	if n == 1 {
		return pm, po
	}
	// an unsupported module or target takes the options nobody else knows
	for _, m := range order {
		if m.def != nil {
			continue
		}
		known, listed := unsupportedOpts[m.name]
		if !listed {
			return m, nil
		}
		for _, o := range known {
			if o == long || (len(long) >= 2 && strings.HasPrefix(o, long)) {
				return m, nil
			}
		}
	}
	return nil, nil
}

// loadImplicit loads the protocol's match when an unknown option follows
// "-p tcp" etc., as iptables does.
func (rs *ruleState) loadImplicit(name string, opt token) bool {
	if !rs.protoSet || rs.rule.Proto.Any {
		return false
	}
	var mod string
	switch rs.rule.Proto.Num {
	case packet.ProtoTCP:
		mod = "tcp"
	case packet.ProtoUDP:
		mod = "udp"
	case packet.ProtoICMP:
		mod = "icmp"
	case packet.ProtoICMPv6:
		mod = "icmp6"
	case packet.ProtoSCTP:
		mod = "sctp"
	case packet.ProtoUDPLite:
		mod = "udplite"
	case 33:
		mod = "dccp"
	case packet.ProtoESP:
		mod = "esp"
	case packet.ProtoAH:
		mod = "ah"
	default:
		return false
	}
	for _, m := range rs.mods {
		if m.name == mod {
			return false
		}
	}
	d := modDefs[mod]
	if d != nil {
		if d.family != packet.FamilyAny && d.family != rs.p.opts.Family {
			return false
		}
		found := false
		for _, o := range d.opts {
			if "--"+o.name == name || (strings.HasPrefix(o.name, strings.TrimPrefix(name, "--")) && len(name) > 3) {
				found = true
			}
		}
		if !found {
			return false
		}
		rs.loadMatch(token{text: mod, col: rs.p.pos(0).Col}, true)
		return true
	}
	if _, ok := knownMatches[mod]; ok {
		m := &modState{name: mod, tok: opt, seen: map[string]bool{}, implicit: true}
		rs.mods = append(rs.mods, m)
		rs.unsupportedf(opt, "match %s (implicit with -p %s, for %s) is not supported by filterd yet", mod, protoString(rs.rule.Proto.Num), name)
		return true
	}
	return false
}

// finish validates the rule as a whole and builds its matches.
func (rs *ruleState) finish() {
	for _, m := range rs.mods {
		if m.def == nil {
			continue
		}
		if m.def.finish != nil {
			m.def.finish(rs, m)
		}
	}
	if rs.target != nil && rs.target.def != nil && rs.target.def.finish != nil {
		rs.target.def.finish(rs, rs.target)
	}
	if rs.bad || rs.unsupported {
		return
	}
	for _, m := range rs.mods {
		if mm, ok := m.val.(Match); ok {
			rs.rule.Matches = append(rs.rule.Matches, mm)
		}
	}
}

// expand turns the parsed rule into one rule per -s/-d combination.
func (rs *ruleState) expand() []*Rule {
	srcs := rs.srcs
	if len(srcs) == 0 {
		srcs = []netip.Prefix{{}}
	}
	dsts := rs.dsts
	if len(dsts) == 0 {
		dsts = []netip.Prefix{{}}
	}
	var out []*Rule
	for _, s := range srcs {
		for _, d := range dsts {
			r := rs.rule
			r.Src.Prefix = s
			r.Dst.Prefix = d
			r.Matches = append([]Match(nil), rs.rule.Matches...)
			out = append(out, &r)
		}
	}
	return out
}
