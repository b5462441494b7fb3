package main

import (
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnit keeps contrib/filterd.service in step with the CLI: every
// filterd command line in it parses with the sub-command's flags. Where
// systemd-analyze is installed the unit is verified too.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("../../contrib/filterd.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var runs, checks int
	for _, line := range strings.Split(text, "\n") {
		key, val, ok := strings.Cut(line, "=")
		if !ok || (key != "ExecStart" && key != "ExecStartPre") {
			continue
		}
		args := strings.Fields(val)
		if len(args) < 2 || filepath.Base(args[0]) != "filterd" {
			t.Errorf("%s does not run filterd: %q", key, val)
			continue
		}
		switch args[1] {
		case "run":
			runs++
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var o runFlags
			o.register(fs)
			if err := fs.Parse(args[2:]); err != nil || fs.NArg() != 0 {
				t.Errorf("ExecStart: %v (args left: %v)", err, fs.Args())
			}
			if _, err := parseQueues(o.queues); err != nil {
				t.Error(err)
			}
			if _, err := parseHooks(o.hooks); err != nil {
				t.Error(err)
			}
			if o.control != defaultControl {
				t.Errorf("the unit's control socket %q is not filterd conntrack's default %q", o.control, defaultControl)
			}
		case "check":
			checks++
			fs := flag.NewFlagSet("check", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var o loadFlags
			o.register(fs)
			if err := fs.Parse(args[2:]); err != nil || fs.NArg() != 1 {
				t.Errorf("ExecStartPre %q: %v", val, err)
			}
		default:
			t.Errorf("unexpected filterd command %q", val)
		}
	}
	if runs != 1 || checks != 2 {
		t.Errorf("%d run and %d check lines, want 1 and 2", runs, checks)
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		unit := strings.ReplaceAll(string(b), "/usr/local/bin/filterd", "/bin/true")
		path := filepath.Join(dir, "filterd.service")
		os.WriteFile(path, []byte(unit), 0o644)
		cmd := exec.Command("systemd-analyze", "verify", "--man=no", path)
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
}
