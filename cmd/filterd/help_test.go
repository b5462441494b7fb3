package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelp: every sub-command's --help prints its usage once, to stdout,
// and exits 0; an unknown flag is an error on stderr with status 2.
func TestHelp(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := dispatch(context.Background(), []string{c.name, "--help"}, &out, &errb); code != exitOK {
				t.Fatalf("exit %d, stderr %q", code, errb.String())
			}
			if errb.Len() != 0 || strings.Count(out.String(), "usage: filterd "+c.name) != 1 {
				t.Errorf("stdout %q, stderr %q: want the usage once on stdout", out.String(), errb.String())
			}
			out.Reset()
			errb.Reset()
			if code := dispatch(context.Background(), []string{c.name, "--no-such-flag"}, &out, &errb); code != exitBadInput {
				t.Errorf("unknown flag: exit %d, want %d", code, exitBadInput)
			}
			if !strings.Contains(errb.String(), "no-such-flag") {
				t.Errorf("unknown flag: stderr %q does not name it", errb.String())
			}
		})
	}
}
