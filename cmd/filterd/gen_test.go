package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenThenReplay(t *testing.T) {
	out := filepath.Join(t.TempDir(), "flood.pcap")
	var so, se bytes.Buffer
	if code := runGen(context.Background(), []string{"-o", out, "-syns", "2000", "-sources", "500", "-sessions", "3"}, &so, &se); code != exitOK {
		t.Fatalf("gen: exit %d: %s", code, se.String())
	}
	if !strings.Contains(so.String(), "2000 flood SYNs from 500 sources") {
		t.Errorf("gen said %q", so.String())
	}
	so.Reset()
	if code := runReplay(context.Background(), []string{"--rules", "../../testdata/rules/server.rules", "--local", "198.18.2.2", out}, &so, &se); code != exitOK {
		t.Fatalf("replay: exit %d: %s", code, se.String())
	}
	// 2,000 flood SYNs + 3 sessions of 10 packets (2,000 B response: two segments).
	if !strings.Contains(so.String(), "2033 packets") {
		t.Errorf("replay summary does not count 2033 packets:\n%s", so.String())
	}
	for _, bad := range [][]string{{"-o", out, "-server", "192.0.2.1"}, {"-syns", "1"}, {"-o", out, "-sources", "0"}} {
		if code := runGen(context.Background(), bad, &so, &se); code != exitBadInput {
			t.Errorf("gen %v: exit %d, want %d", bad, code, exitBadInput)
		}
	}
}
