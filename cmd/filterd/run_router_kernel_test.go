package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filterd/filterd/internal/netns"
)

// routerRules filter what a router forwards: replies, HTTP and SNMP to the
// server side; everything else is logged and dropped.
const routerRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -i eth0 -o eth1 -p tcp --dport 80 --syn -j ACCEPT
-A FORWARD -i eth0 -o eth1 -p udp --dport 161 -j ACCEPT
-A FORWARD -j LOG --log-prefix "FWD-DROP: "
COMMIT
`

// TestKernelRunRouter runs filterd on a router namespace with --hooks
// FORWARD: client (198.18.1.2) -> router -> server (198.18.2.2). Forwarded
// HTTP works, a fragmented UDP datagram to an allowed port arrives whole
// (the router's kernel does not reassemble: filterd holds the fragments and
// verdicts them with their datagram), one to another port is dropped.
func TestKernelRunRouter(t *testing.T) { forDrivers(t, testKernelRunRouter) }

func testKernelRunRouter(t *testing.T, driver string) {
	requireKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := netns.NewGroup()
	t.Cleanup(func() { g.Close() })
	must := func(_ []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mk := func() *netns.NS {
		n, err := g.New(ctx, "fdrun")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Sysctl("net.ipv6.conf.all.disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
		return n
	}
	client, router, server := mk(), mk(), mk()
	if err := netns.Veth(ctx, client, "eth0", "", router, "eth0", ""); err != nil {
		t.Fatal(err)
	}
	if err := netns.Veth(ctx, router, "eth1", "", server, "eth0", ""); err != nil {
		t.Fatal(err)
	}
	must(client.Run(ctx, "ip", "addr", "add", "198.18.1.2/24", "dev", "eth0"))
	must(client.Run(ctx, "ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.1"))
	must(router.Run(ctx, "ip", "addr", "add", "198.18.1.1/24", "dev", "eth0"))
	must(router.Run(ctx, "ip", "addr", "add", "198.18.2.1/24", "dev", "eth1"))
	must(server.Run(ctx, "ip", "addr", "add", "198.18.2.2/24", "dev", "eth0"))
	must(server.Run(ctx, "ip", "route", "add", "198.18.1.0/24", "via", "198.18.2.1"))
	if err := router.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, g: g, server: server, client: client}

	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("through the router\n"), 0o644)
	l.httpServerOn("198.18.2.2", www)
	// UDP receivers on 161 (allowed) and 162 (not), recording sizes.
	got := map[int]chan int{161: make(chan int, 10), 162: make(chan int, 10)}
	for port, ch := range got {
		var c *net.UDPConn
		if err := server.Do(func() error {
			var err error
			c, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("198.18.2.2"), Port: port})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go func(c *net.UDPConn, ch chan int) {
			buf := make([]byte, 65536)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				ch <- n
			}
		}(c, ch)
	}

	rules := filepath.Join(t.TempDir(), "router.rules")
	if err := os.WriteFile(rules, []byte(routerRules), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "filterd.sock")
	p := l.start(router, filterdBin, "run", "--rules", rules, "--queues", "0", "--install", "--hooks", "FORWARD", "--control", sock, "--metrics", "127.0.0.1:9467", "--driver", driver)
	waitFor(t, 15*time.Second, "filterd ready", func() bool {
		if p.exited() {
			t.Fatalf("filterd exited: %v\n%s", p.err, p.out.String())
		}
		return strings.Contains(p.out.String(), "filterd: ready")
	})
	d := &runningFilterd{proc: p, sock: sock, l: l}
	defer d.stop()
	out, err := run(router, 10*time.Second, "iptables", "-S", "FORWARD")
	if err != nil || !strings.Contains(out, "-A FORWARD -m comment --comment filterd -j NFQUEUE --queue-num 0") {
		t.Fatalf("FORWARD NFQUEUE rule: %v\n%s", err, out)
	}
	if out, err := curl(l, client, "http://198.18.2.2/index.html", 5); err != nil || out != "through the router\n" {
		t.Fatalf("curl through the router: %v %q\n%s", err, out, d.out.String())
	}
	send := func(port string, size int) {
		if err := client.Do(func() error {
			c, err := net.Dial("udp", "198.18.2.2:"+port)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(make([]byte, size))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	accepted := func() float64 {
		m, err := run(router, 5*time.Second, "curl", "-sS", "http://127.0.0.1:9467/metrics")
		if err != nil {
			t.Fatal(err)
		}
		return metric(t, m, "filterd_packets_total", `verdict="ACCEPT"`)
	}
	send("162", 3000) // dropped
	before := accepted()
	send("161", 3000) // 3 fragments on the wire, held and accepted together
	select {
	case n := <-got[161]:
		if n != 3000 {
			t.Errorf("server got %d bytes on port 161, want 3000", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("fragmented datagram to port 161 did not arrive\n%s", d.out.String())
	}
	// The router's kernel did not reassemble (no conntrack in use there):
	// filterd verdicted three fragments, not one datagram.
	if n := accepted() - before; n != 3 {
		t.Errorf("filterd accepted %v packets for the fragmented datagram, want its 3 fragments", n)
	}
	select {
	case n := <-got[162]:
		t.Errorf("datagram to port 162 (not allowed) arrived (%d bytes)", n)
	default:
	}
	if !strings.Contains(d.out.String(), "FWD-DROP: IN=eth0 OUT=eth1 ") || !strings.Contains(d.out.String(), "DPT=162") {
		t.Errorf("no FORWARD LOG line for the dropped datagram:\n%s", d.out.String())
	}
}
