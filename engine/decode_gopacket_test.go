package engine

import (
	"bytes"
	"io"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/packet"
)

// TestDecodeMatchesGopacket decodes every IP packet of every testdata
// capture with the Decoder and with gopacket.NewPacket (the slow,
// allocating full decoder) and compares every field both produce.
func TestDecodeMatchesGopacket(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	if len(files) < 20 {
		t.Fatalf("only %d captures in %s", len(files), pcapDir)
	}
	d := NewDecoder()
	total, inner, fast := 0, 0, 0
	var scratch packet.Packet
	for _, fn := range files {
		r, err := OpenPcapFile(fn)
		if err != nil {
			t.Fatal(err)
		}
		var f Frame
		var p packet.Packet
		for {
			if err := r.Next(&f); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			if f.Skip != SkipNone {
				continue
			}
			if err := d.Decode(f.L3, &p); err != nil {
				t.Errorf("%s #%d: %v", filepath.Base(fn), f.Num, err)
				continue
			}
			if d.decodeFast(f.L3, &scratch) {
				fast++ // Decode took the hand-written fast path
			}
			first := layers.LayerTypeIPv4
			if p.Family == packet.IPv6 {
				first = layers.LayerTypeIPv6
			}
			gp := gopacket.NewPacket(f.L3, first, gopacket.Default)
			where := filepath.Base(fn) + " #" + itoa(f.Num)
			inner += compareGopacket(t, where, &p, gp)
			total++
		}
		r.Close()
	}
	if total != 3001 || inner != 29 { // IP frames in testdata (see TestPcapFiles), ICMP errors quoting a header
		t.Errorf("compared %d packets, %d ICMP inner headers", total, inner)
	}
	if fast < total/2 || fast == total {
		t.Errorf("%d of %d packets took the fast path: both paths must be compared", fast, total)
	}
	t.Logf("compared %d packets (%d through the fast path) and %d quoted headers with gopacket.NewPacket", total, fast, inner)
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func addr(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a
}

// compareGopacket reports every difference between p and gopacket's view of
// the same bytes. It returns 1 when an ICMP quoted header was compared.
func compareGopacket(t *testing.T, where string, p *packet.Packet, gp gopacket.Packet) int {
	t.Helper()
	errorf := func(field string, got, want any) {
		t.Errorf("%s: %s = %v, gopacket says %v", where, field, got, want)
	}
	proto := uint8(0)
	if ip, ok := gp.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		if p.Src != addr(ip.SrcIP) || p.Dst != addr(ip.DstIP) {
			errorf("addresses", p.Src.String()+">"+p.Dst.String(), ip.SrcIP.String()+">"+ip.DstIP.String())
		}
		if p.TTL != ip.TTL || p.TOS != ip.TOS || p.ID != uint32(ip.Id) || p.Length != int(ip.Length) {
			errorf("ttl/tos/id/len", []any{p.TTL, p.TOS, p.ID, p.Length}, []any{ip.TTL, ip.TOS, ip.Id, ip.Length})
		}
		if p.FragOffset != ip.FragOffset || p.MoreFrags != (ip.Flags&layers.IPv4MoreFragments != 0) || p.Fragment != (ip.FragOffset != 0) {
			errorf("fragment", []any{p.FragOffset, p.MoreFrags}, []any{ip.FragOffset, ip.Flags})
		}
		proto = uint8(ip.Protocol)
	} else if ip, ok := gp.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		if p.Src != addr(ip.SrcIP) || p.Dst != addr(ip.DstIP) {
			errorf("addresses", p.Src, ip.SrcIP)
		}
		if p.TTL != ip.HopLimit || p.TOS != ip.TrafficClass || p.Length != 40+int(ip.Length) {
			errorf("hlim/tclass/len", []any{p.TTL, p.TOS, p.Length}, []any{ip.HopLimit, ip.TrafficClass, ip.Length})
		}
		proto = uint8(ip.NextHeader)
		if ip.HopByHop != nil {
			proto = uint8(ip.HopByHop.NextHeader)
		}
		if fh, ok := gp.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment); ok {
			proto = uint8(fh.NextHeader)
			if !p.HasFragHdr || p.ID != fh.Identification || p.FragOffset != fh.FragmentOffset || p.MoreFrags != fh.MoreFragments {
				errorf("fragment header", []any{p.HasFragHdr, p.ID, p.FragOffset, p.MoreFrags}, fh)
			}
		} else if p.HasFragHdr {
			errorf("HasFragHdr", true, false)
		}
		if dst, ok := gp.Layer(layers.LayerTypeIPv6Destination).(*layers.IPv6Destination); ok {
			proto = uint8(dst.NextHeader)
		}
	} else {
		t.Errorf("%s: gopacket found no IP layer", where)
		return 0
	}
	if p.Proto != proto {
		errorf("proto", p.Proto, proto)
	}
	if tc, ok := gp.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && !p.Fragment {
		flags := uint8(0)
		for i, b := range []bool{tc.FIN, tc.SYN, tc.RST, tc.PSH, tc.ACK, tc.URG, tc.ECE, tc.CWR} {
			if b {
				flags |= 1 << i
			}
		}
		if p.SrcPort != uint16(tc.SrcPort) || p.DstPort != uint16(tc.DstPort) || p.Seq != tc.Seq || p.Ack != tc.Ack ||
			p.TCPFlags != flags || p.Window != tc.Window || p.TCPDataOff != tc.DataOffset*4 {
			errorf("tcp", []any{p.SrcPort, p.DstPort, p.Seq, p.Ack, p.TCPFlags, p.Window, p.TCPDataOff},
				[]any{tc.SrcPort, tc.DstPort, tc.Seq, tc.Ack, flags, tc.Window, tc.DataOffset * 4})
		}
		want := packet.TCPOptions{WScale: -1}
		for _, o := range tc.Options {
			switch {
			case o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2:
				want.MSS = uint16(o.OptionData[0])<<8 | uint16(o.OptionData[1])
			case o.OptionType == layers.TCPOptionKindWindowScale && len(o.OptionData) == 1:
				want.WScale = int8(min(o.OptionData[0], 14))
			case o.OptionType == layers.TCPOptionKindSACKPermitted:
				want.SACKPerm = true
			}
		}
		if p.TCPOpt != want {
			errorf("tcp options", p.TCPOpt, want)
		}
		if !bytes.Equal(p.Payload, tc.Payload) {
			errorf("tcp payload length", len(p.Payload), len(tc.Payload))
		}
	} else if u, ok := gp.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && !p.Fragment {
		if p.SrcPort != uint16(u.SrcPort) || p.DstPort != uint16(u.DstPort) {
			errorf("udp ports", []any{p.SrcPort, p.DstPort}, []any{u.SrcPort, u.DstPort})
		}
		if !p.MoreFrags && !bytes.Equal(p.Payload, u.Payload) {
			errorf("udp payload length", len(p.Payload), len(u.Payload))
		}
	} else if ic, ok := gp.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && !p.Fragment {
		if p.ICMPType != ic.TypeCode.Type() || p.ICMPCode != ic.TypeCode.Code() {
			errorf("icmp type/code", []any{p.ICMPType, p.ICMPCode}, ic.TypeCode)
		}
		switch ic.TypeCode.Type() {
		case 0, 8:
			if p.ICMPID != ic.Id {
				errorf("icmp id", p.ICMPID, ic.Id)
			}
		case 3, 4, 5, 11, 12:
			return compareInner(t, where, p, ic.Payload, layers.LayerTypeIPv4)
		}
	} else if ic, ok := gp.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok && !p.Fragment {
		if p.ICMPType != ic.TypeCode.Type() || p.ICMPCode != ic.TypeCode.Code() {
			errorf("icmpv6 type/code", []any{p.ICMPType, p.ICMPCode}, ic.TypeCode)
		}
		if e, ok := gp.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); ok && p.ICMPID != e.Identifier {
			errorf("icmpv6 echo id", p.ICMPID, e.Identifier)
		}
		if typ := ic.TypeCode.Type(); typ >= 1 && typ <= 4 && len(ic.Payload) >= 4 {
			return compareInner(t, where, p, ic.Payload[4:], layers.LayerTypeIPv6)
		}
	} else if !p.Fragment && !p.MoreFrags && (p.SrcPort != 0 || p.DstPort != 0) {
		errorf("ports without a transport layer", p.SrcPort, 0)
	}
	return 0
}

// compareInner decodes the quoted packet of an ICMP error with gopacket.
func compareInner(t *testing.T, where string, p *packet.Packet, quoted []byte, first gopacket.LayerType) int {
	t.Helper()
	gp := gopacket.NewPacket(quoted, first, gopacket.Default)
	var src, dst netip.Addr
	switch ip := gp.NetworkLayer().(type) {
	case *layers.IPv4:
		src, dst = addr(ip.SrcIP), addr(ip.DstIP)
	case *layers.IPv6:
		src, dst = addr(ip.SrcIP), addr(ip.DstIP)
	default:
		if p.Inner.Valid {
			t.Errorf("%s: inner valid but gopacket finds no quoted IP header", where)
		}
		return 0
	}
	if !p.Inner.Valid {
		t.Errorf("%s: quoted header not decoded (gopacket: %v > %v)", where, src, dst)
		return 0
	}
	if p.Inner.Src != src || p.Inner.Dst != dst {
		t.Errorf("%s: inner addresses %v>%v, gopacket %v>%v", where, p.Inner.Src, p.Inner.Dst, src, dst)
	}
	if tl := gp.TransportLayer(); tl != nil {
		var sp, dp uint16
		switch l := tl.(type) {
		case *layers.UDP:
			sp, dp = uint16(l.SrcPort), uint16(l.DstPort)
		case *layers.TCP:
			sp, dp = uint16(l.SrcPort), uint16(l.DstPort)
		}
		if p.Inner.SrcPort != sp || p.Inner.DstPort != dp {
			t.Errorf("%s: inner ports %d>%d, gopacket %d>%d", where, p.Inner.SrcPort, p.Inner.DstPort, sp, dp)
		}
	}
	return 1
}
