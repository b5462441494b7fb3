package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// offloadMarkDec is --offload-mark's default (0x40000000) as conntrack -L
// prints it.
const offloadMarkDec = "1073741824"

// TestKernelRunOffload runs filterd with --install --offload established and
// the article's rules with the ESTABLISHED rule (server-state.rules): a TCP
// session carrying 512 KiB each way completes; filterd saw only its first
// packets (its own conntrack entry's counters) while the kernel's entry
// carries the offload mark and counted the rest, as did the connmark
// ACCEPT rule (filterd_offload_kernel_packets_total); a NEW connection the
// rules refuse is still dropped and a UDP datagram to a closed port still
// rejected by filterd; after filterd exits the rule tables are as before.
func TestKernelRunOffload(t *testing.T) { forDrivers(t, testKernelRunOffload) }

func testKernelRunOffload(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The banned host of the rules (DROP before anything else).
	if _, err := l.attacker.Run(ctx, "ip", "addr", "add", "198.18.1.99/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	// Per-flow packet counters in the kernel's conntrack entries.
	if err := l.server.Sysctl("net.netfilter.nf_conntrack_acct", "1"); err != nil {
		t.Fatal(err)
	}
	listen(t, l.server, serverIP+":22") // echo
	// A rule of the administrator's own, which must outlive filterd's.
	if out, err := run(l.server, 10*time.Second, "iptables", "-w", "5", "-A", "OUTPUT", "-m", "comment", "--comment", "admin"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	saveRules := func() map[string]string {
		m := map[string]string{}
		for _, cmd := range []string{"iptables", "ip6tables"} {
			out, err := run(l.server, 10*time.Second, cmd, "-w", "5", "-S")
			if err != nil {
				t.Fatalf("%s -S: %v: %s", cmd, err, out)
			}
			m[cmd] = out
		}
		return m
	}
	before := saveRules()

	d := l.startFilterd(rulesPath(t, "server-state.rules"), "--offload", "established", "--metrics", "127.0.0.1:9467")
	defer d.stop()

	// The offload rules sit above the NFQUEUE rule in every diverted chain.
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, chain := range []string{"INPUT", "OUTPUT"} {
			out, err := run(l.server, 10*time.Second, cmd, "-w", "5", "-S", chain)
			if err != nil {
				t.Fatalf("%s -S %s: %v", cmd, chain, err)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			want := []string{
				"-A " + chain + " -m mark --mark 0x40000000/0x40000000 -m comment --comment filterd -j CONNMARK --save-mark --nfmask 0x40000000 --ctmask 0x40000000",
				"-A " + chain + " -m connmark --mark 0x40000000/0x40000000 -m comment --comment filterd -j ACCEPT",
				"-A " + chain + " -m comment --comment filterd -j NFQUEUE --queue-num 0",
			}
			if len(lines) < 4 || strings.Join(lines[1:4], "\n") != strings.Join(want, "\n") {
				t.Fatalf("%s -S %s:\n%s\nwant first\n%s", cmd, chain, out, strings.Join(want, "\n"))
			}
		}
	}

	// A bounded transfer: 512 KiB to the echo server and back.
	const size = 512 << 10
	conn := connect(t, l.client, serverIP+":22")
	defer conn.Close()
	sport := conn.LocalAddr().(*net.TCPAddr).Port
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	start := time.Now()
	conn.SetDeadline(start.Add(30 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("reading the echo after %v: %v\n%s", time.Since(start), err, d.out.String())
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("the echo differs from what was sent")
	}

	// filterd's entry for the flow: the packets it saw (queued).
	flowRE := func(extra string) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`(?m)^tcp .*src=%s dst=%s sport=%d dport=22 packets=(\d+) bytes=\d+ src=%s dst=%s sport=22 dport=%d packets=(\d+) bytes=\d+.*%s`,
			regexp.QuoteMeta(clientIP), regexp.QuoteMeta(serverIP), sport, regexp.QuoteMeta(serverIP), regexp.QuoteMeta(clientIP), sport, extra))
	}
	sum := func(m []string) uint64 {
		a, _ := strconv.ParseUint(m[1], 10, 64)
		b, _ := strconv.ParseUint(m[2], 10, 64)
		return a + b
	}
	fct := d.control("/conntrack")
	fm := flowRE("").FindStringSubmatch(fct)
	if fm == nil {
		t.Fatalf("no entry for the flow (sport %d) in filterd's conntrack:\n%s", sport, fct)
	}
	queued := sum(fm)
	// The kernel's entry: the offload mark, and every packet of the flow.
	kct, err := run(l.server, 10*time.Second, "conntrack", "-L", "-p", "tcp", "--orig-port-dst", "22", "--orig-port-src", strconv.Itoa(sport))
	if err != nil {
		t.Fatalf("conntrack -L: %v\n%s", err, kct)
	}
	km := flowRE(` mark=` + offloadMarkDec + ` `).FindStringSubmatch(kct)
	if km == nil {
		t.Fatalf("the kernel's entry for the flow has no mark=%s:\n%s", offloadMarkDec, kct)
	}
	total := sum(km)
	t.Logf("flow %s:%d -> %s:22, 2 x %d bytes: filterd saw %d packets (%s), the kernel's conntrack counted %d",
		clientIP, sport, serverIP, size, queued, strings.TrimSpace(fm[0]), total)
	// SYN (NEW, queued on INPUT) and SYN-ACK (ESTABLISHED, queued on OUTPUT,
	// offloaded); a retransmission may add one or two.
	if queued < 2 || queued > 4 {
		t.Errorf("filterd saw %d packets of the flow, want 2 (SYN, SYN-ACK) to 4", queued)
	}
	if total < 10*queued {
		t.Errorf("the kernel counted %d packets of the flow, filterd %d: want most of them accepted in the kernel", total, queued)
	}

	m, err := run(l.server, 5*time.Second, "curl", "-sS", "http://127.0.0.1:9467/metrics")
	if err != nil {
		t.Fatalf("metrics: %v: %s", err, m)
	}
	offloaded := metric(t, m, "filterd_offloaded_flows_total", `queue="0"`)
	kpk := metric(t, m, "filterd_offload_kernel_packets_total", `family="ipv4"`)
	kby := metric(t, m, "filterd_offload_kernel_bytes_total", `family="ipv4"`)
	verdicted := metric(t, m, "filterd_packets_total", `queue="0"`)
	t.Logf("metrics: filterd_packets_total %v, filterd_offloaded_flows_total %v, filterd_offload_kernel_packets_total %v (%v bytes)",
		verdicted, offloaded, kpk, kby)
	if offloaded < 1 {
		t.Errorf("filterd_offloaded_flows_total = %v, want >= 1", offloaded)
	}
	// Every packet of the flow but the SYN went through the connmark ACCEPT
	// rule (the SYN-ACK when it was repeated).
	if kpk < float64(total-1) || kby < float64(2*size) {
		t.Errorf("filterd_offload_kernel_packets_total = %v (%v bytes), want >= %d packets (the flow's but its SYN) and >= %d bytes",
			kpk, kby, total-1, 2*size)
	}
	if verdicted >= kpk {
		t.Errorf("filterd verdicted %v packets, the kernel accepted %v offloaded ones: want fewer queued", verdicted, kpk)
	}

	// Offload never lets a NEW connection through: the banned host's
	// connection to the open SSH port is still dropped by filterd ...
	var res dialResult
	if err := l.attacker.Do(func() error {
		dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("198.18.1.99")}, Timeout: 2 * time.Second}
		c, err := dl.Dial("tcp", serverIP+":22")
		switch {
		case err == nil:
			c.Close()
			res = dialOK
		case isTimeout(err):
			res = dialTimeout
		default:
			res = dialOther
			t.Logf("dial from 198.18.1.99: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if res != dialTimeout {
		t.Errorf("banned host 198.18.1.99 to port 22: %v, want timed out (DROP)", res)
	}
	if n := d.ruleCount("FWALL-INPUT", regexp.MustCompile(`DROP\s+6 .*198\.18\.1\.99`)); n == 0 {
		t.Error("the DROP rule for 198.18.1.99 counted nothing")
	}
	// ... and a datagram from the client (whose TCP flow is offloaded) to a
	// closed UDP port is rejected by filterd's REJECT rule.
	if got := udpProbe(t, l.client, serverIP+":5555", 3*time.Second); got != "refused" {
		t.Errorf("UDP to closed port 5555: %s, want refused", got)
	}
	if n := d.ruleCount("FWALL-INPUT", regexp.MustCompile(`REJECT\s+17 `)); n == 0 {
		t.Error("filterd's UDP REJECT rule counted nothing")
	}
	conn.Close()

	d.stop()
	sm := regexp.MustCompile(`msg="filterd: offload summary" offloaded=(\d+) kernel_packets=(\d+) kernel_bytes=(\d+)`).FindStringSubmatch(d.out.String())
	if sm == nil || sm[1] == "0" || sm[2] == "0" {
		t.Errorf("no offload summary with counts on exit:\n%s", d.out.String())
	} else {
		t.Logf("exit: %s", sm[0])
	}
	// Exactly filterd's rules are gone: the tables are as before.
	after := saveRules()
	for _, cmd := range []string{"iptables", "ip6tables"} {
		if after[cmd] != before[cmd] {
			t.Errorf("%s -S after filterd:\n%s\nbefore:\n%s", cmd, after[cmd], before[cmd])
		}
	}
	if !strings.Contains(before["iptables"], "--comment admin") {
		t.Errorf("the administrator's rule is missing:\n%s", before["iptables"])
	}
}
