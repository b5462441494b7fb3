package ruleset

import (
	"strings"
	"unicode/utf8"
)

// token is one argument of a rules-file line after iptables-restore's
// quoting rules: whitespace separates arguments; inside double quotes
// whitespace is kept and a backslash escapes the next character. Single
// quotes are ordinary characters, as in iptables-restore.
type token struct {
	text   string
	col    int // 1-based column (in characters) where the token starts
	width  int // characters the token spans in the line, quotes included
	quoted bool
}

// lexError is a tokenizer problem (an unterminated quote).
type lexError struct {
	col, width int
	msg        string
}

// tokenize splits line (one logical line, starting at column col0) into
// tokens.
func tokenize(line string, col0 int) ([]token, *lexError) {
	var toks []token
	var buf strings.Builder
	col := col0 // column of the current rune
	start := -1
	quoted := false
	inQuote := false
	quoteCol := 0
	escaped := false
	flush := func(endCol int) {
		if start >= 0 && (buf.Len() > 0 || quoted) {
			toks = append(toks, token{text: buf.String(), col: start, width: endCol - start, quoted: quoted})
		}
		buf.Reset()
		start = -1
		quoted = false
	}
	// Bytes are copied as they are (a comment in Latin-1 stays Latin-1);
	// columns count characters, an invalid byte counting as one.
	for i := 0; i < len(line); {
		r, size := utf8.DecodeRuneInString(line[i:])
		raw := line[i : i+size]
		i += size
		if inQuote {
			switch {
			case escaped:
				buf.WriteString(raw)
				escaped = false
			case r == '\\':
				escaped = true
			case r == '"':
				inQuote = false
				flush(col + 1)
			default:
				buf.WriteString(raw)
			}
			col++
			continue
		}
		switch r {
		case '"':
			if start < 0 {
				start = col
			}
			inQuote = true
			quoted = true
			quoteCol = col
		case ' ', '\t', '\n':
			flush(col)
		default:
			if start < 0 {
				start = col
			}
			buf.WriteString(raw)
		}
		col++
	}
	if inQuote {
		return toks, &lexError{col: quoteCol, width: col - quoteCol, msg: "unterminated double quote"}
	}
	flush(col)
	return toks, nil
}

// segment is a piece of a physical line that holds one logical line.
type segment struct {
	text string
	col  int // 1-based column of text[0] in the physical line
}

// runTogether splits a physical line where the article-style "several lines
// run together" pattern occurs: two or more blanks followed by something that
// starts a line of its own (a comment, a table, a chain declaration, a
// command, COMMIT). It returns the line as one segment when nothing is run
// together. Only splits after the first word are considered.
func runTogether(line string) []segment {
	var segs []segment
	runes := []rune(line)
	last := 0
	// skip leading blanks
	for last < len(runes) && (runes[last] == ' ' || runes[last] == '\t') {
		last++
	}
	startsLine := func(i int) bool {
		rest := string(runes[i:])
		switch {
		case strings.HasPrefix(rest, "#"):
			return true
		case rest == "COMMIT" || strings.HasPrefix(rest, "COMMIT ") || strings.HasPrefix(rest, "COMMIT\t"):
			return true
		}
		for _, t := range []string{"*filter", "*nat", "*mangle", "*raw", "*security"} {
			if rest == t || strings.HasPrefix(rest, t+" ") {
				return true
			}
		}
		for _, c := range []string{"-A ", "-I ", "-N ", "-P ", "-F ", "-X ", "--append ", "--insert ", "--new-chain "} {
			if strings.HasPrefix(rest, c) {
				return true
			}
		}
		if strings.HasPrefix(rest, ":") && len(rest) > 1 {
			// ":NAME POLICY [x:y]"
			f := strings.Fields(rest)
			if len(f) >= 2 && (f[1] == "-" || f[1] == "ACCEPT" || f[1] == "DROP" || strings.HasPrefix(f[1], "[")) {
				return true
			}
		}
		return false
	}
	// Inside double quotes of a rule line nothing starts a new line.
	quotes := !strings.HasPrefix(strings.TrimLeft(line, " \t"), "#")
	inQuote := false
	i := last
	for i < len(runes) {
		if quotes && runes[i] == '"' && (i == 0 || runes[i-1] != '\\' || !inQuote) {
			inQuote = !inQuote
		}
		if inQuote {
			i++
			continue
		}
		if runes[i] == ' ' || runes[i] == '\t' {
			j := i
			for j < len(runes) && (runes[j] == ' ' || runes[j] == '\t') {
				j++
			}
			if j-i >= 2 && j < len(runes) && startsLine(j) {
				segs = append(segs, segment{text: strings.TrimRight(string(runes[last:i]), " \t"), col: last + 1})
				last = j
			}
			i = j
			continue
		}
		i++
	}
	segs = append(segs, segment{text: string(runes[last:]), col: last + 1})
	return segs
}

// runeCol converts a byte offset in s to a 1-based character column.
func runeCol(s string, off int) int {
	if off > len(s) {
		off = len(s)
	}
	return utf8.RuneCountInString(s[:off]) + 1
}
