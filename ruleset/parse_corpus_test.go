package ruleset

import (
	"bytes"
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

func TestCorpusSummaryScratch(t *testing.T) {
	for _, path := range corpusFiles(t) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, fam := range corpusFamilies(path) {
			_, ds := Load(filepath.Base(path), data, LoadOptions{Family: fam})
			var buf bytes.Buffer
			n := 0
			for _, d := range ds {
				if d.Severity >= SevUnsupported && n < 4 {
					buf.WriteString(d.Error() + " | ")
					n++
				}
			}
			t.Logf("%s fam=%v errors=%d unsupported=%d: %s", filepath.Base(path), fam, ds.Count(SevError), ds.Count(SevUnsupported), buf.String())
		}
	}
}
