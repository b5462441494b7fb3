package ruleset

import (
	"os"
	"strings"
	"testing"
)

// TestArticleAsPrinted checks that filterd check on the article's rule text,
// typed in as printed, names every typo with its line, column and a hint.
func TestArticleAsPrinted(t *testing.T) {
	const path = "../testdata/rules/article-as-printed.rules"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	_, ds := Load("article-as-printed.rules", data, LoadOptions{})
	type want struct {
		line int
		at   string // text the caret points at (first occurrence on the line)
		nth  int    // which occurrence of at (0 = first)
		msg  string
		hint string
	}
	var wants []want
	runTogether := map[int]string{6: "*filter", 7: "-A FWALL", 8: "-A FWALL", 19: "-A FWALL", 20: "-A FWALL", 22: "-A FWALL", 23: "-A FWALL"}
	for l, at := range runTogether {
		wants = append(wants, want{l, at, 0, "several lines run together: this line starts with '#', so iptables-restore ignores all of it", "on its own line"})
	}
	for _, l := range []int{10, 13, 16, 17} {
		wants = append(wants, want{l, "FWALL-INPUT-p", 0, `unknown chain "FWALL-INPUT-p"; did you mean "FWALL-INPUT -p"?`, "space is missing"})
	}
	// line 19: twelve rules run together, eleven "-p" typos and one "-i" typo
	for i := 0; i < 11; i++ {
		wants = append(wants, want{19, "FWALL-INPUT-p", i, `unknown chain "FWALL-INPUT-p"; did you mean "FWALL-INPUT -p"?`, "space is missing"})
	}
	wants = append(wants,
		want{19, "FWALL-INPUT-i", 0, `unknown chain "FWALL-INPUT-i"; did you mean "FWALL-INPUT -i"?`, "space is missing"},
		want{8, "x.x.x.x", 0, `"x.x.x.x" is a placeholder, not an address`, "replace it"},
		want{22, "x.x.x.x", 0, `"x.x.x.x" is a placeholder, not an address`, "replace it"},
		want{21, "–p", 0, `"–p" starts with an en dash (U+2013); did you mean "-p"?`, "ASCII"},
		want{20, "-A FWALL", 0, `"-A" outside a table`, "after COMMIT on line 19"},
	)
	used := make([]bool, len(ds))
	for _, w := range wants {
		src := lines[w.line-1]
		off := -1
		for i, from := 0, 0; i <= w.nth; i++ {
			k := strings.Index(src[from:], w.at)
			if k < 0 {
				t.Fatalf("test bug: occurrence %d of %q not on line %d", w.nth, w.at, w.line)
			}
			off = from + k
			from = off + 1
		}
		col := runeCol(src, off)
		found := false
		for i, d := range ds {
			if d.Pos.Line == w.line && d.Pos.Col == col && strings.Contains(d.Msg, w.msg) {
				if !strings.Contains(d.Hint+d.Msg, w.hint) {
					t.Errorf("%s: hint %q lacks %q", d.Error(), d.Hint, w.hint)
				}
				if d.Severity != SevError {
					t.Errorf("%s: want an error", d.Error())
				}
				used[i] = true
				found = true
				break
			}
		}
		if !found {
			t.Errorf("line %d col %d: no diagnostic %q", w.line, col, w.msg)
		}
	}
	for i, d := range ds {
		if !used[i] {
			t.Errorf("unexpected diagnostic: %s", d.Error())
		}
	}
	if t.Failed() {
		t.Log(diagText(ds))
	}
}
