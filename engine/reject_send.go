package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// Rejecter sends REJECT replies built by AppendReject from raw sockets
// (IPPROTO_RAW: the IP header is ours) in the calling process's network
// namespace, and applies the kernel's ICMP error rate limits. It is safe for
// concurrent use.
type Rejecter struct {
	fd4, fd6 int
	lim      *ICMPLimiter
}

// NewRejecter opens the raw sockets (needs CAP_NET_RAW). A family whose
// socket cannot be opened (e.g. IPv6 disabled) only fails its sends.
func NewRejecter() (*Rejecter, error) {
	r := &Rejecter{fd4: -1, fd6: -1, lim: NewICMPLimiter()}
	var errs []error
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		errs = append(errs, fmt.Errorf("reject: raw IPv4 socket: %w", err))
	} else {
		r.fd4 = fd
	}
	fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err == nil {
		r.fd6 = fd
	}
	if r.fd4 < 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Close closes the sockets.
func (r *Rejecter) Close() error {
	var err error
	for _, fd := range []int{r.fd4, r.fd6} {
		if fd >= 0 {
			err = errors.Join(err, unix.Close(fd))
		}
	}
	return err
}

// Allow applies the kernel's ICMP error rate limits to a reply for p
// (TCP resets are not limited).
func (r *Rejecter) Allow(p *packet.Packet, with ruleset.RejectWith, now time.Time) bool {
	if with == ruleset.RejectTCPReset {
		return true
	}
	return r.lim.Allow(p.Src, now)
}

// Send sends one reply (a whole IPv4 or IPv6 packet) to its destination.
func (r *Rejecter) Send(pkt []byte) error {
	if len(pkt) < 20 {
		return errors.New("reject: short packet")
	}
	if pkt[0]>>4 == 6 {
		if len(pkt) < 40 || r.fd6 < 0 {
			return errors.New("reject: no IPv6 raw socket")
		}
		sa := &unix.SockaddrInet6{}
		copy(sa.Addr[:], pkt[24:40])
		return unix.Sendto(r.fd6, pkt, 0, sa)
	}
	sa := &unix.SockaddrInet4{}
	copy(sa.Addr[:], pkt[16:20])
	return unix.Sendto(r.fd4, pkt, 0, sa)
}

// ICMPLimiter is the kernel's rate limit on ICMP errors
// (icmp_global_allow and inet_peer_xrlim_allow): globally
// net.ipv4.icmp_msgs_per_sec (1000) with a burst of icmp_msgs_burst (50),
// and per destination one every icmp_ratelimit (1 s) with a burst of 6
// (XRLIM_BURST_FACTOR). Loopback destinations are not limited.
type ICMPLimiter struct {
	mu       sync.Mutex
	peers    map[netip.Addr]peerTokens
	global   float64
	globalAt time.Time
	// PerSec and Burst are the global rate; PeerInterval the per-destination
	// interval (6 of them may be banked).
	PerSec       float64
	Burst        float64
	PeerInterval time.Duration
	// MaxPeers bounds the per-destination table (the oldest half is dropped
	// when it is full).
	MaxPeers int
}

type peerTokens struct {
	tokens time.Duration
	last   time.Time
}

// NewICMPLimiter returns a limiter with the kernel's defaults.
func NewICMPLimiter() *ICMPLimiter {
	return &ICMPLimiter{peers: make(map[netip.Addr]peerTokens), PerSec: 1000, Burst: 50, global: 50,
		PeerInterval: time.Second, MaxPeers: 65536}
}

const xrlimBurstFactor = 6

// Allow reports whether an ICMP error to dst may be sent at now, and takes
// the tokens if so.
func (l *ICMPLimiter) Allow(dst netip.Addr, now time.Time) bool {
	if dst.IsLoopback() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.globalAt) {
		if !l.globalAt.IsZero() {
			l.global += now.Sub(l.globalAt).Seconds() * l.PerSec
			if l.global > l.Burst {
				l.global = l.Burst
			}
		}
		l.globalAt = now
	}
	if l.global < 1 {
		return false
	}
	pt, ok := l.peers[dst]
	if !ok {
		// A new inet_peer starts with rate_last 60 s in the past: a full burst.
		pt = peerTokens{last: now.Add(-60 * time.Second)}
		if len(l.peers) >= l.MaxPeers {
			l.evict(now)
		}
	}
	if now.After(pt.last) {
		pt.tokens += now.Sub(pt.last)
		pt.last = now
	}
	if max := xrlimBurstFactor * l.PeerInterval; pt.tokens > max {
		pt.tokens = max
	}
	allowed := pt.tokens >= l.PeerInterval
	if allowed {
		pt.tokens -= l.PeerInterval
		l.global--
	}
	l.peers[dst] = pt
	return allowed
}

// evict forgets peers whose buckets have refilled (they behave as new ones).
func (l *ICMPLimiter) evict(now time.Time) {
	full := xrlimBurstFactor * l.PeerInterval
	for a, pt := range l.peers {
		if pt.tokens+now.Sub(pt.last) >= full {
			delete(l.peers, a)
		}
	}
	if len(l.peers) >= l.MaxPeers {
		n := 0
		for a := range l.peers {
			delete(l.peers, a)
			n++
			if n >= l.MaxPeers/2 {
				break
			}
		}
	}
}
