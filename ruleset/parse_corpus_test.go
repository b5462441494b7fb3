package ruleset

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/filterd/filterd/packet"
)

// corpusDir is ../shared/rules-corpus seen from the package directory.
const corpusDir = "../../shared/rules-corpus"

// corpusFiles returns the corpus files, or skips the test when the shared
// folder is absent.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.rules*"))
	if len(files) == 0 {
		t.Skipf("rules corpus not found at %s (the shared data folder is absent)", corpusDir)
	}
	sort.Strings(files)
	return files
}

// corpusFamilies returns the families a corpus file is read as: .rules6 as
// IPv6, .rules as IPv4, and file 04 (dual-stack with -4/-6 prefixes) as both.
func corpusFamilies(path string) []packet.Family {
	base := filepath.Base(path)
	if strings.HasPrefix(base, "04-") {
		return []packet.Family{packet.IPv4, packet.IPv6}
	}
	if strings.HasSuffix(base, ".rules6") {
		return []packet.Family{packet.IPv6}
	}
	return []packet.Family{packet.IPv4}
}

// fakeResolver maps every hostname to a fixed test address, as the corpus
// MANIFEST did with the namespace's hosts file.
func fakeResolver(host string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("198.18.200.1"), netip.MustParseAddr("fd00:198:18::200:1")}, nil
}

func corpusNumber(path string) int {
	var n int
	fmt.Sscanf(filepath.Base(path), "%d-", &n)
	return n
}

// brokenFirstError is the line of the first error in each broken corpus file
// (46-50), where iptables-restore also stops (MANIFEST.md), except 47 whose
// first truncated line (22) the nf_tables parser let through.
var brokenFirstError = map[int]int{46: 27, 47: 22, 48: 2, 49: 26, 50: 6}

// TestCorpus loads every corpus file. Files 01-43 (iptables-restore accepts
// them) must give exit 0 or 3 and never an error; 44-45 (MAC addresses
// anonymised to XX:XX:XX:XX:XX:XX, which iptables-restore rejects too) must
// give errors naming the --mac-source lines; 46-50 (broken as found) must give
// an error on the line where they break. No file may panic.
func TestCorpus(t *testing.T) {
	full, unsupported := 0, 0
	reasons := map[string]int{}
	status := map[int]int{} // corpus number -> worst exit status over its families
	for _, path := range corpusFiles(t) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := corpusNumber(path)
		for _, fam := range corpusFamilies(path) {
			name := fmt.Sprintf("%s/%s", filepath.Base(path), fam)
			f, ds := Load(filepath.Base(path), data, LoadOptions{Family: fam})
			switch {
			case n <= 43:
				if ds.HasErrors() {
					t.Errorf("%s: iptables-restore accepts this file, filterd reports errors:\n%s", name, diagText(ds))
					continue
				}
				if ds.HasUnsupported() {
					status[n] = 3
					for _, d := range ds {
						if d.Severity == SevUnsupported {
							reasons[unsupportedKey(d.Msg)]++
						}
					}
				} else {
					if _, seen := status[n]; !seen {
						status[n] = 0
					}
					if f.Filter == nil && n != 5 {
						t.Errorf("%s: loaded without a filter table", name)
					}
				}
			case n <= 45:
				first := -1
				for _, d := range ds {
					if d.Severity == SevError {
						if !strings.Contains(d.Msg, "invalid MAC address \"XX:XX:XX:XX:XX:XX\"") {
							t.Errorf("%s: unexpected error %s", name, d.Error())
						}
						if first < 0 {
							first = d.Pos.Line
						}
					}
				}
				want := map[int]int{44: 1826, 45: 2486}[n]
				if first != want {
					t.Errorf("%s: first error on line %d, want %d (where iptables-restore stops)", name, first, want)
				}
			default:
				first := -1
				for _, d := range ds {
					if d.Severity == SevError {
						first = d.Pos.Line
						break
					}
				}
				if first != brokenFirstError[n] {
					t.Errorf("%s: first error on line %d, want %d:\n%s", name, first, brokenFirstError[n], diagText(ds))
				}
			}
		}
	}
	for _, st := range status {
		if st == 0 {
			full++
		} else {
			unsupported++
		}
	}
	var rs []string
	for k, v := range reasons {
		rs = append(rs, fmt.Sprintf("%s (%d)", k, v))
	}
	sort.Strings(rs)
	t.Logf("corpus files 01-43: %d loads fully (exit 0), %d exit 3 (unsupported: %s)", full, unsupported, strings.Join(rs, ", "))
}

// TestCorpusHostnames: files 10 and 33 use hostnames; with a resolver (as the
// MANIFEST mapped them in the namespace's hosts file) they load fully.
func TestCorpusHostnames(t *testing.T) {
	for _, path := range corpusFiles(t) {
		if n := corpusNumber(path); n != 10 && n != 33 {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, ds := Load(filepath.Base(path), data, LoadOptions{Resolve: fakeResolver})
		if ds.HasErrors() || ds.HasUnsupported() {
			t.Errorf("%s with a resolver:\n%s", filepath.Base(path), diagText(ds))
		}
	}
}

func unsupportedKey(msg string) string {
	for _, p := range []string{"match -m ", "target -j ", "option --"} {
		if i := strings.Index(msg, p); i >= 0 {
			f := strings.Fields(msg[i:])
			if p == "option --" {
				return f[1]
			}
			return f[1] + " " + f[2]
		}
	}
	if strings.HasPrefix(msg, "hostname") {
		return "hostnames"
	}
	f := strings.Fields(msg)
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}
