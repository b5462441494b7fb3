package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filterd/filterd/internal/netns"
)

const (
	pcaps = "../../../testdata/pcaps"
	rules = "../../../testdata/rules"
)

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"x.pcap"}, // no rules
		{"--rules", filepath.Join(rules, "server.rules"), "a.pcap", "b.pcap"},
		{"--rules", filepath.Join(t.TempDir(), "missing.rules"), "a.pcap"},
		{"--rules", filepath.Join(rules, "server.rules"), "--local", "not-an-address", "a.pcap"},
		{"--no-such-flag"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}
}

// TestParityCLI runs the command on a real capture with the article's rules
// (IPv4 and IPv6): the kernel and filterd agree, so it exits 0 and says so.
func TestParityCLI(t *testing.T) {
	if err := netns.RequireRoot(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skipf("needs root: %v (CI=true makes this a failure)", err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{
		"--rules", filepath.Join(rules, "server.rules"), "--rules6", filepath.Join(rules, "server.rules6"),
		"--local", "198.18.2.2,fd00:198:18:2::2", filepath.Join(pcaps, "captured_tcp_refused_rst.pcap"),
	}, &stdout, &stderr)
	out := stdout.String()
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
	}
	for _, want := range []string{"IPv4 counters (filter table): equal\n", "IPv6 counters (filter table): equal\n", "verdicts: 8 packets compared, equal\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
