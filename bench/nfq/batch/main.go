// Command batch is filterd's fast path as bench/nfq/bench.sh runs it: one
// engine/nfqbatch queue and one engine worker per queue, with a rules file
// (the article's server rule set by default) and conntrack shared by the
// workers. It prints the driver's counters when SIGTERM or SIGINT stops it.
//
// Usage (root, inside the receiving namespace):
//
//	batch -rules testdata/rules/server.rules -local 198.18.0.2 -queues 0-1
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/engine"
	"github.com/filterd/filterd/engine/nfqbatch"
	"github.com/filterd/filterd/ruleset"
)

func main() {
	rules := flag.String("rules", "testdata/rules/server.rules", "iptables-restore rules file")
	local := flag.String("local", "198.18.0.2", "the server's own address")
	queues := flag.String("queues", "0", "queue N or range N-M")
	maxLen := flag.Uint("maxlen", 4096, "kernel queue length")
	batch := flag.Int("batch", 64, "messages per recvmmsg")
	flag.Parse()
	if err := run(*rules, *local, *queues, uint32(*maxLen), *batch); err != nil {
		fmt.Fprintln(os.Stderr, "batch:", err)
		os.Exit(1)
	}
}

func run(rulesPath, localS, queues string, maxLen uint32, batch int) error {
	var first, last uint16
	if n, _ := fmt.Sscanf(queues, "%d-%d", &first, &last); n != 2 {
		if n, _ := fmt.Sscanf(queues, "%d", &first); n != 1 {
			return fmt.Errorf("-queues %q: N or N-M", queues)
		}
		last = first
	}
	addr, err := netip.ParseAddr(localS)
	if err != nil {
		return fmt.Errorf("-local: %w", err)
	}
	localPfx := []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}
	f, diags, err := ruleset.LoadFile(rulesPath, ruleset.LoadOptions{})
	if err != nil {
		return err
	}
	if diags.HasErrors() || diags.HasUnsupported() {
		return fmt.Errorf("%s: %v", rulesPath, diags)
	}
	c, err := ruleset.Compile(f.Filter, ruleset.CompileOptions{Log: engine.NewLogWriter(nil).Log, LocalPrefixes: localPfx})
	if err != nil {
		return err
	}
	eng, err := engine.New(engine.Config{
		Rules:     engine.Rules{V4: c},
		Conntrack: conntrack.New(conntrack.Config{}),
		// No Local: the hook and interfaces come with each queued packet
		// (Local would make the engine route packets itself, as in replay).
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var qs []*nfqbatch.Queue
	for n := first; n <= last; n++ {
		q, err := nfqbatch.Open(nfqbatch.Config{Queue: n, MaxLen: maxLen, Batch: batch})
		if err != nil {
			return err
		}
		defer q.Close()
		qs = append(qs, q)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(qs))
	for i, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Not locked to a thread: with the network poller a locked
			// goroutine is handed back to its thread on every wake-up
			// (measured: more CPU per packet with 2 queues).
			errs[i] = q.Run(ctx, nfqbatch.EngineHandler(eng.NewWorker()))
		}()
	}
	fmt.Printf("batch: queues %d-%d ready\n", first, last)
	wg.Wait()
	for i, q := range qs {
		fmt.Printf("batch: queue %d: %+v\n", int(first)+i, q.Stats())
		if errs[i] != nil {
			return errs[i]
		}
	}
	return nil
}
