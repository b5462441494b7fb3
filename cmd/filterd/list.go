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
	usageFor(fs, "list [-6] [--strict] [-v] [-x] [-n] FILE", "List the chains of a rules file as iptables -L prints them.")
	if ok, code := parseArgs(fs, args, stdout); !ok {
		return code
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
