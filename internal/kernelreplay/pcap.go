// Package kernelreplay replays a pcap through the real Linux netfilter in
// throwaway network namespaces and reads back the kernel's own per-rule
// counters (iptables-save -c), so that filterd's replay can be compared with
// the kernel (issue 6, kernel parity).
//
// It has two halves: the address rewrite (every address mapped into
// 198.18.0.0/15 or fd00:198:18::/48 with checksum validity kept per packet,
// link layers stripped to raw IP), and the kernel replay itself (Run).
package kernelreplay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Packet is one captured packet reduced to its IP header and what follows.
type Packet struct {
	// Index is the packet's 1-based number in the source file (as tcpdump and
	// wireshark number them), counting non-IP frames too.
	Index int
	// Time is the capture timestamp.
	Time time.Time
	// L3 is the IPv4 or IPv6 packet, starting at the IP header.
	L3 []byte
	// OrigLen is the packet's length on the wire minus the stripped link header.
	OrigLen int
}

// ReadResult is what ReadPcap returns besides the packets.
type ReadResult struct {
	LinkType layers.LinkType
	Nanos    bool // the source had nanosecond timestamps
	Frames   int  // all frames read
	NonIP    int  // frames that were not IPv4/IPv6 (ARP, STP, ...), dropped
}

// maxFrames bounds the number of frames read from one file.
const maxFrames = 10_000_000

// ReadPcap reads a pcap or pcapng file (detected by its magic number) and
// strips Ethernet (with any number of 802.1Q/802.1ad tags), Linux cooked
// (SLL; gopacket's 8-bit link type cannot name SLL2), BSD loopback/null and raw link layers, returning plain IPv4
// and IPv6 packets in file order. A truncated or corrupt file gives the
// packets read so far and an error naming the packet number.
func ReadPcap(path string) ([]Packet, ReadResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, ReadResult{}, fmt.Errorf("kernelreplay: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	peek, err := br.Peek(4)
	magic := append([]byte(nil), peek...)
	if err != nil {
		return nil, ReadResult{}, fmt.Errorf("kernelreplay: %s: reading file header: %w", path, err)
	}
	var (
		next func() ([]byte, time.Time, int, error)
		res  ReadResult
	)
	if binary.LittleEndian.Uint32(magic) == 0x0a0d0d0a {
		r, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, res, fmt.Errorf("kernelreplay: %s: pcapng header: %w", path, err)
		}
		res.LinkType = r.LinkType()
		res.Nanos = true
		next = func() ([]byte, time.Time, int, error) {
			d, ci, err := r.ReadPacketData()
			return d, ci.Timestamp, ci.Length, err
		}
	} else {
		r, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, res, fmt.Errorf("kernelreplay: %s: pcap header: %w", path, err)
		}
		res.LinkType = r.LinkType()
		mg := binary.LittleEndian.Uint32(magic)
		res.Nanos = mg == 0xa1b23c4d || mg == 0x4d3cb2a1 // nanosecond pcap magic, either byte order
		next = func() ([]byte, time.Time, int, error) {
			d, ci, err := r.ReadPacketData()
			return d, ci.Timestamp, ci.Length, err
		}
	}
	var pkts []Packet
	for res.Frames < maxFrames {
		data, ts, wire, err := next()
		if errors.Is(err, io.EOF) {
			return pkts, res, nil
		}
		if err != nil {
			return pkts, res, fmt.Errorf("kernelreplay: %s: packet %d: %w", path, res.Frames+1, err)
		}
		res.Frames++
		l3, hdr, ok := stripLink(res.LinkType, data)
		if !ok {
			res.NonIP++
			continue
		}
		pkts = append(pkts, Packet{Index: res.Frames, Time: ts, L3: append([]byte(nil), l3...), OrigLen: wire - hdr})
	}
	return pkts, res, fmt.Errorf("kernelreplay: %s: more than %d frames", path, maxFrames)
}

// Link types not named in gopacket's layers package.
const (
	linkTypeRawAlt layers.LinkType = 12  // LINKTYPE_RAW on some BSDs
	linkTypeIPv4   layers.LinkType = 228 // LINKTYPE_IPV4
	linkTypeIPv6   layers.LinkType = 229 // LINKTYPE_IPV6
)

// stripLink returns the IP packet inside a frame, the link header length,
// and whether the frame held IPv4 or IPv6.
func stripLink(lt layers.LinkType, b []byte) ([]byte, int, bool) {
	ipOK := func(off int, etype uint16) ([]byte, int, bool) {
		if off > len(b) || (etype != 0x0800 && etype != 0x86dd) {
			return nil, 0, false
		}
		return versionOK(b[off:], off)
	}
	switch lt {
	case layers.LinkTypeEthernet:
		if len(b) < 14 {
			return nil, 0, false
		}
		off := 12
		et := binary.BigEndian.Uint16(b[off:])
		for i := 0; i < 4 && (et == 0x8100 || et == 0x88a8 || et == 0x9100); i++ {
			off += 4
			if off+2 > len(b) {
				return nil, 0, false
			}
			et = binary.BigEndian.Uint16(b[off:])
		}
		return ipOK(off+2, et)
	case layers.LinkTypeLinuxSLL:
		if len(b) < 16 {
			return nil, 0, false
		}
		return ipOK(16, binary.BigEndian.Uint16(b[14:]))
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		if len(b) < 4 {
			return nil, 0, false
		}
		fam := binary.LittleEndian.Uint32(b)
		if fam > 0xffff {
			fam = binary.BigEndian.Uint32(b)
		}
		switch fam {
		case 2, 24, 28, 30:
			return versionOK(b[4:], 4)
		}
		return nil, 0, false
	case layers.LinkTypeRaw, linkTypeRawAlt, linkTypeIPv4, linkTypeIPv6:
		return versionOK(b, 0)
	}
	return nil, 0, false
}

func versionOK(l3 []byte, off int) ([]byte, int, bool) {
	if len(l3) < 1 {
		return nil, 0, false
	}
	switch l3[0] >> 4 {
	case 4, 6:
		return l3, off, true
	}
	return nil, 0, false
}

// WritePcap writes packets as a LINKTYPE_RAW (101) pcap, which filterd
// replay, tcpdump and wireshark all read.
func WritePcap(path string, pkts []Packet, nanos bool) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("kernelreplay: %w", err)
	}
	bw := bufio.NewWriter(f)
	var w *pcapgo.Writer
	if nanos {
		w = pcapgo.NewWriterNanos(bw)
	} else {
		w = pcapgo.NewWriter(bw)
	}
	if err := w.WriteFileHeader(262144, layers.LinkTypeRaw); err != nil {
		f.Close()
		return fmt.Errorf("kernelreplay: %s: %w", path, err)
	}
	for _, p := range pkts {
		wire := p.OrigLen
		if wire < len(p.L3) {
			wire = len(p.L3)
		}
		ci := gopacket.CaptureInfo{Timestamp: p.Time, CaptureLength: len(p.L3), Length: wire}
		if err := w.WritePacket(ci, p.L3); err != nil {
			f.Close()
			return fmt.Errorf("kernelreplay: %s: packet %d: %w", path, p.Index, err)
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("kernelreplay: %s: %w", path, err)
	}
	return f.Close()
}
