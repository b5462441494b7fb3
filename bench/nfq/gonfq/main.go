// Command gonfq is the reference consumer of bench/nfq/bench.sh: a bare
// github.com/florianl/go-nfqueue/v2 v2.1.0 accept-all loop, one handle per
// queue, copy mode packet, one SetVerdict per packet (the library's
// defaults). It prints its counters when SIGTERM or SIGINT stops it.
//
// Usage (root, inside the receiving namespace): gonfq -queues 0-1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
)

func main() {
	queues := flag.String("queues", "0", "queue N or range N-M")
	maxLen := flag.Uint("maxlen", 4096, "kernel queue length")
	flag.Parse()
	first, last, err := parseQueues(*queues)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gonfq:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var verdicts, errs, enobufs atomic.Uint64
	var handles []*nfqueue.Nfqueue
	for q := first; q <= last; q++ {
		nf, err := nfqueue.Open(&nfqueue.Config{
			NfQueue: q, MaxPacketLen: 0xffff, MaxQueueLen: uint32(*maxLen), Copymode: nfqueue.NfQnlCopyPacket,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "gonfq: queue %d: %v\n", q, err)
			os.Exit(1)
		}
		handles = append(handles, nf)
		fn := func(a nfqueue.Attribute) int {
			if a.PacketID != nil {
				if err := nf.SetVerdict(*a.PacketID, nfqueue.NfAccept); err != nil {
					errs.Add(1)
				} else {
					verdicts.Add(1)
				}
			}
			return 0
		}
		errfn := func(e error) int {
			var oe *netlink.OpError
			if errors.As(e, &oe) && errors.Is(oe.Err, syscall.ENOBUFS) {
				enobufs.Add(1)
				return 0 // keep reading
			}
			if ctx.Err() != nil {
				return 1
			}
			errs.Add(1)
			return 0
		}
		if err := nf.RegisterWithErrorFunc(ctx, fn, errfn); err != nil {
			fmt.Fprintf(os.Stderr, "gonfq: register queue %d: %v\n", q, err)
			os.Exit(1)
		}
	}
	fmt.Printf("gonfq: queues %d-%d ready\n", first, last)
	<-ctx.Done()
	for _, h := range handles {
		h.Close()
	}
	fmt.Printf("gonfq: verdicts %d enobufs %d errors %d\n", verdicts.Load(), enobufs.Load(), errs.Load())
}

func parseQueues(s string) (uint16, uint16, error) {
	var a, b uint16
	if n, _ := fmt.Sscanf(s, "%d-%d", &a, &b); n == 2 && a <= b {
		return a, b, nil
	}
	if n, _ := fmt.Sscanf(s, "%d", &a); n == 1 {
		return a, a, nil
	}
	return 0, 0, fmt.Errorf("-queues %q: N or N-M", s)
}
