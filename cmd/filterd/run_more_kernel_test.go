package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/filterd/filterd/internal/netns"
)

func rulesPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(rulesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKernelRunReload reloads the rules under traffic: an established
// connection carries on through a good reload and through a refused one
// (a broken file is reported and the old rules stay).
func TestKernelRunReload(t *testing.T) { forDrivers(t, testKernelRunReload) }

func testKernelRunReload(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	listen(t, l.server, serverIP+":22")
	rules := filepath.Join(t.TempDir(), "rules")
	good, err := os.ReadFile(rulesPath(t, "server-state.rules"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rules, good, 0o644); err != nil {
		t.Fatal(err)
	}
	d := l.startFilterd(rules)
	defer d.stop()

	// One long-lived connection from the client, echoing a line every few
	// milliseconds in the background while we reload.
	conn := connect(t, l.client, serverIP+":22")
	defer conn.Close()
	rd := bufio.NewReader(conn)
	var echoed atomic.Int64
	echo := func(i int) error {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		msg := fmt.Sprintf("line %d\n", i)
		if _, err := io.WriteString(conn, msg); err != nil {
			return err
		}
		got, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		if got != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		echoed.Add(1)
		return nil
	}
	stop := make(chan struct{})
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if err := echo(i); err != nil {
				errc <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	reloads := func() int { return strings.Count(d.out.String(), "rules reloaded") }
	refused := func() int { return strings.Count(d.out.String(), "reload refused") }
	waitEchoes := func(n int64) {
		target := echoed.Load() + n
		waitFor(t, 10*time.Second, "echoes", func() bool { return echoed.Load() >= target })
	}
	waitEchoes(5)
	// A good reload.
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "reload", func() bool { return reloads() == 1 })
	waitEchoes(5)
	// A broken file: refused, logged with the place, the old rules stay.
	broken := strings.Replace(string(good), "-j REJECT --syn", "-j REJECT --syn --bogus-option", 1)
	if err := os.WriteFile(rules, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "refused reload", func() bool { return refused() == 1 })
	if !strings.Contains(d.out.String(), rules+":") {
		t.Errorf("the refusal does not name the file and line:\n%s", d.out.String())
	}
	waitEchoes(5)
	// The old rules are still in force: an unlisted port is still rejected
	// (once the SYN limit's burst is spent) and port 80's rule still exists.
	d.ruleCount("FWALL-INPUT", regexp.MustCompile(`dpt:80 `))
	close(stop)
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatalf("established connection broke during reloads after %d echoes: %v", echoed.Load(), err)
	}
	// A new connection still works after all that.
	if r, took := dial(t, l.client, serverIP+":22", 3*time.Second); r != dialOK {
		t.Errorf("new connection after reloads: %v after %v", r, took)
	}
}

// TestKernelRunKill9 kills the daemon with SIGKILL (no cleanup: the NFQUEUE
// rules stay): with --queue-bypass traffic flows unfiltered, without it
// traffic stops; a restart adopts the rules left behind and resumes.
func TestKernelRunKill9(t *testing.T) { forDrivers(t, testKernelRunKill9) }

func testKernelRunKill9(t *testing.T, driver string) {
	for _, bypass := range []bool{true, false} {
		t.Run(fmt.Sprintf("bypass=%v", bypass), func(t *testing.T) {
			l := newLab(t)
			l.driver = driver
			www := t.TempDir()
			os.WriteFile(filepath.Join(www, "index.html"), []byte("ok\n"), 0o644)
			l.httpServer(www)
			var extra []string
			if bypass {
				extra = append(extra, "--queue-bypass")
			}
			rules := rulesPath(t, "server-state.rules")
			d := l.startFilterd(rules, extra...)
			if out, err := curl(l, l.client, "http://"+serverIP+"/", 5); err != nil || out != "ok\n" {
				t.Fatalf("curl with filterd running: %v %q", err, out)
			}
			d.kill(syscall.SIGKILL)
			out, err := run(l.server, 10*time.Second, "iptables", "-S", "INPUT")
			if err != nil || !strings.Contains(out, "NFQUEUE") {
				t.Fatalf("after kill -9 the NFQUEUE rule should still be there: %v\n%s", err, out)
			}
			out, err = curl(l, l.client, "http://"+serverIP+"/", 2)
			if bypass && (err != nil || out != "ok\n") {
				t.Errorf("with --queue-bypass and no filterd: curl %v %q, want it to pass", err, out)
			}
			if !bypass && err == nil {
				t.Errorf("without --queue-bypass and no filterd: curl succeeded (%q), want traffic stopped", out)
			}
			d2 := l.startFilterd(rules, extra...)
			defer d2.stop()
			out, err = curl(l, l.client, "http://"+serverIP+"/", 5)
			if err != nil || out != "ok\n" {
				t.Errorf("after restart: curl %v %q", err, out)
			}
			// The restart adopted the rule: one NFQUEUE rule per hook, not two.
			out, _ = run(l.server, 10*time.Second, "iptables", "-S")
			if n := strings.Count(out, "NFQUEUE"); n != 2 {
				t.Errorf("%d NFQUEUE rules after restart, want 2 (INPUT, OUTPUT):\n%s", n, out)
			}
		})
	}
}

// TestKernelRunSYNFlood floods port 80 with SYNs from spoofed sources inside
// 198.18.0.0/15 (hping3, bounded count) while the client keeps connecting;
// with a per-source SYN hashlimit (server-invalid-hashlimit.rules) every
// client connection succeeds and the counters show the flood limited.
func TestKernelRunSYNFlood(t *testing.T) { forDrivers(t, testKernelRunSYNFlood) }

func testKernelRunSYNFlood(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("ok\n"), 0o644)
	l.httpServer(www)
	// Two queues (--queue-balance 0:1): flows spread over two workers that
	// share the conntrack table and the hashlimit buckets.
	d := l.startFilterd(rulesPath(t, "server-invalid-hashlimit.rules"), "--metrics", "127.0.0.1:9467", "--queues", "0-1")
	defer d.stop()
	if out, err := run(l.server, 10*time.Second, "iptables", "-S", "INPUT"); err != nil || !strings.Contains(out, "--queue-balance 0:1") {
		t.Fatalf("no --queue-balance 0:1 rule: %v\n%s", err, out)
	}

	// 8 spoofed sources, 300 SYNs each at 1000/s: far above 20/s burst 40.
	const sources, perSource = 8, 300
	var floods []*proc
	floodStart := time.Now()
	for i := 0; i < sources; i++ {
		src := fmt.Sprintf("198.18.1.%d", 100+i)
		floods = append(floods, l.start(l.attacker, "hping3", "-q", "-S", "-p", "80", "-a", src,
			"-c", fmt.Sprint(perSource), "-i", "u1000", serverIP))
	}
	clientOK := 0
	for i := 0; i < 20; i++ {
		out, err := curl(l, l.client, "http://"+serverIP+"/", 5)
		if err != nil || out != "ok\n" {
			t.Errorf("client connection %d during the flood: %v %q", i, err, out)
			continue
		}
		clientOK++
	}
	for _, f := range floods {
		select {
		case <-f.done:
		case <-time.After(30 * time.Second):
			t.Fatal("hping3 did not finish")
		}
	}
	floodTime := time.Since(floodStart)
	limited := d.ruleCount("FWALL-INPUT", regexp.MustCompile(`DROP .*limit: above 20/sec`))
	// Each source gets its burst (40) and 20 more a second while it floods
	// (~0.3 s, longer on a busy machine); everything else must be dropped.
	perSourcePassed := 40 + int(20*floodTime.Seconds()) + 5
	if min := uint64(sources * max(perSource-perSourcePassed, 0)); limited < min || limited == 0 {
		t.Errorf("hashlimit dropped %d flood SYNs in %v, want at least %d of %d", limited, floodTime, min, sources*perSource)
	}
	t.Logf("client: %d/20 connections; hashlimit dropped %d of %d flood SYNs", clientOK, limited, sources*perSource)
	m, err := run(l.server, 5*time.Second, "curl", "-sS", "http://127.0.0.1:9467/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`queue="0"`, `queue="1"`} {
		if n := metric(t, m, "filterd_packets_total", q); n == 0 {
			t.Errorf("no packets verdicted by %s: the flows were not spread", q)
		}
	}
	if n := metric(t, m, "filterd_packets_total", `verdict="DROP"`); n < float64(limited) {
		t.Errorf("filterd_packets_total{verdict=DROP} = %v, want >= %d", n, limited)
	}
	if n := metric(t, m, "filterd_hashlimit_buckets", `name="syn-per-src"`); n < sources {
		t.Errorf("filterd_hashlimit_buckets{syn-per-src} = %v, want >= %d (one per flooding source)", n, sources)
	}
	if n := metric(t, m, "filterd_rule_packets_total", `chain="FWALL-INPUT"`, `target="DROP"`); n < float64(limited) {
		t.Errorf("filterd_rule_packets_total DROP = %v, want >= %d", n, limited)
	}
}

// ftpServer is a minimal passive-mode FTP server (USER, PASS, TYPE, PWD,
// EPSV, PASV, SIZE, RETR, QUIT) in ns, serving one file.
func ftpServer(t *testing.T, ns *netns.NS, addr string, name string, content []byte) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	host, _, _ := net.SplitHostPort(addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveFTP(ns, host, c, name, content)
		}
	}()
}

func serveFTP(ns *netns.NS, host string, c net.Conn, name string, content []byte) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	reply := func(s string) { io.WriteString(c, s+"\r\n") }
	reply("220 filterd test ftp")
	var data net.Listener
	defer func() {
		if data != nil {
			data.Close()
		}
	}()
	openData := func() (int, error) {
		if data != nil {
			data.Close()
		}
		err := ns.Do(func() error {
			var err error
			data, err = net.Listen("tcp", host+":0")
			return err
		})
		if err != nil {
			return 0, err
		}
		return data.Addr().(*net.TCPAddr).Port, nil
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch strings.ToUpper(cmd) {
		case "USER":
			reply("331 password please")
		case "PASS":
			reply("230 logged in")
		case "PWD":
			reply(`257 "/"`)
		case "TYPE":
			reply("200 ok")
		case "SIZE":
			reply(fmt.Sprintf("213 %d", len(content)))
		case "EPSV":
			p, err := openData()
			if err != nil {
				reply("425 " + err.Error())
				continue
			}
			reply(fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)", p))
		case "PASV":
			p, err := openData()
			if err != nil {
				reply("425 " + err.Error())
				continue
			}
			h := strings.ReplaceAll(host, ".", ",")
			reply(fmt.Sprintf("227 Entering Passive Mode (%s,%d,%d)", h, p>>8, p&0xff))
		case "RETR":
			if data == nil || strings.TrimPrefix(arg, "/") != name {
				reply("550 no")
				continue
			}
			reply("150 sending")
			data.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
			dc, err := data.Accept()
			if err != nil {
				reply("425 no data connection: " + err.Error())
				continue
			}
			dc.Write(content)
			dc.Close()
			reply("226 done")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 not implemented")
		}
	}
}

// TestKernelRunFTP downloads a file over passive FTP through the
// state-based rules with --ftp-helper: the data connection to a high port
// is RELATED (the FTP helper read the 229/227 reply). The SYN limit's
// tokens are spent first, so only the RELATED rule can let the data
// connection in.
func TestKernelRunFTP(t *testing.T) { forDrivers(t, testKernelRunFTP) }

func testKernelRunFTP(t *testing.T, driver string) {
	for _, mode := range []string{"epsv", "pasv"} {
		t.Run(mode, func(t *testing.T) {
			l := newLab(t)
			l.driver = driver
			content := []byte(strings.Repeat("filterd ftp data\n", 500))
			ftpServer(t, l.server, serverIP+":21", "file.txt", content)
			d := l.startFilterd(rulesPath(t, "server-state.rules"), "--ftp-helper")
			defer d.stop()
			// Keep the global SYN limit empty during the transfer: a bounded
			// SYN stream from the attacker to a closed port.
			l.start(l.attacker, "hping3", "-q", "-S", "-p", "9", "-c", "3000", "-i", "u1000", serverIP)
			waitFor(t, 5*time.Second, "SYN limit spent", func() bool {
				return d.ruleCount("FWALL-INPUT", regexp.MustCompile(`REJECT\s+6 `)) > 0
			})
			args := []string{"-sS", "--max-time", "10", "ftp://" + serverIP + "/file.txt"}
			if mode == "pasv" {
				args = append([]string{"--disable-epsv"}, args...)
			}
			out, err := run(l.client, 15*time.Second, "curl", args...)
			if err != nil || out != string(content) {
				t.Fatalf("curl ftp (%s): %v (%d bytes, want %d)\nfilterd conntrack:\n%s", mode, err, len(out), len(content), d.control("/conntrack"))
			}
			ct := d.control("/conntrack")
			if !strings.Contains(ct, "helper=ftp") {
				t.Errorf("no FTP control connection with helper=ftp in:\n%s", ct)
			}
		})
	}
}

// TestKernelRunQueueBusy starts a second filterd on a queue the first one
// holds: it must refuse with the queue and how to find the owner.
func TestKernelRunQueueBusy(t *testing.T) { forDrivers(t, testKernelRunQueueBusy) }

func testKernelRunQueueBusy(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	d := l.startFilterd(rulesPath(t, "server.rules"))
	defer d.stop()
	out, err := run(l.server, 15*time.Second, filterdBin, "run", "--rules", rulesPath(t, "server.rules"), "--queues", "0", "--driver", driver)
	if err == nil {
		t.Fatalf("second filterd on queue 0 started:\n%s", out)
	}
	t.Logf("second filterd: %s", out)
	for _, want := range []string{"nfqueue 0", "already bound", "/proc/net/netfilter/nfnetlink_queue", "filterd"} {
		if !strings.Contains(out, want) {
			t.Errorf("error does not mention %q:\n%s", want, out)
		}
	}
}

// TestKernelRunShadow runs filterd in shadow mode: its conntrack table is
// compared with the kernel's own (per packet where the kernel can attach its
// state to queued packets, and flow by flow over ctnetlink). After HTTP,
// an open SSH-port connection and a rejected UDP datagram the tables must agree flow
// for flow: TCP state, [UNREPLIED], [ASSURED].
func TestKernelRunShadow(t *testing.T) { forDrivers(t, testKernelRunShadow) }

func testKernelRunShadow(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("ok\n"), 0o644)
	l.httpServer(www)
	listen(t, l.server, serverIP+":22")
	d := l.startFilterd(rulesPath(t, "server-state.rules"), "--shadow", "--shadow-interval", "100ms")
	defer d.stop()
	out, err := run(l.server, 10*time.Second, "iptables", "-S", "INPUT")
	if err != nil || !strings.Contains(out, "--ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED") {
		t.Fatalf("--shadow --install must turn the kernel's conntrack on: %v\n%s", err, out)
	}
	for i := 0; i < 3; i++ {
		if out, err := curl(l, l.client, "http://"+serverIP+"/", 5); err != nil || out != "ok\n" {
			t.Fatalf("curl: %v %q", err, out)
		}
	}
	// A connection left open: ESTABLISHED [ASSURED] in both tables.
	open := connect(t, l.client, serverIP+":22")
	defer open.Close()
	io.WriteString(open, "hello\n")
	bufio.NewReader(open).ReadString('\n')
	udpProbe(t, l.client, serverIP+":5555", 2*time.Second)
	trafficDone := time.Now()
	var report string
	waitFor(t, 10*time.Second, "a comparison after the traffic", func() bool {
		report = d.control("/shadow")
		m := regexp.MustCompile(`comparison \d+ at (\S+)`).FindStringSubmatch(report)
		if m == nil {
			return false
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		return err == nil && at.After(trafficDone.Add(50*time.Millisecond))
	})
	t.Logf("%s", report)
	m := regexp.MustCompile(`kernel (\d+) filterd (\d+) same (\d+) differ (\d+)`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("no comparison counts in:\n%s", report)
	}
	if m[3] == "0" || m[4] != "0" {
		t.Errorf("filterd's conntrack and the kernel's disagree (or nothing was compared):\n%s", report)
	}
	// Then a SYN flood from spoofed sources (half-open flows, SYN-ACKs to
	// nowhere, the hashlimit-free state rules): the tables still agree.
	var floods []*proc
	for i := 0; i < 4; i++ {
		floods = append(floods, l.start(l.attacker, "hping3", "-q", "-S", "-p", "22", "-a", fmt.Sprintf("198.18.1.%d", 110+i),
			"-c", "50", "-i", "u1000", serverIP))
	}
	for _, f := range floods {
		<-f.done
	}
	floodDone := time.Now()
	waitFor(t, 10*time.Second, "a comparison after the flood", func() bool {
		report = d.control("/shadow")
		m := regexp.MustCompile(`comparison \d+ at (\S+)`).FindStringSubmatch(report)
		if m == nil {
			return false
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		return err == nil && at.After(floodDone.Add(50*time.Millisecond))
	})
	m = regexp.MustCompile(`kernel (\d+) filterd (\d+) same (\d+) differ (\d+)`).FindStringSubmatch(report)
	t.Logf("after the flood: %s", m[0])
	if m[4] != "0" || m[3] == "0" {
		lines := strings.SplitN(report, "\n", 20)
		t.Errorf("after the SYN flood the tables disagree:\n%s", strings.Join(lines, "\n"))
	}
	if kernelHasGlueCT() {
		// Per-packet comparison too: nothing may differ.
		if strings.Contains(d.out.String(), "shadow: conntrack state differs") {
			t.Errorf("per-packet state differs from the kernel's:\n%s", d.out.String())
		}
	} else if !strings.Contains(d.out.String(), "comparing flow tables only") {
		t.Errorf("filterd did not say it falls back to flow comparison on this kernel:\n%s", d.out.String())
	}
}

// kernelHasGlueCT reports whether the running kernel can attach conntrack
// state to NFQUEUE messages (CONFIG_NETFILTER_NETLINK_GLUE_CT), from
// /proc/config.gz; without that file it assumes it can.
func kernelHasGlueCT() bool {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return true
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return true
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return true
	}
	return strings.Contains(string(b), "CONFIG_NETFILTER_NETLINK_GLUE_CT=y")
}

// TestKernelRunStopUnderTraffic stops filterd (SIGTERM) in the middle of a
// paced UDP stream: the NFQUEUE rules are removed first and every packet
// already queued is verdicted before the queue is unbound, so not one
// datagram is lost.
func TestKernelRunStopUnderTraffic(t *testing.T) { forDrivers(t, testKernelRunStopUnderTraffic) }

func testKernelRunStopUnderTraffic(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	var rx atomic.Int64
	var ln *net.UDPConn
	if err := l.server.Do(func() error {
		var err error
		ln, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(serverIP), Port: 161})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := ln.Read(buf); err != nil {
				return
			}
			rx.Add(1)
		}
	}()
	var conn net.Conn
	if err := l.client.Do(func() error {
		var err error
		conn, err = net.Dial("udp", serverIP+":161")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := l.startFilterd(rulesPath(t, "server-state.rules"))
	const total = 4000
	sent := 0
	stopped := make(chan struct{})
	for i := 0; i < total; i++ {
		if i == total/2 {
			go func() {
				d.kill(syscall.SIGTERM)
				close(stopped)
			}()
		}
		if _, err := conn.Write([]byte("snmp?")); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		sent++
		if i%20 == 0 {
			time.Sleep(time.Millisecond) // ~20,000 packets/s at most
		}
	}
	<-stopped
	if d.err != nil {
		t.Fatalf("filterd exit: %v\n%s", d.err, d.out.String())
	}
	waitFor(t, 5*time.Second, "all datagrams received", func() bool { return rx.Load() >= int64(sent) })
	out := d.out.String()
	if !strings.Contains(out, "filterd: stopped") {
		t.Errorf("no clean stop:\n%s", out)
	}
	t.Logf("%d sent, %d received; %s", sent, rx.Load(), lastLine(out))
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestKernelRunENOBUFS gives filterd a tiny netlink receive buffer and
// floods it: the kernel reports ENOBUFS (and counts user drops); filterd
// counts it, keeps reading and keeps verdicting.
func TestKernelRunENOBUFS(t *testing.T) { forDrivers(t, testKernelRunENOBUFS) }

func testKernelRunENOBUFS(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("ok\n"), 0o644)
	l.httpServer(www)
	d := l.startFilterd(rulesPath(t, "server-state.rules"), "--rcvbuf", "4096", "--metrics", "127.0.0.1:9467", "--log", "none")
	defer d.stop()
	flood := l.start(l.attacker, "hping3", "-q", "--udp", "-p", "161", "-c", "20000", "-i", "u20", serverIP)
	select {
	case <-flood.done:
	case <-time.After(60 * time.Second):
		t.Fatal("hping3 did not finish")
	}
	m, err := run(l.server, 5*time.Second, "curl", "-sS", "http://127.0.0.1:9467/metrics")
	if err != nil {
		t.Fatal(err)
	}
	enobufs := metric(t, m, "filterd_queue_enobufs_total")
	userDropped := metric(t, m, "filterd_queue_user_dropped_total")
	t.Logf("ENOBUFS %v, kernel user_dropped %v, accepted %v", enobufs, userDropped, metric(t, m, "filterd_packets_total", `verdict="ACCEPT"`))
	if enobufs == 0 || userDropped == 0 {
		t.Errorf("no overrun seen (ENOBUFS %v, user_dropped %v): the test did not overload the socket", enobufs, userDropped)
	}
	if d.exited() {
		t.Fatalf("filterd died:\n%s", d.out.String())
	}
	if out, err := curl(l, l.client, "http://"+serverIP+"/", 5); err != nil || out != "ok\n" {
		t.Errorf("after the overrun: curl %v %q", err, out)
	}
	if !strings.Contains(d.out.String(), "ENOBUFS") {
		t.Errorf("the overrun was not logged:\n%s", d.out.String())
	}
}

// TestKernelRunLogRateLimit floods the LOG rules (UDP to a closed port hits
// both LOG rules of server.rules, then REJECT): at most the burst and the
// rate's worth of lines reach stderr, the rest are counted as suppressed.
func TestKernelRunLogRateLimit(t *testing.T) { forDrivers(t, testKernelRunLogRateLimit) }

func testKernelRunLogRateLimit(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	d := l.startFilterd(rulesPath(t, "server.rules"), "--log-rate", "10", "--log-burst", "20", "--metrics", "127.0.0.1:9467")
	defer d.stop()
	start := time.Now()
	flood := l.start(l.attacker, "hping3", "-q", "--udp", "-s", "40000", "-p", "5555", "-c", "500", "-i", "u1000", serverIP) // source ports above the rules' 1023:2999
	select {
	case <-flood.done:
	case <-time.After(30 * time.Second):
		t.Fatal("hping3 did not finish")
	}
	elapsed := time.Since(start)
	m, err := run(l.server, 5*time.Second, "curl", "-sS", "http://127.0.0.1:9467/metrics")
	if err != nil {
		t.Fatal(err)
	}
	hits := metric(t, m, "filterd_log_lines_total")
	suppressed := metric(t, m, "filterd_log_lines_suppressed_total")
	lines := strings.Count(d.out.String(), "DPT=5555")
	maxLines := 20 + int(10*elapsed.Seconds()) + 1
	t.Logf("%v LOG hits, %d lines written, %v suppressed in %v", hits, lines, suppressed, elapsed)
	if hits < 900 || lines > maxLines || suppressed < hits-float64(maxLines) {
		t.Errorf("LOG: %v hits, %d lines written (at most %d), %v suppressed", hits, lines, maxLines, suppressed)
	}
	if !strings.Contains(d.out.String(), "lines suppressed") && suppressed > 0 && lines > 20 {
		t.Errorf("no note of suppressed lines:\n%s", lastLine(d.out.String()))
	}
}

// ownerRules drop what user 12345 sends from the server (-m owner needs the
// socket's UID, which filterd asks NFQUEUE for).
const ownerRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -o eth0 -m owner --uid-owner 12345 -j LOG --log-prefix "OWNER-DROP: " --log-uid
-A OUTPUT -o eth0 -m owner --uid-owner 12345 -j DROP
COMMIT
`

// TestKernelRunOwner checks the OUTPUT hook's metadata: the same curl from
// the server to the client works as root and is dropped as user 12345
// (-m owner), and the LOG line names the output interface and the UID.
func TestKernelRunOwner(t *testing.T) { forDrivers(t, testKernelRunOwner) }

func testKernelRunOwner(t *testing.T, driver string) {
	l := newLab(t)
	l.driver = driver
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("client\n"), 0o644)
	os.Chmod(www, 0o755)
	l.start(l.client, "python3", "-m", "http.server", "--bind", clientIP, "--directory", www, "80")
	waitFor(t, 15*time.Second, "http.server on the client", func() bool {
		r, _ := dial(t, l.client, clientIP+":80", time.Second)
		return r == dialOK
	})
	rules := filepath.Join(t.TempDir(), "owner.rules")
	if err := os.WriteFile(rules, []byte(ownerRules), 0o644); err != nil {
		t.Fatal(err)
	}
	d := l.startFilterd(rules)
	defer d.stop()
	if out, err := curl(l, l.server, "http://"+clientIP+"/index.html", 5); err != nil || out != "client\n" {
		t.Fatalf("curl as root: %v %q", err, out)
	}
	out, err := run(l.server, 10*time.Second, "setpriv", "--reuid=12345", "--regid=12345", "--clear-groups",
		"curl", "-sS", "--max-time", "2", "http://"+clientIP+"/index.html")
	if err == nil {
		t.Fatalf("curl as uid 12345 passed: %q", out)
	}
	logRE := regexp.MustCompile(`OWNER-DROP: IN= OUT=eth0 SRC=198\.18\.1\.1 DST=198\.18\.1\.2 .* SYN .*UID=12345 GID=12345`)
	if !logRE.MatchString(d.out.String()) {
		t.Errorf("no LOG line like %v:\n%s", logRE, d.out.String())
	}
}

// TestKernelRunBadListener: a metrics address that cannot be bound stops
// filterd before it installs anything.
func TestKernelRunBadListener(t *testing.T) {
	l := newLab(t)
	out, err := run(l.server, 15*time.Second, filterdBin, "run", "--rules", rulesPath(t, "server.rules"), "--queues", "0",
		"--install", "--metrics", "198.18.9.9:9467")
	if err == nil || !strings.Contains(out, "--metrics") {
		t.Fatalf("unbindable --metrics address: %v\n%s", err, out)
	}
	if ipt, _ := run(l.server, 10*time.Second, "iptables", "-S"); strings.Contains(ipt, "NFQUEUE") {
		t.Errorf("rules installed although filterd refused to start:\n%s", ipt)
	}
}
