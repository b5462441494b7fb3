// Package ruleset reads iptables-restore rule files into rule tables (ast.go),
// prints them as iptables-save and iptables -L do, and compiles them for
// matching. Load is the entry point for reading a file.
package ruleset

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/filterd/filterd/packet"
)

// LoadOptions control how Load reads a rules file.
type LoadOptions struct {
	// Family is the family the file is read as: packet.IPv4 (the default when
	// zero) as iptables-restore does, or packet.IPv6 as ip6tables-restore does.
	Family packet.Family
	// Strict turns the warning for skipped tables (*nat, *mangle, *raw,
	// *security) into an error.
	Strict bool
	// Resolve looks up a hostname used with -s/-d. Nil means no resolver:
	// every hostname is reported as unsupported (exit 3), never resolved.
	Resolve func(host string) ([]netip.Addr, error)
	// LookupUser and LookupGroup map names used with -m owner to ids. Nil
	// means names are reported as unsupported.
	LookupUser  func(name string) (uint32, error)
	LookupGroup func(name string) (uint32, error)
}

// LoadFile reads the named file and loads it with Load.
func LoadFile(path string, opts LoadOptions) (*File, Diagnostics, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read rules: %w", err)
	}
	f, ds := Load(path, data, opts)
	return f, ds, nil
}

// Load parses an iptables-save / iptables-restore file and validates it as
// iptables-restore would: chain references must exist, jumps may not loop,
// -j/-g may not name a built-in chain. It returns the parsed file and every
// diagnostic, in file order. The file is usable (for compiling, listing,
// saving) only when the diagnostics hold no SevError and no SevUnsupported;
// rules that carry an error or an unsupported option are left out of it.
//
// name is used in diagnostics only. Other tables than *filter are skipped
// with one warning each (an error with opts.Strict). Load never panics on
// any input.
func Load(name string, data []byte, opts LoadOptions) (*File, Diagnostics) {
	if opts.Family == packet.FamilyAny {
		opts.Family = packet.IPv4
	}
	p := &parser{opts: opts, name: name, file: &File{Name: name, Family: opts.Family},
		ruleSrc: map[*Rule]string{}, reported: map[Pos]bool{}}
	p.run(string(data))
	sort.SliceStable(p.diags, func(i, j int) bool {
		a, b := p.diags[i].Pos, p.diags[j].Pos
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	return p.file, p.diags
}

// parser holds the state of one Load.
type parser struct {
	opts  LoadOptions
	name  string
	file  *File
	diags Diagnostics

	line int    // current line number
	src  string // current physical line

	// table state
	inTable     bool
	tableName   string
	tablePos    Pos
	skipping    bool
	table       *Table
	ruleSrc     map[*Rule]string // source line of each rule, for diagnostics
	reported    map[Pos]bool     // unresolved jumps already reported
	lastCommit  int              // line of the last COMMIT
	orphanShown bool             // "outside a table" already reported for this run
	crlfShown   bool
}

func (p *parser) pos(col int) Pos { return Pos{File: p.name, Line: p.line, Col: col} }

func (p *parser) diag(sev Severity, t token, hint, format string, args ...any) {
	w := t.width
	if w < 1 {
		w = 1
	}
	p.diags = append(p.diags, Diagnostic{Pos: p.pos(t.col), Severity: sev, Msg: fmt.Sprintf(format, args...), Hint: hint, Source: p.src, Width: w})
}

func (p *parser) errorf(t token, hint, format string, args ...any) {
	p.diag(SevError, t, hint, format, args...)
}

func (p *parser) run(data string) {
	lines := strings.Split(data, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, raw := range lines {
		p.line = i + 1
		if strings.HasSuffix(raw, "\r") {
			raw = strings.TrimSuffix(raw, "\r")
			p.src = raw
			if tr := strings.TrimSpace(raw); !p.crlfShown && tr != "" && !strings.HasPrefix(tr, "#") {
				p.crlfShown = true
				p.errorf(token{col: runeCol(raw, len(raw)), width: 1}, "convert the file to Unix line endings (dos2unix); iptables-restore reads \"filter\\r\" as a table name",
					"line ends with a carriage return: the file has CRLF (Windows) line endings")
			}
		}
		p.src = raw
		p.physLine(raw)
	}
	p.line = len(lines)
	if p.inTable {
		p.src = ""
		p.diags = append(p.diags, Diagnostic{Pos: p.tablePos, Severity: SevError,
			Msg:  fmt.Sprintf("table *%s is not closed: COMMIT expected before the end of the file", p.tableName),
			Hint: "add a line COMMIT after the table's last rule"})
		if p.table != nil && !p.skipping {
			p.commitTable()
		}
	}
}

// physLine handles one physical line, splitting lines run together.
func (p *parser) physLine(raw string) {
	trimmed := strings.TrimLeft(raw, " \t")
	if trimmed == "" {
		return
	}
	isComment := strings.HasPrefix(trimmed, "#")
	segs := runTogether(raw)
	if len(segs) > 1 {
		first := strings.TrimSpace(segs[0].text)
		if isComment && strings.Trim(first, "#") == "" {
			return // "#  -A INPUT ...": a commented-out rule
		}
		var code *segment
		ncode, structural := 0, false
		for i := range segs[1:] {
			s := segs[i+1].text
			if strings.HasPrefix(s, "#") {
				continue
			}
			ncode++
			if strings.HasPrefix(s, "*") || strings.HasPrefix(s, ":") || strings.HasPrefix(s, "COMMIT") {
				structural = true
			}
			if code == nil {
				code = &segs[i+1]
			}
		}
		if isComment && code != nil && ncode == 1 && !structural {
			// "# e.g. :  -A INPUT -m set ... <set>": an example in prose, not a
			// rule that lost its line break.
			prose := strings.ToLower(strings.TrimSpace(segs[0].text))
			if strings.HasSuffix(prose, ":") || strings.Contains(prose, "e.g") || strings.Contains(prose, "example") || strings.ContainsAny(code.text, "<>") {
				return
			}
		}
		if code == nil {
			if isComment {
				return
			}
			s := segs[1]
			p.errorf(token{col: s.col, width: len([]rune(s.text))}, "put the comment on a line of its own",
				"'#' starts a comment only at the beginning of a line")
			p.logical(segs[0].text, segs[0].col)
			return
		}
		w := len([]rune(code.text))
		if f := strings.Fields(code.text); len(f) > 0 {
			w = len([]rune(f[0]))
		}
		if isComment {
			p.errorf(token{col: code.col, width: w}, "put each rule, table and chain declaration on its own line",
				"several lines run together: this line starts with '#', so iptables-restore ignores all of it, including %q", firstWords(code.text, 3))
		} else {
			p.errorf(token{col: code.col, width: w}, "put each rule, table and chain declaration on its own line",
				"several lines run together on one line: %q starts a new one", firstWords(code.text, 3))
		}
		for _, s := range segs {
			if strings.HasPrefix(s.text, "#") {
				continue
			}
			p.logical(s.text, s.col)
		}
		return
	}
	if isComment {
		return
	}
	p.logical(raw, 1)
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
		return strings.Join(f, " ") + " ..."
	}
	return strings.Join(f, " ")
}

// logical handles one logical line starting at column col.
func (p *parser) logical(text string, col int) {
	toks, lerr := tokenize(text, col)
	if lerr != nil {
		hint := "close the quote; inside double quotes write \\\" for a quote character"
		if strings.HasSuffix(strings.TrimSpace(text), "$") {
			hint = "the line ends in '$', the mark a terminal or pager puts on a cut-off line: copy the whole line"
		}
		p.errorf(token{col: lerr.col, width: lerr.width}, hint, "%s", lerr.msg)
		return
	}
	if len(toks) == 0 {
		return
	}
	first := toks[0]
	switch {
	case strings.HasPrefix(first.text, "*") && !first.quoted:
		p.startTable(toks)
	case first.text == "COMMIT" && !first.quoted:
		p.commit(toks)
	case strings.HasPrefix(first.text, ":") && !first.quoted:
		if !p.requireTable(first) || p.skipping {
			return
		}
		p.declareChain(toks)
	default:
		if p.skipping && p.inTable {
			return
		}
		if !p.requireTable(first) {
			if p.table == nil {
				return
			}
			// recover: check the rule against the last table
		}
		p.command(toks)
	}
}

// requireTable reports an error when a line appears outside a table.
func (p *parser) requireTable(t token) bool {
	if p.inTable {
		return true
	}
	if !p.orphanShown {
		p.orphanShown = true
		hint := "start the table with a line *filter"
		if p.lastCommit > 0 {
			hint = fmt.Sprintf("this line comes after COMMIT on line %d; move it above that COMMIT", p.lastCommit)
		}
		p.errorf(t, hint, "%q outside a table", firstWords(strings.TrimSpace(t.text), 1))
	}
	return false
}

var knownTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

func (p *parser) startTable(toks []token) {
	t := toks[0]
	name := strings.TrimPrefix(t.text, "*")
	if p.inTable {
		p.errorf(t, fmt.Sprintf("add COMMIT before line %d", p.line), "table *%s opened on line %d is not COMMITted before *%s", p.tableName, p.tablePos.Line, name)
		if p.table != nil && !p.skipping {
			p.commitTable()
		}
	}
	if len(toks) > 1 {
		p.errorf(toks[1], "a table line holds only the table name", "unexpected %q after *%s", toks[1].text, name)
	}
	p.orphanShown = false
	p.inTable = true
	p.tableName = name
	p.tablePos = p.pos(t.col)
	if !knownTables[name] {
		p.errorf(t, "tables are filter, nat, mangle, raw and security", "unknown table %q", name)
		p.skipping = true
		p.table = nil
		return
	}
	if name != "filter" {
		p.skipping = true
		p.table = nil
		sev := SevWarning
		if p.opts.Strict {
			sev = SevError
		}
		p.diag(sev, t, "", "table *%s skipped: filterd implements the filter table; the %s table stays with the kernel", name, name)
		p.file.Skipped = append(p.file.Skipped, SkippedTable{Name: name, Pos: p.pos(t.col)})
		return
	}
	p.skipping = false
	if p.file.Filter != nil {
		p.diag(SevWarning, t, "", "second *filter table: it replaces the one on line %d, as iptables-restore does", p.file.Filter.Chains[0].Pos.Line)
	}
	tb := &Table{Name: "filter", Family: p.opts.Family}
	for _, h := range []packet.Hook{packet.HookInput, packet.HookForward, packet.HookOutput} {
		tb.Chains = append(tb.Chains, &Chain{Name: h.String(), Builtin: true, Hook: h, Policy: PolicyAccept, Pos: p.pos(t.col)})
	}
	p.table = tb
}

func (p *parser) commit(toks []token) {
	if len(toks) > 1 {
		p.errorf(toks[1], "COMMIT stands alone on its line", "unexpected %q after COMMIT", toks[1].text)
	}
	if !p.inTable {
		p.errorf(toks[0], "", "COMMIT without a table")
		return
	}
	if p.table != nil && !p.skipping {
		p.commitTable()
	}
	p.inTable = false
	p.skipping = false
	p.lastCommit = p.line
	p.orphanShown = false
}

// counters parses "[pkts:bytes]".
func parseCounters(s string) (Counters, bool) {
	if len(s) < 5 || s[0] != '[' || s[len(s)-1] != ']' {
		return Counters{}, false
	}
	a, b, ok := strings.Cut(s[1:len(s)-1], ":")
	if !ok {
		return Counters{}, false
	}
	pk, err1 := strconv.ParseUint(a, 10, 64)
	by, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return Counters{}, false
	}
	return Counters{Packets: pk, Bytes: by}, true
}

var builtinTargets = map[string]bool{"ACCEPT": true, "DROP": true, "RETURN": true, "QUEUE": true}

// validChainName reports why name cannot be a user chain name, or "".
func validChainName(name string) string {
	switch {
	case name == "":
		return "empty chain name"
	case len(name) > 28:
		return fmt.Sprintf("chain name %q is longer than 28 characters", name)
	case strings.HasPrefix(name, "-") || strings.HasPrefix(name, "!"):
		return fmt.Sprintf("chain name %q may not start with '-' or '!'", name)
	case builtinTargets[name] || isKnownTarget(name):
		return fmt.Sprintf("chain name %q is the name of a target", name)
	case strings.ContainsAny(name, " \t"):
		return fmt.Sprintf("chain name %q contains a blank", name)
	}
	return ""
}

func (p *parser) declareChain(toks []token) {
	t := toks[0]
	name := strings.TrimPrefix(t.text, ":")
	nameTok := token{col: t.col + 1, width: t.width - 1}
	tb := p.table
	c := tb.Chain(name)
	if c != nil && c.Builtin {
		if len(toks) < 2 {
			p.errorf(t, "write :"+name+" ACCEPT [0:0] or :"+name+" DROP [0:0]", "built-in chain %s needs a policy", name)
			return
		}
		switch toks[1].text {
		case "ACCEPT":
			c.Policy = PolicyAccept
		case "DROP":
			c.Policy = PolicyDrop
		default:
			p.errorf(toks[1], "a built-in chain's policy is ACCEPT or DROP", "bad policy %q for built-in chain %s", toks[1].text, name)
			return
		}
		c.Pos = p.pos(t.col)
		if len(toks) > 2 {
			ct, ok := parseCounters(toks[2].text)
			if !ok {
				p.diag(SevWarning, toks[2], "counters are written [packets:bytes]", "invalid policy counters %q for chain %s ignored (iptables-restore -c rejects them)", toks[2].text, name)
			}
			c.Counters = ct
			if len(toks) > 3 {
				p.errorf(toks[3], "", "unexpected %q after the chain's counters", toks[3].text)
			}
		}
		return
	}
	if why := validChainName(name); why != "" {
		p.errorf(nameTok, "", "%s", why)
		return
	}
	var ct Counters
	if len(toks) > 1 {
		i := 1
		if !strings.HasPrefix(toks[1].text, "[") {
			if toks[1].text != "-" {
				p.diag(SevWarning, toks[1], "write :"+name+" - [0:0]", "user chain %s cannot have a policy; %q ignored", name, toks[1].text)
			}
			i = 2
		}
		if i < len(toks) {
			if v, ok := parseCounters(toks[i].text); ok {
				ct = v
			}
			// iptables-restore ignores whatever else follows a user chain's name.
		}
	}
	if c != nil {
		return // declared twice: iptables-restore accepts it
	}
	tb.Chains = append(tb.Chains, &Chain{Name: name, Policy: PolicyNone, Counters: ct, Pos: p.pos(t.col)})
}

// commitTable checks chain references and jump loops and publishes the table.
func (p *parser) commitTable() {
	tb := p.table
	refsOK := true
	saveLine, saveSrc := p.line, p.src
	for _, c := range tb.Chains {
		for _, r := range c.Rules {
			if r.Target.Kind != TargetJump && r.Target.Kind != TargetGoto {
				continue
			}
			to := tb.Chain(r.Target.Chain)
			p.line, p.src = r.Target.Pos.Line, p.ruleSrc[r]
			tok := token{col: r.Target.Pos.Col, width: len([]rune(r.Target.Chain))}
			if p.reported[r.Target.Pos] {
				continue
			}
			kind := "-j"
			if r.Target.Kind == TargetGoto {
				kind = "-g"
			}
			switch {
			case to == nil:
				refsOK = false
				p.reported[r.Target.Pos] = true
				msg := fmt.Sprintf("%s %s: no chain or target named %q", kind, r.Target.Chain, r.Target.Chain)
				hint := "declare the chain with :" + r.Target.Chain + " - [0:0] or -N " + r.Target.Chain
				if s := suggestName(r.Target.Chain, append(chainNames(tb), "ACCEPT", "DROP", "RETURN", "REJECT", "LOG")); s != "" && !builtinChain(tb, s) {
					msg += fmt.Sprintf("; did you mean %q?", s)
					hint = ""
				}
				p.errorf(tok, hint, "%s", msg)
			case to.Builtin:
				refsOK = false
				p.reported[r.Target.Pos] = true
				p.errorf(tok, "jump to a user-defined chain; to end processing use -j ACCEPT or -j DROP", "%s %s: cannot jump to built-in chain %s", kind, r.Target.Chain, r.Target.Chain)
			}
		}
	}
	p.line, p.src = saveLine, saveSrc
	if refsOK {
		if loop, reached := findLoop(tb); loop != nil {
			c := tb.Chain(loop[0])
			d := Diagnostic{Pos: c.Pos, Severity: SevError,
				Msg:  "jump loop: " + strings.Join(loop, " -> "),
				Hint: "iptables-restore rejects rule sets where a chain can reach itself through -j/-g"}
			if !reached {
				d.Severity = SevWarning
				d.Msg += " (no built-in chain reaches it, so iptables-restore accepts it)"
				d.Hint = "a jump to any of these chains would be rejected"
			}
			p.diags = append(p.diags, d)
		}
	}
	p.file.Filter = tb
}

func chainNames(tb *Table) []string {
	var out []string
	for _, c := range tb.Chains {
		out = append(out, c.Name)
	}
	return out
}

// findLoop returns a cycle of chain names (first == last), or nil, and
// whether a built-in chain reaches the cycle. Cycles reachable from built-in
// chains are looked for first: the kernel rejects only those.
func findLoop(tb *Table) ([]string, bool) {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found []string
	var visit func(c *Chain) bool
	visit = func(c *Chain) bool {
		color[c.Name] = grey
		stack = append(stack, c.Name)
		for _, r := range c.Rules {
			if r.Target.Kind != TargetJump && r.Target.Kind != TargetGoto {
				continue
			}
			n := tb.Chain(r.Target.Chain)
			if n == nil {
				continue
			}
			switch color[n.Name] {
			case grey:
				for i, s := range stack {
					if s == n.Name {
						found = append(append([]string{}, stack[i:]...), n.Name)
						return true
					}
				}
			case white:
				if visit(n) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[c.Name] = black
		return false
	}
	for _, builtin := range []bool{true, false} {
		for _, c := range tb.Chains {
			if c.Builtin == builtin && color[c.Name] == white && visit(c) {
				return found, builtin
			}
		}
	}
	return nil, false
}

// suggestName returns the candidate closest to s (edit distance at most 2,
// or a case-insensitive match), or "".
func suggestName(s string, cands []string) string {
	best, bestD := "", 3
	for _, c := range cands {
		if strings.EqualFold(c, s) {
			return c
		}
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 99
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	prev2 := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1) // transposition
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

func builtinChain(tb *Table, name string) bool {
	c := tb.Chain(name)
	return c != nil && c.Builtin
}
