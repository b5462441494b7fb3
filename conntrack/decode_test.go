package conntrack

// A small test-only decoder: pcap/pcapng frames into packet.Packet using
// gopacket's layers and pcapgo readers, so the conntrack tests read real
// captures without depending on the engine package.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/filterd/filterd/packet"
)

// frame is one IP packet of a capture with its 1-based frame number.
type frame struct {
	n int
	p *packet.Packet
}

func readCapture(t testing.TB, name string) []frame {
	t.Helper()
	path := filepath.Join("..", "testdata", "pcaps", name)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	type src interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	}
	var r src
	var lt layers.LinkType
	if len(raw) >= 4 && binary.LittleEndian.Uint32(raw) == 0x0A0D0D0A {
		ng, err := pcapgo.NewNgReader(bytes.NewReader(raw), pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r, lt = ng, ng.LinkType()
	} else {
		pr, err := pcapgo.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r, lt = pr, pr.LinkType()
	}
	var out []frame
	for n := 1; ; n++ {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: packet %d: %v", path, n, err)
		}
		if p := decodeFrame(data, lt, ci.Timestamp); p != nil {
			out = append(out, frame{n: n, p: p})
		}
	}
	return out
}

func addrOf(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}

func decodeFrame(data []byte, lt layers.LinkType, ts time.Time) *packet.Packet {
	gp := gopacket.NewPacket(data, lt, gopacket.DecodeOptions{NoCopy: true})
	p := &packet.Packet{}
	p.Reset()
	p.Meta.Time = ts
	p.Meta.Hook = packet.HookPreRouting
	var l4 []byte
	if l := gp.Layer(layers.LayerTypeIPv4); l != nil {
		ip := l.(*layers.IPv4)
		p.Family = packet.IPv4
		p.Src, p.Dst = addrOf(ip.SrcIP), addrOf(ip.DstIP)
		p.Proto = uint8(ip.Protocol)
		p.Length = int(ip.Length)
		p.TTL = ip.TTL
		p.L3 = append(append([]byte(nil), ip.Contents...), ip.Payload...)
		if len(p.L3) > p.Length {
			p.L3 = p.L3[:p.Length]
		}
		p.FragOffset = ip.FragOffset
		p.MoreFrags = ip.Flags&layers.IPv4MoreFragments != 0
		p.Fragment = ip.FragOffset != 0
		l4 = p.L3[len(ip.Contents):]
	} else if l := gp.Layer(layers.LayerTypeIPv6); l != nil {
		ip := l.(*layers.IPv6)
		p.Family = packet.IPv6
		p.Src, p.Dst = addrOf(ip.SrcIP), addrOf(ip.DstIP)
		p.Length = 40 + int(ip.Length)
		p.TTL = ip.HopLimit
		p.L3 = append(append([]byte(nil), ip.Contents...), ip.Payload...)
		if len(p.L3) > p.Length {
			p.L3 = p.L3[:p.Length]
		}
		next, off := uint8(ip.NextHeader), 40
		for off+8 <= len(p.L3) && (next == 0 || next == 43 || next == 60 || next == 44) {
			h := p.L3[off:]
			if next == 44 {
				p.HasFragHdr = true
				fo := binary.BigEndian.Uint16(h[2:])
				p.FragOffset, p.MoreFrags, p.Fragment = fo>>3, fo&1 != 0, fo>>3 != 0
				next, off = h[0], off+8
				continue
			}
			next, off = h[0], off+(int(h[1])+1)*8
		}
		p.Proto = next
		if off > len(p.L3) {
			off = len(p.L3)
		}
		l4 = p.L3[off:]
	} else {
		return nil
	}
	switch p.Proto {
	case packet.ProtoTCP:
		if len(l4) < 20 || int(l4[12]>>4)*4 > len(l4) {
			p.Truncated = true
			return p
		}
		tcp := &layers.TCP{}
		if err := tcp.DecodeFromBytes(l4, gopacket.NilDecodeFeedback); err != nil {
			p.Truncated = true
			return p
		}
		p.SrcPort, p.DstPort = uint16(tcp.SrcPort), uint16(tcp.DstPort)
		p.Seq, p.Ack, p.Window = tcp.Seq, tcp.Ack, tcp.Window
		p.TCPDataOff = tcp.DataOffset * 4
		p.TCPFlags = l4[13]
		for _, o := range tcp.Options {
			switch o.OptionType {
			case layers.TCPOptionKindWindowScale:
				if len(o.OptionData) == 1 {
					ws := o.OptionData[0]
					if ws > 127 {
						ws = 127
					}
					p.TCPOpt.WScale = int8(ws)
				}
			case layers.TCPOptionKindSACKPermitted:
				p.TCPOpt.SACKPerm = true
			case layers.TCPOptionKindMSS:
				if len(o.OptionData) == 2 {
					p.TCPOpt.MSS = binary.BigEndian.Uint16(o.OptionData)
				}
			}
		}
		p.Payload = l4[p.TCPDataOff:]
		p.Checksum = verifyChecksum(p, l4, true)
	case packet.ProtoUDP:
		if len(l4) < 8 {
			p.Truncated = true
			return p
		}
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.Payload = l4[8:]
		if binary.BigEndian.Uint16(l4[6:]) == 0 && p.Family == packet.IPv4 {
			p.Checksum = packet.ChecksumUnknown
		} else {
			p.Checksum = verifyChecksum(p, l4, true)
		}
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if len(l4) < 8 {
			p.Truncated = true
			return p
		}
		p.ICMPType, p.ICMPCode = l4[0], l4[1]
		p.ICMPID = binary.BigEndian.Uint16(l4[4:])
		p.Payload = l4[8:]
		p.Checksum = verifyChecksum(p, l4, p.Proto == packet.ProtoICMPv6)
		isErr := (p.Proto == packet.ProtoICMP && icmpIsError(p.ICMPType)) || (p.Proto == packet.ProtoICMPv6 && p.ICMPType < 128)
		if isErr {
			p.ICMPID = 0
			p.Inner = decodeInner(l4[8:], p.Family)
		}
	}
	return p
}

func decodeInner(b []byte, fam packet.Family) packet.Embedded {
	var e packet.Embedded
	var l4 []byte
	if fam == packet.IPv4 {
		if len(b) < 20 {
			return e
		}
		ihl := int(b[0]&0xf) * 4
		if ihl < 20 || len(b) < ihl {
			return e
		}
		e.Proto = b[9]
		e.Src, e.Dst = addrOf(b[12:16]), addrOf(b[16:20])
		l4 = b[ihl:]
	} else {
		if len(b) < 40 {
			return e
		}
		e.Src, e.Dst = addrOf(b[8:24]), addrOf(b[24:40])
		next, off := b[6], 40
		for off+8 <= len(b) && (next == 0 || next == 43 || next == 60 || next == 44) {
			if next == 44 {
				next, off = b[off], off+8
				continue
			}
			next, off = b[off], off+(int(b[off+1])+1)*8
		}
		if off > len(b) {
			return e
		}
		e.Proto = next
		l4 = b[off:]
	}
	if len(l4) < 8 {
		return e
	}
	switch e.Proto {
	case packet.ProtoICMP, packet.ProtoICMPv6:
		e.ICMPType, e.ICMPCode = l4[0], l4[1]
		e.SrcPort = binary.BigEndian.Uint16(l4[4:])
	default:
		e.SrcPort, e.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		if e.Proto == packet.ProtoTCP {
			e.Seq = binary.BigEndian.Uint32(l4[4:])
		}
	}
	e.Valid = true
	return e
}

// verifyChecksum checks the transport checksum (with the pseudo-header when
// pseudo is true).
func verifyChecksum(p *packet.Packet, l4 []byte, pseudo bool) packet.Checksum {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	if pseudo {
		s, d := p.Src.AsSlice(), p.Dst.AsSlice()
		add(s)
		add(d)
		var ph [8]byte
		binary.BigEndian.PutUint32(ph[0:], uint32(len(l4)))
		ph[7] = p.Proto
		if p.Family == packet.IPv4 {
			sum += uint32(p.Proto) + uint32(len(l4))
		} else {
			add(ph[:])
		}
	}
	add(l4)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	if sum == 0xffff {
		return packet.ChecksumGood
	}
	return packet.ChecksumBad
}
