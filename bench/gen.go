// Package bench holds filterd's traffic generators and the benchmarks that
// run the engine over real and generated captures.
package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sort"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// FloodConfig describes a generated capture: a SYN flood from spoofed
// sources mixed with legitimate HTTP sessions, all inside the benchmarking
// range 198.18.0.0/15 (or the ULA fd00:198:18::/48 for IPv6).
type FloodConfig struct {
	Start      time.Time  // timestamp of the first packet; zero means 2026-01-01 UTC
	Server     netip.Addr // the protected host; default 198.18.2.2
	ServerPort uint16     // default 80

	FloodSYNs    int          // number of flood SYNs
	FloodSources int          // number of distinct spoofed sources
	FloodRate    float64      // SYNs per second; default 100,000
	FloodPrefix  netip.Prefix // sources are taken from here; default 198.19.0.0/16 (IPv6: fd00:198:18:ff::/64)

	Sessions      int          // legitimate HTTP sessions, spread over the flood
	ClientPrefix  netip.Prefix // clients are taken from here; default 198.18.1.0/24 (IPv6: fd00:198:18:1::/64)
	ResponseBytes int          // HTTP response body size; default 2,000
	RTT           time.Duration

	Seed uint64 // random seed; the same config gives the same bytes
}

// Allowed ranges: generated addresses must stay inside these.
var (
	benchV4 = netip.MustParsePrefix("198.18.0.0/15")
	benchV6 = netip.MustParsePrefix("fd00:198:18::/48")
)

func (c *FloodConfig) setDefaults() error {
	if !c.Server.IsValid() {
		c.Server = netip.MustParseAddr("198.18.2.2")
	}
	v6 := c.Server.Is6()
	if c.ServerPort == 0 {
		c.ServerPort = 80
	}
	if c.FloodRate <= 0 {
		c.FloodRate = 100_000
	}
	if !c.FloodPrefix.IsValid() {
		if v6 {
			c.FloodPrefix = netip.MustParsePrefix("fd00:198:18:ff::/64")
		} else {
			c.FloodPrefix = netip.MustParsePrefix("198.19.0.0/16")
		}
	}
	if !c.ClientPrefix.IsValid() {
		if v6 {
			c.ClientPrefix = netip.MustParsePrefix("fd00:198:18:1::/64")
		} else {
			c.ClientPrefix = netip.MustParsePrefix("198.18.1.0/24")
		}
	}
	if c.ResponseBytes <= 0 {
		c.ResponseBytes = 2000
	}
	if c.RTT <= 0 {
		c.RTT = time.Millisecond
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	allowed := benchV4
	if v6 {
		allowed = benchV6
	}
	for _, p := range []netip.Prefix{c.FloodPrefix, c.ClientPrefix, netip.PrefixFrom(c.Server, c.Server.BitLen())} {
		if p.Addr().Is6() != v6 {
			return fmt.Errorf("generator: %v is not of the server's family", p)
		}
		if !allowed.Contains(p.Addr()) || p.Bits() < allowed.Bits() {
			return fmt.Errorf("generator: %v is outside %v; generated traffic stays in the benchmarking range", p, allowed)
		}
	}
	if c.FloodSYNs > 0 && c.FloodSources <= 0 {
		return errors.New("generator: FloodSYNs needs FloodSources > 0")
	}
	hostBits := c.FloodPrefix.Addr().BitLen() - c.FloodPrefix.Bits()
	if hostBits < 63 && uint64(c.FloodSources) > uint64(1)<<hostBits {
		return fmt.Errorf("generator: %d sources do not fit in %v", c.FloodSources, c.FloodPrefix)
	}
	if hostBits < 63 && uint64(c.Sessions) > uint64(1)<<hostBits-2 {
		return fmt.Errorf("generator: %d clients do not fit in %v", c.Sessions, c.ClientPrefix)
	}
	return nil
}

// nthAddr returns the n-th address after the prefix's base (n >= 0).
func nthAddr(p netip.Prefix, n uint64) netip.Addr {
	b := p.Masked().Addr().As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	lo2 := lo + n
	if lo2 < lo {
		hi++
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo2)
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

// GenStats counts what a generator wrote.
type GenStats struct {
	Packets      int
	FloodSYNs    int
	Sessions     int
	SessionPkts  int
	FloodSources int
	Duration     time.Duration
	ClientAddrs  []netip.Addr // legitimate clients, in session order
}

// FloodSource returns the address of flood source i (0-based) for cfg.
func FloodSource(cfg FloodConfig, i int) (netip.Addr, error) {
	if err := cfg.setDefaults(); err != nil {
		return netip.Addr{}, err
	}
	return nthAddr(cfg.FloodPrefix, uint64(i)+1), nil
}

type genPkt struct {
	at   time.Duration
	data []byte
}

// WriteFlood writes the capture described by cfg to w as an Ethernet pcap
// with nanosecond timestamps, in time order.
func WriteFlood(w io.Writer, cfg FloodConfig) (GenStats, error) {
	if err := cfg.setDefaults(); err != nil {
		return GenStats{}, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x66696c7465726421))
	bw := bufio.NewWriterSize(w, 1<<20)
	pw := pcapgo.NewWriterNanos(bw)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return GenStats{}, err
	}
	st := GenStats{FloodSources: cfg.FloodSources, Sessions: cfg.Sessions}
	floodDur := time.Duration(float64(cfg.FloodSYNs) / cfg.FloodRate * float64(time.Second))

	// Legitimate sessions are few: build them all, then merge with the flood stream.
	var sess []genPkt
	b := newBuilder(cfg.Server.Is6())
	for i := 0; i < cfg.Sessions; i++ {
		client := nthAddr(cfg.ClientPrefix, uint64(i)+2)
		st.ClientAddrs = append(st.ClientAddrs, client)
		var start time.Duration
		if cfg.Sessions > 1 {
			start = time.Duration(int64(floodDur) * int64(i) / int64(cfg.Sessions))
		}
		sess = append(sess, b.httpSession(rng, start, cfg, client, uint16(40000+i))...)
	}
	sort.SliceStable(sess, func(i, j int) bool { return sess[i].at < sess[j].at })
	st.SessionPkts = len(sess)

	perSrc := make([]uint16, 0)
	if cfg.FloodSources > 0 {
		perSrc = make([]uint16, cfg.FloodSources)
		for i := range perSrc {
			perSrc[i] = uint16(1024 + rng.IntN(64511))
		}
	}

	write := func(at time.Duration, data []byte) error {
		t := cfg.Start.Add(at)
		st.Packets++
		if at > st.Duration {
			st.Duration = at
		}
		return pw.WritePacket(gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: len(data)}, data)
	}
	si := 0
	for n := 0; n < cfg.FloodSYNs; n++ {
		at := time.Duration(float64(n) / cfg.FloodRate * float64(time.Second))
		for si < len(sess) && sess[si].at <= at {
			if err := write(sess[si].at, sess[si].data); err != nil {
				return st, err
			}
			si++
		}
		// Interleave sources: source k sends its j-th SYN at n = j*sources + k.
		src := n % cfg.FloodSources
		sport := perSrc[src] + uint16(n/cfg.FloodSources)
		frame := b.tcp(nthAddr(cfg.FloodPrefix, uint64(src)+1), cfg.Server, sport, cfg.ServerPort, rng.Uint32(), 0, packetSYN, 64240, true, nil)
		if err := write(at, frame); err != nil {
			return st, err
		}
		st.FloodSYNs++
	}
	for ; si < len(sess); si++ {
		if err := write(sess[si].at, sess[si].data); err != nil {
			return st, err
		}
	}
	return st, bw.Flush()
}

const (
	packetFIN = 0x01
	packetSYN = 0x02
	packetPSH = 0x08
	packetACK = 0x10
)

// builder writes Ethernet+IP+TCP frames with valid checksums.
type builder struct {
	v6 bool
	id uint16
}

func newBuilder(v6 bool) *builder { return &builder{v6: v6} }

var (
	clientMAC = [6]byte{0x02, 0x00, 0xc6, 0x12, 0x01, 0x02}
	serverMAC = [6]byte{0x02, 0x00, 0xc6, 0x12, 0x02, 0x02}
)

// tcp returns one Ethernet frame. synOpts adds MSS, SACK-permitted and window
// scale 7 as Linux puts on a SYN.
func (b *builder) tcp(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags uint8, win uint16, synOpts bool, payload []byte) []byte {
	var opts []byte
	if synOpts {
		opts = []byte{2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7, 1, 1} // MSS 1460, SACK_PERM, NOP, WS 7, NOP, NOP
	}
	tcpLen := 20 + len(opts)
	l4 := make([]byte, tcpLen+len(payload))
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], ack)
	l4[12] = byte(tcpLen/4) << 4
	l4[13] = flags
	binary.BigEndian.PutUint16(l4[14:], win)
	copy(l4[20:], opts)
	copy(l4[tcpLen:], payload)
	binary.BigEndian.PutUint16(l4[16:], l4Checksum(src, dst, 6, l4))

	frame := make([]byte, 14, 14+40+len(l4))
	toServer := dst.Is4() && dst.As4()[2] == 2 || dst.Is6() && dst.As16()[7] == 2
	if toServer {
		copy(frame[0:], serverMAC[:])
		copy(frame[6:], clientMAC[:])
	} else {
		copy(frame[0:], clientMAC[:])
		copy(frame[6:], serverMAC[:])
	}
	if b.v6 {
		binary.BigEndian.PutUint16(frame[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6] = 6
		ip[7] = 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		frame = append(frame, ip...)
	} else {
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		b.id++
		binary.BigEndian.PutUint16(ip[4:], b.id)
		ip[6] = 0x40 // DF
		ip[8] = 64
		ip[9] = 6
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip, 0)))
		frame = append(frame, ip...)
	}
	return append(frame, l4...)
}

// httpSession returns the packets of one HTTP/1.0 exchange with a
// three-way handshake and a FIN close, the server answering after one RTT.
func (b *builder) httpSession(rng *rand.Rand, start time.Duration, cfg FloodConfig, client netip.Addr, cport uint16) []genPkt {
	srv, sport := cfg.Server, cfg.ServerPort
	c, s := rng.Uint32(), rng.Uint32()
	rtt := cfg.RTT
	req := []byte("GET /index.html HTTP/1.0\r\nHost: server\r\nUser-Agent: filterd-gen/1.0\r\n\r\n")
	var out []genPkt
	at := start
	add := func(d time.Duration, frame []byte) {
		at += d
		out = append(out, genPkt{at: at, data: frame})
	}
	add(0, b.tcp(client, srv, cport, sport, c, 0, packetSYN, 64240, true, nil))
	add(rtt/2, b.tcp(srv, client, sport, cport, s, c+1, packetSYN|packetACK, 65160, true, nil))
	c++
	s++
	add(rtt/2, b.tcp(client, srv, cport, sport, c, s, packetACK, 502, false, nil))
	add(10*time.Microsecond, b.tcp(client, srv, cport, sport, c, s, packetPSH|packetACK, 502, false, req))
	c += uint32(len(req))
	add(rtt/2, b.tcp(srv, client, sport, cport, s, c, packetACK, 509, false, nil))
	body := make([]byte, cfg.ResponseBytes)
	copy(body, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
	for i := 46; i < len(body); i++ {
		body[i] = 'a' + byte(i%26)
	}
	for off := 0; off < len(body); off += 1448 {
		end := min(off+1448, len(body))
		add(10*time.Microsecond, b.tcp(srv, client, sport, cport, s, c, packetPSH|packetACK, 509, false, body[off:end]))
		s += uint32(end - off)
	}
	add(rtt/2, b.tcp(client, srv, cport, sport, c, s, packetACK, 501, false, nil))
	add(10*time.Microsecond, b.tcp(srv, client, sport, cport, s, c, packetFIN|packetACK, 509, false, nil))
	s++
	add(rtt/2, b.tcp(client, srv, cport, sport, c, s, packetFIN|packetACK, 501, false, nil))
	c++
	add(rtt/2, b.tcp(srv, client, sport, cport, s, c, packetACK, 509, false, nil))
	return out
}

func sum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func l4Checksum(src, dst netip.Addr, proto uint8, l4 []byte) uint16 {
	var s uint32
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		s = sum(a[:], s)
		s = sum(b[:], s)
	} else {
		a, b := src.As16(), dst.As16()
		s = sum(a[:], s)
		s = sum(b[:], s)
	}
	s += uint32(proto) + uint32(len(l4))
	s = sum(l4, s)
	return ^fold(s)
}
