package conntrack

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/filterd/filterd/packet"
)

// tcpBytes builds an IPv4 packet with the given TCP options and payload and
// returns a packet.Packet whose L3/Payload point into it, as a decoder would.
func tcpBytes(opts []byte, payload int) *packet.Packet {
	for len(opts)%4 != 0 {
		opts = append(opts, 1)
	}
	hl := 20 + len(opts)
	b := make([]byte, 20+hl+payload)
	b[0] = 0x45
	th := b[20:]
	binary.BigEndian.PutUint16(th[0:], 1111)
	binary.BigEndian.PutUint16(th[2:], 80)
	binary.BigEndian.PutUint32(th[4:], 1000)
	binary.BigEndian.PutUint32(th[8:], 2000)
	th[12] = byte(hl/4) << 4
	th[13] = packet.TCPAck
	copy(th[20:], opts)
	p := &packet.Packet{Family: packet.IPv4, Proto: packet.ProtoTCP, Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.18.2.2"),
		SrcPort: 1111, DstPort: 80, Seq: 1000, Ack: 2000, TCPFlags: packet.TCPAck, TCPDataOff: uint8(hl), L3: b, Payload: b[20+hl:]}
	return p
}

func sackOpt(edges ...uint32) []byte {
	o := []byte{1, 1, 5, byte(2 + 8*len(edges)/2)}
	for _, e := range edges {
		o = binary.BigEndian.AppendUint32(o, e)
	}
	return o
}

// TestTCPSack checks tcp_sack(): the highest right edge of the SACK blocks.
func TestTCPSack(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []byte
		data int
		want uint32
	}{
		{"no options", nil, 0, 2000},
		{"timestamp only (fast path)", []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, 0, 2000},
		{"one block", sackOpt(2100, 2500), 0, 2500},
		{"highest of three", sackOpt(2100, 2500, 3000, 3500, 2600, 2700), 10, 3500},
		{"block below ack", sackOpt(1500, 1800), 0, 2000},
		{"timestamp then sack", append([]byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, sackOpt(2100, 4000)...), 0, 4000},
		{"malformed length", []byte{1, 1, 5, 3, 0, 0, 0, 0}, 0, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tcpBytes(tc.opts, tc.data)
			sack := p.Ack
			tcpSack(p, &sack)
			if sack != tc.want {
				t.Fatalf("sack %d, want %d", sack, tc.want)
			}
		})
	}
	// A header that cannot be located in L3 is not parsed.
	p := tcpBytes(sackOpt(2100, 9000), 0)
	p.SrcPort = 9
	sack := p.Ack
	tcpSack(p, &sack)
	if sack != p.Ack {
		t.Fatalf("parsed a header that does not match the packet")
	}
}

// FuzzParseFTP: the FTP parser never panics and a match has a nonzero port.
func FuzzParseFTP(f *testing.F) {
	for _, s := range []string{"PORT 1,2,3,4,5,6\r\n", "EPRT |2|::1|5|\r\n", "227 (1,2,3,4,5,6)\r\n", "229 (|||7|)\r\n", "EPRT |1|", "229 ("} {
		f.Add([]byte(s), uint8(0), false)
		f.Add([]byte(s), uint8(1), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, dir uint8, v6 bool) {
		fam, self := packet.IPv4, netip.MustParseAddr("198.18.1.2")
		if v6 {
			fam, self = packet.IPv6, netip.MustParseAddr("fd00:198:18:1::2")
		}
		cmd, found := ftpParse(data, dir&1, fam, self)
		if found == 1 && cmd.Port() == 0 && cmd.Kind != "PORT" && cmd.Kind != "PASV" {
			t.Fatalf("match without port: %+v", cmd)
		}
	})
}

// FuzzTrack: arbitrary decoded TCP headers never panic the tracker.
func FuzzTrack(f *testing.F) {
	f.Add(uint8(0x02), uint32(1), uint32(0), uint16(100), uint8(20), []byte{}, uint8(0))
	f.Add(uint8(0x12), uint32(5), uint32(2), uint16(0), uint8(60), []byte{5, 10, 0, 0, 0, 1, 0, 0, 0, 2}, uint8(1))
	f.Fuzz(func(t *testing.T, flags uint8, seq, ack uint32, win uint16, doff uint8, opts []byte, dir uint8) {
		tab := New(Config{HashSeed: 1})
		c := newTConn(t, tab)
		c.send(0, fS, 0)
		c.send(1, fSA, 0)
		p := tcpBytes(opts, 3)
		if dir&1 == 1 {
			p.Src, p.Dst = p.Dst, p.Src
		}
		p.TCPFlags, p.Seq, p.Ack, p.Window = flags, seq, ack, win
		if doff < uint8(len(p.L3)) {
			p.TCPDataOff = doff
		}
		r := tab.Track(p)
		r.Confirm(p)
		r.Drop()
	})
}
