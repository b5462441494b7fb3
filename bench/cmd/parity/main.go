// Command parity compares filterd with the Linux kernel on one capture and
// one rule set (issue 6): it replays the pcap through the real iptables in
// throwaway network namespaces (internal/kernelreplay), then through
// filterd's engine on the same rewritten packets at the times the kernel got
// them, with the same local addresses, hooks, interfaces and conntrack
// settings, and prints the differences of the two iptables-save -c texts,
// rule by rule and policy by policy, and of the per-packet verdicts.
//
//	parity --rules server.rules [--rules6 server.rules6] --local 198.18.2.2 capture.pcap
//
// It exits 0 when everything is equal, 1 when something differs or the
// replay failed, 2 on bad usage. It needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/filterd/filterd/bench/parity"
	"github.com/filterd/filterd/internal/kernelreplay"
	"github.com/filterd/filterd/internal/netns"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kf kernelreplay.Flags
	kf.Register(fs, 300*time.Microsecond)
	verbose := fs.Bool("v", false, "print both iptables-save -c texts too")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parity [options] PCAP")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	cfg, err := kf.Config(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "parity:", err)
		return 2
	}
	if cfg.Rules == "" && cfg.Rules6 == "" {
		fmt.Fprintln(stderr, "parity: give --rules and/or --rules6")
		return 2
	}
	if err := netns.RequireRoot(); err != nil {
		fmt.Fprintln(stderr, "parity: the kernel replay needs root:", err)
		return 1
	}
	if removed, err := kernelreplay.RemoveStale(ctx); len(removed) > 0 || err != nil {
		fmt.Fprintf(stderr, "parity: removed stale namespaces %v %v\n", removed, err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rep, err := parity.Compare(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "parity:", err)
		return 1
	}
	printReport(stdout, rep, *verbose)
	if !rep.Equal() {
		return 1
	}
	return 0
}

func printReport(w io.Writer, rep *parity.Report, verbose bool) {
	res := rep.Kernel
	fmt.Fprintf(w, "# kernel replay: %v, sent %v; filterd: %v\n", res.Duration.Round(time.Millisecond), res.Sent, rep.FilterdTime.Round(time.Millisecond))
	fmt.Fprintf(w, "# local addresses (rewritten): %v; %s\n", res.Local, res.FTPHelper)
	for _, k := range []string{"net.netfilter.nf_conntrack_tcp_loose", "net.netfilter.nf_conntrack_tcp_be_liberal", "net.netfilter.nf_conntrack_checksum"} {
		fmt.Fprintf(w, "# %s = %s (filterd set alike)\n", k, res.Sysctls[k])
	}
	if res.NonIP > 0 || len(res.Unrewritable) > 0 {
		fmt.Fprintf(w, "# left out on both sides: %d non-IP frames, %d IP packets that could not be rewritten %v\n", res.NonIP, len(res.Unrewritable), res.Unrewritable)
	}
	if len(res.TTLExpired) > 0 {
		fmt.Fprintf(w, "# FORWARD packets with TTL/hop limit <= 1 (dropped before FORWARD on both sides): %v\n", res.TTLExpired)
	}
	for _, fam := range []struct {
		name            string
		kernel, filterd string
		diffs           []parity.Difference
		rules           string
	}{{"IPv4", rep.Kernel4, rep.Filterd4, rep.Diff4, res.Rules}, {"IPv6", rep.Kernel6, rep.Filterd6, rep.Diff6, res.Rules6}} {
		if fam.kernel == "" && fam.filterd == "" {
			continue
		}
		fmt.Fprintf(w, "%s counters (filter table): ", fam.name)
		if len(fam.diffs) > 0 {
			fmt.Fprintf(w, "%d differences\n", len(fam.diffs))
		}
		parity.Print(w, fam.diffs)
		if u := undeclaredDiffers(fam.rules, fam.diffs); len(u) > 0 {
			fmt.Fprintf(w, "  (known divergence: %v not in the rules file; iptables-nft makes no base chain for them and counts nothing, filterd counts as iptables-legacy does)\n", u)
		}
		if verbose {
			fmt.Fprintf(w, "# kernel %s:\n%s# filterd %s:\n%s", fam.name, fam.kernel, fam.name, fam.filterd)
		}
	}
	fmt.Fprintf(w, "verdicts: %d packets compared, ", rep.Compared)
	if len(rep.Verdicts) == 0 {
		fmt.Fprintln(w, "equal")
		return
	}
	fmt.Fprintf(w, "%d differ\n", len(rep.Verdicts))
	for _, v := range rep.Verdicts {
		fmt.Fprintln(w, " ", v)
	}
}

// undeclaredDiffers returns the built-in chains the rules file leaves out
// whose policy counters differ with the kernel's at zero.
func undeclaredDiffers(rules string, diffs []parity.Difference) []string {
	var out []string
	for _, c := range parity.UndeclaredBuiltins(rules) {
		for _, d := range diffs {
			if d.Kernel.Chain == c && d.Kernel.Index == 0 && d.Kernel.Counter.Packets == 0 {
				out = append(out, c)
			}
		}
	}
	return out
}
