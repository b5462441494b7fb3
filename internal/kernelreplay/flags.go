package kernelreplay

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/filterd/filterd/internal/netns"
)

// nsPrefixes are the name prefixes of the namespaces Run creates.
var nsPrefixes = [...]string{"fdkr-c", "fdkr-r", "fdkr-s"}

// RemoveStale deletes namespaces left behind by a kernel replay whose process
// is gone (a SIGKILL skips every cleanup). It never signals any process.
func RemoveStale(ctx context.Context) ([]string, error) {
	var all []string
	for _, pfx := range nsPrefixes {
		removed, err := netns.RemoveStale(ctx, pfx)
		all = append(all, removed...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

// Flags are the command-line options a kernel replay takes, shared by the
// kernelreplay and parity commands.
type Flags struct {
	rulesPath, rules6Path, local string
	interval                     time.Duration
	timing, capture, noFTPHelper bool
	sysctls                      kvFlag
}

// Register adds the options to fs; interval is the default gap between two
// packets sent to the kernel.
func (f *Flags) Register(fs *flag.FlagSet, interval time.Duration) {
	f.sysctls = kvFlag{}
	fs.StringVar(&f.rulesPath, "rules", "", "IPv4 rules file (iptables-restore format)")
	fs.StringVar(&f.rules6Path, "rules6", "", "IPv6 rules file (ip6tables-restore format)")
	fs.StringVar(&f.local, "local", "", "the protected host's addresses or prefixes, comma-separated (before the rewrite)")
	fs.DurationVar(&f.interval, "interval", interval, "time between two packets sent to the kernel")
	fs.BoolVar(&f.timing, "timing", false, "send at the capture's own times (for -m limit / -m hashlimit rules)")
	fs.BoolVar(&f.capture, "capture", true, "also record per-packet verdicts (which packets came out of the kernel's router)")
	fs.BoolVar(&f.noFTPHelper, "no-ftp-helper", false, "do not assign the FTP conntrack helper to tcp port 21")
	fs.Var(f.sysctls, "sysctl", "KEY=VALUE set in the router before the replay (repeatable), e.g. net.netfilter.nf_conntrack_tcp_loose=0")
}

// Config reads the rules files and returns the replay configuration of the
// capture at pcap. Rules and Rules6 are the files' contents.
func (f *Flags) Config(pcap string) (Config, error) {
	cfg := Config{Pcap: pcap, Interval: f.interval, KeepTiming: f.timing, Capture: f.capture,
		NoFTPHelper: f.noFTPHelper, Sysctls: f.sysctls}
	for _, x := range []struct {
		path string
		dst  *string
	}{{f.rulesPath, &cfg.Rules}, {f.rules6Path, &cfg.Rules6}} {
		if x.path == "" {
			continue
		}
		b, err := os.ReadFile(x.path)
		if err != nil {
			return Config{}, err
		}
		*x.dst = string(b)
	}
	local, err := ParseLocal(f.local)
	if err != nil {
		return Config{}, err
	}
	cfg.Local = local
	return cfg, nil
}

// kvFlag is a repeatable KEY=VALUE flag.
type kvFlag map[string]string

func (k kvFlag) String() string { return fmt.Sprint(map[string]string(k)) }

func (k kvFlag) Set(s string) error {
	key, v, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	k[key] = v
	return nil
}
