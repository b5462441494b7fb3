package nfqbatch

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// KernelStats is one line of /proc/net/netfilter/nfnetlink_queue (the
// kernel's seq_printf in nfnetlink_queue.c: queue number, peer portid,
// queue_total, copy mode, copy range, queue_dropped, queue_user_dropped,
// id_sequence, 1).
//
// Every packet the NFQUEUE target hands to a bound queue either gets an id
// (IDSequence counts them; it is delivered to the socket, or counted in
// UserDropped when the socket buffer was full) or is counted in
// QueueDropped when Waiting reached the queue length.
type KernelStats struct {
	Queue        uint16
	PortID       uint32
	Waiting      uint32 // queue_total: packets waiting for a verdict
	CopyMode     uint8
	CopyRange    uint32
	QueueDropped uint32 // queue full
	UserDropped  uint32 // netlink socket full (the reader sees ENOBUFS)
	IDSequence   uint32 // last id given out
}

// KernelStatsPath is the kernel's table of queues for the calling thread's
// network namespace.
const KernelStatsPath = "/proc/thread-self/net/netfilter/nfnetlink_queue"

// ReadKernelStats returns the kernel's counters of every bound queue in the
// calling thread's network namespace, keyed by queue number.
func ReadKernelStats() (map[uint16]KernelStats, error) {
	b, err := os.ReadFile(KernelStatsPath)
	if err != nil {
		return nil, fmt.Errorf("nfqbatch: %w", err)
	}
	return ParseKernelStats(string(b))
}

// ParseKernelStats parses the text of /proc/net/netfilter/nfnetlink_queue.
func ParseKernelStats(text string) (map[uint16]KernelStats, error) {
	out := map[uint16]KernelStats{}
	for i, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return nil, fmt.Errorf("nfqbatch: nfnetlink_queue line %d: %d fields, want at least 8: %q", i+1, len(f), line)
		}
		var v [8]uint64
		for j := range v {
			n, err := strconv.ParseUint(f[j], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("nfqbatch: nfnetlink_queue line %d field %d: %w", i+1, j+1, err)
			}
			v[j] = n
		}
		s := KernelStats{Queue: uint16(v[0]), PortID: uint32(v[1]), Waiting: uint32(v[2]), CopyMode: uint8(v[3]),
			CopyRange: uint32(v[4]), QueueDropped: uint32(v[5]), UserDropped: uint32(v[6]), IDSequence: uint32(v[7])}
		out[s.Queue] = s
	}
	return out, nil
}
