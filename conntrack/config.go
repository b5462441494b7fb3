package conntrack

import "time"

// Switch is an on/off setting whose zero value means "the kernel's default".
// It lets a zero Config describe a kernel with default sysctls.
type Switch uint8

// Switch values.
const (
	Default Switch = iota // the kernel's default for this setting
	On
	Off
)

func (s Switch) resolve(def bool) bool {
	switch s {
	case On:
		return true
	case Off:
		return false
	}
	return def
}

// Timeouts are the conntrack timeouts, named after the kernel's sysctls
// (net.netfilter.nf_conntrack_*_timeout_*). A zero field takes the kernel's
// default.
type Timeouts struct {
	TCPSynSent     time.Duration // 120 s
	TCPSynRecv     time.Duration // 60 s
	TCPEstablished time.Duration // 5 days
	TCPFinWait     time.Duration // 120 s
	TCPCloseWait   time.Duration // 60 s
	TCPLastAck     time.Duration // 30 s
	TCPTimeWait    time.Duration // 120 s
	TCPClose       time.Duration // 10 s
	TCPSynSent2    time.Duration // 120 s
	TCPMaxRetrans  time.Duration // 300 s (nf_conntrack_tcp_timeout_max_retrans)
	TCPUnack       time.Duration // 300 s (nf_conntrack_tcp_timeout_unacknowledged)
	UDP            time.Duration // 30 s
	UDPStream      time.Duration // 120 s
	ICMP           time.Duration // 30 s
	ICMPv6         time.Duration // 30 s
	Generic        time.Duration // 600 s
	FTPExpect      time.Duration // 300 s (ftp_exp_policy.timeout)
}

// DefaultTimeouts returns the timeouts of Linux nf_conntrack (tcp_timeouts[]
// in nf_conntrack_proto_tcp.c, udp_timeouts[] in nf_conntrack_proto_udp.c,
// nf_ct_icmp_timeout, nf_ct_generic_timeout, ftp_exp_policy).
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSynSent:     2 * time.Minute,
		TCPSynRecv:     60 * time.Second,
		TCPEstablished: 5 * 24 * time.Hour,
		TCPFinWait:     2 * time.Minute,
		TCPCloseWait:   60 * time.Second,
		TCPLastAck:     30 * time.Second,
		TCPTimeWait:    2 * time.Minute,
		TCPClose:       10 * time.Second,
		TCPSynSent2:    2 * time.Minute,
		TCPMaxRetrans:  5 * time.Minute,
		TCPUnack:       5 * time.Minute,
		UDP:            30 * time.Second,
		UDPStream:      120 * time.Second,
		ICMP:           30 * time.Second,
		ICMPv6:         30 * time.Second,
		Generic:        600 * time.Second,
		FTPExpect:      5 * time.Minute,
	}
}

func (t *Timeouts) fill() {
	d := DefaultTimeouts()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&t.TCPSynSent, d.TCPSynSent)
	set(&t.TCPSynRecv, d.TCPSynRecv)
	set(&t.TCPEstablished, d.TCPEstablished)
	set(&t.TCPFinWait, d.TCPFinWait)
	set(&t.TCPCloseWait, d.TCPCloseWait)
	set(&t.TCPLastAck, d.TCPLastAck)
	set(&t.TCPTimeWait, d.TCPTimeWait)
	set(&t.TCPClose, d.TCPClose)
	set(&t.TCPSynSent2, d.TCPSynSent2)
	set(&t.TCPMaxRetrans, d.TCPMaxRetrans)
	set(&t.TCPUnack, d.TCPUnack)
	set(&t.UDP, d.UDP)
	set(&t.UDPStream, d.UDPStream)
	set(&t.ICMP, d.ICMP)
	set(&t.ICMPv6, d.ICMPv6)
	set(&t.Generic, d.Generic)
	set(&t.FTPExpect, d.FTPExpect)
}

// Config configures a Table. The zero value is the kernel's defaults.
type Config struct {
	// Max is the capacity, like nf_conntrack_max (default 262144).
	Max int
	// TCPLoose is nf_conntrack_tcp_loose: pick up established connections
	// mid-stream (kernel default on).
	TCPLoose Switch
	// TCPBeLiberal is nf_conntrack_tcp_be_liberal: only out-of-window RSTs
	// are INVALID (kernel default off).
	TCPBeLiberal Switch
	// TCPMaxRetrans is nf_conntrack_tcp_max_retrans: after this many
	// retransmissions without an acceptable ACK the shorter
	// TCPMaxRetrans timeout applies (default 3).
	TCPMaxRetrans int
	// TCPIgnoreInvalidRST is nf_conntrack_tcp_ignore_invalid_rst: do not
	// mark an out-of-window RST as INVALID (kernel default off).
	TCPIgnoreInvalidRST Switch
	// Checksum is nf_conntrack_checksum: packets from the network with a bad
	// TCP/UDP/ICMP checksum are INVALID (kernel default on).
	Checksum Switch
	// FTPHelper attaches the FTP helper to TCP connections whose original
	// destination port is in FTPPorts, as an explicit "-j CT --helper ftp"
	// assignment does (off by default, as with nf_conntrack_helper=0).
	FTPHelper bool
	// FTPPorts are the FTP control ports (default [21], the ports= module
	// parameter of nf_conntrack_ftp).
	FTPPorts []uint16
	// Timeouts; zero fields take the kernel's defaults.
	Timeouts Timeouts
	// Shards is the number of independently locked shards (rounded up to a
	// power of two; default 64).
	Shards int
	// HashSeed seeds the flow hash. Zero picks a random seed; tests set it
	// for deterministic bucket placement.
	HashSeed uint64
	// Preallocate allocates the entries for Max flows (about 200 bytes
	// each) when the table is made instead of in blocks as it fills, so
	// that a flood filling the table allocates nothing.
	Preallocate bool
	// Prefault maps each block of entries into memory with one system call
	// (Linux: MADV_POPULATE_WRITE) when its first entry is taken, instead of
	// a page fault per 4 KiB page as entries are first written. That is
	// faster in a fresh process, whose memory comes unmapped from the
	// kernel (filterd replay and run set it); a process that makes tables
	// again and again reuses memory already mapped, and the call is then
	// wasted work.
	Prefault bool
}

// DefaultMax is the default capacity (nf_conntrack_max).
const DefaultMax = 262144

const defaultShards = 64

// config is the resolved configuration used at run time.
type config struct {
	max        int64
	prefault   bool
	loose      bool
	beLiberal  bool
	ignoreRST  bool
	maxRetrans uint8
	checksum   bool
	ftp        bool
	ftpPorts   []uint16
	to         Timeouts
	tcpTimeout [tcpStateCount]int64 // ns per state
	tcpRetrans int64
	tcpUnack   int64
	udp        int64
	udpStream  int64
	icmp       int64
	icmpv6     int64
	generic    int64
	ftpExpect  int64
	minTimeout int64 // the least of the timeouts above
}

func (c Config) resolve() config {
	r := config{
		max:        int64(c.Max),
		prefault:   c.Prefault,
		loose:      c.TCPLoose.resolve(true),
		beLiberal:  c.TCPBeLiberal.resolve(false),
		ignoreRST:  c.TCPIgnoreInvalidRST.resolve(false),
		maxRetrans: 3,
		checksum:   c.Checksum.resolve(true),
		ftp:        c.FTPHelper,
		ftpPorts:   append([]uint16(nil), c.FTPPorts...),
		to:         c.Timeouts,
	}
	if c.TCPMaxRetrans > 0 && c.TCPMaxRetrans < 256 {
		r.maxRetrans = uint8(c.TCPMaxRetrans)
	}
	if r.max <= 0 {
		r.max = DefaultMax
	}
	if len(r.ftpPorts) == 0 {
		r.ftpPorts = []uint16{21}
	}
	r.to.fill()
	t := &r.to
	r.tcpTimeout = [tcpStateCount]int64{
		tcpNone:        int64(t.TCPSynSent), // unused: NONE never persists
		tcpSynSent:     int64(t.TCPSynSent),
		tcpSynRecv:     int64(t.TCPSynRecv),
		tcpEstablished: int64(t.TCPEstablished),
		tcpFinWait:     int64(t.TCPFinWait),
		tcpCloseWait:   int64(t.TCPCloseWait),
		tcpLastAck:     int64(t.TCPLastAck),
		tcpTimeWait:    int64(t.TCPTimeWait),
		tcpClose:       int64(t.TCPClose),
		tcpSynSent2:    int64(t.TCPSynSent2),
	}
	r.tcpRetrans = int64(t.TCPMaxRetrans)
	r.tcpUnack = int64(t.TCPUnack)
	r.udp = int64(t.UDP)
	r.udpStream = int64(t.UDPStream)
	r.icmp = int64(t.ICMP)
	r.icmpv6 = int64(t.ICMPv6)
	r.generic = int64(t.Generic)
	r.ftpExpect = int64(t.FTPExpect)
	// The shortest time any entry can be given to live: every expiry is
	// set as now plus one of these.
	r.minTimeout = min(r.tcpRetrans, r.tcpUnack, r.udp, r.udpStream, r.icmp, r.icmpv6, r.generic)
	for _, to := range r.tcpTimeout {
		r.minTimeout = min(r.minTimeout, to)
	}
	return r
}
