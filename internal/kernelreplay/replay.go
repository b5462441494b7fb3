package kernelreplay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/filterd/filterd/internal/netns"
)

// Hook is the netfilter hook a replayed packet is judged by on the router.
type Hook uint8

// Hooks, named as the kernel names them.
const (
	HookInput Hook = iota + 1
	HookOutput
	HookForward
)

// String returns the name.
func (h Hook) String() string {
	switch h {
	case HookInput:
		return "INPUT"
	case HookOutput:
		return "OUTPUT"
	case HookForward:
		return "FORWARD"
	}
	return "?"
}

// OwnMark is the packet mark the replay puts on the packets it sends from the
// router itself; the router's raw OUTPUT chain drops every locally generated
// packet without it (the router's own RSTs, ICMP errors, REJECT replies)
// before conntrack sees it, and then clears the mark.
const OwnMark = 0x6b72 // "kr"

// ownComment tags the rules the replay adds to the router's raw table; they
// are cut from Result.Save4 / Save6 (and kept in Raw4 / Raw6).
const ownComment = "filterd-kernelreplay"

// Interface names and MAC addresses of the replay's namespaces. The router's
// outside interface is eth0 as in `filterd replay --in-iface` (the default),
// the sink side eth1.
const (
	RouterIn   = "eth0"
	RouterOut  = "eth1"
	macRouterC = "02:00:c6:12:01:01"
	macC       = "02:00:c6:12:01:02"
	macRouterS = "02:00:c6:12:02:01"
	macS       = "02:00:c6:12:02:02"
)

// Limits of one replay.
const (
	MaxPackets      = 1_000_000
	maxTimedReplay  = 10 * time.Minute
	defaultInterval = time.Millisecond
	defaultDrain    = 5 * time.Second
)

// RecordedSysctls are the router's settings that change what netfilter does
// with a replay; Run reports their values (after Config.Sysctls is applied).
var RecordedSysctls = []string{
	"net.netfilter.nf_conntrack_tcp_loose",
	"net.netfilter.nf_conntrack_tcp_be_liberal",
	"net.netfilter.nf_conntrack_tcp_ignore_invalid_rst",
	"net.netfilter.nf_conntrack_tcp_max_retrans",
	"net.netfilter.nf_conntrack_checksum",
	"net.netfilter.nf_conntrack_helper", // gone since Linux 6.0: reported as absent
	"net.netfilter.nf_conntrack_acct",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_udp_timeout",
	"net.netfilter.nf_conntrack_udp_timeout_stream",
	"net.netfilter.nf_conntrack_icmp_timeout",
	"net.netfilter.nf_conntrack_tcp_timeout_syn_sent",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.ipv4.ip_forward",
	"net.ipv6.conf.all.forwarding",
	"net.ipv4.conf.all.rp_filter",
	"net.ipv4.conf.eth0.rp_filter",
	"net.ipv4.conf.eth0.accept_local",
}

// Config is one kernel replay.
type Config struct {
	// Rules and Rules6 are the contents of iptables-restore / ip6tables-restore
	// files, loaded into the router. Empty: that family has no rules (every
	// table absent, everything passes).
	Rules, Rules6 string
	// Pcap is the capture to replay. Its addresses are rewritten (see
	// Rewrite) together with the addresses in the rules and in Local.
	Pcap string
	// Local are the protected host's addresses or prefixes (before the
	// rewrite), as `filterd replay --local`: packets to them traverse the
	// router's INPUT, packets from them OUTPUT, all others FORWARD.
	Local []netip.Prefix
	// Interval between two packets; default 1 ms. Ignored with KeepTiming.
	Interval time.Duration
	// KeepTiming sends packets at the capture's own relative times (for
	// -m limit / -m hashlimit rule sets); at most 10 minutes.
	KeepTiming bool
	// Capture records which packets got through (Result.Verdicts): OUTPUT
	// and FORWARD packets leaving the router on the injector's or sink's veth,
	// INPUT packets reaching the router's raw sockets after the INPUT chain.
	// Without it only OUTPUT drops are known (the send gets EPERM).
	Capture bool
	// Sysctls are set in the router before the rules are loaded, e.g.
	// {"net.netfilter.nf_conntrack_tcp_loose": "0"}.
	Sysctls map[string]string
	// NoFTPHelper leaves out the raw-table CT --helper ftp rules for TCP
	// port 21 that the replay adds by default.
	NoFTPHelper bool
	// OneIngress injects every FORWARD packet from the injector side, so that
	// all replayed packets arrive on eth0 as in `filterd replay` (one
	// --in-iface); replies then leave by eth0 again. By default a FORWARD
	// packet comes from the side of its source address: the flow's initiator
	// on eth0 (injector), its peer on eth1 (sink).
	OneIngress bool
	// DrainTimeout bounds the wait for the counters to settle; default 5 s.
	DrainTimeout time.Duration
	// Logger gets progress at Debug level; nil: slog.Default().
	Logger *slog.Logger
}

// Verdict says whether a replayed packet came out of the router.
type Verdict uint8

// Per-packet outcomes.
const (
	VerdictUnknown   Verdict = iota // not known: Capture off (INPUT, FORWARD), or a fragment
	VerdictPassed                   // seen leaving the router, or delivered locally after INPUT
	VerdictDropped                  // not seen there; for OUTPUT: the send got EPERM
	VerdictSendError                // the injector could not send it
)

// String returns the name.
func (v Verdict) String() string {
	return [...]string{"unknown", "passed", "dropped", "send-error"}[v]
}

// PacketResult is what happened to one packet.
type PacketResult struct {
	Index   int // packet number in the source capture
	Hook    Hook
	Family  int // 4 or 6
	Len     int
	Verdict Verdict
	// At is when the packet was sent, from the start of the injection: the
	// kernel's clock for -m limit / -m hashlimit, which a comparison replays
	// the packet at (the schedule is only kept to within the scheduler's
	// latency).
	At  time.Duration
	Err string `json:",omitempty"`
}

// Result is what one kernel replay saw.
type Result struct {
	// Save4 and Save6 are `iptables-save -c` / `ip6tables-save -c` of the
	// router after the replay with the replay's own raw rules cut out and
	// only the tables the rules files define: ready to diff with
	// `filterd replay --counters`. Empty when that family had no rules.
	Save4, Save6 string
	// Raw4 and Raw6 are the unedited outputs.
	Raw4, Raw6 string
	// Rules and Rules6 are the loaded rules files (addresses rewritten).
	Rules, Rules6 string
	// Sysctls are the router's values of RecordedSysctls ("absent" if the
	// kernel has no such setting).
	Sysctls map[string]string
	// FTPHelper describes the FTP helper assignment, or why there is none.
	FTPHelper string
	// Conntrack is `conntrack -L` (IPv4 then IPv6) on the router afterwards.
	Conntrack string
	// Local are the router's local addresses (after the rewrite).
	Local []netip.Addr
	// Map is the address rewrite.
	Map *AddrMap
	// Packets, per hook and family, that were sent; SendErrors failed.
	Sent       map[string]int
	SendErrors int
	// NonIP frames of the capture that were left out; Unrewritable lists IP
	// packets that could not be parsed.
	NonIP        int
	Unrewritable []string
	// OwnDropped4/6 count the router's own packets that the raw OUTPUT rule
	// dropped; Marked4/6 the replayed OUTPUT packets that passed it.
	OwnDropped4, OwnDropped6, Marked4, Marked6 Counter
	// TTLExpired lists FORWARD packets (by capture number) with an IPv4 TTL
	// or IPv6 hop limit of 1 or less: the kernel drops them in ip_forward /
	// ip6_forward before the FORWARD hook (and answers with Time Exceeded,
	// which the raw OUTPUT rule drops), so no FORWARD rule or policy counts them.
	TTLExpired []int
	// Verdicts has one entry per replayed packet, in capture order.
	Verdicts []PacketResult
	// Duration of the injection.
	Duration time.Duration
}

// Counter is an iptables [packets:bytes] pair.
type Counter struct{ Packets, Bytes uint64 }

// ParseLocal reads "ADDR[,ADDR|PREFIX...]".
func ParseLocal(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := parsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("kernelreplay: --local %q: %w", f, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// plan is a replay worked out before any namespace exists.
type plan struct {
	pkts   []Packet
	hooks  []Hook
	fromS  []bool // FORWARD packet injected from the sink side
	local  []netip.Addr
	sSide  []netip.Addr // addresses routed via the sink side
	rules  string
	rules6 string
	res    *Result
}

func makePlan(cfg Config) (*plan, error) {
	var localPrefixes []netip.Prefix
	var localAddrs []netip.Addr
	for _, p := range cfg.Local {
		localPrefixes = append(localPrefixes, p)
		if p.Bits() == p.Addr().BitLen() {
			localAddrs = append(localAddrs, p.Addr())
		}
	}
	rw, err := Rewrite(cfg.Pcap, cfg.Rules, cfg.Rules6, localAddrs, localPrefixes)
	if err != nil {
		return nil, err
	}
	if len(rw.Packets) > MaxPackets {
		return nil, fmt.Errorf("kernelreplay: %d packets, at most %d", len(rw.Packets), MaxPackets)
	}
	pl := &plan{pkts: rw.Packets, rules: rw.Rules, rules6: rw.Rules6, res: &Result{
		Map: rw.Map, NonIP: rw.Read.NonIP, Unrewritable: rw.Dropped, Rules: rw.Rules, Rules6: rw.Rules6,
		Sent: map[string]int{},
	}}
	var lp []netip.Prefix
	for _, p := range localPrefixes {
		img, ok := rw.Map.MapPrefix(p)
		if !ok {
			return nil, fmt.Errorf("kernelreplay: local %s not in the address map", p)
		}
		lp = append(lp, img)
	}
	isLocal := func(a netip.Addr) bool {
		return slices.ContainsFunc(lp, func(p netip.Prefix) bool { return p.Contains(a) })
	}
	seenLocal := map[netip.Addr]bool{}
	for _, p := range lp { // single local addresses are held even when the capture lacks them
		if p.Bits() == p.Addr().BitLen() && !seenLocal[p.Addr()] {
			seenLocal[p.Addr()] = true
			pl.local = append(pl.local, p.Addr())
		}
	}
	side := map[netip.Addr]bool{} // true: sink side
	known := map[netip.Addr]bool{}
	for _, p := range pl.pkts {
		if err := CheckAddrs(p.L3); err != nil { // safety: nothing outside our ranges is ever sent
			return nil, fmt.Errorf("kernelreplay: packet %d: refusing to send: %w", p.Index, err)
		}
		h, _ := parseIP(p.L3)
		src, dst := h.src(p.L3), h.dst(p.L3)
		for _, a := range []netip.Addr{src, dst} {
			if isLocal(a) && !seenLocal[a] {
				seenLocal[a] = true
				pl.local = append(pl.local, a)
			}
		}
		var hook Hook
		switch {
		case isLocal(src):
			hook = HookOutput
		case isLocal(dst):
			hook = HookInput
		default:
			hook = HookForward
			switch {
			case !known[src] && !known[dst]:
				known[src], known[dst] = true, true
				side[dst] = true
			case !known[src]:
				known[src] = true
				side[src] = !side[dst]
			case !known[dst]:
				known[dst] = true
				side[dst] = !side[src]
			}
		}
		if hook == HookForward && ttl(p.L3) <= 1 {
			pl.res.TTLExpired = append(pl.res.TTLExpired, p.Index)
		}
		pl.hooks = append(pl.hooks, hook)
		pl.fromS = append(pl.fromS, hook == HookForward && side[src] && !cfg.OneIngress)
	}
	for a, s := range side {
		if s {
			pl.sSide = append(pl.sSide, a)
		}
	}
	slices.SortFunc(pl.sSide, netip.Addr.Compare)
	pl.res.Local = pl.local
	return pl, nil
}

// Run replays cfg.Pcap through the kernel: it builds three namespaces (an
// injector C, a router R holding the local addresses and the rules, a sink
// S), sends every packet in capture order so that it traverses R's INPUT,
// OUTPUT or FORWARD chain, waits for the counters to settle and reads them.
// The namespaces are deleted before Run returns, also on error or panic.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = defaultDrain
	}
	pl, err := makePlan(cfg)
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("kernelreplay: %s not found: %w", tool, err)
		}
	}
	res = pl.res

	g := netns.NewGroup()
	defer func() {
		if cerr := g.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("kernelreplay: cleanup: %w", cerr)
		}
	}()
	nsC, err := g.New(ctx, "fdkr-c")
	if err != nil {
		return nil, err
	}
	nsR, err := g.New(ctx, "fdkr-r")
	if err != nil {
		return nil, err
	}
	nsS, err := g.New(ctx, "fdkr-s")
	if err != nil {
		return nil, err
	}
	log.Debug("kernelreplay: namespaces", "c", nsC.Name, "r", nsR.Name, "s", nsS.Name)
	if err := setupRouter(ctx, cfg, pl, nsC, nsR, nsS, res); err != nil {
		return nil, err
	}

	inj, err := openInjectors(nsC, nsR, nsS)
	if err != nil {
		return nil, err
	}
	defer inj.close()
	var outCaps, inCaps []*capture
	if cfg.Capture {
		for _, x := range []struct {
			ns  *netns.NS
			dev string
		}{{nsC, "c0"}, {nsS, "s0"}} {
			c, err := openCapture(x.ns, x.dev)
			if err != nil {
				return nil, err
			}
			defer c.close()
			outCaps = append(outCaps, c)
		}
		inCaps, err = openLocalCaptures(nsR, pl)
		if err != nil {
			return nil, err
		}
		for _, c := range inCaps {
			defer c.close()
		}
	}
	caps := append(append([]*capture(nil), outCaps...), inCaps...)

	start := time.Now()
	if err := inject(ctx, cfg, pl, inj, res); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)

	if err := drain(ctx, cfg, nsR, caps); err != nil {
		return nil, err
	}
	for _, c := range caps {
		c.stop()
	}
	if cfg.Capture {
		matchCaptures(pl, outCaps, inCaps, res)
	}
	if err := collect(ctx, cfg, pl, nsR, res); err != nil {
		return nil, err
	}
	return res, nil
}

func setupRouter(ctx context.Context, cfg Config, pl *plan, nsC, nsR, nsS *netns.NS, res *Result) error {
	// No IPv6 stack on the injector and sink (so they never answer or
	// solicit), no automatic link-local addresses or DAD anywhere.
	for _, ns := range []*netns.NS{nsC, nsS} {
		for _, kv := range [][2]string{
			{"net.ipv6.conf.all.disable_ipv6", "1"}, {"net.ipv6.conf.default.disable_ipv6", "1"},
			{"net.ipv4.ip_forward", "0"},
		} {
			if err := ns.Sysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	for _, kv := range [][2]string{
		{"net.ipv6.conf.default.addr_gen_mode", "1"}, {"net.ipv6.conf.default.accept_dad", "0"},
		{"net.ipv6.conf.all.accept_dad", "0"}, {"net.ipv6.conf.default.accept_ra", "0"},
		{"net.ipv6.conf.default.router_solicitations", "0"},
		{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf.all.accept_local", "1"}, {"net.ipv4.conf.default.accept_local", "1"},
		{"net.ipv4.conf.all.send_redirects", "0"}, {"net.ipv4.conf.default.send_redirects", "0"},
	} {
		if err := nsR.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(cfg.Sysctls) {
		if err := nsR.Sysctl(k, cfg.Sysctls[k]); err != nil {
			return err
		}
	}

	// Rules first, then the replay's own raw rules on top, all before any
	// interface is up, so nothing the router does goes uncounted or unfiltered.
	for _, fam := range []struct{ restore, rules string }{{"iptables-restore", pl.rules}, {"ip6tables-restore", pl.rules6}} {
		if strings.TrimSpace(fam.rules) == "" {
			continue
		}
		if _, err := nsR.RunInput(ctx, []byte(fam.rules), fam.restore, "-w", "10"); err != nil {
			return fmt.Errorf("kernelreplay: loading rules: %w", err)
		}
	}
	mark := "0x" + strconv.FormatUint(OwnMark, 16)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		own := [][]string{
			{"-t", "raw", "-I", "OUTPUT", "1", "-m", "mark", "!", "--mark", mark, "-m", "comment", "--comment", ownComment, "-j", "DROP"},
			{"-t", "raw", "-I", "OUTPUT", "2", "-m", "comment", "--comment", ownComment, "-j", "MARK", "--set-mark", "0"},
		}
		for _, r := range own {
			if _, err := nsR.Run(ctx, ipt, append([]string{"-w", "10"}, r...)...); err != nil {
				return fmt.Errorf("kernelreplay: own raw rule: %w", err)
			}
		}
	}
	res.FTPHelper = "not assigned (NoFTPHelper)"
	if !cfg.NoFTPHelper {
		var errs []string
		for _, ipt := range []string{"iptables", "ip6tables"} {
			for _, r := range [][]string{
				{"-t", "raw", "-I", "PREROUTING", "1", "-p", "tcp", "--dport", "21", "-m", "comment", "--comment", ownComment, "-j", "CT", "--helper", "ftp"},
				{"-t", "raw", "-I", "OUTPUT", "3", "-p", "tcp", "--dport", "21", "-m", "comment", "--comment", ownComment, "-j", "CT", "--helper", "ftp"},
			} {
				if _, err := nsR.Run(ctx, ipt, append([]string{"-w", "10"}, r...)...); err != nil {
					errs = append(errs, err.Error())
				}
			}
		}
		if len(errs) == 0 {
			res.FTPHelper = "ftp helper assigned to tcp dport 21 by raw PREROUTING and OUTPUT rules -j CT --helper ftp (IPv4 and IPv6)"
		} else {
			res.FTPHelper = "ftp helper not available: " + strings.Join(errs, "; ")
		}
	}

	if err := netns.Veth(ctx, nsC, "c0", macC, nsR, RouterIn, macRouterC); err != nil {
		return err
	}
	if err := netns.Veth(ctx, nsS, "s0", macS, nsR, RouterOut, macRouterS); err != nil {
		return err
	}
	var batch strings.Builder
	for _, dev := range []string{RouterIn, RouterOut} {
		// NOARP: the router never resolves neighbours; frames it sends go to
		// its own MAC, so the injector and sink see them but never take them.
		fmt.Fprintf(&batch, "link set %s arp off\n", dev)
		fmt.Fprintf(&batch, "link set %s mtu 65535\n", dev)
	}
	for _, a := range pl.local {
		fmt.Fprintf(&batch, "address add %s dev lo\n", netip.PrefixFrom(a, a.BitLen()))
	}
	fmt.Fprintf(&batch, "route add %s dev %s\n", Range4, RouterIn)
	fmt.Fprintf(&batch, "route add %s dev %s\n", Range6, RouterIn) // ip infers the family
	for _, a := range pl.sSide {
		fmt.Fprintf(&batch, "route add %s dev %s\n", netip.PrefixFrom(a, a.BitLen()), RouterOut)
	}
	if _, err := nsR.RunInput(ctx, []byte(batch.String()), "ip", "-batch", "-"); err != nil {
		return fmt.Errorf("kernelreplay: router setup: %w", err)
	}
	for _, x := range []struct {
		ns  *netns.NS
		dev string
	}{{nsC, "c0"}, {nsS, "s0"}} {
		if _, err := x.ns.Run(ctx, "ip", "link", "set", x.dev, "mtu", "65535"); err != nil {
			return err
		}
	}
	for _, dev := range []string{RouterIn, RouterOut} {
		for _, kv := range [][2]string{{"rp_filter", "0"}, {"accept_local", "1"}} {
			if err := nsR.Sysctl("net.ipv4.conf."+dev+"."+kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	res.Sysctls = map[string]string{}
	for _, k := range RecordedSysctls {
		v, err := nsR.ReadSysctl(k)
		if err != nil {
			v = "absent"
		}
		res.Sysctls[k] = v
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// injectors are the sockets packets leave by.
type injectors struct {
	raw4, raw6 int // in R, SO_MARK OwnMark, header included
	pktC, pktS int // AF_PACKET on c0 and s0
	ifC, ifS   int
}

func (in *injectors) close() {
	for _, fd := range []int{in.raw4, in.raw6, in.pktC, in.pktS} {
		if fd > 0 {
			unix.Close(fd)
		}
	}
}

func openInjectors(nsC, nsR, nsS *netns.NS) (*injectors, error) {
	in := &injectors{raw4: -1, raw6: -1, pktC: -1, pktS: -1}
	err := nsR.Do(func() error {
		var err error
		if in.raw4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw IPv4 socket: %w", err)
		}
		if in.raw6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw IPv6 socket: %w", err)
		}
		for _, fd := range []int{in.raw4, in.raw6} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, OwnMark); err != nil {
				return fmt.Errorf("SO_MARK: %w", err)
			}
		}
		// IPPROTO_RAW implies IP_HDRINCL / IPV6_HDRINCL; say so anyway for IPv4.
		return unix.SetsockoptInt(in.raw4, unix.IPPROTO_IP, unix.IP_HDRINCL, 1)
	})
	if err != nil {
		in.close()
		return nil, fmt.Errorf("kernelreplay: %w", err)
	}
	for _, x := range []struct {
		ns  *netns.NS
		dev string
		fd  *int
		idx *int
	}{{nsC, "c0", &in.pktC, &in.ifC}, {nsS, "s0", &in.pktS, &in.ifS}} {
		err := x.ns.Do(func() error {
			ifi, err := net.InterfaceByName(x.dev)
			if err != nil {
				return err
			}
			*x.idx = ifi.Index
			// Protocol 0: this socket only sends.
			*x.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
			return err
		})
		if err != nil {
			in.close()
			return nil, fmt.Errorf("kernelreplay: packet socket on %s: %w", x.dev, err)
		}
	}
	return in, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func inject(ctx context.Context, cfg Config, pl *plan, in *injectors, res *Result) error {
	macR1, _ := net.ParseMAC(macRouterC)
	macR2, _ := net.ParseMAC(macRouterS)
	macCc, _ := net.ParseMAC(macC)
	macSs, _ := net.ParseMAC(macS)
	frame := make([]byte, 0, 65536+14)
	start := time.Now()
	var t0 time.Time
	if len(pl.pkts) > 0 {
		t0 = pl.pkts[0].Time
	}
	for i, p := range pl.pkts {
		if i >= MaxPackets {
			break
		}
		due := start.Add(time.Duration(i) * cfg.Interval)
		if cfg.KeepTiming {
			off := p.Time.Sub(t0)
			if off < 0 {
				off = 0
			}
			if off > maxTimedReplay {
				return fmt.Errorf("kernelreplay: packet %d is %v into the capture, beyond the %v limit of a timed replay", p.Index, off, maxTimedReplay)
			}
			due = start.Add(off)
		}
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		// Safety, again, right before the send.
		if err := CheckAddrs(p.L3); err != nil {
			return fmt.Errorf("kernelreplay: packet %d: refusing to send: %w", p.Index, err)
		}
		h, _ := parseIP(p.L3)
		fam := 4
		etype := uint16(0x0800)
		if h.v6 {
			fam, etype = 6, 0x86dd
		}
		pr := PacketResult{Index: p.Index, Hook: pl.hooks[i], Family: fam, Len: len(p.L3), At: time.Since(start)}
		var err error
		switch pl.hooks[i] {
		case HookOutput:
			dst := h.dst(p.L3)
			if h.v6 {
				err = unix.Sendto(in.raw6, p.L3, 0, &unix.SockaddrInet6{Addr: dst.As16()})
			} else {
				err = unix.Sendto(in.raw4, p.L3, 0, &unix.SockaddrInet4{Addr: dst.As4()})
			}
		default:
			fd, idx, dmac, smac := in.pktC, in.ifC, macR1, macCc
			if pl.fromS[i] {
				fd, idx, dmac, smac = in.pktS, in.ifS, macR2, macSs
			}
			frame = append(frame[:0], dmac...)
			frame = append(frame, smac...)
			frame = binary.BigEndian.AppendUint16(frame, etype)
			frame = append(frame, p.L3...)
			var a [8]byte
			copy(a[:], dmac)
			err = unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: idx, Protocol: htons(etype), Halen: 6, Addr: a})
		}
		key := fmt.Sprintf("%s/ipv%d", pl.hooks[i], fam)
		if pl.hooks[i] == HookOutput && errors.Is(err, unix.EPERM) {
			// A local sender learns of a netfilter drop (DROP, REJECT) in
			// OUTPUT as EPERM: the packet was sent and judged.
			err, pr.Verdict = nil, VerdictDropped
		}
		if err != nil {
			pr.Verdict, pr.Err = VerdictSendError, err.Error()
			res.SendErrors++
		} else {
			res.Sent[key]++
		}
		res.Verdicts = append(res.Verdicts, pr)
	}
	return nil
}

// drain waits until the router's counters (and captures) stop changing:
// three equal reads in a row, 20 ms apart, bounded by DrainTimeout.
func drain(ctx context.Context, cfg Config, nsR *netns.NS, caps []*capture) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.DrainTimeout)
	defer cancel()
	var last string
	same := 0
	for same < 3 {
		var b strings.Builder
		for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
			out, err := nsR.Run(ctx, cmd, "-c")
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("kernelreplay: counters did not settle within %v", cfg.DrainTimeout)
				}
				return err
			}
			b.Write(stripDates(out))
		}
		for _, c := range caps {
			fmt.Fprintf(&b, "cap %d\n", c.count())
		}
		if s := b.String(); s == last {
			same++
		} else {
			last, same = s, 0
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kernelreplay: counters did not settle within %v", cfg.DrainTimeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// stripDates drops iptables-save's "# Generated/Completed ... on DATE" lines.
func stripDates(b []byte) []byte {
	var out bytes.Buffer
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if !bytes.HasPrefix(l, []byte("#")) {
			out.Write(l)
		}
	}
	return out.Bytes()
}

func collect(ctx context.Context, cfg Config, pl *plan, nsR *netns.NS, res *Result) error {
	out4, err := nsR.Run(ctx, "iptables-save", "-c")
	if err != nil {
		return err
	}
	out6, err := nsR.Run(ctx, "ip6tables-save", "-c")
	if err != nil {
		return err
	}
	res.Raw4, res.Raw6 = string(out4), string(out6)
	res.Save4 = FilterSave(res.Raw4, pl.rules)
	res.Save6 = FilterSave(res.Raw6, pl.rules6)
	res.OwnDropped4, res.Marked4 = ownCounters(res.Raw4)
	res.OwnDropped6, res.Marked6 = ownCounters(res.Raw6)
	var ct strings.Builder
	if _, err := exec.LookPath("conntrack"); err == nil {
		for _, f := range []string{"ipv4", "ipv6"} {
			o, err := nsR.Run(ctx, "conntrack", "-L", "-f", f)
			if err != nil {
				fmt.Fprintf(&ct, "# conntrack -L -f %s: %v\n", f, err)
				continue
			}
			ct.Write(o)
		}
	} else {
		ct.WriteString("# conntrack tool not installed\n")
	}
	res.Conntrack = ct.String()
	return nil
}

// FilterSave cuts from an iptables-save -c output the replay's own rules, the
// date comments, and every table the rules file does not define (empty rules:
// everything), so that it diffs with filterd's --counters output.
func FilterSave(save, rules string) string {
	tables := map[string]bool{}
	for _, l := range strings.Split(rules, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "*") {
			tables[l[1:]] = true
		}
	}
	var b strings.Builder
	keep := false
	for _, l := range strings.SplitAfter(save, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "#"):
			continue
		case strings.HasPrefix(t, "*"):
			keep = tables[t[1:]]
		}
		if keep && !strings.Contains(l, ownComment) {
			b.WriteString(l)
		}
	}
	return b.String()
}

// ownCounters reads the counters of the replay's own raw OUTPUT rules.
func ownCounters(save string) (dropped, marked Counter) {
	for _, l := range strings.Split(save, "\n") {
		if !strings.Contains(l, ownComment) || !strings.Contains(l, "-A OUTPUT") {
			continue
		}
		c, ok := parseCounter(l)
		if !ok {
			continue
		}
		switch {
		case strings.Contains(l, "-j DROP"):
			dropped = c
		case strings.Contains(l, "-j MARK"):
			marked = c
		}
	}
	return dropped, marked
}

// parseCounter reads the leading "[pkts:bytes]" of an iptables-save -c line.
func parseCounter(l string) (Counter, bool) {
	if !strings.HasPrefix(l, "[") {
		if i := strings.Index(l, " ["); i >= 0 { // chain line ":INPUT DROP [p:b]"
			l = l[i+1:]
		} else {
			return Counter{}, false
		}
	}
	end := strings.IndexByte(l, ']')
	if end < 0 {
		return Counter{}, false
	}
	p, b, ok := strings.Cut(l[1:end], ":")
	if !ok {
		return Counter{}, false
	}
	pn, err1 := strconv.ParseUint(p, 10, 64)
	bn, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return Counter{}, false
	}
	return Counter{pn, bn}, true
}

// Counters parses an iptables-save -c text into "table/CHAIN" → policy
// counters and "table/RULE" → rule counters, where RULE is the rule line
// without its counters (e.g. "filter/-A INPUT -p tcp -j ACCEPT"). Rules that
// appear more than once get " #2", " #3" appended.
func Counters(save string) map[string]Counter {
	out := map[string]Counter{}
	table := ""
	for _, l := range strings.Split(save, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			if c, ok := parseCounter(l); ok {
				out[table+"/"+name] = c
			}
		case strings.HasPrefix(l, "["):
			c, ok := parseCounter(l)
			if !ok {
				continue
			}
			rule := strings.TrimSpace(l[strings.IndexByte(l, ']')+1:])
			k := table + "/" + rule
			for n := 2; ; n++ {
				if _, dup := out[k]; !dup {
					break
				}
				k = table + "/" + rule + " #" + strconv.Itoa(n)
			}
			out[k] = c
		}
	}
	return out
}

// capture collects keys (see packetKey) of packets seen at one place: frames
// leaving the router on the injector's or sink's veth (AF_PACKET), or
// packets the router delivered locally after its INPUT chain (raw IP
// sockets, which get their copy in ip_local_deliver, after NF_INET_LOCAL_IN).
type capture struct {
	fd   int
	mu   sync.Mutex
	keys []string
	read func(fd int, buf, oob []byte) (string, bool, error)
	done chan struct{}
	quit chan struct{}
}

func newCapture(fd int, read func(fd int, buf, oob []byte) (string, bool, error)) *capture {
	c := &capture{fd: fd, read: read, done: make(chan struct{}), quit: make(chan struct{})}
	go c.loop()
	return c
}

func setRecvOpts(fd int) error {
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// openCapture captures the frames that arrive on dev from the router.
func openCapture(ns *netns.NS, dev string) (*capture, error) {
	fd := -1
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL))); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return err
		}
		return setRecvOpts(fd)
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("kernelreplay: capture on %s: %w", dev, err)
	}
	return newCapture(fd, func(fd int, buf, _ []byte) (string, bool, error) {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return "", false, err
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			return "", false, nil // our own injection
		}
		if n < 14 {
			return "", false, nil
		}
		return packetKey(buf[14:n]), true, nil
	}), nil
}

// openLocalCaptures opens raw sockets in the router, one per family and
// protocol that INPUT packets carry, to see which packets INPUT accepted.
func openLocalCaptures(nsR *netns.NS, pl *plan) ([]*capture, error) {
	protos := map[[2]int]bool{}
	for i, p := range pl.pkts {
		if pl.hooks[i] != HookInput {
			continue
		}
		h, _ := parseIP(p.L3)
		if h.l4Known && h.proto != unix.IPPROTO_RAW && h.proto != 0 {
			fam := unix.AF_INET
			if h.v6 {
				fam = unix.AF_INET6
			}
			protos[[2]int{fam, int(h.proto)}] = true
		}
	}
	var caps []*capture
	for fp := range protos {
		fd := -1
		err := nsR.Do(func() error {
			var err error
			if fd, err = unix.Socket(fp[0], unix.SOCK_RAW, fp[1]); err != nil {
				return err
			}
			if fp[0] == unix.AF_INET6 {
				if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
					return err
				}
			}
			return setRecvOpts(fd)
		})
		if err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			for _, c := range caps {
				c.close()
			}
			return nil, fmt.Errorf("kernelreplay: raw socket for protocol %d in the router: %w", fp[1], err)
		}
		if fp[0] == unix.AF_INET {
			caps = append(caps, newCapture(fd, func(fd int, buf, _ []byte) (string, bool, error) {
				n, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					return "", false, err
				}
				return packetKey(buf[:n]), true, nil // IPv4 raw sockets get the IP header
			}))
			continue
		}
		proto := uint8(fp[1])
		caps = append(caps, newCapture(fd, func(fd int, buf, oob []byte) (string, bool, error) {
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				return "", false, err
			}
			sa, ok := from.(*unix.SockaddrInet6)
			if !ok {
				return "", false, nil
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return "", false, nil
			}
			for _, m := range msgs {
				if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 16 {
					src := netip.AddrFrom16(sa.Addr)
					dst := netip.AddrFrom16([16]byte(m.Data[:16]))
					return l4Key(src, dst, proto, buf[:n]), true, nil
				}
			}
			return "", false, nil
		}))
	}
	return caps, nil
}

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 65536+64)
	oob := make([]byte, 256)
	for n := 0; n < 4*MaxPackets; n++ {
		select {
		case <-c.quit:
			return
		default:
		}
		k, ok, err := c.read(c.fd, buf, oob)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if ok && k != "" {
			c.mu.Lock()
			c.keys = append(c.keys, k)
			c.mu.Unlock()
		}
	}
}

func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}

func (c *capture) stop() {
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
	<-c.done
}

func (c *capture) close() {
	c.stop()
	unix.Close(c.fd)
}

// packetKey identifies a packet across the router, which changes its TTL /
// hop limit, IPv4 checksum and (for header-included sends with ID 0) its
// IPv4 ID: addresses, protocol, transport length and the first 16 bytes of
// the transport header. Fragments get "" (they are reassembled on the way).
func packetKey(l3 []byte) string {
	h, err := parseIP(l3)
	if err != nil || h.frag || !h.l4Known || h.l4 > h.end {
		return ""
	}
	return l4Key(h.src(l3), h.dst(l3), h.proto, l3[h.l4:h.end])
}

func l4Key(src, dst netip.Addr, proto uint8, l4 []byte) string {
	n := 16
	if proto == unix.IPPROTO_ICMP || proto == unix.IPPROTO_ICMPV6 {
		// An ICMP error's first 16 bytes hold little more than the quoted
		// IP header's start: errors about different packets of one host
		// look alike there. 64 bytes reach the quoted ports and sequence.
		n = 64
	}
	k := make([]byte, 0, 40+1+4+n)
	k = append(k, src.AsSlice()...)
	k = append(k, dst.AsSlice()...)
	k = append(k, proto)
	k = binary.BigEndian.AppendUint32(k, uint32(len(l4)))
	k = append(k, l4[:min(n, len(l4))]...)
	return string(k)
}

// matchCaptures turns the captured keys into per-packet verdicts: a packet
// seen where it should arrive passed; one never seen was dropped. Packets
// without a key (fragments) stay unknown. out are the veth captures (OUTPUT,
// FORWARD), in the router's local delivery (INPUT).
func matchCaptures(pl *plan, out, in []*capture, res *Result) {
	count := func(cs []*capture) map[string]int {
		m := map[string]int{}
		for _, c := range cs {
			c.mu.Lock()
			for _, k := range c.keys {
				m[k]++
			}
			c.mu.Unlock()
		}
		return m
	}
	seenOut, seenIn := count(out), count(in)
	for i := range res.Verdicts {
		v := &res.Verdicts[i]
		if v.Verdict != VerdictUnknown {
			continue // send error, or OUTPUT dropped (EPERM)
		}
		k := packetKey(pl.pkts[i].L3)
		if k == "" {
			continue
		}
		seen := seenOut
		if v.Hook == HookInput {
			seen = seenIn
		}
		if seen[k] > 0 {
			seen[k]--
			v.Verdict = VerdictPassed
		} else {
			v.Verdict = VerdictDropped
		}
	}
}

// ttl returns the IPv4 TTL or IPv6 hop limit.
func ttl(l3 []byte) int {
	if len(l3) >= 20 && l3[0]>>4 == 4 {
		return int(l3[8])
	}
	if len(l3) >= 40 {
		return int(l3[7])
	}
	return 0
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }
