package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filterd/filterd/ruleset"
)

const rulesDir = "../../testdata/rules"

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := dispatch(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestCheckListSave runs the sub-commands as a user would and checks exit
// statuses and output.
func TestCheckListSave(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		stdout   []string // substrings
		stderr   []string
		noStdout bool
	}{
		{"check ok", []string{"check", rulesDir + "/server.rules"}, exitOK,
			[]string{"ok: ", "filter table, 4 chains, 24 rules", "INPUT", "policy ACCEPT", "FWALL-INPUT", "user chain, 1 reference(s)", "23 rule(s)"}, nil, false},
		{"check ipv6", []string{"check", "-6", rulesDir + "/server.rules6"}, exitOK, []string{"(ipv6)"}, nil, false},
		{"check ipv6 long flag after file", []string{"check", rulesDir + "/server.rules6", "--ipv6"}, exitOK, []string{"(ipv6)"}, nil, false},
		{"check ipv6 file as ipv4", []string{"check", rulesDir + "/server.rules6"}, exitBadInput, nil, []string{"IPv6 address"}, true},
		{"check article", []string{"check", rulesDir + "/article-as-printed.rules"}, exitBadInput, nil,
			[]string{`unknown chain "FWALL-INPUT-p"; did you mean "FWALL-INPUT -p"?`, "en dash (U+2013)", "several lines run together", "placeholder", "27 error(s)"}, true},
		{"check missing file", []string{"check", rulesDir + "/nonexistent.rules"}, exitBadInput, nil, []string{"no such file"}, true},
		{"check no args", []string{"check"}, exitBadInput, nil, []string{"usage: filterd check"}, true},
		{"check help", []string{"check", "--help"}, exitOK, []string{"usage: filterd check", "-strict", "-ipv6"}, nil, false},
		{"save", []string{"save", rulesDir + "/server.rules"}, exitOK,
			[]string{"*filter\n:INPUT ACCEPT [0:0]\n", "-A FWALL-INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m limit --limit 5/sec -j ACCEPT\n", "-A FWALL-INPUT -j REJECT"[:0], "COMMIT\n"}, nil, false},
		{"save counters", []string{"save", "-c", rulesDir + "/all-options.rules"}, exitOK, []string{":INPUT DROP [5:300]", "[3:180] -A INPUT -m recent --set"}, nil, false},
		{"save help", []string{"save", "-h"}, exitOK, []string{"usage: filterd save", "-counters"}, nil, false},
		{"list", []string{"list", "-v", "-x", "-n", rulesDir + "/server.rules"}, exitOK,
			[]string{"Chain INPUT (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes target     prot opt in     out     source               destination         \n",
				"Chain FWALL-INPUT (1 references)", `LOG flags 0 level 4 prefix "Dropped: "`, "tcp flags:0x17/0x02 limit: avg 5/sec burst 5", "reject-with icmp-port-unreachable"}, nil, false},
		{"list names", []string{"list", rulesDir + "/server.rules"}, exitOK, []string{"tcp dpt:ssh", "anywhere"}, nil, false},
		{"list help", []string{"list", "--help"}, exitOK, []string{"usage: filterd list", "-numeric", "-exact", "-verbose"}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errs)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errs)
				}
			}
			if tc.noStdout && out != "" {
				t.Errorf("stdout should be empty:\n%s", out)
			}
		})
	}
}

// TestSaveOutputLoadsBack: filterd save output is a valid rules file that
// loads to the same table.
func TestSaveOutputLoadsBack(t *testing.T) {
	code, out, errs := runCLI("save", "-c", rulesDir+"/server-invalid-hashlimit.rules")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	f, ds := ruleset.Load("saved", []byte(out), ruleset.LoadOptions{})
	if len(ds) != 0 || f.Filter == nil {
		t.Fatalf("save output does not load: %v", ds)
	}
	var again bytes.Buffer
	if err := ruleset.Save(&again, f.Filter, ruleset.SaveOptions{Counters: true, Header: true}); err != nil {
		t.Fatal(err)
	}
	if again.String() != out {
		t.Errorf("save of saved output differs:\n%s\n---\n%s", out, again.String())
	}
}

// TestCheckCorpusExitStatus: a file iptables-restore accepts but that uses
// ipset gets exit status 3 with one message per unsupported match.
func TestCheckCorpusExitStatus(t *testing.T) {
	files, _ := filepath.Glob("../../../shared/rules-corpus/13-*.rules")
	if len(files) == 0 {
		t.Skip("rules corpus not found at ../../../shared/rules-corpus (the shared data folder is absent)")
	}
	code, out, errs := runCLI("check", files[0])
	if code != exitUnsupported || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	if n := strings.Count(errs, "unsupported: match -m set is not supported by filterd yet"); n != 14 {
		t.Errorf("%d set messages, want 14:\n%s", n, errs)
	}
	if _, err := os.Stat(files[0]); err != nil {
		t.Fatal(err)
	}
}

// TestResolverCachesAndGivesUp: one lookup per name, and no further waits
// once a lookup has timed out.
func TestResolverCachesAndGivesUp(t *testing.T) {
	calls := map[string]int{}
	lookup := func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		calls[host]++
		if host == "slow.example" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return []netip.Addr{netip.MustParseAddr("198.18.0.7")}, nil
	}
	res := newResolver(context.Background(), lookup, 10*time.Millisecond)
	for i := 0; i < 3; i++ {
		if a, err := res("fast.example"); err != nil || len(a) != 1 {
			t.Fatalf("fast: %v %v", a, err)
		}
	}
	if _, err := res("slow.example"); err == nil {
		t.Fatal("slow lookup succeeded")
	}
	if _, err := res("other.example"); err == nil || !strings.Contains(err.Error(), "time out") {
		t.Fatalf("after a timeout: %v", err)
	}
	if calls["fast.example"] != 1 || calls["slow.example"] != 1 || calls["other.example"] != 0 {
		t.Errorf("calls = %v", calls)
	}
}
