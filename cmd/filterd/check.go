package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// loadFlags are the rules-file options shared by check, list and save.
type loadFlags struct {
	ipv6   bool
	strict bool
}

func (o *loadFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.ipv6, "6", false, "read the file as ip6tables-restore would (IPv6)")
	fs.BoolVar(&o.ipv6, "ipv6", false, "same as -6")
	fs.BoolVar(&o.strict, "strict", false, "treat skipped tables (*nat, *mangle, *raw, *security) as errors")
}

// parseArgs parses flags placed anywhere among the arguments (none of the
// sub-commands' flags takes a value). It returns the exit status to use when
// it returns false.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) (bool, int) {
	var flags, pos []string
	for i, a := range args {
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
		} else {
			pos = append(pos, a)
		}
	}
	done, code := parseFlags(fs, append(flags, append([]string{"--"}, pos...)...), stdout)
	return !done, code
}

// loadOptions turns the flags into ruleset.LoadOptions with the system's
// resolver and user database.
func (o *loadFlags) loadOptions(ctx context.Context) ruleset.LoadOptions {
	fam := packet.IPv4
	if o.ipv6 {
		fam = packet.IPv6
	}
	return ruleset.LoadOptions{
		Family:  fam,
		Strict:  o.strict,
		Resolve: newResolver(ctx, net.DefaultResolver.LookupNetIP, 5*time.Second),
		LookupUser: func(name string) (uint32, error) {
			u, err := user.Lookup(name)
			if err != nil {
				return 0, err
			}
			n, err := strconv.ParseUint(u.Uid, 10, 32)
			return uint32(n), err
		},
		LookupGroup: func(name string) (uint32, error) {
			g, err := user.LookupGroup(name)
			if err != nil {
				return 0, err
			}
			n, err := strconv.ParseUint(g.Gid, 10, 32)
			return uint32(n), err
		},
	}
}

// loadRules loads the file and prints its diagnostics to stderr. It returns
// the exit status: exitOK, exitBadInput (errors) or exitUnsupported.
func loadRules(ctx context.Context, path string, o *loadFlags, stderr io.Writer) (*ruleset.File, ruleset.Diagnostics, int) {
	f, ds, err := ruleset.LoadFile(path, o.loadOptions(ctx))
	if err != nil {
		fmt.Fprintf(stderr, "filterd: %v\n", err)
		return nil, nil, exitBadInput
	}
	ds.Format(stderr)
	return f, ds, diagStatus(ds)
}

func diagStatus(ds ruleset.Diagnostics) int {
	switch {
	case ds.HasErrors():
		return exitBadInput
	case ds.HasUnsupported():
		return exitUnsupported
	}
	return exitOK
}

func usageFor(fs *flag.FlagSet, line, what string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: filterd %s\n\n%s\n\noptions:\n", line, what)
		fs.PrintDefaults()
		fmt.Fprintln(w, "\nexit status: 0 ok, 2 errors in the file or arguments, 3 valid file using options filterd cannot enforce yet")
	}
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o loadFlags
	o.register(fs)
	usageFor(fs, "check [-6] [--strict] FILE", "Parse and validate an iptables-restore rules file; print \"ok\" and a summary, or every diagnostic.")
	if ok, code := parseArgs(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitBadInput
	}
	f, ds, code := loadRules(ctx, fs.Arg(0), &o, stderr)
	switch code {
	case exitBadInput:
		if f != nil {
			fmt.Fprintf(stderr, "%s: %d error(s), %d unsupported\n", fs.Arg(0), ds.Count(ruleset.SevError), ds.Count(ruleset.SevUnsupported))
		}
		return code
	case exitUnsupported:
		fmt.Fprintf(stderr, "%s: %d unsupported match(es)/target(s)/option(s): filterd cannot enforce this file yet\n", fs.Arg(0), ds.Count(ruleset.SevUnsupported))
		return code
	}
	if code := compileCheck(f, stderr); code != exitOK {
		return code
	}
	fmt.Fprint(stdout, Summary(f))
	return exitOK
}

// compileCheck compiles the filter table as the engine will, and reports
// compile errors (exit 3 when all are unsupported options). check knows
// neither the host's addresses nor a conntrack table: stand-ins let
// addrtype LOCAL and connlimit rules compile.
func compileCheck(f *ruleset.File, stderr io.Writer) int {
	if f.Filter == nil {
		return exitOK
	}
	_, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{
		LocalAddr:   func(netip.Addr) bool { return false },
		ConnCounter: noConns{},
	})
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, err)
	if ruleset.OnlyUnsupported(err) {
		return exitUnsupported
	}
	return exitBadInput
}

type noConns struct{}

func (noConns) ConnCount(*packet.Packet, netip.Prefix, bool) int { return 0 }

// Summary is check's "ok" report: chains with policies and rule counts, and
// skipped tables.
func Summary(f *ruleset.File) string {
	var b strings.Builder
	if f.Filter == nil {
		fmt.Fprintf(&b, "ok: %s (%s): no *filter table\n", f.Name, f.Family)
	} else {
		n := 0
		for _, c := range f.Filter.Chains {
			n += len(c.Rules)
		}
		fmt.Fprintf(&b, "ok: %s (%s): filter table, %d chains, %d rules\n", f.Name, f.Family, len(f.Filter.Chains), n)
		for _, c := range ruleset.SaveOrder(f.Filter) {
			kind := "policy " + c.Policy.String()
			if !c.Builtin {
				kind = fmt.Sprintf("user chain, %d reference(s)", ruleset.References(f.Filter, c.Name))
			}
			fmt.Fprintf(&b, "  %-28s %-26s %d rule(s)\n", c.Name, kind, len(c.Rules))
		}
	}
	for _, s := range f.Skipped {
		fmt.Fprintf(&b, "  skipped table *%s (line %d): left to the kernel\n", s.Name, s.Pos.Line)
	}
	return b.String()
}

// newResolver wraps a lookup function for LoadOptions.Resolve: answers are
// cached, each lookup is bounded by timeout, and after one lookup times out
// (no DNS reachable) the others fail at once instead of waiting in turn.
func newResolver(ctx context.Context, lookup func(context.Context, string, string) ([]netip.Addr, error), timeout time.Duration) func(string) ([]netip.Addr, error) {
	type answer struct {
		addrs []netip.Addr
		err   error
	}
	cache := map[string]answer{}
	var down error
	return func(host string) ([]netip.Addr, error) {
		if a, ok := cache[host]; ok {
			return a.addrs, a.err
		}
		if down != nil {
			return nil, down
		}
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		addrs, err := lookup(c, "ip", host)
		if err != nil && c.Err() != nil {
			down = fmt.Errorf("DNS lookups time out: %w", err)
			err = down
		}
		cache[host] = answer{addrs, err}
		return addrs, err
	}
}
