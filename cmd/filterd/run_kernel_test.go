package main

// Kernel tests of `filterd run`: real namespaces, the real kernel's NFQUEUE,
// real clients (curl, nc, hping3) and servers. Names contain "Kernel". As
// root they always run; without root they skip, or fail when CI=true.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/filterd/filterd/internal/netns"
)

// filterdBin is the filterd binary built once by TestMain for the kernel
// tests ("" when not root: the tests skip or fail before using it).
var filterdBin string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "filterd-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			bin := filepath.Join(dir, "filterd")
			goCmd, err := exec.LookPath("go")
			if err != nil {
				goCmd = "/usr/local/go/bin/go"
			}
			args := []string{"build", "-o", bin}
			if raceEnabled {
				// The daemon under real traffic is where races would show;
				// one makes it exit with status 66, which the tests check.
				args = append(args, "-race")
			}
			out, err := exec.Command(goCmd, append(args, ".")...).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "building filterd for the kernel tests: %v\n%s", err, out)
				return 1
			}
			filterdBin = bin
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			netns.RemoveStale(ctx, "fdrun")
			cancel()
		}
		return m.Run()
	}()
	os.Exit(code)
}

// requireKernel skips without root (fails when CI=true).
func requireKernel(t *testing.T) {
	t.Helper()
	if err := netns.RequireRoot(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: kernel tests must run)", err)
		}
		t.Skipf("%v", err)
	}
	for _, c := range []string{"iptables", "ip6tables", "curl", "nc", "hping3", "python3"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not installed (scripts/test-all.sh installs it): %v", c, err)
		}
	}
	if filterdBin == "" {
		t.Fatal("filterd binary not built")
	}
}

// Addresses of the lab (198.18.0.0/15 only; no route out).
const (
	serverIP   = "198.18.1.1"
	clientIP   = "198.18.1.2" // the administrator's address: SSH allowed
	attackerIP = "198.18.1.3"
)

// lab is three namespaces (server, client, attacker) on a bridge in a
// fourth (sw).
type lab struct {
	t                        *testing.T
	driver                   string // --driver of startFilterd ("": the default)
	g                        *netns.Group
	server, client, attacker *netns.NS
}

// drivers are filterd run's NFQUEUE drivers (--driver).
var drivers = []string{"gonfqueue", "batch"}

// forDrivers runs test once per NFQUEUE driver, as a subtest named after it.
func forDrivers(t *testing.T, test func(t *testing.T, driver string)) {
	for _, d := range drivers {
		t.Run(d, func(t *testing.T) { test(t, d) })
	}
}

func newLab(t *testing.T) *lab { return newLabOpts(t, false) }

// IPv6 addresses of the lab (fd00:198:18::/48).
const (
	serverIP6   = "fd00:198:18:1::1"
	clientIP6   = "fd00:198:18:1::2"
	attackerIP6 = "fd00:198:18:1::3"
)

// newLabOpts builds the lab; with ipv6 the hosts also get addresses in
// fd00:198:18:1::/64 (no DAD), otherwise IPv6 is disabled on them.
func newLabOpts(t *testing.T, ipv6 bool) *lab {
	t.Helper()
	requireKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := &lab{t: t, g: netns.NewGroup()}
	t.Cleanup(func() {
		if err := l.g.Close(); err != nil {
			t.Errorf("netns cleanup: %v", err)
		}
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	sw, err := l.g.New(ctx, "fdrun")
	must(err)
	_, err = sw.Run(ctx, "ip", "link", "add", "br0", "type", "bridge")
	must(err)
	_, err = sw.Run(ctx, "ip", "link", "set", "br0", "up")
	must(err)
	for i, x := range []struct {
		ns          **netns.NS
		addr, addr6 string
	}{{&l.server, serverIP, serverIP6}, {&l.client, clientIP, clientIP6}, {&l.attacker, attackerIP, attackerIP6}} {
		n, err := l.g.New(ctx, "fdrun")
		must(err)
		*x.ns = n
		port := fmt.Sprintf("p%d", i)
		must(netns.Veth(ctx, n, "eth0", "", sw, port, ""))
		_, err = sw.Run(ctx, "ip", "link", "set", port, "master", "br0")
		must(err)
		_, err = n.Run(ctx, "ip", "addr", "add", x.addr+"/24", "dev", "eth0")
		must(err)
		if ipv6 {
			_, err = n.Run(ctx, "ip", "addr", "add", x.addr6+"/64", "dev", "eth0", "nodad")
			must(err)
			continue
		}
		// No IPv6 traffic of their own (router solicitations, DAD) in the way.
		must(n.Sysctl("net.ipv6.conf.all.disable_ipv6", "1"))
	}
	return l
}

// syncBuf is a goroutine-safe buffer for a child's output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a child process the test started; it is stopped by PID.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuf
	done chan struct{}
	err  error
}

// start starts cmd inside ns (ip netns exec execs it: the PID is the
// command's) and kills it in cleanup.
func (l *lab) start(ns *netns.NS, name string, args ...string) *proc {
	l.t.Helper()
	p := &proc{out: &syncBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		l.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	l.t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	return p
}

func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// daemon is a filterd run in the server namespace.
type runningFilterd struct {
	*proc
	sock string
	l    *lab
}

// startFilterd starts filterd run in the server namespace with --install on
// INPUT and OUTPUT, queue 0, a control socket, and the extra arguments, and
// waits until it says it is ready.
func (l *lab) startFilterd(rules string, extra ...string) *runningFilterd {
	l.t.Helper()
	sock := filepath.Join(l.t.TempDir(), "filterd.sock")
	args := []string{"run", "--rules", rules, "--queues", "0", "--install", "--control", sock}
	if l.driver != "" {
		args = append(args, "--driver", l.driver)
	}
	args = append(args, extra...)
	p := l.start(l.server, filterdBin, args...)
	d := &runningFilterd{proc: p, sock: sock, l: l}
	waitFor(l.t, 15*time.Second, "filterd ready", func() bool {
		if p.exited() {
			l.t.Fatalf("filterd exited: %v\n%s", p.err, p.out.String())
		}
		return strings.Contains(p.out.String(), "filterd: ready")
	})
	return d
}

// stop sends SIGTERM and waits for a clean exit.
func (d *runningFilterd) stop() {
	d.l.t.Helper()
	d.kill(syscall.SIGTERM)
	if d.err != nil {
		d.l.t.Errorf("filterd exit: %v\n%s", d.err, d.out.String())
	}
	if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
		d.l.t.Errorf("the race detector found a race in filterd:\n%s", d.out.String())
	}
}

// control fetches a control API path.
func (d *runningFilterd) control(path string) string {
	d.l.t.Helper()
	var b bytes.Buffer
	if err := controlGet(context.Background(), d.sock, path, &b); err != nil {
		d.l.t.Fatalf("control %s: %v", path, err)
	}
	return b.String()
}

// ruleCount returns the packet counter of the rule of chain whose listing
// line (iptables -L -v -x -n) matches re.
func (d *runningFilterd) ruleCount(chain string, re *regexp.Regexp) uint64 {
	d.l.t.Helper()
	out := d.control("/list?v=1&x=1&n=1")
	in := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Chain ") {
			in = strings.HasPrefix(line, "Chain "+chain+" ")
			continue
		}
		if in && re.MatchString(line) {
			f := strings.Fields(line)
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				d.l.t.Fatalf("counter in %q: %v", line, err)
			}
			return n
		}
	}
	d.l.t.Fatalf("no rule matching %v in chain %s:\n%s", re, chain, out)
	return 0
}

// dialResult is how a TCP connection attempt ended.
type dialResult int

const (
	dialOK dialResult = iota
	dialRefused
	dialTimeout
	dialOther
)

func (r dialResult) String() string {
	return [...]string{"connected", "refused", "timed out", "other error"}[r]
}

// connect opens a TCP connection from ns to addr that the test keeps; it
// fails the test when the connection cannot be made within 3 s.
func connect(t *testing.T, ns *netns.NS, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	return c
}

// dial tries a TCP connection from ns to addr and reports how it ended.
func dial(t *testing.T, ns *netns.NS, addr string, timeout time.Duration) (dialResult, time.Duration) {
	t.Helper()
	var res dialResult
	var took time.Duration
	err := ns.Do(func() error {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, timeout)
		took = time.Since(start)
		switch {
		case err == nil:
			c.Close()
			res = dialOK
		case errors.Is(err, syscall.ECONNREFUSED):
			res = dialRefused
		case isTimeout(err):
			res = dialTimeout
		default:
			res = dialOther
			t.Logf("dial %s: %v", addr, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, took
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// listen opens a TCP listener in ns that accepts connections and echoes
// lines back, until the test ends.
func listen(t *testing.T, ns *netns.NS, addr string) net.Listener {
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
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

// httpServer starts python3 -m http.server on serverIP:80 serving dir and
// waits until it accepts connections (before filterd runs).
func (l *lab) httpServer(dir string) { l.httpServerOn(serverIP, dir) }

// httpServerOn is httpServer bound to addr (IPv4 or IPv6).
func (l *lab) httpServerOn(addr, dir string) {
	l.t.Helper()
	l.start(l.server, "python3", "-m", "http.server", "--bind", addr, "--directory", dir, "80")
	waitFor(l.t, 15*time.Second, "http.server listening", func() bool {
		r, _ := dial(l.t, l.server, net.JoinHostPort(addr, "80"), time.Second)
		return r == dialOK
	})
}

// run runs a command in ns and returns its combined output and error.
func run(ns *netns.NS, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...).CombinedOutput()
	return string(out), err
}

func curl(l *lab, ns *netns.NS, url string, maxTime int) (string, error) {
	return run(ns, time.Duration(maxTime+5)*time.Second, "curl", "-sS", "--max-time", strconv.Itoa(maxTime), url)
}

// metric returns the sum of the samples of a Prometheus metric whose line
// contains all of the label substrings.
func metric(t *testing.T, body, name string, labels ...string) float64 {
	t.Helper()
	sum := 0.0
	found := false
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, lb := range labels {
			if !strings.Contains(line, lb) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		t.Fatalf("metric %s%v not found in:\n%s", name, labels, body)
	}
	return sum
}

func netDialUDP(addr string) (net.Conn, error) { return net.Dial("udp", addr) }

func rulesPathB(b *testing.B, name string) string {
	p, err := filepath.Abs(filepath.Join(rulesDir, name))
	if err != nil {
		b.Fatal(err)
	}
	return p
}
