package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/engine/nfqbatch"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// runFlags are filterd run's options.
type runFlags struct {
	rules, rules6 string
	queues        string
	install       bool
	hooks         string
	bypass        bool
	cpuFanout     bool
	failOpen      bool
	metrics       string
	control       string
	local         string
	logTarget     string
	logRate       float64
	logBurst      int
	maxQueueLen   uint
	rcvbuf        int
	ct            ctFlags
	drainTimeout  time.Duration
	shadow        bool
	shadowEvery   time.Duration
	pprof         bool
	driver        string
	offload       string
	offloadMark   string
}

func (o *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.rules, "rules", "", "IPv4 rules `file` (iptables-save format); required")
	fs.StringVar(&o.rules6, "rules6", "", "IPv6 rules `file` (ip6tables-save format); without it IPv6 passes unfiltered (tracked)")
	fs.StringVar(&o.queues, "queues", "0", "NFQUEUE `N or N-M`: one handle and one worker per queue")
	fs.BoolVar(&o.install, "install", false, "insert the NFQUEUE rules (iptables and ip6tables, top of each hook's chain) and remove exactly those on exit")
	fs.StringVar(&o.hooks, "hooks", "INPUT,OUTPUT", "with --install: the built-in `chains` to divert (INPUT,OUTPUT[,FORWARD])")
	fs.BoolVar(&o.bypass, "queue-bypass", false, "with --install: --queue-bypass, traffic passes unfiltered while filterd is not running")
	fs.BoolVar(&o.cpuFanout, "queue-cpu-fanout", false, "with --install and several queues: --queue-cpu-fanout (queue by CPU instead of by flow hash)")
	fs.BoolVar(&o.failOpen, "fail-open", false, "accept packets instead of dropping them when a queue is full (NFQA_CFG_F_FAIL_OPEN)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on this `address` (e.g. 127.0.0.1:9467)")
	fs.StringVar(&o.control, "control", "", "serve the control API (filterd conntrack, filterd list --control) on this unix socket `path`")
	fs.StringVar(&o.local, "local", "", "the host's `addresses` or prefixes, comma-separated, for -m addrtype LOCAL")
	fs.StringVar(&o.logTarget, "log", "stderr", "where LOG target lines go: stderr, syslog or none")
	fs.Float64Var(&o.logRate, "log-rate", 10, "LOG lines per second at most (token bucket)")
	fs.IntVar(&o.logBurst, "log-burst", 50, "LOG lines allowed in a burst")
	fs.UintVar(&o.maxQueueLen, "max-queue-len", 4096, "kernel queue length in packets")
	fs.IntVar(&o.rcvbuf, "rcvbuf", 8<<20, "netlink receive buffer in `bytes` (SO_RCVBUFFORCE)")
	o.ct.register(fs)
	fs.BoolVar(&o.shadow, "shadow", false, "shadow mode: compare filterd's conntrack with the kernel's own, per packet where the kernel can say (CONFIG_NETFILTER_NETLINK_GLUE_CT) and flow by flow over ctnetlink every --shadow-interval; differences are counted (metrics) and logged; with --install the NFQUEUE rules turn the kernel's conntrack on")
	fs.DurationVar(&o.shadowEvery, "shadow-interval", 10*time.Second, "with --shadow: how often to compare the flow tables")
	fs.BoolVar(&o.pprof, "pprof", false, "with --metrics: also serve Go's /debug/pprof profiles there")
	fs.StringVar(&o.driver, "driver", "batch", "NFQUEUE `driver`: batch (recvmmsg, verdicts batched, no allocation per packet) or gonfqueue (go-nfqueue, one verdict per packet: the simple reference)")
	fs.StringVar(&o.offload, "offload", "none", "with --install: `none` or established: hand a flow to the kernel once filterd accepts one of its packets while it is ESTABLISHED (the packet is repeated with --offload-mark, installed CONNMARK rules save it into the kernel's conntrack entry and accept the flow's packets before the NFQUEUE rule). Offloaded flows run at kernel speed but are no longer seen by filterd: later rule changes (SIGHUP), rate limits and LOG rules do not apply to them, and filterd's conntrack entry ages out")
	fs.StringVar(&o.offloadMark, "offload-mark", "0x40000000", "with --offload established: the mark `value[/mask]` (nfmark and connmark bits) that says a flow is offloaded; pick bits nothing else on the host sets (default mask: the value)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Second, "on exit, how long to wait for queued packets to be verdicted")
}

// parseQueues parses --queues: "N" or "N-M" (also "N:M").
func parseQueues(s string) ([]uint16, error) {
	lo, hi, rng := strings.Cut(s, "-")
	if !rng {
		lo, hi, rng = strings.Cut(s, ":")
	}
	a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%q: want a queue number N or a range N-M (0-65535)", s)
	}
	b := a
	if rng {
		if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil || b < a {
			return nil, fmt.Errorf("%q: want a range N-M with N <= M <= 65535", s)
		}
	}
	if b-a >= 1024 {
		return nil, fmt.Errorf("%q: at most 1024 queues", s)
	}
	out := make([]uint16, 0, b-a+1)
	for q := a; q <= b; q++ {
		out = append(out, uint16(q))
	}
	return out, nil
}

// queueDriver is an NFQUEUE driver: engine.NFQueue (gonfqueue) or
// nfqbatch.Engines (batch). Both run every packet through an
// engine.QueueHandler.
type queueDriver interface {
	Stats() []*engine.QueueStats
	Drain(ctx context.Context) error
	Stop(timeout time.Duration)
}

// openQueues opens the queues with the driver named by --driver.
func openQueues(driver string, eng *engine.Engine, cfg engine.NFQueueConfig) (queueDriver, error) {
	switch driver {
	case "batch":
		e, err := nfqbatch.OpenEngine(eng, cfg)
		if err != nil {
			return nil, err
		}
		return e, nil
	case "gonfqueue":
		q, err := engine.OpenNFQueue(eng, cfg)
		if err != nil {
			return nil, err
		}
		return q, nil
	}
	return nil, fmt.Errorf("--driver %q: want batch or gonfqueue", driver)
}

// daemon is one running filterd.
type daemon struct {
	o          runFlags
	copts      ruleset.CompileOptions
	eng        *engine.Engine
	ct         *conntrack.Table
	nfq        queueDriver
	logw       *engine.LogWriter
	loglim     *engine.RateLimitedWriter
	log        *slog.Logger
	stderr     io.Writer
	reloads    atomic.Uint64
	failed     atomic.Uint64
	logHits    atomic.Uint64 // packets that hit a LOG rule (rate-limited target)
	shadowMu   sync.Mutex
	shadowLast shadowResult
	mu         sync.Mutex // serialises reloads
	// offload is the installer whose offload rules' counters the metrics
	// report (nil without --offload established).
	offload atomic.Pointer[installer]
}

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("filterd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o runFlags
	o.register(fs)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, "usage: filterd run --rules FILE [--rules6 FILE] --queues N|N-M [--install [--hooks INPUT,OUTPUT[,FORWARD]] [--queue-bypass]")
		fmt.Fprintln(w, "                   [--offload established [--offload-mark V[/M]]]]")
		fmt.Fprintln(w, "                   [--fail-open] [--metrics ADDR] [--control SOCK] [--local ADDRS] [options]")
		fmt.Fprintln(w, "\nVerdicts live packets from the kernel's NFQUEUE with the engine (root: CAP_NET_ADMIN, CAP_NET_RAW).")
		fmt.Fprintln(w, "SIGHUP reloads the rules files (a broken file is reported and the old rules stay);")
		fmt.Fprintln(w, "SIGTERM/SIGINT stop: installed rules removed, queued packets verdicted.")
		fmt.Fprintln(w, "\noptions:")
		fs.PrintDefaults()
	}
	if done, code := parseFlags(fs, args, stdout); done {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "filterd run: unexpected argument %q\n", fs.Arg(0))
		return exitBadInput
	}
	if o.rules == "" {
		fmt.Fprintln(stderr, "filterd run: --rules FILE is required")
		return exitBadInput
	}
	if o.driver != "batch" && o.driver != "gonfqueue" {
		fmt.Fprintf(stderr, "filterd run: --driver %q: want batch or gonfqueue\n", o.driver)
		return exitBadInput
	}
	queues, err := parseQueues(o.queues)
	if err != nil {
		fmt.Fprintf(stderr, "filterd run: --queues %v\n", err)
		return exitBadInput
	}
	offload, err := parseOffload(o.offload, o.offloadMark)
	if err != nil {
		fmt.Fprintf(stderr, "filterd run: %v\n", err)
		return exitBadInput
	}
	if offload.Enabled() && !o.install {
		fmt.Fprintln(stderr, "filterd run: --offload established needs --install (filterd installs the CONNMARK rules that accept offloaded flows in the kernel)")
		return exitBadInput
	}
	hooks, err := parseHooks(o.hooks)
	if err != nil {
		fmt.Fprintf(stderr, "filterd run: --hooks %v\n", err)
		return exitBadInput
	}
	local, err := parseLocal(o.local)
	if err != nil {
		fmt.Fprintf(stderr, "filterd run: --local: %v\n", err)
		return exitBadInput
	}
	ctcfg, err := o.ct.config()
	if err != nil {
		fmt.Fprintf(stderr, "filterd run: %v\n", err)
		return exitBadInput
	}
	// SIGHUP is caught from the start: before the loop below reads it, a
	// reload request waits instead of killing the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d := &daemon{o: o, log: log, stderr: stderr}

	var logOut io.Writer
	switch o.logTarget {
	case "stderr":
		logOut = stderr
	case "syslog":
		w, err := syslog.New(syslog.LOG_WARNING|syslog.LOG_KERN, "filterd")
		if err != nil {
			fmt.Fprintf(stderr, "filterd run: --log syslog: %v\n", err)
			return exitFailure
		}
		defer w.Close()
		logOut = w
	case "none":
	default:
		fmt.Fprintf(stderr, "filterd run: --log %q: want stderr, syslog or none\n", o.logTarget)
		return exitBadInput
	}
	if logOut != nil {
		d.loglim = engine.NewRateLimitedWriter(logOut, o.logRate, o.logBurst, nil)
		d.logw = engine.NewLogWriter(d.loglim)
	} else {
		d.logw = engine.NewLogWriter(nil)
	}

	d.ct = conntrack.New(ctcfg)
	logFn := d.logw.Log
	if d.loglim != nil {
		// Ask the rate limit before formatting: under a flood most lines are
		// suppressed and formatting them would only serialise the workers.
		logFn = func(r *ruleset.Rule, p *packet.Packet) {
			d.logHits.Add(1)
			if d.loglim.Allow() {
				d.logw.Log(r, p)
			}
		}
	}
	d.copts = ruleset.CompileOptions{Log: logFn, LocalPrefixes: local}
	rules, code := d.load(ctx, engine.Rules{})
	if code != exitOK {
		return code
	}
	// The hook and interfaces come with each packet: no Local here.
	d.eng, err = engine.New(engine.Config{Rules: rules, Conntrack: d.ct, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "filterd run: %v\n", err)
		return exitFailure
	}

	rej, err := engine.NewRejecter()
	if err != nil {
		log.Warn("REJECT will drop without a reply", "err", err)
	} else {
		defer rej.Close()
	}
	qcfg := engine.NFQueueConfig{
		Queues:      queues,
		MaxQueueLen: uint32(o.maxQueueLen),
		ReadBuffer:  o.rcvbuf,
		FailOpen:    o.failOpen,
		Shadow:      o.shadow,
		Local:       local,
		Rejecter:    rej,
		Logger:      log,
		Offload:     offload,
	}
	d.nfq, err = openQueues(o.driver, d.eng, qcfg)
	if o.shadow && errors.Is(err, engine.ErrShadowUnsupported) {
		log.Warn("shadow: the kernel cannot report conntrack state per packet; comparing flow tables only", "err", err)
		qcfg.Shadow = false
		d.nfq, err = openQueues(o.driver, d.eng, qcfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "filterd run: %v\n", err)
		return exitFailure
	}
	stopQueues := func() { d.nfq.Stop(time.Second) }

	// The listeners come up before any rule is installed: a bad address
	// stops filterd before it has touched iptables.
	var servers []func()
	stopServers := func() {
		for i := len(servers) - 1; i >= 0; i-- {
			servers[i]()
		}
	}
	if o.metrics != "" {
		stop, err := d.serveMetrics(o.metrics)
		if err != nil {
			fmt.Fprintf(stderr, "filterd run: --metrics: %v\n", err)
			stopQueues()
			return exitFailure
		}
		servers = append(servers, stop)
	}
	if o.control != "" {
		stop, err := d.serveControl(o.control)
		if err != nil {
			fmt.Fprintf(stderr, "filterd run: --control: %v\n", err)
			stopServers()
			stopQueues()
			return exitFailure
		}
		servers = append(servers, stop)
	}

	var inst *installer
	if o.install {
		inst = newInstaller(queues, hooks, o.bypass, o.cpuFanout, o.shadow)
		if offload.Enabled() {
			inst.addOffload(offload)
			d.offload.Store(inst)
		}
		if err := inst.install(ctx); err != nil {
			fmt.Fprintf(stderr, "filterd run: --install: %v\n", err)
			inst.remove(context.Background())
			stopServers()
			stopQueues()
			return exitFailure
		}
	}
	if o.shadow {
		servers = append(servers, d.runShadow(o.shadowEvery))
	}
	log.Info("filterd: ready", "driver", o.driver, "queues", o.queues, "rules", o.rules, "rules6", o.rules6, "install", o.install,
		"bypass", o.bypass, "offload", o.offload, "pid", os.Getpid())
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			if err := d.reload(ctx); err != nil {
				log.Error("filterd: reload refused; the old rules stay in force", "err", err)
			} else {
				log.Info("filterd: rules reloaded", "rules", o.rules, "rules6", o.rules6)
			}
		}
	}
	log.Info("filterd: stopping")
	code = exitOK
	if offload.Enabled() {
		// The kernel's counters go with the rules: read them first.
		d.logOffload(inst)
	}
	if inst != nil {
		if err := inst.remove(context.Background()); err != nil {
			log.Error("filterd: removing the NFQUEUE rules", "err", err)
			code = exitFailure
		}
	}
	dctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	if err := d.nfq.Drain(dctx); err != nil {
		log.Warn("filterd: drain", "err", err)
	}
	cancel()
	// The queues are still bound: the kernel's counters of each are in
	// /proc until stopQueues unbinds them, and no packet arrives any more.
	d.logQueues()
	stopQueues()
	stopServers()
	log.Info("filterd: stopped", "packets", d.totalPackets(), "offloaded", d.totalOffloaded())
	return code
}

// logQueues logs, per queue, what filterd verdicted and the kernel's
// counters for it (/proc/net/netfilter/nfnetlink_queue): every packet the
// kernel queued either got an id (id_sequence; delivered to filterd, which
// verdicted it, or lost to a full socket: user_dropped) or was dropped for
// a full queue (queue_dropped).
func (d *daemon) logQueues() {
	kq := map[uint16]engine.QueueProc{}
	if qs, err := engine.ReadQueueProc("/proc/net/netfilter/nfnetlink_queue"); err == nil {
		for _, p := range qs {
			kq[p.Queue] = p
		}
	} else {
		d.log.Warn("filterd: reading the kernel's queue counters", "err", err)
	}
	for _, s := range d.nfq.Stats() {
		var n uint64
		for i := range s.Packets {
			n += s.Packets[i].Load()
		}
		k := kq[s.Queue]
		d.log.Info("filterd: queue summary", "queue", s.Queue, "verdicted", n, "offloaded", s.Offloaded.Load(),
			"kernel_id_sequence", k.IDSequence, "kernel_queue_dropped", k.Dropped, "kernel_user_dropped", k.UserDropped,
			"kernel_waiting", k.Waiting)
	}
}

func (d *daemon) totalOffloaded() uint64 {
	var n uint64
	for _, s := range d.nfq.Stats() {
		n += s.Offloaded.Load()
	}
	return n
}

// logOffload logs what the kernel accepted for offloaded flows (the
// connmark rules' counters, read before the rules are removed).
func (d *daemon) logOffload(in *installer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := in.offloadCounters(ctx)
	if err != nil {
		d.log.Warn("filterd: reading the offload rules' counters", "err", err)
		return
	}
	var pk, by uint64
	for _, c := range cs {
		pk += c.packets
		by += c.bytes
	}
	d.log.Info("filterd: offload summary", "offloaded", d.totalOffloaded(), "kernel_packets", pk, "kernel_bytes", by)
}

func (d *daemon) totalPackets() uint64 {
	var n uint64
	for _, s := range d.nfq.Stats() {
		for i := range s.Packets {
			n += s.Packets[i].Load()
		}
	}
	return n
}

// load loads and compiles the rules files, carrying the hashlimit/recent
// state of cur over. It prints diagnostics to the daemon's stderr.
func (d *daemon) load(ctx context.Context, cur engine.Rules) (engine.Rules, int) {
	var next engine.Rules
	for _, x := range []struct {
		path string
		fam  packet.Family
		cur  *ruleset.Compiled
		dst  **ruleset.Compiled
	}{{d.o.rules, packet.IPv4, cur.V4, &next.V4}, {d.o.rules6, packet.IPv6, cur.V6, &next.V6}} {
		if x.path == "" {
			continue
		}
		opts := d.copts
		if x.cur != nil {
			opts.State = x.cur.State()
		}
		c, code := loadCompiled(ctx, x.path, x.fam, opts, d.stderr)
		if c == nil {
			return engine.Rules{}, code
		}
		*x.dst = c
	}
	return next, exitOK
}

// reload swaps in freshly loaded rules atomically, or leaves the old ones.
func (d *daemon) reload(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	next, code := d.load(ctx, d.eng.Rules())
	if code != exitOK {
		d.failed.Add(1)
		return fmt.Errorf("%s%s: not loaded (exit status %d)", d.o.rules, map[bool]string{true: ", " + d.o.rules6, false: ""}[d.o.rules6 != ""], code)
	}
	d.eng.SetRules(next)
	// Forget hashlimit tables and recent lists the new rules no longer use.
	for _, c := range []*ruleset.Compiled{next.V4, next.V6} {
		if c != nil {
			c.State().Prune(c)
		}
	}
	d.reloads.Add(1)
	return nil
}

// parseHooks parses --hooks.
func parseHooks(s string) ([]packet.Hook, error) {
	var out []packet.Hook
	for _, f := range strings.Split(s, ",") {
		f = strings.ToUpper(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		h, ok := packet.ParseHook(f)
		if !ok || (h != packet.HookInput && h != packet.HookOutput && h != packet.HookForward) {
			return nil, fmt.Errorf("%q: want INPUT, OUTPUT or FORWARD", f)
		}
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, errors.New("no chain given")
	}
	return out, nil
}

// installer inserts filterd's NFQUEUE rules and removes exactly them.
type installer struct {
	rules []installRule
	done  []installRule
	// cmds and chains are the iptables commands and chains the rules go
	// into (read-only after construction).
	cmds, chains []string
}

type installRule struct {
	cmd   string // iptables or ip6tables
	chain string
	spec  []string
}

func newInstaller(queues []uint16, hooks []packet.Hook, bypass, fanout, shadow bool) *installer {
	spec := []string{"-m", "comment", "--comment", "filterd"}
	if shadow {
		// A conntrack match on every state turns the kernel's connection
		// tracking on in this namespace, so NFQUEUE can report its state.
		spec = append(spec, "-m", "conntrack", "--ctstate", "INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED")
	}
	spec = append(spec, "-j", "NFQUEUE")
	if len(queues) == 1 {
		spec = append(spec, "--queue-num", strconv.Itoa(int(queues[0])))
	} else {
		spec = append(spec, "--queue-balance", fmt.Sprintf("%d:%d", queues[0], queues[len(queues)-1]))
		if fanout {
			spec = append(spec, "--queue-cpu-fanout")
		}
	}
	if bypass {
		spec = append(spec, "--queue-bypass")
	}
	in := &installer{cmds: []string{"iptables", "ip6tables"}}
	for _, h := range hooks {
		in.chains = append(in.chains, h.String())
	}
	for _, cmd := range in.cmds {
		for _, chain := range in.chains {
			in.rules = append(in.rules, installRule{cmd: cmd, chain: chain, spec: spec})
		}
	}
	return in
}

// addOffload adds the offload rules of every diverted chain: above its
// NFQUEUE rule (install inserts each rule at the top, in order) a packet
// carrying the mark (one filterd verdicted NF_REPEAT with it, the hook's
// chain running again) saves it into its conntrack entry's mark, and a
// packet whose connmark has it is accepted:
//
//	-m mark --mark V/M -m comment --comment filterd -j CONNMARK --save-mark --nfmask M --ctmask M
//	-m connmark --mark V/M -m comment --comment filterd -j ACCEPT
//	-m comment --comment filterd -j NFQUEUE ...
//
// CONNMARK and connmark turn the kernel's connection tracking on in the
// namespace (the mark lives in its entries).
func (in *installer) addOffload(o engine.Offload) {
	vm := fmt.Sprintf("0x%x/0x%x", o.Mark, o.Mask)
	mask := fmt.Sprintf("0x%x", o.Mask)
	for _, cmd := range in.cmds {
		for _, chain := range in.chains {
			in.rules = append(in.rules,
				installRule{cmd: cmd, chain: chain, spec: []string{"-m", "connmark", "--mark", vm, "-m", "comment", "--comment", "filterd", "-j", "ACCEPT"}},
				installRule{cmd: cmd, chain: chain, spec: []string{"-m", "mark", "--mark", vm, "-m", "comment", "--comment", "filterd",
					"-j", "CONNMARK", "--save-mark", "--nfmask", mask, "--ctmask", mask}})
		}
	}
}

// offloadCount is what one offload ACCEPT rule counted in the kernel.
type offloadCount struct {
	family, chain  string
	packets, bytes uint64
}

// offloadCounters reads the kernel's counters of the offload ACCEPT rules
// (iptables-save -c): the packets of offloaded flows the kernel accepted
// without queueing them.
func (in *installer) offloadCounters(ctx context.Context) ([]offloadCount, error) {
	var out []offloadCount
	for _, cmd := range in.cmds {
		b, err := iptablesSave(ctx, cmd+"-save")
		if err != nil {
			return out, err
		}
		fam := map[string]string{"iptables": "ipv4", "ip6tables": "ipv6"}[cmd]
		cs, err := parseOffloadCounters(string(b), in.chains)
		if err != nil {
			return out, fmt.Errorf("%s-save: %w", cmd, err)
		}
		for _, c := range cs {
			c.family = fam
			out = append(out, c)
		}
	}
	return out, nil
}

// parseOffloadCounters finds, in iptables-save -c output, the counters of
// filterd's connmark ACCEPT rule in each of chains ([pkts:bytes] -A CHAIN
// -m connmark --mark ... -m comment --comment filterd -j ACCEPT).
func parseOffloadCounters(save string, chains []string) ([]offloadCount, error) {
	var out []offloadCount
	table := ""
	for i, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "*") {
			table = line[1:]
			continue
		}
		if table != "filter" || !strings.HasPrefix(line, "[") || !strings.Contains(line, " -m connmark --mark ") ||
			!strings.Contains(line, " --comment filterd ") || !strings.HasSuffix(line, " -j ACCEPT") {
			continue
		}
		cnt, rule, ok := strings.Cut(line[1:], "] -A ")
		if !ok {
			return out, fmt.Errorf("line %d: %q: want [packets:bytes] -A CHAIN ...", i+1, line)
		}
		chain, _, _ := strings.Cut(rule, " ")
		found := false
		for _, c := range chains {
			found = found || c == chain
		}
		if !found {
			continue
		}
		p, b, _ := strings.Cut(cnt, ":")
		pk, err1 := strconv.ParseUint(p, 10, 64)
		by, err2 := strconv.ParseUint(b, 10, 64)
		if err1 != nil || err2 != nil {
			return out, fmt.Errorf("line %d: counters %q: want [packets:bytes]", i+1, cnt)
		}
		out = append(out, offloadCount{chain: chain, packets: pk, bytes: by})
	}
	return out, nil
}

// parseOffload parses --offload and --offload-mark (value or value/mask,
// decimal or 0x hex); the zero Offload is off.
func parseOffload(mode, mark string) (engine.Offload, error) {
	switch mode {
	case "none", "":
		return engine.Offload{}, nil
	case "established":
	default:
		return engine.Offload{}, fmt.Errorf("--offload %q: want none or established", mode)
	}
	vs, ms, hasMask := strings.Cut(mark, "/")
	v, err := strconv.ParseUint(strings.TrimSpace(vs), 0, 32)
	if err != nil {
		return engine.Offload{}, fmt.Errorf("--offload-mark %q: want a 32-bit value[/mask] such as 0x40000000", mark)
	}
	m := v
	if hasMask {
		if m, err = strconv.ParseUint(strings.TrimSpace(ms), 0, 32); err != nil {
			return engine.Offload{}, fmt.Errorf("--offload-mark %q: want a 32-bit value[/mask] such as 0x40000000/0x40000000", mark)
		}
	}
	if v == 0 || v&^m != 0 {
		return engine.Offload{}, fmt.Errorf("--offload-mark %q: the value must be non-zero and within the mask", mark)
	}
	return engine.Offload{Mark: uint32(v), Mask: uint32(m)}, nil
}

func (in *installer) install(ctx context.Context) error {
	for _, r := range in.rules {
		// A rule left by a killed filterd is adopted rather than doubled.
		if _, err := iptables(ctx, r.cmd, append([]string{"-C", r.chain}, r.spec...)...); err != nil {
			if _, err := iptables(ctx, r.cmd, append([]string{"-I", r.chain, "1"}, r.spec...)...); err != nil {
				return err
			}
		}
		in.done = append(in.done, r)
	}
	return nil
}

func (in *installer) remove(ctx context.Context) error {
	var errs []error
	for i := len(in.done) - 1; i >= 0; i-- {
		r := in.done[i]
		if _, err := iptables(ctx, r.cmd, append([]string{"-D", r.chain}, r.spec...)...); err != nil {
			errs = append(errs, err)
		}
	}
	in.done = nil
	return errors.Join(errs...)
}

// iptablesSave runs iptables-save (or ip6tables-save) -c for the filter table.
func iptablesSave(ctx context.Context, cmd string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cmd, "-c", "-t", "filter").Output()
	if err != nil {
		return out, fmt.Errorf("%s -c -t filter: %w", cmd, err)
	}
	return out, nil
}

func iptables(ctx context.Context, cmd string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args = append([]string{"-w", "5"}, args...)
	out, err := exec.CommandContext(ctx, cmd, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", cmd, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// shadowResult is the last flow-table comparison with the kernel.
type shadowResult struct {
	At   time.Time
	Err  error
	Cmp  engine.FlowComparison
	Runs uint64
}

// runShadow compares filterd's conntrack table with the kernel's every
// interval until the returned function is called.
func (d *daemon) runShadow(every time.Duration) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			flows, err := engine.DumpKernelConntrack()
			var cmp engine.FlowComparison
			if err == nil {
				cmp = engine.CompareFlows(flows, d.ct)
			}
			d.shadowMu.Lock()
			d.shadowLast = shadowResult{At: time.Now(), Err: err, Cmp: cmp, Runs: d.shadowLast.Runs + 1}
			d.shadowMu.Unlock()
			if err != nil {
				d.log.Error("shadow: reading the kernel's conntrack table", "err", err)
				continue
			}
			for i, df := range cmp.Diffs {
				if i == 10 {
					d.log.Warn("shadow: more flows differ", "total", len(cmp.Diffs))
					break
				}
				d.log.Warn("shadow: flow differs from the kernel's", "proto", df.Key.Proto, "src", df.Key.Src.String(),
					"sport", df.Key.SrcPort, "dst", df.Key.Dst.String(), "dport", df.Key.DstPort, "kernel", df.Kernel, "filterd", df.Filterd)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// shadow returns the last flow comparison.
func (d *daemon) shadow() shadowResult {
	d.shadowMu.Lock()
	defer d.shadowMu.Unlock()
	return d.shadowLast
}
