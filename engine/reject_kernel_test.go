package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/filterd/filterd/internal/netns"
	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// rejectCase is one packet sent to a host whose iptables REJECTs it.
type rejectCase struct {
	name string
	with ruleset.RejectWith
	pkt  []byte
}

var (
	rjA4 = netip.MustParseAddr("198.18.2.1")
	rjB4 = netip.MustParseAddr("198.18.2.2")
	rjA6 = netip.MustParseAddr("fd00:198:18:2::1")
	rjB6 = netip.MustParseAddr("fd00:198:18:2::2")
)

// buildIP wraps an L4 segment in an IPv4 or IPv6 header and fills the L4
// checksum.
func buildIP(src, dst netip.Addr, proto uint8, l4 []byte, tos uint8) []byte {
	csumOff := map[uint8]int{1: 2, 6: 16, 17: 6, 58: 2}[proto]
	if src.Is4() {
		ip := []byte{0x45, tos, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0}
		ip = append(ip, src.AsSlice()...)
		ip = append(ip, dst.AsSlice()...)
		binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[10:12], Checksum(0, ip))
		pkt := append(ip, l4...)
		binary.BigEndian.PutUint16(pkt[20+csumOff:], rejectL4Checksum(pkt[:20], false, proto, pkt[20:]))
		return pkt
	}
	ip := []byte{0x60, 0, 0, 0, 0, 0, proto, 64}
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(l4)))
	ip = append(ip, src.AsSlice()...)
	ip = append(ip, dst.AsSlice()...)
	pkt := append(ip, l4...)
	binary.BigEndian.PutUint16(pkt[40+csumOff:], rejectL4Checksum(pkt[:40], true, proto, pkt[40:]))
	return pkt
}

func tcpSeg(sport, dport uint16, seq, ack uint32, flags uint8, payload int) []byte {
	t := make([]byte, 20+payload)
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 64240)
	for i := 20; i < len(t); i++ {
		t[i] = byte(i)
	}
	return t
}

func udpSeg(sport, dport uint16, payload int) []byte {
	u := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+payload))
	for i := 8; i < len(u); i++ {
		u[i] = byte(i * 7)
	}
	return u
}

// rejectRules are the REJECT rules loaded into the kernel for the cases:
// the destination port selects the REJECT type.
const rejectRules4 = `*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 1000 -j REJECT --reject-with tcp-reset
-A INPUT -p tcp --dport 1001 -j REJECT
-A INPUT -p udp --dport 1002 -j REJECT
-A INPUT -p udp --dport 1003 -j REJECT --reject-with icmp-host-prohibited
-A INPUT -p udp --dport 1004 -j REJECT --reject-with icmp-admin-prohibited
-A INPUT -p udp --dport 1005 -j REJECT --reject-with icmp-net-unreachable
COMMIT
`

const rejectRules6 = `*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 1000 -j REJECT --reject-with tcp-reset
-A INPUT -p udp --dport 1002 -j REJECT
-A INPUT -p udp --dport 1003 -j REJECT --reject-with icmp6-adm-prohibited
-A INPUT -p udp --dport 1004 -j REJECT --reject-with icmp6-addr-unreachable
COMMIT
`

func rejectCases() []rejectCase {
	return []rejectCase{
		{"v4 SYN rst", ruleset.RejectTCPReset, buildIP(rjA4, rjB4, 6, tcpSeg(40000, 1000, 1000000, 0, 0x02, 0), 0)},
		{"v4 SYN with data rst", ruleset.RejectTCPReset, buildIP(rjA4, rjB4, 6, tcpSeg(40001, 1000, 0xfffffff0, 0, 0x02, 33), 0)},
		{"v4 ACK PSH rst", ruleset.RejectTCPReset, buildIP(rjA4, rjB4, 6, tcpSeg(40002, 1000, 5000, 777777, 0x18, 100), 0)},
		{"v4 FIN rst", ruleset.RejectTCPReset, buildIP(rjA4, rjB4, 6, tcpSeg(40003, 1000, 5000, 0, 0x01, 0), 0)},
		{"v4 SYN port-unreach", ruleset.RejectICMPPortUnreachable, buildIP(rjA4, rjB4, 6, tcpSeg(40004, 1001, 1, 0, 0x02, 0), 0x10)},
		{"v4 UDP port-unreach big", ruleset.RejectICMPPortUnreachable, buildIP(rjA4, rjB4, 17, udpSeg(40005, 1002, 1200), 0xb8)},
		{"v4 UDP host-prohib", ruleset.RejectICMPHostProhibited, buildIP(rjA4, rjB4, 17, udpSeg(40006, 1003, 10), 0)},
		{"v4 UDP admin-prohib", ruleset.RejectICMPAdminProhibited, buildIP(rjA4, rjB4, 17, udpSeg(40007, 1004, 10), 0)},
		{"v4 UDP net-unreach", ruleset.RejectICMPNetUnreachable, buildIP(rjA4, rjB4, 17, udpSeg(40008, 1005, 0), 0)},
		{"v6 SYN rst", ruleset.RejectTCPReset, buildIP(rjA6, rjB6, 6, tcpSeg(40010, 1000, 99, 0, 0x02, 0), 0)},
		{"v6 ACK rst", ruleset.RejectTCPReset, buildIP(rjA6, rjB6, 6, tcpSeg(40011, 1000, 99, 123456, 0x10, 50), 0)},
		{"v6 UDP port-unreach big", ruleset.RejectICMP6PortUnreachable, buildIP(rjA6, rjB6, 17, udpSeg(40012, 1002, 1400), 0)},
		{"v6 UDP adm-prohib", ruleset.RejectICMP6AdmProhibited, buildIP(rjA6, rjB6, 17, udpSeg(40013, 1003, 20), 0)},
		{"v6 UDP addr-unreach", ruleset.RejectICMP6AddrUnreachable, buildIP(rjA6, rjB6, 17, udpSeg(40014, 1004, 20), 0)},
	}
}

// TestRejectBuilder checks AppendReject on its own: fields the kernel
// sets, checksums that verify, no reply where the kernel sends none.
func TestRejectBuilder(t *testing.T) {
	for _, c := range rejectCases() {
		t.Run(c.name, func(t *testing.T) {
			p := decodeForTest(t, c.pkt)
			out, ok := AppendReject(nil, c.pkt, p, c.with)
			if !ok {
				t.Fatal("no reply")
			}
			r := decodeForTest(t, out)
			if r.Src != p.Dst || r.Dst != p.Src {
				t.Errorf("addresses %v -> %v, want %v -> %v", r.Src, r.Dst, p.Dst, p.Src)
			}
			if r.Checksum == packet.ChecksumBad {
				t.Error("reply checksum does not verify")
			}
			if c.with == ruleset.RejectTCPReset {
				if r.Proto != packet.ProtoTCP || r.TCPFlags&packet.TCPRst == 0 || r.SrcPort != p.DstPort || r.DstPort != p.SrcPort {
					t.Errorf("not a RST for the segment: %+v", r)
				}
				if r.TTL != 64 || r.Window != 0 {
					t.Errorf("TTL %d window %d, want 64, 0", r.TTL, r.Window)
				}
				return
			}
			if !r.IsICMP() || !r.Inner.Valid || r.Inner.SrcPort != p.SrcPort || r.Inner.DstPort != p.DstPort {
				t.Errorf("ICMP error does not quote the packet: %+v", r)
			}
			max := 576
			if p.Family == packet.IPv6 {
				max = 1280
			}
			if len(out) > max {
				t.Errorf("reply %d bytes, more than %d", len(out), max)
			}
		})
	}
	// No reply: RST to a RST, ICMP error to an ICMP error, to a fragment.
	rst := buildIP(rjA4, rjB4, 6, tcpSeg(1, 2, 3, 4, 0x04, 0), 0)
	if _, ok := AppendReject(nil, rst, decodeForTest(t, rst), ruleset.RejectTCPReset); ok {
		t.Error("RST answered with a RST")
	}
	icmpErr := buildIP(rjA4, rjB4, 1, append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, buildIP(rjB4, rjA4, 17, udpSeg(1, 2, 0), 0)...), 0)
	binary.BigEndian.PutUint16(icmpErr[22:], 0) // ICMPv4: no pseudo-header
	binary.BigEndian.PutUint16(icmpErr[22:], Checksum(0, icmpErr[20:]))
	if _, ok := AppendReject(nil, icmpErr, decodeForTest(t, icmpErr), ruleset.RejectICMPPortUnreachable); ok {
		t.Error("ICMP error answered with an ICMP error")
	}
}

func decodeForTest(t *testing.T, b []byte) *packet.Packet {
	t.Helper()
	p := &packet.Packet{ExtHeaders: make([]uint8, 0, maxExtHeaders)}
	p.Reset()
	if err := NewDecoder().Decode(b, p); err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	return p
}

// TestKernelRejectReplies sends each case to a namespace whose iptables
// REJECTs it, captures the kernel's reply, and compares it byte for byte
// with AppendReject's (the IPv4 ID of ICMP errors and the IPv6 flow label
// come from the kernel's generators and are masked).
func TestKernelRejectReplies(t *testing.T) {
	a := netns.ForTest(t, "fdrej")
	b := netns.ForTest(t, "fdrej")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := netns.Veth(ctx, a, "eth0", "02:00:00:00:00:01", b, "eth0", "02:00:00:00:00:02"); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		ns        *netns.NS
		v4, v6    netip.Addr
		peerMAC   string
		peer4, p6 netip.Addr
	}{{a, rjA4, rjA6, "02:00:00:00:00:02", rjB4, rjB6}, {b, rjB4, rjB6, "02:00:00:00:00:01", rjA4, rjA6}} {
		for _, args := range [][]string{
			{"addr", "add", x.v4.String() + "/24", "dev", "eth0"},
			{"addr", "add", x.v6.String() + "/64", "dev", "eth0", "nodad"},
			{"neigh", "replace", x.peer4.String(), "lladdr", x.peerMAC, "dev", "eth0", "nud", "permanent"},
			{"neigh", "replace", x.p6.String(), "lladdr", x.peerMAC, "dev", "eth0", "nud", "permanent"},
		} {
			if _, err := x.ns.Run(ctx, "ip", args...); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Without TX checksum offload the RST leaves with its final checksum
	// (otherwise the capture sees the partial pseudo-header sum).
	if _, err := b.Run(ctx, "ethtool", "-K", "eth0", "tx", "off"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"net.ipv4.icmp_ratelimit", "net.ipv6.icmp.ratelimit"} {
		if err := b.Sysctl(s, "0"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.RunInput(ctx, []byte(rejectRules4), "iptables-restore"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RunInput(ctx, []byte(rejectRules6), "ip6tables-restore"); err != nil {
		t.Fatal(err)
	}

	for _, c := range rejectCases() {
		t.Run(c.name, func(t *testing.T) {
			var got []byte
			err := a.Do(func() error {
				var err error
				got, err = sendAndCapture(c.pkt)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			p := decodeForTest(t, c.pkt)
			want, ok := AppendReject(nil, c.pkt, p, c.with)
			if !ok {
				t.Fatal("AppendReject: no reply, the kernel sent one")
			}
			got, want = maskReply(got), maskReply(want)
			if !bytes.Equal(got, want) {
				t.Errorf("reply differs from the kernel's\nkernel:  %s\nfilterd: %s", hex.EncodeToString(got), hex.EncodeToString(want))
			}
		})
	}
}

// maskReply zeroes what the kernel picks from its own generators: the IPv4
// ID (and so the header checksum) of ICMP errors, the IPv6 flow label.
func maskReply(b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) >= 20 && b[0]>>4 == 4 && b[9] == 1 {
		b[4], b[5], b[10], b[11] = 0, 0, 0, 0
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		b[1] &= 0xf0
		b[2], b[3] = 0, 0
	}
	return b
}

// sendAndCapture sends pkt from a raw socket and returns the first IP
// packet that comes back on eth0 from the peer (within 2 s).
func sendAndCapture(pkt []byte) ([]byte, error) {
	ifc, err := net.InterfaceByName("eth0")
	if err != nil {
		return nil, err
	}
	v6 := pkt[0]>>4 == 6
	proto := uint16(unix.ETH_P_IP)
	if v6 {
		proto = unix.ETH_P_IPV6
	}
	cap, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(proto)))
	if err != nil {
		return nil, err
	}
	defer unix.Close(cap)
	if err := unix.Bind(cap, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifc.Index}); err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(cap, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	r, err := NewRejecter()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := r.Send(pkt); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(cap, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		got := buf[:n]
		if v6 && (len(got) < 40 || got[6] == 58 && got[40] >= 128) {
			continue // neighbour discovery and the like
		}
		return bytes.Clone(got), nil
	}
	return nil, errTimeout
}

var errTimeout = &net.OpError{Op: "capture", Err: unix.ETIMEDOUT}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
