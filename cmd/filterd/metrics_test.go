package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// TestMetricsCollector runs packets through an engine and checks the
// exported rule, conntrack and log metrics (no kernel queue: those metrics
// are covered by the kernel tests).
func TestMetricsCollector(t *testing.T) {
	var errb bytes.Buffer
	d := &daemon{o: runFlags{rules: rulesDir + "/server.rules", ct: ctFlags{max: 1000}}, stderr: &errb}
	d.logw = engine.NewLogWriter(nil)
	d.ct = conntrack.New(conntrack.Config{Max: 1000})
	d.copts = ruleset.CompileOptions{Log: d.logw.Log}
	rules, code := d.load(context.Background(), engine.Rules{})
	if code != exitOK {
		t.Fatalf("load: %d\n%s", code, errb.String())
	}
	var err error
	if d.eng, err = engine.New(engine.Config{Rules: rules, Conntrack: d.ct}); err != nil {
		t.Fatal(err)
	}
	d.nfq = &engine.NFQueue{}
	w := d.eng.NewWorker()
	// A SYN to port 80 from a client and a UDP datagram to a closed port.
	syn := tcpSYN(netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.1.1"), 40000, 80)
	meta := packet.Meta{Time: time.Unix(1000, 0), Hook: packet.HookInput, InIface: "eth0"}
	if v := w.Process(syn, meta); v.Action != engine.Accept {
		t.Fatalf("SYN: %v", v.Action)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMetricsCollector(d))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, mf := range mfs {
		expfmt.MetricFamilyToText(&out, mf)
	}
	text := out.String()
	for _, want := range []string{
		`filterd_rule_packets_total{chain="FWALL-INPUT",family="ipv4",rule="2",target="ACCEPT"} 1`,
		`filterd_rule_packets_total{chain="INPUT",family="ipv4",rule="1",target="FWALL-INPUT"} 1`,
		`filterd_rule_bytes_total{chain="FWALL-INPUT",family="ipv4",rule="2",target="ACCEPT"} 40`,
		`filterd_conntrack_entries{state="`,
		`filterd_conntrack_max 1000`,
		`filterd_reloads_total 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	// A reload keeps counting and a broken file is counted as a failure.
	if err := d.reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.o.rules = rulesDir + "/article-as-printed.rules"
	if err := d.reload(context.Background()); err == nil {
		t.Fatal("broken file reloaded")
	}
	if d.reloads.Load() != 1 || d.failed.Load() != 1 {
		t.Errorf("reloads %d failures %d, want 1 and 1", d.reloads.Load(), d.failed.Load())
	}
}

// tcpSYN builds a 40-byte IPv4 TCP SYN with valid checksums.
func tcpSYN(src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, 40)
	b[0], b[8], b[9] = 0x45, 64, 6
	b[3] = 40
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	put16 := func(o int, v uint16) { b[o], b[o+1] = byte(v>>8), byte(v) }
	put16(10, engine.Checksum(0, b[:20]))
	put16(20, sport)
	put16(22, dport)
	b[24+3] = 1
	b[32] = 5 << 4
	b[33] = 0x02
	put16(34, 64240)
	var ph []byte
	ph = append(ph, b[12:20]...)
	ph = append(ph, 0, 6, 0, 20)
	ph = append(ph, b[20:]...)
	put16(36, engine.Checksum(0, ph))
	return b
}
