package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/ruleset"
)

// metricsCollector exports the daemon's counters to Prometheus. Everything
// is read at scrape time from the live counters (nothing is added on the
// per-packet path beyond the engine's own atomics).
type metricsCollector struct {
	d *daemon
	// offloadReadErrs counts scrapes whose iptables-save failed.
	offloadReadErrs atomic.Uint64

	packets, bytes          *prometheus.Desc
	rulePackets, ruleBytes  *prometheus.Desc
	policyPackets           *prometheus.Desc
	ctEntries, ctTableFull  *prometheus.Desc
	ctInvalid               *prometheus.Desc
	ctMax                   *prometheus.Desc
	qDropped, qUserDropped  *prometheus.Desc
	qWaiting                *prometheus.Desc
	enobufs, verdictErrs    *prometheus.Desc
	rejects, rejectsLimited *prometheus.Desc
	latency                 *prometheus.Desc
	shadowCompared          *prometheus.Desc
	shadowDiffers           *prometheus.Desc
	shadowFlows             *prometheus.Desc
	logLines, logSuppressed *prometheus.Desc
	reloads, reloadFailures *prometheus.Desc
	hashlimitBuckets        *prometheus.Desc
	recentEntries           *prometheus.Desc
	panics                  *prometheus.Desc
	offloaded               *prometheus.Desc
	offloadPackets          *prometheus.Desc
	offloadBytes            *prometheus.Desc
	offloadErrors           *prometheus.Desc
}

func newMetricsCollector(d *daemon) *metricsCollector {
	n := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("filterd_"+name, help, labels, nil)
	}
	return &metricsCollector{
		d:                d,
		packets:          n("packets_total", "Packets verdicted, by queue and verdict.", "queue", "verdict"),
		bytes:            n("bytes_total", "L3 bytes verdicted, by queue and verdict.", "queue", "verdict"),
		rulePackets:      n("rule_packets_total", "Packets matched per rule (iptables -L -v -x counters; reset by a reload).", "family", "chain", "rule", "target"),
		ruleBytes:        n("rule_bytes_total", "Bytes matched per rule.", "family", "chain", "rule", "target"),
		policyPackets:    n("policy_packets_total", "Packets decided by a built-in chain's policy.", "family", "chain", "policy"),
		ctEntries:        n("conntrack_entries", "Conntrack entries by protocol and state.", "state"),
		ctTableFull:      n("conntrack_table_full_drops_total", "New flows dropped because the conntrack table was full."),
		ctInvalid:        n("conntrack_invalid_total", "Packets conntrack found INVALID."),
		ctMax:            n("conntrack_max", "Conntrack table capacity."),
		qDropped:         n("queue_dropped_total", "Packets the kernel dropped because the queue was full (nfnetlink_queue queue_dropped).", "queue"),
		qUserDropped:     n("queue_user_dropped_total", "Packets the kernel could not deliver to filterd's socket (nfnetlink_queue user_dropped).", "queue"),
		qWaiting:         n("queue_waiting", "Packets waiting in the kernel for a verdict.", "queue"),
		enobufs:          n("queue_enobufs_total", "Receive buffer overruns (ENOBUFS) seen by filterd.", "queue"),
		verdictErrs:      n("queue_verdict_errors_total", "Verdicts the kernel refused.", "queue"),
		rejects:          n("reject_replies_total", "REJECT replies sent.", "queue"),
		rejectsLimited:   n("reject_replies_suppressed_total", "REJECT replies not sent (kernel rules: ICMP rate limit, no reply to errors, RSTs).", "queue"),
		latency:          n("verdict_latency_seconds", "Time from receiving a packet to sending its verdict.", "queue"),
		logLines:         n("log_lines_total", "Packets that hit a LOG rule."),
		logSuppressed:    n("log_lines_suppressed_total", "LOG lines dropped by the rate limit."),
		hashlimitBuckets: n("hashlimit_buckets", "Buckets (tracked keys) in each -m hashlimit table (/proc/net/ipt_hashlimit/NAME lines).", "family", "name"),
		recentEntries:    n("recent_entries", "Addresses in each -m recent list.", "family", "name"),
		panics:           n("queue_panics_total", "Packets whose processing panicked (verdicted, logged).", "queue"),
		offloaded:        n("offloaded_flows_total", "Flows handed to the kernel (--offload established): packets verdicted NF_REPEAT with the offload mark, normally one per flow (more when several packets of a flow were queued before the first one's verdict took effect).", "queue"),
		offloadPackets:   n("offload_kernel_packets_total", "Packets of offloaded flows the kernel accepted without queueing them (the connmark ACCEPT rule's counter; reset when the rules are reinstalled).", "family", "chain"),
		offloadBytes:     n("offload_kernel_bytes_total", "Bytes of offloaded flows the kernel accepted without queueing them.", "family", "chain"),
		offloadErrors:    n("offload_kernel_read_errors_total", "Scrapes that could not read the offload rules' counters (iptables-save failed)."),
		reloads:          n("reloads_total", "Successful rule reloads."),
		reloadFailures:   n("reload_failures_total", "Refused rule reloads (the old rules stayed)."),
	}
}

func (m *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(m, ch)
}

func (m *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	d := m.d
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range d.nfq.Stats() {
		q := strconv.Itoa(int(s.Queue))
		for a := engine.Accept; a <= engine.Held; a++ {
			counter(m.packets, s.Packets[a].Load(), q, a.String())
			counter(m.bytes, s.Bytes[a].Load(), q, a.String())
		}
		counter(m.enobufs, s.ENOBUFS.Load(), q)
		counter(m.verdictErrs, s.VerdictErrors.Load(), q)
		counter(m.panics, s.Panics.Load(), q)
		if d.o.offload == "established" {
			counter(m.offloaded, s.Offloaded.Load(), q)
		}
		counter(m.rejects, s.RejectSent.Load(), q)
		counter(m.rejectsLimited, s.RejectLimited.Load(), q)
		if d.o.shadow {
			counter(m.shadowCompared, s.ShadowCompared.Load(), q)
			counter(m.shadowDiffers, s.ShadowDiffers.Load(), q)
		}
		buckets := make(map[float64]uint64, len(engine.LatencyBuckets))
		var cum uint64
		for i, ub := range engine.LatencyBuckets {
			cum += s.Latency[i].Load()
			buckets[ub] = cum
		}
		cum += s.Latency[len(engine.LatencyBuckets)].Load()
		ch <- prometheus.MustNewConstHistogram(m.latency, cum, float64(s.LatencySumNs.Load())/1e9, buckets, q)
	}
	if qs, err := engine.ReadQueueProc("/proc/net/netfilter/nfnetlink_queue"); err == nil {
		mine := map[uint16]bool{}
		for _, s := range d.nfq.Stats() {
			mine[s.Queue] = true
		}
		for _, p := range qs {
			if !mine[p.Queue] {
				continue
			}
			q := strconv.Itoa(int(p.Queue))
			counter(m.qDropped, p.Dropped, q)
			counter(m.qUserDropped, p.UserDropped, q)
			gauge(m.qWaiting, float64(p.Waiting), q)
		}
	}
	if in := d.offload.Load(); in != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cs, err := in.offloadCounters(ctx)
		cancel()
		if err != nil {
			m.offloadReadErrs.Add(1)
			d.log.Warn("metrics: reading the offload rules' counters", "err", err)
		}
		for _, c := range cs {
			counter(m.offloadPackets, c.packets, c.family, c.chain)
			counter(m.offloadBytes, c.bytes, c.family, c.chain)
		}
		counter(m.offloadErrors, m.offloadReadErrs.Load())
	}
	rules := d.eng.Rules()
	for _, x := range []struct {
		fam string
		c   *ruleset.Compiled
	}{{"ipv4", rules.V4}, {"ipv6", rules.V6}} {
		if x.c == nil {
			continue
		}
		t := x.c.Snapshot()
		seenH, seenR := map[string]bool{}, map[string]bool{}
		for _, chn := range t.Chains {
			for _, r := range chn.Rules {
				for _, mt := range r.Matches {
					switch mt := mt.(type) {
					case *ruleset.HashlimitMatch:
						if !seenH[mt.Name] {
							seenH[mt.Name] = true
							if n := x.c.State().HashlimitLen(mt.Name); n >= 0 {
								gauge(m.hashlimitBuckets, float64(n), x.fam, mt.Name)
							}
						}
					case *ruleset.RecentMatch:
						if !seenR[mt.Name] {
							seenR[mt.Name] = true
							if n := x.c.State().RecentLen(mt.Name); n >= 0 {
								gauge(m.recentEntries, float64(n), x.fam, mt.Name)
							}
						}
					}
				}
			}
		}
		for _, chn := range t.Chains {
			if chn.Builtin {
				counter(m.policyPackets, chn.Counters.Packets, x.fam, chn.Name, chn.Policy.String())
			}
			for i, r := range chn.Rules {
				target := targetName(r.Target)
				num := strconv.Itoa(i + 1)
				counter(m.rulePackets, r.Counters.Packets, x.fam, chn.Name, num, target)
				counter(m.ruleBytes, r.Counters.Bytes, x.fam, chn.Name, num, target)
			}
		}
	}
	for state, n := range d.ct.Counts() {
		gauge(m.ctEntries, float64(n), state)
	}
	st := d.ct.Stats()
	counter(m.ctTableFull, st.Drop)
	counter(m.ctInvalid, st.Invalid)
	gauge(m.ctMax, float64(d.o.ct.max))
	if d.loglim != nil {
		counter(m.logLines, d.logHits.Load())
	} else {
		counter(m.logLines, d.logw.Lines())
	}
	if d.loglim != nil {
		counter(m.logSuppressed, d.loglim.Suppressed())
	}
	if d.o.shadow {
		if s := d.shadow(); s.Runs > 0 && s.Err == nil {
			gauge(m.shadowFlows, float64(s.Cmp.Same), "same")
			gauge(m.shadowFlows, float64(len(s.Cmp.Diffs)), "differ")
		}
	}
	counter(m.reloads, d.reloads.Load())
	counter(m.reloadFailures, d.failed.Load())
}

// serveMetrics serves /metrics on addr; the returned function stops it.
func (d *daemon) serveMetrics(addr string) (func(), error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(newMetricsCollector(d)); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if d.o.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return serveHTTP(d, ln, mux), nil
}

func serveHTTP(d *daemon, ln net.Listener, h http.Handler) func() {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("filterd: http", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
}

// targetName names a rule's target as iptables -L does.
func targetName(t ruleset.Target) string {
	switch t.Kind {
	case ruleset.TargetAccept:
		return "ACCEPT"
	case ruleset.TargetDrop:
		return "DROP"
	case ruleset.TargetReturn:
		return "RETURN"
	case ruleset.TargetJump, ruleset.TargetGoto:
		return t.Chain
	case ruleset.TargetReject:
		return "REJECT"
	case ruleset.TargetLog:
		return "LOG"
	}
	return ""
}
