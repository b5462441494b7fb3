// Command filterd is a userspace stateful packet filter: it loads
// iptables-restore rule files, replays pcap files through a conntrack-aware
// engine, and verdicts live packets from the kernel's NFQUEUE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses shared by the sub-commands.
const (
	exitOK          = 0
	exitFailure     = 1 // runtime failure
	exitBadInput    = 2 // errors in a rules file or on the command line
	exitUnsupported = 3 // valid file that uses options filterd cannot enforce yet
)

// command is one sub-command.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"check", "parse and compile a rules file; report every error", runCheck},
		{"list", "list the chains of a rules file as iptables -L -n would", runList},
		{"save", "print a rules file in canonical iptables-save form", runSave},
		{"replay", "replay pcap files through the engine and report verdicts", runReplay},
		{"gen", "write a generated SYN-flood capture inside 198.18.0.0/15", runGen},
		{"run", "verdict live packets from NFQUEUE (root)", runDaemon},
		{"conntrack", "list a running daemon's flows as conntrack -L does", runConntrack},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: filterd <command> [options] [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'filterd <command> --help' for a command's options.")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if len(os.Args) > 1 && os.Args[1] == "replay" {
		applyBatchGC()
	}
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitBadInput
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "filterd: unknown command %q\n", args[0])
	usage(stderr)
	return exitBadInput
}

// parseFlags parses a sub-command's arguments. --help (-h) prints the usage
// once, to stdout; a bad flag prints the error and the usage to stderr.
// done is true when the command should exit with code.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (done bool, code int) {
	for _, a := range args {
		if a == "--" {
			break
		}
		switch a {
		case "-h", "--h", "-help", "--help":
			fs.SetOutput(stdout)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, exitOK
		}
		return true, exitBadInput
	}
	return false, exitOK
}
