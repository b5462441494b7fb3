package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/filterd/filterd/ruleset"
)

func runSave(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("save", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o loadFlags
	o.register(fs)
	var counters bool
	fs.BoolVar(&counters, "c", false, "print rule counters [pkts:bytes], as iptables-save -c")
	fs.BoolVar(&counters, "counters", false, "same as -c")
	usageFor(fs, "save [-6] [--strict] [-c] FILE", "Print the filter table of a rules file in canonical iptables-save form.")
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
		fmt.Fprintf(stderr, "filterd save: %s has no *filter table\n", fs.Arg(0))
		return exitOK
	}
	if err := ruleset.Save(stdout, f.Filter, ruleset.SaveOptions{Counters: counters, Header: true}); err != nil {
		fmt.Fprintf(stderr, "filterd save: %v\n", err)
		return exitFailure
	}
	return exitOK
}
