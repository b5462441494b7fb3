package ruleset

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filterd/filterd/packet"
)

// FuzzParse feeds arbitrary bytes to Load (as IPv4 and IPv6). Load must not
// panic, every diagnostic must point into the input, and a file that loads
// cleanly must save to text that loads back to the same text. The seed corpus
// is the testdata rules files and the shared rules corpus, so the normal test
// run executes every seed.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/rules/*.rules*")
	corpus, _ := filepath.Glob(filepath.Join(corpusDir, "*.rules*"))
	for _, p := range append(seeds, corpus...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(data) > 24<<10 && fuzzing() {
			continue // big seeds stall the fuzzer's minimisation; the plain test run still executes them
		}
		f.Add(data, strings.HasSuffix(p, ".rules6"))
	}
	f.Add([]byte("*filter\n-A INPUT -s x.x.x.x -d ! 1.2.3.4 –p tcp -j\n"), false)
	f.Add([]byte("*filter\n:A - [0:0]\n-A A -g A\nCOMMIT"), true)
	f.Fuzz(func(t *testing.T, data []byte, v6 bool) {
		fam := packet.IPv4
		if v6 {
			fam = packet.IPv6
		}
		file, ds := Load("fuzz", data, LoadOptions{Family: fam})
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, d := range ds {
			if d.Pos.Line < 1 || d.Pos.Line > lines || d.Pos.Col < 0 {
				t.Fatalf("diagnostic outside the input (%d lines): %s", lines, d.Error())
			}
			var b bytes.Buffer
			d.Format(&b)
		}
		if ds.HasErrors() || ds.HasUnsupported() || file.Filter == nil {
			return
		}
		var out bytes.Buffer
		if err := Save(&out, file.Filter, SaveOptions{Counters: true}); err != nil {
			t.Fatal(err)
		}
		f2, ds2 := Load("saved", out.Bytes(), LoadOptions{Family: fam})
		if ds2.HasErrors() || ds2.HasUnsupported() || f2.Filter == nil {
			t.Fatalf("save output does not load:\n%s\n%s", diagText(ds2), out.String())
		}
		var out2 bytes.Buffer
		if err := Save(&out2, f2.Filter, SaveOptions{Counters: true}); err != nil {
			t.Fatal(err)
		}
		if out.String() != out2.String() {
			t.Fatalf("save is not stable:\n%s", lineDiff(out.String(), out2.String()))
		}
		var l bytes.Buffer
		if err := List(&l, file.Filter, ListOptions{Verbose: true, Numeric: true}); err != nil {
			t.Fatal(err)
		}
	})
}

// fuzzing reports whether the test binary runs with -fuzz.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}
