package main

import (
	"bufio"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// batchGC is the garbage collector's setting for a replay, a batch job
// whose heap is almost all live tables: the per-packet path allocates
// nothing, so the collections that the tables' growth triggers (one each
// time the heap doubles) find no garbage, and on one core they cost about
// a tenth of a flood replay's time. A replay therefore collects only when
// its heap nears limit: half of the machine's memory (memTotal, from
// /proc/meminfo), or 1 GiB when that is unknown. The maximum resident set
// stays what it was (the same 68-82 MB for the bench captures either way).
// A user's GOGC or GOMEMLIMIT is left alone: ok is false then.
func batchGC(getenv func(string) string, memTotal int64) (limit int64, ok bool) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return 0, false
	}
	if memTotal <= 0 {
		return 1 << 30, true
	}
	return memTotal / 2, true
}

// applyBatchGC sets batchGC's policy for this process.
func applyBatchGC() {
	if limit, ok := batchGC(os.Getenv, memTotal()); ok {
		debug.SetMemoryLimit(limit)
		debug.SetGCPercent(-1)
	}
}

// memTotal returns MemTotal from /proc/meminfo in bytes, or 0.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	return parseMemTotal(f)
}

// parseMemTotal reads the "MemTotal: N kB" line of a meminfo file.
func parseMemTotal(r io.Reader) int64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, found := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !found {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb <= 0 {
			return 0
		}
		return kb << 10
	}
	return 0
}
