package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/filterd/filterd/internal/netns"
)

// BenchmarkKernelLiveUDP measures the live path: UDP datagrams blasted from
// one namespace to another through one NFQUEUE queue verdicted by filterd
// (server-state.rules: the SNMP rule accepts udp dport 161). It reports the
// packets per second that reached the receiving socket (every one was
// verdicted by filterd) and the share lost to the queue overflowing. Run
// with -bench (root; fails without root when CI=true).
func BenchmarkKernelLiveUDP(b *testing.B) {
	if err := netns.RequireRoot(); err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatalf("%v (CI=true)", err)
		}
		b.Skip(err)
	}
	if filterdBin == "" {
		b.Fatal("filterd binary not built")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := netns.NewGroup()
	defer g.Close()
	srv, err := g.New(ctx, "fdrun")
	if err != nil {
		b.Fatal(err)
	}
	cli, err := g.New(ctx, "fdrun")
	if err != nil {
		b.Fatal(err)
	}
	if err := netns.Veth(ctx, srv, "eth0", "", cli, "eth0", ""); err != nil {
		b.Fatal(err)
	}
	for _, x := range []struct {
		ns   *netns.NS
		addr string
	}{{srv, serverIP}, {cli, clientIP}} {
		if _, err := x.ns.Run(ctx, "ip", "addr", "add", x.addr+"/24", "dev", "eth0"); err != nil {
			b.Fatal(err)
		}
	}
	var rx atomic.Int64
	var ln *net.UDPConn
	if err := srv.Do(func() error {
		var err error
		ln, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(serverIP), Port: 161})
		if err == nil {
			err = ln.SetReadBuffer(8 << 20)
		}
		return err
	}); err != nil {
		b.Fatal(err)
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
	if err := cli.Do(func() error {
		var err error
		conn, err = net.Dial("udp", serverIP+":161")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	for _, driver := range drivers {
		b.Run(driver, func(b *testing.B) {
			p, err := startBenchFilterd(srv, rulesPathB(b, "server-state.rules"), driver)
			if err != nil {
				b.Fatal(err)
			}
			defer p.stop()

			payload := make([]byte, 64)
			b.ResetTimer()
			start := time.Now()
			before := rx.Load()
			sent := 0
			for i := 0; i < b.N; i++ {
				if _, err := conn.Write(payload); err == nil {
					sent++
				}
			}
			// Wait until the receiver stops seeing packets (bounded).
			last, quiet := rx.Load(), time.Now()
			for time.Since(quiet) < 100*time.Millisecond && time.Since(start) < 60*time.Second {
				time.Sleep(5 * time.Millisecond)
				if n := rx.Load(); n != last {
					last, quiet = n, time.Now()
				}
			}
			elapsed := quiet.Sub(start)
			b.StopTimer()
			got := rx.Load() - before
			b.ReportMetric(float64(got)/elapsed.Seconds(), "pps")
			if sent > 0 {
				b.ReportMetric(100*float64(int64(sent)-got)/float64(sent), "%lost")
			}
		})
	}
}

type benchFilterd struct {
	p *proc
}

func (f *benchFilterd) stop() { f.p.kill(syscall.SIGTERM) }

// startBenchFilterd starts filterd for a benchmark (no *testing.T).
func startBenchFilterd(ns *netns.NS, rules, driver string) (*benchFilterd, error) {
	p := &proc{out: &syncBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", "netns", "exec", ns.Name, filterdBin, "run", "--rules", rules, "--queues", "0",
		"--install", "--hooks", "INPUT", "--log", "none", "--driver", driver)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.out.String(), "filterd: ready") {
		if p.exited() || time.Now().After(deadline) {
			p.kill(syscall.SIGKILL)
			return nil, fmt.Errorf("filterd did not start: %v\n%s", p.err, p.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &benchFilterd{p: p}, nil
}
