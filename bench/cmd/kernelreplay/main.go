// Command kernelreplay replays a pcap through the real Linux iptables in
// throwaway network namespaces and prints the kernel's per-rule counters in
// iptables-save -c form, to compare with `filterd replay --counters`.
//
//	kernelreplay --rules server.rules [--rules6 server6.rules] --local 198.18.2.2 capture.pcap
//	kernelreplay --rewrite-only --write-rewritten out.pcap capture.pcap
//
// Every address is first mapped into 198.18.0.0/15 and fd00:198:18::/48
// (addresses in the rules too); nothing is sent outside those ranges, and the
// namespaces have no route out. The replay needs root; --rewrite-only does not.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/filterd/filterd/internal/kernelreplay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kernelreplay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kf kernelreplay.Flags
	kf.Register(fs, time.Millisecond)
	oneIngress := fs.Bool("one-ingress", false, "inject every FORWARD packet on eth0, as filterd replay's single --in-iface does")
	drain := fs.Duration("drain", 5*time.Second, "longest wait for the counters to settle")
	writeRW := fs.String("write-rewritten", "", "write the rewritten capture (raw IP pcap) here, and the rewritten rules next to it (.rules, .rules6)")
	rewriteOnly := fs.Bool("rewrite-only", false, "only rewrite (no root needed); needs --write-rewritten")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	verbose := fs.Bool("v", false, "also print conntrack -L and per-packet verdicts")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kernelreplay [options] PCAP")
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
	pcap := fs.Arg(0)
	cfg, err := kf.Config(pcap)
	if err != nil {
		fmt.Fprintln(stderr, "kernelreplay:", err)
		return 2
	}
	rules, rules6, locals := cfg.Rules, cfg.Rules6, cfg.Local

	if *rewriteOnly {
		if *writeRW == "" {
			fmt.Fprintln(stderr, "kernelreplay: --rewrite-only needs --write-rewritten FILE")
			return 2
		}
		var addrs []netip.Addr
		for _, p := range locals {
			if p.Bits() == p.Addr().BitLen() {
				addrs = append(addrs, p.Addr())
			}
		}
		rw, err := kernelreplay.Rewrite(pcap, rules, rules6, addrs, locals)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := writeRewritten(*writeRW, rw, rules, rules6); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s: %d IP packets (%d non-IP frames left out, %d unparseable)\n",
			*writeRW, len(rw.Packets), rw.Read.NonIP, len(rw.Dropped))
		printMap(stdout, rw.Map)
		return 0
	}

	if *writeRW != "" {
		rw, err := kernelreplay.Rewrite(pcap, rules, rules6, nil, locals)
		if err == nil {
			err = writeRewritten(*writeRW, rw, rules, rules6)
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	// Namespaces left behind by an earlier run that was killed (SIGKILL
	// skips every cleanup): delete those whose process is gone.
	removed, err := kernelreplay.RemoveStale(ctx)
	if len(removed) > 0 {
		fmt.Fprintf(stderr, "kernelreplay: removed stale namespaces %v\n", removed)
	}
	if err != nil {
		fmt.Fprintln(stderr, "kernelreplay:", err)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.OneIngress, cfg.DrainTimeout = *oneIngress, *drain
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	res, err := kernelreplay.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	printResult(stdout, res, *verbose)
	return 0
}

func writeRewritten(path string, rw *kernelreplay.RewriteResult, rules, rules6 string) error {
	if err := kernelreplay.WritePcap(path, rw.Packets, rw.Read.Nanos); err != nil {
		return err
	}
	for _, x := range []struct{ orig, rewritten, ext string }{{rules, rw.Rules, ".rules"}, {rules6, rw.Rules6, ".rules6"}} {
		if x.orig == "" {
			continue
		}
		if err := os.WriteFile(strings.TrimSuffix(path, ".pcap")+x.ext, []byte(x.rewritten), 0o644); err != nil {
			return fmt.Errorf("kernelreplay: %w", err)
		}
	}
	return nil
}

func printMap(w io.Writer, m *kernelreplay.AddrMap) {
	n := 0
	for _, p := range m.Pairs() {
		if p[0] != p[1] {
			if n == 0 {
				fmt.Fprintln(w, "# address map (original -> rewritten):")
			}
			fmt.Fprintf(w, "#   %s -> %s\n", p[0], p[1])
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(w, "# every address already in 198.18.0.0/15 or fd00:198:18::/48: unchanged")
	}
}

func printResult(w io.Writer, res *kernelreplay.Result, verbose bool) {
	fmt.Fprintf(w, "# kernel replay: %v, sent %v, %d send errors, %d non-IP frames left out\n",
		res.Duration.Round(time.Millisecond), res.Sent, res.SendErrors, res.NonIP)
	fmt.Fprintf(w, "# local addresses: %v\n", res.Local)
	fmt.Fprintf(w, "# %s\n", res.FTPHelper)
	fmt.Fprintf(w, "# router's own packets dropped in raw OUTPUT: ipv4 %d, ipv6 %d; replayed OUTPUT packets: ipv4 %d, ipv6 %d\n",
		res.OwnDropped4.Packets, res.OwnDropped6.Packets, res.Marked4.Packets, res.Marked6.Packets)
	keys := make([]string, 0, len(res.Sysctls))
	for k := range res.Sysctls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "# sysctl %s = %s\n", k, res.Sysctls[k])
	}
	printMap(w, res.Map)
	counts := map[kernelreplay.Verdict]int{}
	for _, v := range res.Verdicts {
		counts[v.Verdict]++
	}
	fmt.Fprintf(w, "# per packet: %d passed, %d dropped, %d unknown, %d send errors\n",
		counts[kernelreplay.VerdictPassed], counts[kernelreplay.VerdictDropped], counts[kernelreplay.VerdictUnknown], counts[kernelreplay.VerdictSendError])
	if res.Save4 != "" {
		fmt.Fprint(w, res.Save4)
	}
	if res.Save6 != "" {
		fmt.Fprint(w, res.Save6)
	}
	if verbose {
		fmt.Fprint(w, "# conntrack -L\n", res.Conntrack)
		for _, v := range res.Verdicts {
			fmt.Fprintf(w, "# packet %d ipv%d %s len %d: %s %s\n", v.Index, v.Family, v.Hook, v.Len, v.Verdict, v.Err)
		}
	}
}
