package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/filterd/filterd/internal/netns"
)

// udpProbe sends one datagram from ns to addr on a connected UDP socket and
// reports whether the reply was an ICMP port unreachable (ECONNREFUSED on
// the next read), data, or nothing within timeout.
func udpProbe(t *testing.T, ns *netns.NS, addr string, timeout time.Duration) string {
	t.Helper()
	var res string
	err := ns.Do(func() error {
		c, err := netDialUDP(addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("probe\n")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		var b [64]byte
		_, err = c.Read(b[:])
		switch {
		case err == nil:
			res = "data"
		case errors.Is(err, syscall.ECONNREFUSED):
			res = "refused"
		case isTimeout(err):
			res = "timeout"
		default:
			res = err.Error()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestKernelRunServerRules runs filterd with the article's rule set
// (testdata/rules/server.rules) and server-state.rules in front of real
// servers and checks what a client sees.
func TestKernelRunServerRules(t *testing.T) { forDrivers(t, testKernelRunServerRules) }

func testKernelRunServerRules(t *testing.T, driver string) {
	for _, rules := range []string{"server.rules", "server-state.rules"} {
		t.Run(rules, func(t *testing.T) {
			l := newLab(t)
			l.driver = driver
			www := t.TempDir()
			if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello from the server\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			l.httpServer(www)
			listen(t, l.server, serverIP+":22")
			abs, _ := filepath.Abs(filepath.Join(rulesDir, rules))
			d := l.startFilterd(abs, "--metrics", "127.0.0.1:9467")
			defer d.stop()

			// HTTP on port 80 works.
			out, err := curl(l, l.client, "http://"+serverIP+"/index.html", 5)
			if err != nil || out != "hello from the server\n" {
				t.Fatalf("curl: %v: %q", err, out)
			}

			// UDP to a closed port: REJECT answers ICMP port unreachable
			// (the client's connected socket reads ECONNREFUSED).
			if got := udpProbe(t, l.client, serverIP+":5555", 3*time.Second); got != "refused" {
				t.Errorf("UDP to closed port 5555: %s, want refused (ICMP port unreachable)", got)
			}

			// The SYN limit rule (5/s, burst 5) sits above the SSH rule,
			// as in the article: while it has tokens it accepts any SYN.
			// Spend them from the attacker: an attempt from a source other
			// than 198.18.1.2 to port 22 is then refused at once (the
			// REJECT's ICMP port unreachable; the kernel allows 6 such
			// errors to one host at once, then one a second).
			var ok, refused int
			spendStart := time.Now()
			for i := 0; i < 40 && refused == 0; i++ {
				r, took := dial(t, l.attacker, serverIP+":22", 3*time.Second)
				switch {
				case r == dialOK:
					ok++
				case r == dialRefused && took < time.Second:
					refused++
				default:
					t.Fatalf("attacker to port 22, attempt %d: %v after %v, want connected or refused at once", i, r, took)
				}
			}
			// The burst (5) and one token per 200 ms while we try.
			if maxOK := 5 + int(5*time.Since(spendStart).Seconds()) + 1; refused == 0 || ok > maxOK {
				t.Errorf("attacker to port 22: %d connected before the first refusal (%d); want at most %d (the limit's burst, +1 per 200 ms), then refused", ok, refused, maxOK)
			}
			// From the administrator's address it works, limit or not.
			for i := 0; i < 3; i++ {
				if r, took := dial(t, l.client, serverIP+":22", 3*time.Second); r != dialOK {
					t.Errorf("client 198.18.1.2 to port 22: %v after %v, want connected", r, took)
				}
			}
			if out, err := run(l.client, 10*time.Second, "nc", "-vz", "-w", "3", serverIP, "22"); err != nil || !strings.Contains(out, "succeeded") {
				t.Errorf("nc -z from 198.18.1.2 to port 22: %v\n%s", err, out)
			}
			// An unlisted port: REJECT at once (refused, not a timeout).
			r, took := dial(t, l.attacker, serverIP+":8081", 3*time.Second)
			if r != dialRefused || took > time.Second {
				t.Errorf("attacker to unlisted port 8081: %v after %v, want refused at once", r, took)
			}
			tcpRejects := d.ruleCount("FWALL-INPUT", regexp.MustCompile(`REJECT\s+6 .*reject-with`))
			if tcpRejects == 0 || refused == 0 {
				t.Errorf("REJECT tcp rule counted %d packets, want > 0", tcpRejects)
			}
			m, err := run(l.server, 5*time.Second, "curl", "-sS", "http://127.0.0.1:9467/metrics")
			if err != nil {
				t.Fatalf("metrics: %v: %s", err, m)
			}
			if n := metric(t, m, "filterd_reject_replies_total"); n < float64(refused) {
				t.Errorf("filterd_reject_replies_total = %v, want >= %d", n, refused)
			}
			if n := metric(t, m, "filterd_packets_total", `verdict="ACCEPT"`); n == 0 {
				t.Error("no accepted packets counted")
			}
			// LOG lines as the kernel prints them, with the Ethernet header
			// (server's MAC, sender's MAC, 08:00) as MAC=.
			logRE := regexp.MustCompile(`(?m)^Dropped: IN=eth0 OUT= MAC=([0-9a-f]{2}:){13}[0-9a-f]{2} SRC=198\.18\.1\.\d+ DST=198\.18\.1\.1 `)
			if !logRE.MatchString(d.out.String()) {
				t.Errorf("no LOG line like %v on stderr:\n%s", logRE, d.out.String())
			}
			// The user's commands against the running daemon.
			ct, err := run(l.server, 10*time.Second, filterdBin, "conntrack", "-L", "--control", d.sock)
			flowRE := regexp.MustCompile(`(?m)^tcp      6 \d+ (TIME_WAIT|CLOSE|ESTABLISHED|FIN_WAIT|LAST_ACK|CLOSE_WAIT) src=198\.18\.1\.2 dst=198\.18\.1\.1 sport=\d+ dport=80 packets=\d+ bytes=\d+ src=198\.18\.1\.1 dst=198\.18\.1\.2 sport=80 dport=\d+ packets=\d+ bytes=\d+ \[ASSURED\]`)
			if err != nil || !flowRE.MatchString(ct) || !regexp.MustCompile(`filterd conntrack: [1-9]\d* flow entries have been shown`).MatchString(ct) {
				t.Errorf("filterd conntrack: %v; no HTTP flow like %v:\n%s", err, flowRE, ct)
			}
			lv, err := run(l.server, 10*time.Second, filterdBin, "list", "-v", "-x", "-n", "--control", d.sock)
			if err != nil || !regexp.MustCompile(`(?m)^\s*[1-9]\d*\s+[1-9]\d* ACCEPT\s+6\s+--\s+\*\s+\*\s+0\.0\.0\.0/0\s+0\.0\.0\.0/0\s+tcp flags:0x17/0x02 limit: avg 5/sec burst 5`).MatchString(lv) {
				t.Errorf("filterd list -v -x -n --control: %v; no counted SYN limit rule:\n%s", err, lv)
			}
			d.stop()
			// The installed rules are gone, exactly those.
			for _, cmd := range []string{"iptables", "ip6tables"} {
				out, err := run(l.server, 10*time.Second, cmd, "-S")
				if err != nil || strings.Contains(out, "NFQUEUE") {
					t.Errorf("%s -S after stop: %v\n%s", cmd, err, out)
				}
			}
			if !strings.Contains(d.out.String(), "filterd: stopped") {
				t.Errorf("no clean stop:\n%s", d.out.String())
			}
		})
	}
}

// TestKernelRunServerRulesIPv6 runs filterd with both rule files
// (server.rules and server.rules6) and checks the IPv6 side: neighbour
// discovery passes (ICMPv6 rules), HTTP and SSH from the allowed address
// work, UDP to a closed port gets ICMPv6 port unreachable, and the
// NFQUEUE rules go into ip6tables and come out again.
func TestKernelRunServerRulesIPv6(t *testing.T) { forDrivers(t, testKernelRunServerRulesIPv6) }

func testKernelRunServerRulesIPv6(t *testing.T, driver string) {
	l := newLabOpts(t, true)
	l.driver = driver
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("hello v6\n"), 0o644)
	l.httpServerOn(serverIP6, www)
	listen(t, l.server, "["+serverIP6+"]:22")
	abs6, _ := filepath.Abs(filepath.Join(rulesDir, "server.rules6"))
	d := l.startFilterd(rulesPath(t, "server.rules"), "--rules6", abs6)
	defer d.stop()
	out, err := run(l.server, 10*time.Second, "ip6tables", "-S", "INPUT")
	if err != nil || !strings.Contains(out, "NFQUEUE") {
		t.Fatalf("ip6tables INPUT has no NFQUEUE rule: %v\n%s", err, out)
	}
	if out, err := curl(l, l.client, "http://["+serverIP6+"]/index.html", 5); err != nil || out != "hello v6\n" {
		t.Fatalf("curl over IPv6: %v %q\n%s", err, out, d.out.String())
	}
	if r, took := dial(t, l.client, "["+serverIP6+"]:22", 3*time.Second); r != dialOK {
		t.Errorf("client fd00:198:18:1::2 to port 22: %v after %v", r, took)
	}
	if got := udpProbe(t, l.attacker, "["+serverIP6+"]:5555", 3*time.Second); got != "refused" {
		t.Errorf("UDP over IPv6 to closed port: %s, want refused (ICMPv6 port unreachable)", got)
	}
	if n := d.ruleCount("FWALL-INPUT", regexp.MustCompile(`REJECT\s+17 .*icmp6-port-unreachable`)); n == 0 {
		t.Error("the IPv6 UDP REJECT rule counted nothing")
	}
	if !strings.Contains(d.out.String(), "SRC="+attackerIP6) {
		t.Errorf("no IPv6 LOG line from the attacker:\n%s", d.out.String())
	}
	d.stop()
	if out, _ := run(l.server, 10*time.Second, "ip6tables", "-S"); strings.Contains(out, "NFQUEUE") {
		t.Errorf("ip6tables NFQUEUE rules left after stop:\n%s", out)
	}
}
