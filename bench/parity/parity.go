// Package parity compares filterd with the Linux kernel (issue 6): the
// kernel side is internal/kernelreplay (a pcap replayed through iptables in
// network namespaces); this package holds the comparison of two
// `iptables-save -c` texts, rule by rule and policy by policy, that the
// Parity tests use once `filterd replay --counters` prints its counters.
package parity

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/filterd/filterd/internal/kernelreplay"
)

// Entry is one counted line of an iptables-save -c text: a chain's policy
// (Index 0) or its Index-th rule (1-based).
type Entry struct {
	Table, Chain string
	Index        int
	Text         string // the rule without its counters, or "POLICY" for a chain line
	Counter      kernelreplay.Counter
}

func (e Entry) key() string { return e.Table + "\x00" + e.Chain + "\x00" + strconv.Itoa(e.Index) }

// Parse reads the counted lines of an iptables-save -c text, in order.
func Parse(save string) ([]Entry, error) {
	var out []Entry
	table := ""
	idx := map[string]int{}
	for n, line := range strings.Split(save, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || l == "COMMIT":
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			f := strings.Fields(l[1:])
			c, ok := counter(l)
			if len(f) < 2 || !ok {
				return nil, fmt.Errorf("parity: line %d: chain line %q: want \":CHAIN POLICY [packets:bytes]\"", n+1, l)
			}
			out = append(out, Entry{Table: table, Chain: f[0], Text: f[1], Counter: c})
		case strings.HasPrefix(l, "["):
			c, ok := counter(l)
			rest := strings.TrimSpace(l[strings.IndexByte(l, ']')+1:])
			f := strings.Fields(rest)
			if !ok || len(f) < 2 || f[0] != "-A" {
				return nil, fmt.Errorf("parity: line %d: rule %q: want \"[packets:bytes] -A CHAIN ...\"", n+1, l)
			}
			k := table + "\x00" + f[1]
			idx[k]++
			out = append(out, Entry{Table: table, Chain: f[1], Index: idx[k], Text: strings.Join(f, " "), Counter: c})
		default:
			return nil, fmt.Errorf("parity: line %d: %q is not a table, chain, rule or COMMIT line", n+1, l)
		}
	}
	return out, nil
}

func counter(l string) (kernelreplay.Counter, bool) {
	i := strings.IndexByte(l, '[')
	j := strings.IndexByte(l, ']')
	if i < 0 || j < i {
		return kernelreplay.Counter{}, false
	}
	p, b, ok := strings.Cut(l[i+1:j], ":")
	pn, err1 := strconv.ParseUint(p, 10, 64)
	bn, err2 := strconv.ParseUint(b, 10, 64)
	return kernelreplay.Counter{Packets: pn, Bytes: bn}, ok && err1 == nil && err2 == nil
}

// Difference is one line where the two sides disagree: in the counters, in
// the rule text (the same position holds different rules), or because one
// side lacks the line (its Text is then empty).
type Difference struct {
	Kernel, Filterd Entry
}

func (d Difference) String() string {
	e := d.Kernel
	if e.Text == "" {
		e = d.Filterd
	}
	where := fmt.Sprintf("%s/%s policy", e.Table, e.Chain)
	if e.Index > 0 {
		where = fmt.Sprintf("%s/%s rule %d", e.Table, e.Chain, e.Index)
	}
	side := func(x Entry) string {
		if x.Text == "" {
			return "(absent)"
		}
		return fmt.Sprintf("[%d:%d] %s", x.Counter.Packets, x.Counter.Bytes, x.Text)
	}
	return fmt.Sprintf("%s:\n  kernel  %s\n  filterd %s", where, side(d.Kernel), side(d.Filterd))
}

// Diff compares the kernel's and filterd's iptables-save -c texts line by
// line (chains by name, rules by position in their chain) and returns every
// difference, in the kernel's order then filterd's extra lines.
func Diff(kernel, filterd string) ([]Difference, error) {
	ks, err := Parse(kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel side: %w", err)
	}
	fs, err := Parse(filterd)
	if err != nil {
		return nil, fmt.Errorf("filterd side: %w", err)
	}
	fm := map[string]Entry{}
	for _, e := range fs {
		fm[e.key()] = e
	}
	var out []Difference
	seen := map[string]bool{}
	for _, k := range ks {
		seen[k.key()] = true
		f, ok := fm[k.key()]
		if !ok || f.Text != k.Text || f.Counter != k.Counter {
			out = append(out, Difference{Kernel: k, Filterd: f})
		}
	}
	for _, f := range fs {
		if !seen[f.key()] {
			out = append(out, Difference{Filterd: f})
		}
	}
	return out, nil
}

// Print writes the differences, or "equal".
func Print(w io.Writer, diffs []Difference) {
	if len(diffs) == 0 {
		fmt.Fprintln(w, "equal")
		return
	}
	for _, d := range diffs {
		fmt.Fprintln(w, d)
	}
}
