package parity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/internal/kernelreplay"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// Report is the outcome of one comparison (Compare).
type Report struct {
	// Kernel is the kernel replay's result; its Save4 / Save6 are the
	// kernel's counters.
	Kernel *kernelreplay.Result
	// Kernel4 and Kernel6 are the filter tables of Save4 / Save6, the part
	// filterd implements (nat, mangle, raw and security stay with the
	// kernel and are not compared).
	Kernel4, Kernel6 string
	// Filterd4 and Filterd6 are filterd's iptables-save -c texts after the
	// same replay ("" for a family without rules).
	Filterd4, Filterd6 string
	// Diff4 and Diff6 are the differences, kernel against filterd.
	Diff4, Diff6 []Difference
	// Verdicts lists the packets whose fate the kernel's capture knows and
	// filterd judged otherwise; Compared counts the packets compared.
	Verdicts []VerdictDifference
	Compared int
	// FilterdTime is how long filterd's replay took.
	FilterdTime time.Duration
}

// Equal reports whether both families' counters and every compared
// verdict agree.
func (r *Report) Equal() bool {
	return len(r.Diff4) == 0 && len(r.Diff6) == 0 && len(r.Verdicts) == 0
}

// VerdictDifference is one packet the kernel and filterd disagree on.
type VerdictDifference struct {
	Index   int // packet number in the source capture
	Hook    kernelreplay.Hook
	Kernel  kernelreplay.Verdict
	Filterd engine.Action
}

func (v VerdictDifference) String() string {
	return fmt.Sprintf("packet %d (%s): kernel %s, filterd %s", v.Index, v.Hook, v.Kernel, v.Filterd)
}

// Compare replays cfg.Pcap through the kernel (kernelreplay.Run, which needs
// root) and then through filterd's engine on the same rewritten packets,
// each at the time the kernel got it, with the same local addresses, hooks,
// interfaces and conntrack settings, and compares the counters (and, with
// cfg.Capture, the per-packet verdicts). OneIngress is forced on: filterd
// replays every packet from one interface (eth0), and so must the kernel.
func Compare(ctx context.Context, cfg kernelreplay.Config) (*Report, error) {
	cfg.OneIngress = true
	res, err := kernelreplay.Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if res.SendErrors != 0 {
		return nil, fmt.Errorf("parity: %d packets could not be sent to the kernel", res.SendErrors)
	}
	start := time.Now()
	fr, err := ReplayFilterd(ctx, cfg, res)
	if err != nil {
		return nil, err
	}
	rep := &Report{Kernel: res, Filterd4: fr.Save4, Filterd6: fr.Save6, FilterdTime: time.Since(start),
		Kernel4: FilterTable(res.Save4), Kernel6: FilterTable(res.Save6)}
	if rep.Diff4, err = Diff(rep.Kernel4, fr.Save4); err != nil {
		return nil, fmt.Errorf("parity: IPv4: %w", err)
	}
	if rep.Diff6, err = Diff(rep.Kernel6, fr.Save6); err != nil {
		return nil, fmt.Errorf("parity: IPv6: %w", err)
	}
	for i, kv := range res.Verdicts {
		fv := fr.Verdicts[i]
		if fv.Action == engine.Held || fv.Loopback {
			continue // a fragment (judged as its datagram), or a packet that never leaves the router
		}
		var want kernelreplay.Verdict
		switch kv.Verdict {
		case kernelreplay.VerdictPassed, kernelreplay.VerdictDropped:
			want = kv.Verdict
		default:
			continue
		}
		rep.Compared++
		got := kernelreplay.VerdictDropped
		if fv.Action == engine.Accept {
			got = kernelreplay.VerdictPassed
		}
		if got != want {
			rep.Verdicts = append(rep.Verdicts, VerdictDifference{Index: kv.Index, Hook: kv.Hook, Kernel: want, Filterd: fv.Action})
		}
	}
	return rep, nil
}

// FilterdResult is filterd's side of a comparison.
type FilterdResult struct {
	// Save4 and Save6 are the rule tables after the replay in iptables-save
	// -c form ("" for a family without rules).
	Save4, Save6 string
	// Verdicts has one entry per packet the kernel was sent, in order.
	Verdicts []PacketVerdict
	// Logged counts the LOG rules' lines (counted, never written).
	Logged uint64
}

// PacketVerdict is filterd's decision for one packet.
type PacketVerdict struct {
	Action engine.Action
	// Loopback: from a local address to a local one (OUTPUT, then INPUT on
	// lo), so the kernel's capture cannot see it pass.
	Loopback bool
}

// ReplayFilterd runs filterd's engine over the packets of a kernel replay:
// the capture is rewritten again exactly as kernelreplay.Run rewrote it (the
// map is deterministic; the rewritten rules must come out the same), written
// as a raw-IP pcap whose timestamps are the kernel's send times, and
// replayed with the rules, local addresses and conntrack settings the
// kernel's router had.
func ReplayFilterd(ctx context.Context, cfg kernelreplay.Config, res *kernelreplay.Result) (*FilterdResult, error) {
	var localAddrs []netip.Addr
	for _, p := range cfg.Local {
		if p.Bits() == p.Addr().BitLen() {
			localAddrs = append(localAddrs, p.Addr())
		}
	}
	rw, err := kernelreplay.Rewrite(cfg.Pcap, cfg.Rules, cfg.Rules6, localAddrs, cfg.Local)
	if err != nil {
		return nil, err
	}
	if rw.Rules != res.Rules || rw.Rules6 != res.Rules6 {
		return nil, errors.New("parity: the rewrite differs from the kernel replay's")
	}
	if len(rw.Packets) != len(res.Verdicts) {
		return nil, fmt.Errorf("parity: %d rewritten packets, %d sent to the kernel", len(rw.Packets), len(res.Verdicts))
	}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range rw.Packets {
		rw.Packets[i].Time = t0.Add(res.Verdicts[i].At)
	}
	dir, err := os.MkdirTemp("", "filterd-parity-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pcap := filepath.Join(dir, "rewritten.pcap")
	if err := kernelreplay.WritePcap(pcap, rw.Packets, true); err != nil {
		return nil, err
	}
	var local []netip.Prefix
	for _, p := range cfg.Local {
		img, ok := res.Map.MapPrefix(p)
		if !ok {
			return nil, fmt.Errorf("parity: local %s not in the address map", p)
		}
		local = append(local, img)
	}
	ctCfg, err := ConntrackConfig(res)
	if err != nil {
		return nil, err
	}
	logw := engine.NewLogWriter(nil) // LOG rules only count
	copts := ruleset.CompileOptions{Log: logw.Log, LocalPrefixes: local}
	if len(local) == 0 {
		// The router holds no replayed address, only its loopback ones
		// (for -m addrtype LOCAL).
		copts.LocalAddr = netip.Addr.IsLoopback
	}
	var rules engine.Rules
	for _, x := range []struct {
		text string
		fam  packet.Family
		dst  **ruleset.Compiled
	}{{rw.Rules, packet.IPv4, &rules.V4}, {rw.Rules6, packet.IPv6, &rules.V6}} {
		if strings.TrimSpace(x.text) == "" {
			continue
		}
		f, diags := ruleset.Load("rewritten rules", []byte(x.text), ruleset.LoadOptions{Family: x.fam})
		if diags.HasErrors() || diags.HasUnsupported() {
			var b bytes.Buffer
			diags.Format(&b)
			return nil, fmt.Errorf("parity: rules: %s", b.String())
		}
		t := f.Filter
		if t == nil {
			t = &ruleset.Table{Name: "filter", Family: x.fam}
		}
		if *x.dst, err = ruleset.Compile(t, copts); err != nil {
			return nil, fmt.Errorf("parity: rules: %w", err)
		}
	}
	eng, err := engine.New(engine.Config{
		Rules: rules, Conntrack: conntrack.New(ctCfg), Local: local, Route: true,
		InIface: kernelreplay.RouterIn, FwdOutIface: kernelreplay.RouterOut,
	})
	if err != nil {
		return nil, err
	}
	out := &FilterdResult{Verdicts: make([]PacketVerdict, 0, len(rw.Packets))}
	rd, err := engine.OpenPcapFile(pcap)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	w := eng.NewWorker()
	var f engine.Frame
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		err := rd.Next(&f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if f.Skip != engine.SkipNone {
			return nil, fmt.Errorf("parity: rewritten packet %d is not IP", f.Num)
		}
		var meta packet.Meta
		f.FillMeta(&meta)
		v := w.Process(f.L3, meta)
		p := w.Packet()
		out.Verdicts = append(out.Verdicts, PacketVerdict{Action: v.Action,
			Loopback: v.Reason == engine.ReasonRules && isIn(local, p.Src) && isIn(local, p.Dst)})
	}
	if len(out.Verdicts) != len(rw.Packets) {
		return nil, fmt.Errorf("parity: filterd read %d of %d packets", len(out.Verdicts), len(rw.Packets))
	}
	save := func(c *ruleset.Compiled) (string, error) {
		if c == nil {
			return "", nil
		}
		var b bytes.Buffer
		err := ruleset.Save(&b, c.Snapshot(), ruleset.SaveOptions{Counters: true})
		return b.String(), err
	}
	if out.Save4, err = save(rules.V4); err != nil {
		return nil, err
	}
	if out.Save6, err = save(rules.V6); err != nil {
		return nil, err
	}
	out.Logged = logw.Lines()
	return out, nil
}

func isIn(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ConntrackConfig sets filterd's conntrack as the kernel replay's router
// was: the recorded sysctls (tcp_loose, be_liberal, ignore_invalid_rst,
// max_retrans, checksum, conntrack_max and the recorded timeouts) and the
// FTP helper on TCP port 21 when the replay assigned it.
func ConntrackConfig(res *kernelreplay.Result) (conntrack.Config, error) {
	var errs []error
	sw := func(key string) conntrack.Switch {
		switch v := res.Sysctls["net.netfilter."+key]; v {
		case "1":
			return conntrack.On
		case "0":
			return conntrack.Off
		default:
			errs = append(errs, fmt.Errorf("sysctl %s = %q", key, v))
		}
		return conntrack.Default
	}
	num := func(key string) int {
		n, err := strconv.Atoi(res.Sysctls["net.netfilter."+key])
		if err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s: %w", key, err))
		}
		return n
	}
	sec := func(key string) time.Duration { return time.Duration(num(key)) * time.Second }
	to := conntrack.DefaultTimeouts()
	to.UDP = sec("nf_conntrack_udp_timeout")
	to.UDPStream = sec("nf_conntrack_udp_timeout_stream")
	to.ICMP = sec("nf_conntrack_icmp_timeout")
	to.TCPSynSent = sec("nf_conntrack_tcp_timeout_syn_sent")
	to.TCPEstablished = sec("nf_conntrack_tcp_timeout_established")
	cfg := conntrack.Config{
		Max:                 num("nf_conntrack_max"),
		TCPLoose:            sw("nf_conntrack_tcp_loose"),
		TCPBeLiberal:        sw("nf_conntrack_tcp_be_liberal"),
		TCPIgnoreInvalidRST: sw("nf_conntrack_tcp_ignore_invalid_rst"),
		TCPMaxRetrans:       num("nf_conntrack_tcp_max_retrans"),
		Checksum:            sw("nf_conntrack_checksum"),
		FTPHelper:           strings.HasPrefix(res.FTPHelper, "ftp helper assigned"),
		FTPPorts:            []uint16{21},
		Timeouts:            to,
		HashSeed:            1,
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("parity: kernel settings: %w", errors.Join(errs...))
	}
	return cfg, nil
}

// FilterTable returns the *filter table of an iptables-save text (its
// "*filter" line to its COMMIT), or "" when it has none.
func FilterTable(save string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.SplitAfter(save, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "*") {
			in = t == "*filter"
		}
		if in {
			b.WriteString(l)
			if t == "COMMIT" {
				in = false
			}
		}
	}
	return b.String()
}

// UndeclaredBuiltins returns the filter table's built-in chains (INPUT,
// FORWARD, OUTPUT) that a rules file neither declares nor appends to. With
// iptables-nft such a chain has no base chain in the kernel: nothing is
// counted there and iptables-save -c prints [0:0], while filterd counts what
// its ACCEPT policy passes, as iptables-legacy does (a known divergence).
func UndeclaredBuiltins(rules string) []string {
	seen := map[string]bool{}
	in := false
	for _, l := range strings.Split(rules, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch {
		case strings.HasPrefix(f[0], "*"):
			in = f[0] == "*filter"
		case !in:
		case strings.HasPrefix(f[0], ":"):
			seen[f[0][1:]] = true
		case (f[0] == "-A" || f[0] == "-I" || f[0] == "--append" || f[0] == "--insert") && len(f) > 1:
			seen[f[1]] = true
		}
	}
	var out []string
	for _, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		if !seen[c] {
			out = append(out, c)
		}
	}
	return out
}
