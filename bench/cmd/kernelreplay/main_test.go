package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/internal/kernelreplay"
	"github.com/filterd/filterd/internal/netns"
)

const pcaps = "../../../testdata/pcaps"

func TestRewriteOnly(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "in.rules")
	if err := os.WriteFile(rules, []byte("*filter\n:INPUT DROP [0:0]\n-A INPUT -s 208.80.152.0/24 -j ACCEPT\nCOMMIT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.pcap")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--rewrite-only", "--write-rewritten", out, "--rules", rules,
		filepath.Join(pcaps, "zeek_wikipedia_browse.pcap")}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "126 IP packets (10 non-IP frames left out") {
		t.Errorf("stdout: %s", stdout.String())
	}
	pkts, rr, err := kernelreplay.ReadPcap(out)
	if err != nil || len(pkts) != 126 || rr.NonIP != 0 {
		t.Fatalf("rewritten pcap: %d packets, %+v, %v", len(pkts), rr, err)
	}
	for _, p := range pkts {
		if err := kernelreplay.CheckAddrs(p.L3); err != nil {
			t.Fatalf("packet %d: %v", p.Index, err)
		}
	}
	rw, err := os.ReadFile(filepath.Join(dir, "out.rules"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rw), "208.80") || !strings.Contains(string(rw), "-A INPUT -s 198.1") {
		t.Errorf("rewritten rules:\n%s", rw)
	}
	if code := run(context.Background(), []string{"--rewrite-only", "x.pcap"}, &stdout, &stderr); code != 2 {
		t.Errorf("--rewrite-only without --write-rewritten: exit %d, want 2", code)
	}
}

func TestKernelReplayCLI(t *testing.T) {
	if err := netns.RequireRoot(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	dir := t.TempDir()
	rules := filepath.Join(dir, "r.rules")
	if err := os.WriteFile(rules, []byte("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 23 -j ACCEPT\nCOMMIT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--json", "--rules", rules, "--local", "198.18.2.2,fd00:198:18:2::2",
		filepath.Join(pcaps, "captured_tcp_refused_rst.pcap")}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var res kernelreplay.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	// SYNs to 8081 and 9090 hit the policy (2 × 60 B), the one to 23 the rule.
	for _, want := range []string{":INPUT DROP [2:120]", "[1:60] -A INPUT -p tcp -m tcp --dport 23 -j ACCEPT", ":OUTPUT ACCEPT [3:120]"} {
		if !strings.Contains(res.Save4, want) {
			t.Errorf("Save4 lacks %q:\n%s", want, res.Save4)
		}
	}
	if res.Save6 != "" || res.Sent["INPUT/ipv6"] != 1 || res.Sent["OUTPUT/ipv6"] != 1 {
		t.Errorf("ipv6: save %q, sent %v", res.Save6, res.Sent)
	}
}

// TestRewrittenReadableByEngine: filterd's own pcap source reads every
// rewritten capture and finds the same IP packets, so `filterd replay` can
// replay exactly what the kernel got.
func TestRewrittenReadableByEngine(t *testing.T) {
	fs, err := filepath.Glob(filepath.Join(pcaps, "*.pcap*"))
	if err != nil || len(fs) == 0 {
		t.Fatalf("no pcaps: %v", err)
	}
	for _, in := range fs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rw.pcap")
			rw, err := kernelreplay.RewriteFile(in, out, "", "")
			if err != nil {
				t.Fatal(err)
			}
			r, err := engine.OpenPcapFile(out)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var f engine.Frame
			n := 0
			for {
				err := r.Next(&f)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if n >= len(rw.Packets) || !bytes.Equal(f.L3, rw.Packets[n].L3) || !f.Time.Equal(rw.Packets[n].Time) {
					t.Fatalf("engine frame %d (skip %v) differs from rewritten packet", f.Num, f.Skip)
				}
				n++
			}
			if n != len(rw.Packets) {
				t.Fatalf("engine read %d packets, rewrite wrote %d", n, len(rw.Packets))
			}
		})
	}
}
