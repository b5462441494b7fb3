package engine

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// RateLimitedWriter passes at most Burst writes at once and PerSec writes a
// second on average to W (a token bucket, as the kernel's printk rate limit
// keeps a flood from flooding the log); the rest are counted and dropped.
// Each Write is one LOG line. It is safe for concurrent use.
type RateLimitedWriter struct {
	w          io.Writer
	perSec     float64
	burst      float64
	now        func() time.Time
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed atomic.Uint64
	pending    uint64 // suppressed since the last line written
	prepaid    int    // lines allowed by Allow, not yet written
}

// NewRateLimitedWriter returns a limiter writing to w; now is the clock
// (nil: time.Now).
func NewRateLimitedWriter(w io.Writer, perSec float64, burst int, now func() time.Time) *RateLimitedWriter {
	if now == nil {
		now = time.Now
	}
	return &RateLimitedWriter{w: w, perSec: perSec, burst: float64(burst), tokens: float64(burst), now: now}
}

// Allow takes a token for a line about to be written and reports whether
// there was one; if not, the line counts as suppressed. A caller that
// checks before formatting a line (formatting is the costly part under a
// flood) then writes it with Write, which does not take a second token.
func (l *RateLimitedWriter) Allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.take() {
		return false
	}
	l.prepaid++
	return true
}

// take refills the bucket and takes a token, or counts a suppressed line.
// l.mu is held.
func (l *RateLimitedWriter) take() bool {
	t := l.now()
	if !l.last.IsZero() && t.After(l.last) {
		l.tokens += t.Sub(l.last).Seconds() * l.perSec
		if l.tokens > l.burst {
			l.tokens = l.burst
		}
	}
	if t.After(l.last) {
		l.last = t
	}
	if l.tokens < 1 {
		l.suppressed.Add(1)
		l.pending++
		return false
	}
	l.tokens--
	return true
}

// Write writes b if a token was taken for it by Allow or the bucket has
// one; otherwise it counts it as suppressed. It never fails for
// suppression: the line is dropped on purpose. After a run of suppressed
// lines, the next line written is preceded by a note of how many were
// dropped.
func (l *RateLimitedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.prepaid > 0 {
		l.prepaid--
	} else if !l.take() {
		return len(b), nil
	}
	if l.pending > 0 {
		var note [64]byte
		n := append(note[:0], "filterd: LOG rate limit: "...)
		n = appendUint(n, l.pending)
		n = append(n, " lines suppressed\n"...)
		l.pending = 0
		if _, err := l.w.Write(n); err != nil {
			return 0, err
		}
	}
	return l.w.Write(b)
}

// Suppressed returns how many lines were dropped.
func (l *RateLimitedWriter) Suppressed() uint64 { return l.suppressed.Load() }

func appendUint(b []byte, v uint64) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}
