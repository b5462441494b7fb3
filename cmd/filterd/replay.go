package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// replayFlags are filterd replay's options.
type replayFlags struct {
	rules, rules6 string
	local         string
	inIface       string
	fwdOutIface   string
	json          bool
	counters      bool
	writeAccepted string
	writeDropped  string
	report        string
	logFile       string
	top           int
	cpuProfile    string
	ct            ctFlags
}

func (o *replayFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.rules, "rules", "", "IPv4 rules `file` (iptables-save format); without it IPv4 passes unfiltered")
	fs.StringVar(&o.rules6, "rules6", "", "IPv6 rules `file` (ip6tables-save format); without it IPv6 passes unfiltered")
	fs.StringVar(&o.local, "local", "", "protected host's `addresses` or prefixes, comma-separated: packets to them traverse INPUT, from them OUTPUT, others FORWARD")
	fs.StringVar(&o.inIface, "in-iface", "eth0", "`interface` replayed packets arrive on (and OUTPUT packets leave by)")
	fs.StringVar(&o.fwdOutIface, "fwd-out-iface", "eth1", "`interface` forwarded packets leave by")
	fs.BoolVar(&o.json, "json", false, "print the summary as one JSON document")
	fs.BoolVar(&o.counters, "counters", false, "print the rule set after the replay in iptables-save -c form (IPv4, then IPv6)")
	fs.StringVar(&o.writeAccepted, "write-accepted", "", "write accepted packets to this pcap `file`")
	fs.StringVar(&o.writeDropped, "write-dropped", "", "write dropped and rejected packets to this pcap `file`")
	fs.StringVar(&o.report, "report", "", "write a self-contained HTML report to this `file`")
	fs.StringVar(&o.logFile, "log-file", "", "write LOG target lines (kernel format) to this `file` (\"-\" for stderr); default: count only")
	fs.IntVar(&o.top, "top", 10, "how many top dropped sources to list")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the replay to this `file` (go tool pprof)")
	o.ct.register(fs)
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("filterd replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o replayFlags
	o.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: filterd replay [--rules FILE] [--rules6 FILE] [--local ADDR,...] [options] PCAP...")
		fmt.Fprintln(fs.Output(), "\nReplays pcap/pcapng files through the engine with the packets' own timestamps as the clock,")
		fmt.Fprintln(fs.Output(), "and prints packets and bytes per verdict, rule counters, conntrack states and the SYN-flood picture.")
		fmt.Fprintln(fs.Output(), "\noptions:")
		fs.PrintDefaults()
	}
	if done, code := parseFlags(fs, interleaved(fs, args), stdout); done {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "filterd replay: no pcap file given")
		fs.Usage()
		return exitBadInput
	}
	local, err := parseLocal(o.local)
	if err != nil {
		fmt.Fprintf(stderr, "filterd replay: --local: %v\n", err)
		return exitBadInput
	}
	ctcfg, err := o.ct.config()
	if err != nil {
		fmt.Fprintf(stderr, "filterd replay: %v\n", err)
		return exitBadInput
	}

	var logw io.Writer
	switch o.logFile {
	case "":
	case "-":
		logw = stderr
	default:
		f, err := os.Create(o.logFile)
		if err != nil {
			fmt.Fprintf(stderr, "filterd replay: %v\n", err)
			return exitFailure
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		logw = bw
	}
	logger := engine.NewLogWriter(logw)

	ct := conntrack.New(ctcfg)
	copts := ruleset.CompileOptions{Log: logger.Log, LocalPrefixes: local}
	var rules engine.Rules
	if o.rules != "" {
		c, code := loadCompiled(ctx, o.rules, packet.IPv4, copts, stderr)
		if c == nil {
			return code
		}
		rules.V4 = c
	}
	if o.rules6 != "" {
		c, code := loadCompiled(ctx, o.rules6, packet.IPv6, copts, stderr)
		if c == nil {
			return code
		}
		rules.V6 = c
	}
	eng, err := engine.New(engine.Config{Rules: rules, Conntrack: ct, Local: local, Route: true, InIface: o.inIface, FwdOutIface: o.fwdOutIface})
	if err != nil {
		fmt.Fprintf(stderr, "filterd replay: %v\n", err)
		return exitFailure
	}

	ropts := engine.ReplayOptions{TopN: o.top}
	var closers []func() error
	for _, x := range []struct {
		path string
		dst  **engine.PcapWriter
	}{{o.writeAccepted, &ropts.Accepted}, {o.writeDropped, &ropts.Dropped}} {
		if x.path == "" {
			continue
		}
		f, err := os.Create(x.path)
		if err != nil {
			fmt.Fprintf(stderr, "filterd replay: %v\n", err)
			return exitFailure
		}
		w, err := engine.NewPcapWriter(f, engine.LinkTypeEthernet)
		if err != nil {
			f.Close()
			fmt.Fprintf(stderr, "filterd replay: %s: %v\n", x.path, err)
			return exitFailure
		}
		*x.dst = w
		closers = append(closers, func() error {
			if err := w.Flush(); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		})
	}

	rp := engine.NewReplayer(eng, ropts)
	code := exitOK
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "filterd replay: --cpuprofile: %v\n", err)
			return exitFailure
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			fmt.Fprintf(stderr, "filterd replay: --cpuprofile: %v\n", err)
			return exitFailure
		}
		closers = append(closers, func() error {
			pprof.StopCPUProfile()
			return f.Close()
		})
	}
	var replayErr error
	for _, path := range fs.Args() {
		if err := rp.ReplayFile(ctx, path); err != nil {
			replayErr = err
			code = exitFailure
			break
		}
	}
	for _, c := range closers {
		if err := c(); err != nil {
			fmt.Fprintf(stderr, "filterd replay: writing pcap: %v\n", err)
			code = exitFailure
		}
	}
	sum := rp.Summary(o.rules, o.rules6)
	sum.Logged = logger.Lines()
	if replayErr != nil {
		sum.Error = replayErr.Error()
	}
	if o.report != "" {
		if err := writeReportFile(o.report, sum); err != nil {
			fmt.Fprintf(stderr, "filterd replay: --report: %v\n", err)
			code = exitFailure
		}
	}
	switch {
	case o.json:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return exitFailure
		}
	default:
		printSummary(stdout, sum, eng.Rules())
	}
	if o.counters {
		for _, c := range []*ruleset.Compiled{eng.Rules().V4, eng.Rules().V6} {
			if c != nil {
				if err := ruleset.Save(stdout, c.Snapshot(), ruleset.SaveOptions{Counters: true}); err != nil {
					return exitFailure
				}
			}
		}
	}
	if replayErr != nil {
		fmt.Fprintf(stderr, "filterd replay: %v\n", replayErr)
	}
	return code
}

func writeReportFile(path string, s *engine.Summary) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := writeHTMLReport(bw, s); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// interleaved moves positional arguments after the flags so that options may
// follow the pcap names, as users type them.
func interleaved(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	return append(flags, append([]string{"--"}, pos...)...)
}

// parseLocal parses --local: addresses or prefixes, comma-separated.
func parseLocal(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or prefix", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var n uint16
		if _, err := fmt.Sscanf(f, "%d", &n); err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// loadCompiled loads and compiles one rules file, printing diagnostics. On
// failure it returns nil and the exit status.
func loadCompiled(ctx context.Context, path string, fam packet.Family, copts ruleset.CompileOptions, stderr io.Writer) (*ruleset.Compiled, int) {
	lf := loadFlags{ipv6: fam == packet.IPv6}
	f, diags, err := ruleset.LoadFile(path, lf.loadOptions(ctx))
	if err != nil {
		fmt.Fprintf(stderr, "filterd: %v\n", err)
		return nil, exitBadInput
	}
	diags.Format(stderr)
	switch {
	case diags.HasErrors():
		return nil, exitBadInput
	case diags.HasUnsupported():
		return nil, exitUnsupported
	}
	t := f.Filter
	if t == nil {
		t = &ruleset.Table{Name: "filter", Family: fam}
	}
	c, err := ruleset.Compile(t, copts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		if errors.Is(err, ruleset.ErrUnsupported) {
			return nil, exitUnsupported
		}
		return nil, exitBadInput
	}
	return c, exitOK
}

// printSummary prints the replay summary as text.
func printSummary(w io.Writer, s *engine.Summary, rules engine.Rules) {
	dur := s.Last.Sub(s.First)
	pps := 0.0
	if s.Elapsed > 0 {
		pps = float64(s.Packets) / s.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "filterd replay: %s\n", strings.Join(s.Files, ", "))
	fmt.Fprintf(w, "%d packets, %d bytes over %.3f s of capture time; replayed in %v (%.0f pps)\n",
		s.Packets, s.Bytes, dur.Seconds(), s.Elapsed.Round(time.Microsecond), pps)
	if s.Skipped > 0 || s.Held > 0 || s.Malformed > 0 || s.TableFull > 0 {
		fmt.Fprintf(w, "skipped %d non-IP frames; %d fragments held for reassembly; %d malformed (dropped by the IP layer); %d dropped with the conntrack table full\n",
			s.Skipped, s.Held, s.Malformed, s.TableFull)
	}
	if s.TTLExpired > 0 {
		fmt.Fprintf(w, "%d packets to forward with TTL/hop limit <= 1: dropped before the FORWARD chain, as the kernel's ip_forward does\n", s.TTLExpired)
	}
	for _, f := range s.Families {
		if f.Filtered {
			fmt.Fprintf(w, "%s: rules %s, %d packets\n", f.Family, f.Rules, f.Packets)
		} else {
			fmt.Fprintf(w, "%s: no rules file, passed unfiltered (tracked and counted), %d packets\n", f.Family, f.Packets)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "verdict\tpackets\tbytes\t")
	for _, v := range s.Verdicts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", v.Verdict, v.Packets, v.Bytes)
	}
	tw.Flush()
	if s.Rejects > 0 {
		fmt.Fprintf(w, "REJECT would send %d replies\n", s.Rejects)
	}
	if s.Logged > 0 {
		fmt.Fprintf(w, "LOG wrote %d lines\n", s.Logged)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "conntrack state\tpackets\t")
	for _, st := range s.States {
		fmt.Fprintf(tw, "%s\t%d\t\n", st.State, st.Packets)
	}
	tw.Flush()
	for _, x := range []struct {
		name string
		c    *ruleset.Compiled
	}{{"iptables", rules.V4}, {"ip6tables", rules.V6}} {
		if x.c == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s -L -n -v -x after the replay:\n", x.name)
		ruleset.List(w, x.c.Snapshot(), ruleset.ListOptions{Verbose: true, Exact: true, Numeric: true})
	}
	if len(s.Seconds) > 0 {
		fmt.Fprintln(w, "\nper second of capture time:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "second\toffered\taccepted\tSYNs offered\tSYNs accepted\t")
		for i, c := range s.Seconds {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t\n", i, c.Offered, c.Accepted, c.OfferedSYN, c.AcceptedSYN)
		}
		tw.Flush()
		if s.SecondsBeyond > 0 {
			fmt.Fprintf(w, "(%d packets after the first %d seconds are not in this table)\n", s.SecondsBeyond, engine.MaxReplaySeconds)
		}
	}
	if len(s.TopDropped) > 0 {
		fmt.Fprintln(w, "\ntop dropped sources:")
		if s.SourcesPruned > 0 {
			fmt.Fprintf(w, "(approximate: %d lightly dropping sources were forgotten to bound memory)\n", s.SourcesPruned)
		}
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "source\tdropped\toffered\tSYNs\t")
		for _, t := range s.TopDropped {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", t.Addr, t.Dropped, t.Offered, t.SYNs)
		}
		tw.Flush()
	}
}
