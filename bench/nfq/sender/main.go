// Command sender is the traffic generator of bench/nfq/bench.sh: it sends a
// bounded number of 60-byte IPv4 packets (UDP datagrams with a 32-byte
// payload, or Linux-style TCP SYNs with MSS, SACK-permitted, timestamp and
// window-scale options) to one destination from -srcs consecutive source
// addresses starting at -src (addresses the sending interface holds), in
// turn, and source ports cycling so that 64,512 packets in a row are 64,512
// different flows. It writes Ethernet frames on an AF_PACKET socket with
// sendmmsg, bypassing the qdisc, at full speed or paced to a rate. It never
// randomizes or spoofs the source address.
//
// Several sources are what spreads the packets over the queues of
// iptables' --queue-balance: the kernel picks the queue from a hash of the
// source and destination addresses and the protocol only (hash_v4 in
// include/net/netfilter/nf_queue.h), never the ports, so one source sends
// every UDP datagram (and every SYN) to a single queue.
//
// Usage (root, inside the sending namespace):
//
//	sender -if s0 -dmac 02:00:00:00:00:02 -src 198.18.0.32 -srcs 32 -dst 198.18.0.2 -proto udp -dport 53 -count 600000 [-pps 50000]
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	frameLen = 14 + 60
	batch    = 64
)

func main() {
	ifName := flag.String("if", "s0", "interface to send on")
	dmacS := flag.String("dmac", "", "destination MAC address")
	srcS := flag.String("src", "198.18.0.1", "first source address (198.18.0.0/15)")
	srcs := flag.Int("srcs", 1, "number of consecutive source addresses, used in turn (1-256)")
	dstS := flag.String("dst", "198.18.0.2", "destination address (198.18.0.0/15)")
	proto := flag.String("proto", "udp", "udp or syn")
	dport := flag.Int("dport", 53, "destination port")
	count := flag.Int("count", 100000, "packets to send (bounded)")
	pps := flag.Int("pps", 0, "rate in packets per second (0: as fast as possible)")
	flag.Parse()
	if err := run(*ifName, *dmacS, *srcS, *srcs, *dstS, *proto, uint16(*dport), *count, *pps); err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		os.Exit(1)
	}
}

// flows is how many packets in a row belong to different flows.
const flows = 64512

func run(ifName, dmacS, srcS string, nsrc int, dstS, proto string, dport uint16, count, pps int) error {
	bench := netip.MustParsePrefix("198.18.0.0/15")
	src, err := netip.ParseAddr(srcS)
	if err != nil || !bench.Contains(src) {
		return fmt.Errorf("-src %q: need an address in %v", srcS, bench)
	}
	if nsrc < 1 || nsrc > 256 || flows%nsrc != 0 {
		return fmt.Errorf("-srcs %d: need 1..256, a divisor of %d", nsrc, flows)
	}
	srcList := make([][4]byte, nsrc)
	for i, a := 0, src; i < nsrc; i, a = i+1, a.Next() {
		if !bench.Contains(a) {
			return fmt.Errorf("-src %v -srcs %d: %v is outside %v", src, nsrc, a, bench)
		}
		srcList[i] = a.As4()
	}
	dst, err := netip.ParseAddr(dstS)
	if err != nil || !bench.Contains(dst) {
		return fmt.Errorf("-dst %q: need an address in %v", dstS, bench)
	}
	if count <= 0 || count > 50_000_000 {
		return fmt.Errorf("-count %d: need 1..50000000", count)
	}
	if proto != "udp" && proto != "syn" {
		return fmt.Errorf("-proto %q: udp or syn", proto)
	}
	ifi, err := net.InterfaceByName(ifName)
	if err != nil {
		return err
	}
	dmac, err := net.ParseMAC(dmacS)
	if err != nil {
		return fmt.Errorf("-dmac: %w", err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // protocol 0: send only, receive nothing
	if err != nil {
		return fmt.Errorf("AF_PACKET socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("bind %s: %w", ifName, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)

	var frames [batch][frameLen]byte
	var iovs [batch]unix.Iovec
	var hdrs [batch]unix.Mmsghdr
	for i := range frames {
		f := frames[i][:]
		copy(f[0:6], dmac)
		copy(f[6:12], ifi.HardwareAddr)
		binary.BigEndian.PutUint16(f[12:], unix.ETH_P_IP)
		iovs[i].Base = &frames[i][0]
		iovs[i].SetLen(frameLen)
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.SetIovlen(1)
	}
	d4 := dst.As4()
	fill := func(f []byte, n int) {
		// Packet n is flow n mod 64512: source n mod srcs, and a source
		// port that moves on once every source had it.
		fl := n % flows
		s4 := srcList[fl%nsrc]
		sport := uint16(1024 + fl/nsrc)
		ip := f[14:]
		ip[0], ip[1] = 0x45, 0
		binary.BigEndian.PutUint16(ip[2:], 60)
		binary.BigEndian.PutUint16(ip[4:], uint16(n))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		copy(ip[12:16], s4[:])
		copy(ip[16:20], d4[:])
		l4 := ip[20:60]
		if proto == "udp" {
			ip[9] = unix.IPPROTO_UDP
			binary.BigEndian.PutUint16(l4[0:], sport)
			binary.BigEndian.PutUint16(l4[2:], dport)
			binary.BigEndian.PutUint16(l4[4:], 40)
			binary.BigEndian.PutUint64(l4[8:], uint64(n))
		} else {
			ip[9] = unix.IPPROTO_TCP
			binary.BigEndian.PutUint16(l4[0:], sport)
			binary.BigEndian.PutUint16(l4[2:], dport)
			binary.BigEndian.PutUint32(l4[4:], uint32(n)*2654435761)
			binary.BigEndian.PutUint32(l4[8:], 0)
			l4[12], l4[13] = 10<<4, 0x02 // 40-byte header, SYN
			binary.BigEndian.PutUint16(l4[14:], 64240)
			// MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
			copy(l4[20:], []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7})
			binary.BigEndian.PutUint32(l4[28:], uint32(n))
		}
		binary.BigEndian.PutUint16(ip[10:], 0)
		binary.BigEndian.PutUint16(ip[10:], ^csum(ip[:20], 0))
		ck := 16
		if proto == "udp" {
			ck = 6
		}
		binary.BigEndian.PutUint16(l4[ck:], 0)
		pseudo := csum(ip[12:20], uint32(ip[9])+40)
		c := ^csum(l4, uint32(pseudo))
		if c == 0 && proto == "udp" {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[ck:], c)
	}

	start := time.Now()
	sent := 0
	var errs int
	for sent < count {
		n := min(batch, count-sent)
		if pps > 0 {
			due := int(time.Since(start).Seconds()*float64(pps)) + 1
			if due <= sent {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			n = min(n, due-sent)
		}
		for i := 0; i < n; i++ {
			fill(frames[i][:], sent+i)
		}
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(n), 0, 0, 0)
		if e != 0 {
			if e == unix.ENOBUFS || e == unix.EAGAIN || e == unix.EINTR {
				errs++
				continue
			}
			return fmt.Errorf("sendmmsg: %w", e)
		}
		sent += int(r)
	}
	el := time.Since(start)
	fmt.Printf("sent %d in %.3fs = %.0f pps (%d retried sends)\n", sent, el.Seconds(), float64(sent)/el.Seconds(), errs)
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// csum is the 16-bit one's complement sum of b added to sum (not inverted).
func csum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
