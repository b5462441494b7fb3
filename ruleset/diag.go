package ruleset

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Severity ranks a diagnostic.
type Severity uint8

// Severities, least to most severe. SevUnsupported marks a valid construct
// (one iptables-restore accepts) that filterd cannot enforce yet; SevError is a
// mistake in the file.
const (
	SevWarning Severity = iota
	SevUnsupported
	SevError
)

func (s Severity) String() string {
	switch s {
	case SevWarning:
		return "warning"
	case SevUnsupported:
		return "unsupported"
	}
	return "error"
}

// Diagnostic is one message about a rules file, tied to a place in it.
type Diagnostic struct {
	Pos      Pos
	Severity Severity
	Msg      string
	// Hint is an optional second line with advice.
	Hint string
	// Source is the text of the offending line (without line terminator).
	Source string
	// Width is how many characters (runes) of Source to underline from Pos.Col.
	Width int
}

// Error formats the diagnostic on one line: "file:line:col: severity: msg".
func (d Diagnostic) Error() string {
	return fmt.Sprintf("%s: %s: %s", d.Pos, d.Severity, d.Msg)
}

// Format writes the diagnostic compiler style: the message, the offending
// line with the token underlined, and the hint if any.
func (d Diagnostic) Format(w io.Writer) {
	fmt.Fprintln(w, d.Error())
	if d.Source != "" && d.Pos.Col > 0 {
		src := strings.Map(func(r rune) rune {
			if r == '\t' {
				return ' '
			}
			if r == '\r' {
				return -1
			}
			return r
		}, d.Source)
		// Show a window of long lines (the article's run-together lines are
		// hundreds of characters long) around the column.
		runes := []rune(src)
		col := d.Pos.Col
		const window = 100
		if len(runes) > window {
			start := max(0, min(col-1-window/3, len(runes)-window))
			end := min(len(runes), start+window)
			prefix, suffix := "", ""
			if start > 0 {
				prefix = "..."
			}
			if end < len(runes) {
				suffix = "..."
			}
			src = prefix + string(runes[start:end]) + suffix
			col = col - start + len(prefix)
		}
		fmt.Fprintf(w, "    %s\n", src)
		n := utf8.RuneCountInString(src)
		if col > n+1 {
			col = n + 1
		}
		width := d.Width
		if width < 1 {
			width = 1
		}
		if col-1+width > n && n >= col {
			width = n - col + 1
		}
		fmt.Fprintf(w, "    %s^%s\n", strings.Repeat(" ", col-1), strings.Repeat("~", width-1))
	}
	if d.Hint != "" {
		fmt.Fprintf(w, "    hint: %s\n", d.Hint)
	}
}

// Diagnostics is every message from loading one file, in file order.
type Diagnostics []Diagnostic

// Count returns how many diagnostics have the given severity.
func (ds Diagnostics) Count(s Severity) int {
	n := 0
	for _, d := range ds {
		if d.Severity == s {
			n++
		}
	}
	return n
}

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool { return ds.Count(SevError) > 0 }

// HasUnsupported reports whether any diagnostic marks an unsupported construct.
func (ds Diagnostics) HasUnsupported() bool { return ds.Count(SevUnsupported) > 0 }

// Worst returns the highest severity present, and false when ds is empty.
func (ds Diagnostics) Worst() (Severity, bool) {
	if len(ds) == 0 {
		return 0, false
	}
	w := SevWarning
	for _, d := range ds {
		if d.Severity > w {
			w = d.Severity
		}
	}
	return w, true
}

// Format writes every diagnostic, compiler style.
func (ds Diagnostics) Format(w io.Writer) {
	for _, d := range ds {
		d.Format(w)
	}
}

// Err returns nil when there is no error or unsupported diagnostic, and an
// error summarising them otherwise.
func (ds Diagnostics) Err() error {
	e, u := ds.Count(SevError), ds.Count(SevUnsupported)
	if e == 0 && u == 0 {
		return nil
	}
	first := ds[0]
	for _, d := range ds {
		if d.Severity >= SevUnsupported {
			first = d
			break
		}
	}
	return fmt.Errorf("%d error(s), %d unsupported: %s", e, u, first.Error())
}
