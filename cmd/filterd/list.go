package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/user"
	"strconv"

	"github.com/filterd/filterd/ruleset"
)

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o loadFlags
	o.register(fs)
	var lo ruleset.ListOptions
	fs.BoolVar(&lo.Verbose, "v", false, "verbose: counters and interfaces, as iptables -L -v")
	fs.BoolVar(&lo.Verbose, "verbose", false, "same as -v")
	fs.BoolVar(&lo.Exact, "x", false, "exact counter values, as iptables -L -x")
	fs.BoolVar(&lo.Exact, "exact", false, "same as -x")
	fs.BoolVar(&lo.Numeric, "n", false, "numeric output, as iptables -L -n")
	fs.BoolVar(&lo.Numeric, "numeric", false, "same as -n")
	var control string
	fs.StringVar(&control, "control", "", "list the live rules and counters of the filterd run daemon on this control socket `path` instead of a file")
	usageFor(fs, "list [-6] [--strict] [-v] [-x] [-n] FILE | list [-v] [-x] [-n] --control SOCK", "List the chains of a rules file (or of a running daemon) as iptables -L prints them.")
	if ok, code := parseArgs(fs, controlArg(args), stdout); !ok {
		return code
	}
	if control != "" {
		if fs.NArg() != 0 {
			fs.Usage()
			return exitBadInput
		}
		return listLive(ctx, control, lo, stdout, stderr)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitBadInput
	}
	f, _, code := loadRules(ctx, fs.Arg(0), &o, stderr)
	if code != exitOK {
		return code
	}
	if f.Filter == nil {
		fmt.Fprintf(stderr, "filterd list: %s has no *filter table\n", fs.Arg(0))
		return exitOK
	}
	lo.UserName = func(uid uint32) (string, bool) {
		u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
		if err != nil {
			return "", false
		}
		return u.Username, true
	}
	if err := ruleset.List(stdout, f.Filter, lo); err != nil {
		fmt.Fprintf(stderr, "filterd list: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// controlArg joins "--control PATH" into "--control=PATH": parseArgs takes
// flags without separate values.
func controlArg(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if (args[i] == "--control" || args[i] == "-control") && i+1 < len(args) {
			out = append(out, args[i]+"="+args[i+1])
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}
