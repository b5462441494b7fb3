package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/filterd/filterd/packet"
)

func TestParseQueues(t *testing.T) {
	cases := []struct {
		in   string
		want []uint16
		err  string
	}{
		{"0", []uint16{0}, ""},
		{"3-5", []uint16{3, 4, 5}, ""},
		{"7:8", []uint16{7, 8}, ""},
		{"65535", []uint16{65535}, ""},
		{"5-3", nil, "N <= M"},
		{"x", nil, "queue number"},
		{"65536", nil, "queue number"},
		{"0-2000", nil, "at most 1024"},
	}
	for _, c := range cases {
		got, err := parseQueues(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseQueues(%q) error %v, want one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseQueues(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestParseHooks(t *testing.T) {
	got, err := parseHooks("input, OUTPUT,FORWARD")
	if err != nil || !reflect.DeepEqual(got, []packet.Hook{packet.HookInput, packet.HookOutput, packet.HookForward}) {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "PREROUTING", "INPUT,foo"} {
		if _, err := parseHooks(bad); err == nil {
			t.Errorf("parseHooks(%q) accepted", bad)
		}
	}
}

// TestInstallerRules checks the exact NFQUEUE rules --install inserts (and
// so removes).
func TestInstallerRules(t *testing.T) {
	in := newInstaller([]uint16{0}, []packet.Hook{packet.HookInput, packet.HookOutput}, false, false, false)
	var got []string
	for _, r := range in.rules {
		got = append(got, r.cmd+" "+r.chain+" "+strings.Join(r.spec, " "))
	}
	want := []string{
		"iptables INPUT -m comment --comment filterd -j NFQUEUE --queue-num 0",
		"iptables OUTPUT -m comment --comment filterd -j NFQUEUE --queue-num 0",
		"ip6tables INPUT -m comment --comment filterd -j NFQUEUE --queue-num 0",
		"ip6tables OUTPUT -m comment --comment filterd -j NFQUEUE --queue-num 0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	in = newInstaller([]uint16{2, 3}, []packet.Hook{packet.HookForward}, true, true, false)
	if s := strings.Join(in.rules[0].spec, " "); s != "-m comment --comment filterd -j NFQUEUE --queue-balance 2:3 --queue-cpu-fanout --queue-bypass" {
		t.Errorf("balance spec %q", s)
	}
}

func TestRunBadArguments(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run"}, "--rules FILE is required"},
		{[]string{"run", "--rules", "x", "--queues", "9-1"}, "--queues"},
		{[]string{"run", "--rules", "x", "--driver", "fast"}, "--driver \"fast\": want batch or gonfqueue"},
		{[]string{"run", "--rules", "x", "--hooks", "NAT"}, "--hooks"},
		{[]string{"run", "--rules", "x", "--log", "file"}, "--log"},
		{[]string{"run", "--rules", rulesDir + "/does-not-exist.rules"}, "does-not-exist.rules"},
	} {
		code, _, stderr := runCLI(c.args...)
		if code != exitBadInput || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, exitBadInput, c.msg)
		}
	}
}
