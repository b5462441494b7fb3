package kernelreplay

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filterd/filterd/internal/netns"
)

// needRoot skips without root unless CI=true, where it fails: the kernel
// tests must run in CI.
func needRoot(t *testing.T) {
	t.Helper()
	err := netns.RequireRoot()
	if err == nil {
		for _, tool := range []string{"iptables-restore", "ip6tables-restore", "iptables-save", "conntrack"} {
			if _, lerr := lookPath(tool); lerr != nil {
				err = lerr
				break
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skipf("skipping kernel replay: %v (CI=true makes this a failure)", err)
	}
}

// ourNamespaces lists this process's replay namespaces.
func ourNamespaces(t *testing.T) []string {
	t.Helper()
	names, err := netns.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "fdkr-") && strings.Contains(n, fmt.Sprintf("-%d-", os.Getpid())) {
			out = append(out, n)
		}
	}
	return out
}

// The rules of the counters test: a server that accepts new TCP connections
// on 8080 only, and a router that forwards new IPv6 TCP connections but (no
// ESTABLISHED rule) none of their replies.
const (
	testRules4 = `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8080 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
COMMIT
`
	testRules6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m conntrack --ctstate NEW -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
COMMIT
`
	ruleEst  = "filter/-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
	ruleSyn  = "filter/-A INPUT -p tcp -m tcp --dport 8080 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"
	ruleFwd6 = "filter/-A FORWARD -p tcp -m conntrack --ctstate NEW -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"
)

func TestKernelReplayCounters(t *testing.T) {
	needRoot(t)
	tests := []struct {
		pcap string
		// Expected counters, derived by hand from `tcpdump -v -r` of the
		// capture (198.18.1.2 is the client, 198.18.2.2 the server, --local
		// 198.18.2.2; bytes are IP total lengths, as iptables counts them).
		want4, want6 map[string]Counter
		// The router's own replies the raw OUTPUT rule must have dropped.
		ownDropped4 Counter
		sent        map[string]int
		// Per-packet outcome of the OUTPUT/FORWARD packets by capture number.
		verdicts map[int]Verdict
	}{
		{
			// 4 HTTP/1.0 connections, 95 packets. Client→server: 40 packets,
			// 4 SYNs of 60 B (NEW, accepted by the --dport 8080 SYN rule) and
			// 36 more (28 ACKs 1456 B, 4 GETs 555 B, 4 FIN-ACKs 208 B: 2219 B)
			// that conntrack sees as ESTABLISHED. Nothing hits the INPUT
			// policy. Server→client: 55 packets, 50713 B, all through OUTPUT
			// (policy ACCEPT). The router has no listener on 8080, so its
			// own TCP stack answers each of the 40 client segments with a
			// 40-byte RST; the raw OUTPUT rule must drop exactly those
			// (40 packets, 1600 B) or conntrack would see the connections
			// reset. No IPv6 in this capture.
			pcap: "captured_http_ipv4_get.pcap",
			want4: map[string]Counter{
				"filter/INPUT": {0, 0}, "filter/FORWARD": {0, 0}, "filter/OUTPUT": {55, 50713},
				ruleEst: {36, 2219}, ruleSyn: {4, 240},
			},
			want6:       map[string]Counter{"filter/INPUT": {0, 0}, "filter/FORWARD": {0, 0}, "filter/OUTPUT": {0, 0}, ruleFwd6: {0, 0}},
			ownDropped4: Counter{40, 1600},
			sent:        map[string]int{"INPUT/ipv4": 40, "OUTPUT/ipv4": 55},
			verdicts:    allVerdicts(95, VerdictPassed, nil),
		},
		{
			// 3 IPv4 SYNs (60 B each) to 8081, 23, 9090: not 8080, no
			// connection, so the INPUT policy DROP takes them (3, 180 B). Their
			// RST,ACKs from the server (40 B each) pass OUTPUT (3, 120 B). The
			// router's stack never saw a SYN, so it has nothing to answer.
			// IPv6 (not local: FORWARD): the SYN to 8443 (80 B) is NEW and
			// accepted; the RST,ACK reply (60 B) matches no rule and the
			// FORWARD policy DROP takes it, so the capture sees the SYN leave
			// towards the sink and the RST never reach the injector side.
			pcap: "captured_tcp_refused_rst.pcap",
			want4: map[string]Counter{
				"filter/INPUT": {3, 180}, "filter/FORWARD": {0, 0}, "filter/OUTPUT": {3, 120},
				ruleEst: {0, 0}, ruleSyn: {0, 0},
			},
			want6: map[string]Counter{
				"filter/INPUT": {0, 0}, "filter/FORWARD": {1, 60}, "filter/OUTPUT": {0, 0}, ruleFwd6: {1, 80},
			},
			ownDropped4: Counter{0, 0},
			sent:        map[string]int{"INPUT/ipv4": 3, "OUTPUT/ipv4": 3, "FORWARD/ipv6": 2},
			// Packets 1, 3, 7 are the IPv4 SYNs (INPUT policy), 6 the IPv6 RST.
			verdicts: allVerdicts(8, VerdictPassed, []int{1, 3, 7, 6}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.pcap, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := Run(ctx, Config{
				Rules: testRules4, Rules6: testRules6,
				Pcap:     filepath.Join(pcapDir, tc.pcap),
				Local:    []netip.Prefix{netip.MustParsePrefix("198.18.2.2/32")},
				Interval: time.Millisecond,
				Capture:  true,
			})
			if left := ourNamespaces(t); len(left) != 0 {
				t.Errorf("namespaces left behind: %v", left)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("IPv4 counters:\n%s\nIPv6 counters:\n%s\nconntrack:\n%s", res.Save4, res.Save6, res.Conntrack)
			for fam, want := range map[string]map[string]Counter{"ipv4": tc.want4, "ipv6": tc.want6} {
				save := res.Save4
				if fam == "ipv6" {
					save = res.Save6
				}
				got := Counters(save)
				if len(got) != len(want) {
					t.Errorf("%s: %d counters, want %d: %v", fam, len(got), len(want), got)
				}
				for k, w := range want {
					if g, ok := got[k]; !ok || g != w {
						t.Errorf("%s %s = %v (present %v), want %v", fam, k, g, ok, w)
					}
				}
			}
			if res.OwnDropped4 != tc.ownDropped4 {
				t.Errorf("router's own IPv4 packets dropped in raw OUTPUT: %v, want %v", res.OwnDropped4, tc.ownDropped4)
			}
			if want := tc.want4["filter/OUTPUT"]; res.Marked4 != want {
				t.Errorf("replayed OUTPUT packets through raw OUTPUT: %v, want %v (all of them, nothing else)", res.Marked4, want)
			}
			if res.SendErrors != 0 || fmt.Sprint(res.Sent) != fmt.Sprint(tc.sent) {
				t.Errorf("sent %v with %d errors, want %v", res.Sent, res.SendErrors, tc.sent)
			}
			if len(res.Verdicts) != len(tc.verdicts) {
				t.Errorf("%d verdicts, want %d", len(res.Verdicts), len(tc.verdicts))
			}
			for _, v := range res.Verdicts {
				if want, ok := tc.verdicts[v.Index]; !ok || v.Verdict != want {
					t.Errorf("packet %d (%s): %v, want %v", v.Index, v.Hook, v.Verdict, want)
				}
				if v.Hook == HookOutput && v.Verdict != VerdictPassed {
					t.Errorf("packet %d: OUTPUT policy ACCEPT but %v", v.Index, v.Verdict)
				}
			}
			for _, k := range []string{"net.netfilter.nf_conntrack_tcp_loose", "net.netfilter.nf_conntrack_tcp_be_liberal", "net.netfilter.nf_conntrack_checksum"} {
				if v := res.Sysctls[k]; v != "0" && v != "1" {
					t.Errorf("sysctl %s = %q", k, v)
				}
			}
			if !strings.Contains(res.FTPHelper, "assigned") {
				t.Errorf("FTP helper: %s", res.FTPHelper)
			}
			if strings.Contains(res.Save4, ownComment) || strings.Contains(res.Save4, "*raw") {
				t.Errorf("own rules or raw table left in Save4:\n%s", res.Save4)
			}
		})
	}
}

// allVerdicts gives n packets the verdict v, except the listed ones: dropped.
func allVerdicts(n int, v Verdict, dropped []int) map[int]Verdict {
	m := map[int]Verdict{}
	for i := 1; i <= n; i++ {
		m[i] = v
	}
	for _, i := range dropped {
		m[i] = VerdictDropped
	}
	return m
}

// TestKernelReplayFTPHelper replays the FTP capture (server 198.18.2.2
// local) through rules that accept only port 21 SYNs, ESTABLISHED and
// RELATED packets, with and without the FTP helper. With it, the 3 passive
// data connections' SYNs from the client (60 B each) are RELATED in INPUT and
// the 2 active ones from the server (60 B each) RELATED in OUTPUT, and no
// packet reaches a DROP policy. Without it those SYNs are NEW and the data
// connections are dropped. Either way, the per-packet verdicts (raw sockets
// in the router, EPERM on OUTPUT sends) agree with the policy counters.
func TestKernelReplayFTPHelper(t *testing.T) {
	needRoot(t)
	const rules = `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
-A INPUT -m conntrack --ctstate RELATED -j ACCEPT
-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 21 --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j ACCEPT
-A OUTPUT -m conntrack --ctstate RELATED -j ACCEPT
-A OUTPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
COMMIT
`
	const (
		inRel  = "filter/-A INPUT -m conntrack --ctstate RELATED -j ACCEPT"
		outRel = "filter/-A OUTPUT -m conntrack --ctstate RELATED -j ACCEPT"
		ctlSyn = "filter/-A INPUT -p tcp -m tcp --dport 21 --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j ACCEPT"
	)
	for _, noHelper := range []bool{false, true} {
		t.Run(fmt.Sprintf("noHelper=%v", noHelper), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := Run(ctx, Config{
				Rules: rules, Pcap: filepath.Join(pcapDir, "captured_ftp_pyftpdlib_passive_active.pcap"),
				Local: []netip.Prefix{netip.MustParsePrefix("198.18.2.2/32")}, Capture: true, NoFTPHelper: noHelper,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s\n%s", res.FTPHelper, res.Save4)
			c := Counters(res.Save4)
			if c[ctlSyn] != (Counter{1, 60}) {
				t.Errorf("control SYN: %v, want [1:60]", c[ctlSyn])
			}
			dropped := 0
			for _, v := range res.Verdicts {
				if v.Verdict == VerdictDropped {
					dropped++
				}
				if v.Verdict == VerdictUnknown || v.Verdict == VerdictSendError {
					t.Errorf("packet %d: %v %s", v.Index, v.Verdict, v.Err)
				}
			}
			if want := c["filter/INPUT"].Packets + c["filter/OUTPUT"].Packets; uint64(dropped) != want {
				t.Errorf("%d packets dropped per packet, %d by the policy counters", dropped, want)
			}
			if !noHelper {
				for k, want := range map[string]Counter{inRel: {3, 180}, outRel: {2, 120}, "filter/INPUT": {}, "filter/OUTPUT": {}} {
					if c[k] != want {
						t.Errorf("%s = %v, want %v", k, c[k], want)
					}
				}
				return
			}
			if c[inRel] != (Counter{}) || c[outRel] != (Counter{}) || c["filter/INPUT"].Packets < 3 || c["filter/OUTPUT"].Packets < 2 {
				t.Errorf("without the helper: RELATED %v/%v, policies %v/%v", c[inRel], c[outRel], c["filter/INPUT"], c["filter/OUTPUT"])
			}
		})
	}
}

// TestKernelReplaySysctlOverride checks that Config.Sysctls reach the router
// and are reported back.
func TestKernelReplaySysctlOverride(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{
		Rules: testRules4, Pcap: filepath.Join(pcapDir, "captured_tcp_refused_rst.pcap"),
		Local:   []netip.Prefix{netip.MustParsePrefix("198.18.2.2/32")},
		Sysctls: map[string]string{"net.netfilter.nf_conntrack_tcp_loose": "0", "net.netfilter.nf_conntrack_tcp_be_liberal": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sysctls["net.netfilter.nf_conntrack_tcp_loose"] != "0" || res.Sysctls["net.netfilter.nf_conntrack_tcp_be_liberal"] != "1" {
		t.Errorf("sysctls = %v", res.Sysctls)
	}
	if res.Save6 != "" {
		t.Errorf("no IPv6 rules, but Save6 = %q", res.Save6)
	}
	if left := ourNamespaces(t); len(left) != 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// TestKernelReplayKeepTiming sends at the capture's own times: the injection
// cannot end before the capture's span has passed.
func TestKernelReplayKeepTiming(t *testing.T) {
	needRoot(t)
	path := filepath.Join(pcapDir, "captured_tcp_refused_rst.pcap")
	pkts, _, err := ReadPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	span := pkts[len(pkts)-1].Time.Sub(pkts[0].Time) // 72 ms
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Rules: testRules4, Pcap: path, KeepTiming: true, Interval: time.Hour,
		Local: []netip.Prefix{netip.MustParsePrefix("198.18.2.2/32")}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duration < span || res.Duration > span+30*time.Second {
		t.Errorf("injection took %v for a %v capture", res.Duration, span)
	}
	if c := Counters(res.Save4)["filter/INPUT"]; c != (Counter{3, 180}) {
		t.Errorf("INPUT policy %v, want [3:180]", c)
	}
	// Each packet's send time is at or after its place in the capture.
	for i, v := range res.Verdicts {
		if want := pkts[i].Time.Sub(pkts[0].Time); v.At < want || v.At > res.Duration {
			t.Errorf("packet %d sent at %v, due at %v (injection %v)", v.Index, v.At, want, res.Duration)
		}
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := Run(ctx, Config{Pcap: filepath.Join(t.TempDir(), "missing.pcap")}); err == nil {
		t.Error("missing pcap accepted")
	}
	_, err := Run(ctx, Config{Pcap: filepath.Join(pcapDir, "zeek_wikipedia_browse.pcap"), Rules: "*filter\n-A INPUT -s 0.0.0.0/255.0.255.0 -j DROP\nCOMMIT\n"})
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad netmask in rules: %v", err)
	}
}

// TestKernelReplayIngress: by default the IPv6 RST reply of the refused
// capture (FORWARD) comes in from the sink side (eth1); with OneIngress both
// FORWARD packets arrive on eth0.
func TestKernelReplayIngress(t *testing.T) {
	needRoot(t)
	const rules6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -i eth0 -o eth1
-A FORWARD -i eth1 -o eth0
-A FORWARD -i eth0 -o eth0
COMMIT
`
	for _, tc := range []struct {
		one  bool
		want [3]uint64
	}{{false, [3]uint64{1, 1, 0}}, {true, [3]uint64{1, 0, 1}}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := Run(ctx, Config{Rules6: rules6, Pcap: filepath.Join(pcapDir, "captured_tcp_refused_rst.pcap"), OneIngress: tc.one})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c := Counters(res.Save6)
		got := [3]uint64{c["filter/-A FORWARD -i eth0 -o eth1"].Packets, c["filter/-A FORWARD -i eth1 -o eth0"].Packets, c["filter/-A FORWARD -i eth0 -o eth0"].Packets}
		if got != tc.want {
			t.Errorf("OneIngress=%v: eth0>eth1, eth1>eth0, eth0>eth0 = %v, want %v\n%s", tc.one, got, tc.want, res.Save6)
		}
	}
}
