package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/filterd/filterd/bench"
)

// runGen writes a generated capture: a SYN flood from spoofed sources inside
// 198.18.0.0/15 (or fd00:198:18::/48) mixed with legitimate HTTP sessions.
func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("filterd gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		out      = fs.String("o", "", "output pcap `file` (required)")
		syns     = fs.Int("syns", 200_000, "flood SYNs")
		sources  = fs.Int("sources", 50_000, "distinct spoofed flood sources")
		rate     = fs.Float64("rate", 100_000, "flood SYNs per second")
		sessions = fs.Int("sessions", 20, "legitimate HTTP sessions spread over the flood")
		server   = fs.String("server", "198.18.2.2", "the protected host's `address` (IPv4 or IPv6 inside the test ranges)")
		port     = fs.Uint("port", 80, "the server's port")
		seed     = fs.Uint64("seed", 1, "random seed (same seed, same bytes)")
	)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: filterd gen -o FILE [options]")
		fmt.Fprintln(fs.Output(), "\nWrites a deterministic pcap: a SYN flood from spoofed sources inside 198.18.0.0/15")
		fmt.Fprintln(fs.Output(), "(fd00:198:18::/48 for an IPv6 server) mixed with legitimate HTTP sessions.")
		fmt.Fprintln(fs.Output(), "\noptions:")
		fs.PrintDefaults()
	}
	if done, code := parseFlags(fs, args, stdout); done {
		return code
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitBadInput
	}
	addr, err := netip.ParseAddr(*server)
	if err != nil || *port == 0 || *port > 65535 {
		fmt.Fprintf(stderr, "filterd gen: bad --server %q or --port %d\n", *server, *port)
		return exitBadInput
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintf(stderr, "filterd gen: %v\n", err)
		return exitFailure
	}
	bw := bufio.NewWriter(f)
	st, err := bench.WriteFlood(bw, bench.FloodConfig{Server: addr, ServerPort: uint16(*port), FloodSYNs: *syns,
		FloodSources: *sources, FloodRate: *rate, Sessions: *sessions, Seed: *seed})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(stderr, "filterd gen: %v\n", err)
		os.Remove(*out)
		return exitBadInput
	}
	fmt.Fprintf(stdout, "%s: %d packets (%d flood SYNs from %d sources, %d sessions of %d packets) over %v\n",
		*out, st.Packets, st.FloodSYNs, st.FloodSources, st.Sessions, st.SessionPkts, st.Duration)
	return exitOK
}
