package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/ruleset"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var (
	wallClock = regexp.MustCompile(`replayed in [^ ]+ \([0-9]+ pps\)`)
	elapsed   = regexp.MustCompile(`"elapsed_ns": [0-9]+`)
)

// normalize removes what depends on the machine: the wall-clock time.
func normalize(s string) string {
	s = wallClock.ReplaceAllString(s, "replayed in T (N pps)")
	return elapsed.ReplaceAllString(s, `"elapsed_ns": 0`)
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it after a deliberate change):\n%s", name, got)
	}
}

// TestReplayGolden runs filterd replay with the article's rule set on real
// captures and compares the text and JSON output with golden files. The
// counters in them were checked against the kernel (see the parity tests).
func TestReplayGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"replay-hping3-server", []string{"--rules", "../../testdata/rules/server.rules", "--local", "198.18.2.2", "../../testdata/pcaps/captured_synflood_hping3_slow_vs_fast.pcap"}},
		{"replay-http-state-v6", []string{"--rules", "../../testdata/rules/server-state.rules", "--rules6", "../../testdata/rules/server.rules6", "--local", "198.18.2.2,fd00:198:18:2::2", "--top", "3", "../../testdata/pcaps/captured_ipv6_http_session.pcap", "../../testdata/pcaps/captured_http_ipv4_get.pcap"}},
	}
	for _, tt := range tests {
		for _, format := range []string{"txt", "json"} {
			t.Run(tt.name+"."+format, func(t *testing.T) {
				args := tt.args
				if format == "json" {
					args = append([]string{"--json"}, args...)
				}
				var out, errb bytes.Buffer
				if code := runReplay(context.Background(), args, &out, &errb); code != exitOK {
					t.Fatalf("exit %d: %s", code, errb.String())
				}
				if format == "json" {
					var s engine.Summary
					if err := json.Unmarshal(out.Bytes(), &s); err != nil {
						t.Fatalf("output is not one JSON document: %v", err)
					}
				}
				golden(t, tt.name+"."+format, normalize(out.String()))
			})
		}
	}
}

// TestReplayCounters checks --counters: the rule set after the replay in
// iptables-save -c form, which parses back with the same counters.
func TestReplayCounters(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"--counters", "--json", "--rules", "../../testdata/rules/server.rules", "--local", "198.18.2.2", "../../testdata/pcaps/captured_synflood_hping3_slow_vs_fast.pcap"}
	if code := runReplay(context.Background(), args, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	dec := json.NewDecoder(&out)
	var s engine.Summary
	if err := dec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(io.MultiReader(dec.Buffered(), &out))
	f, diags := ruleset.Load("counters", rest, ruleset.LoadOptions{})
	if diags.HasErrors() || f.Filter == nil {
		t.Fatalf("--counters output does not load: %v\n%s", diags, rest)
	}
	if !strings.Contains(string(rest), "[") {
		t.Fatal("no [pkts:bytes] in --counters output")
	}
	var fromJSON, fromSave uint64
	for _, c := range s.Chains {
		for _, r := range c.Rules {
			fromJSON += r.Packets
		}
		fromJSON += c.PolicyPackets
	}
	for _, c := range f.Filter.Chains {
		for _, r := range c.Rules {
			fromSave += r.Counters.Packets
		}
		fromSave += c.Counters.Packets
	}
	if fromJSON == 0 || fromJSON != fromSave {
		t.Errorf("counters: JSON sums to %d packets, iptables-save -c text to %d", fromJSON, fromSave)
	}
}

// TestReplayErrors: bad input gets a clear message and a distinct status.
func TestReplayErrors(t *testing.T) {
	dir := t.TempDir()
	cut := filepath.Join(dir, "cut.pcap")
	data, err := os.ReadFile("../../testdata/pcaps/captured_http_ipv4_get.pcap")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cut, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.rules")
	if err := os.WriteFile(broken, []byte("*filter\n-A INPUT -p tcp --dport 22 -j ACCEPTT\nCOMMIT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no pcap", []string{"--rules", "../../testdata/rules/server.rules"}, exitBadInput, "no pcap file given"},
		{"bad local", []string{"--local", "198.18.2.300", "x.pcap"}, exitBadInput, "--local"},
		{"broken rules", []string{"--rules", broken, "x.pcap"}, exitBadInput, "broken.rules:2"},
		{"missing pcap", []string{filepath.Join(dir, "none.pcap")}, exitFailure, "none.pcap"},
		{"truncated pcap", []string{"--local", "198.18.2.2", cut}, exitFailure, "packet "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runReplay(context.Background(), tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errb.String(), tt.code, tt.want)
			}
		})
	}
	// The truncated capture still reports what was read before the fault.
	var out, errb bytes.Buffer
	runReplay(context.Background(), []string{"--json", "--local", "198.18.2.2", cut}, &out, &errb)
	var s engine.Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || s.Packets == 0 || s.Error == "" {
		t.Errorf("truncated pcap: summary %+v, err %v; want the packets before the fault and the error", s, err)
	}
}

// TestReplayReport: --report writes one self-contained page (no scripts, no
// external resources) with the two time plots, a bar per rule and policy,
// and the top dropped sources.
func TestReplayReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.html")
	var out, errb bytes.Buffer
	args := []string{"--report", path, "--rules", "../../testdata/rules/server.rules", "--local", "198.18.2.2", "../../testdata/pcaps/captured_synflood_hping3_slow_vs_fast.pcap"}
	if code := runReplay(context.Background(), args, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"<polyline", "SYNs per second", "198.18.1.99", ":OUTPUT policy ACCEPT", "-A FWALL-INPUT -j LOG --log-prefix"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("%d plots, want 4 (packets, SYNs, rules, sources)", n)
	}
	for _, bad := range []string{"<script", "src=", "href=", "@import"} {
		if strings.Contains(page, bad) {
			t.Errorf("report is not self-contained: has %q", bad)
		}
	}
}
