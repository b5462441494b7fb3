package ruleset

import (
	"sync/atomic"
	"time"

	"github.com/filterd/filterd/packet"
	"golang.org/x/time/rate"
)

// Defaults of iptables' limit and hashlimit matches.
const (
	DefaultLimitBurst      = 5     // --limit-burst, --hashlimit-burst
	DefaultHashlimitExpire = 10000 // --hashlimit-htable-expire, milliseconds
	DefaultHashlimitGC     = 1000  // --hashlimit-htable-gcinterval, milliseconds
	DefaultHashlimitSize   = 8192  // --hashlimit-htable-size on a host with more than 1 GiB of RAM
)

// DefaultLimitRate is -m limit's default --limit, 3/hour.
var DefaultLimitRate = Rate{Count: 3, Unit: PerHour}

// Seconds returns the length of the unit in seconds.
func (u RateUnit) Seconds() float64 {
	switch u {
	case PerMinute:
		return 60
	case PerHour:
		return 3600
	case PerDay:
		return 86400
	}
	return 1
}

// PerSecond returns the rate in events per second.
func (r Rate) PerSecond() float64 {
	return float64(r.Count) / r.Unit.Seconds()
}

// limitMatcher is -m limit (xt_limit): one token bucket per rule, full at
// the start, refilled at the rate up to the burst, driven by the packet's
// timestamp. As in the kernel, the bucket starts anew when the rules are
// reloaded.
type limitMatcher struct {
	lim  *rate.Limiter
	inv  bool
	last atomic.Int64 // latest packet time seen (UnixNano)
	// emptyUntil (UnixNano): before then the bucket holds less than one
	// token, so AllowN fails. A failed AllowN changes nothing in the
	// limiter, so a packet before emptyUntil is refused without taking the
	// limiter's lock: in a flood, all but a few packets a second.
	emptyUntil atomic.Int64
}

func (*limitMatcher) stateful() {}

func newLimitMatcher(m *LimitMatch) *limitMatcher {
	r := m.Rate
	if r.Count == 0 {
		r = DefaultLimitRate
	}
	b := int(m.Burst)
	if b == 0 {
		b = DefaultLimitBurst
	}
	return &limitMatcher{lim: rate.NewLimiter(rate.Limit(r.PerSecond()), b), inv: m.Invert}
}

func (m *limitMatcher) match(p *packet.Packet) bool {
	t := monotonic(&m.last, p.Meta.Time)
	ns := t.UnixNano()
	if ns < m.emptyUntil.Load() {
		return m.inv
	}
	if m.lim.AllowN(t, 1) {
		return !m.inv
	}
	// Empty: tokens grow linearly from tok at t, reaching one after
	// (1-tok)/rate seconds (rounded down: at worst AllowN is asked again
	// a nanosecond early). Other workers taking tokens meanwhile only make
	// the bucket emptier.
	if r, tok := float64(m.lim.Limit()), m.lim.TokensAt(t); r > 0 && tok < 1 {
		m.emptyUntil.Store(ns + int64((1-tok)/r*1e9))
	}
	return m.inv
}

// monotonic returns t, or the latest time already seen if t is earlier:
// packets of a capture can be slightly out of order, and the kernel's clock
// (jiffies) never goes back; a bucket must not be refilled twice for the
// same interval.
func monotonic(last *atomic.Int64, t time.Time) time.Time {
	ns := t.UnixNano()
	for {
		l := last.Load()
		if ns <= l {
			if ns == l {
				return t
			}
			return time.Unix(0, l)
		}
		if last.CompareAndSwap(l, ns) {
			return t
		}
	}
}

// fullBucketTime returns a time so long before t that a bucket emptied then
// is full again at t.
func fullBucketTime(t time.Time, perSecond float64, burst int) time.Time {
	if perSecond <= 0 {
		return t
	}
	fill := time.Duration(float64(burst)/perSecond*float64(time.Second)) + time.Second
	return t.Add(-fill)
}
