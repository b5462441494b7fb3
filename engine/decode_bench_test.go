package engine

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/filterd/filterd/packet"
)

// reportPkts adds ns/pkt and pps for b.N*pkts packets.
func reportPkts(b *testing.B, pkts int) {
	b.Helper()
	n := float64(b.N) * float64(pkts)
	if n == 0 {
		return
	}
	ns := float64(b.Elapsed().Nanoseconds()) / n
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(1e9/ns, "pps")
}

// BenchmarkDecode runs the Decoder and gopacket's decoders on the same
// bytes, side by side: a TCP SYN with options and a 1400-byte segment.
func BenchmarkDecode(b *testing.B) {
	pkts := []struct {
		name string
		data []byte
	}{
		{"tcp-syn", tcp4(b, nil)},
		{"tcp-1400", tcp4(b, bytes.Repeat([]byte{0xa5}, 1400))},
	}
	for _, pk := range pkts {
		b.Run(pk.name+"/filterd", func(b *testing.B) {
			d := NewDecoder()
			var p packet.Packet
			b.ReportAllocs()
			b.SetBytes(int64(len(pk.data)))
			for b.Loop() {
				if err := d.Decode(pk.data, &p); err != nil {
					b.Fatal(err)
				}
			}
			if p.Checksum != packet.ChecksumGood {
				b.Fatal("checksum not verified")
			}
			reportPkts(b, 1)
		})
		b.Run(pk.name+"/filterd-nochecksum", func(b *testing.B) {
			d := NewDecoder()
			d.SetVerifyChecksums(false)
			var p packet.Packet
			b.ReportAllocs()
			b.SetBytes(int64(len(pk.data)))
			for b.Loop() {
				if err := d.Decode(pk.data, &p); err != nil {
					b.Fatal(err)
				}
			}
			reportPkts(b, 1)
		})
		b.Run(pk.name+"/gopacket-DecodingLayerParser", func(b *testing.B) {
			var ip layers.IPv4
			var tc layers.TCP
			var pl gopacket.Payload
			parser := gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &ip, &tc, &pl)
			parser.IgnoreUnsupported = true
			decoded := make([]gopacket.LayerType, 0, 4)
			b.ReportAllocs()
			b.SetBytes(int64(len(pk.data)))
			for b.Loop() {
				if err := parser.DecodeLayers(pk.data, &decoded); err != nil {
					b.Fatal(err)
				}
			}
			reportPkts(b, 1)
		})
		b.Run(pk.name+"/gopacket-NewPacket", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(pk.data)))
			for b.Loop() {
				p := gopacket.NewPacket(pk.data, layers.LayerTypeIPv4, gopacket.Default)
				if p.TransportLayer() == nil {
					b.Fatal("no TCP")
				}
			}
			reportPkts(b, 1)
		})
	}
}

// BenchmarkDefrag reassembles a 3-fragment IPv4 datagram (UDP, 3000 B) and
// a 3-fragment IPv6 one per op.
func BenchmarkDefrag(b *testing.B) {
	big4 := udp4(b, bytes.Repeat([]byte("x"), 3000))
	big6 := udp6(b, bytes.Repeat([]byte("y"), 3000))
	var frags [][]byte
	frags = append(frags, frag4(big4, [2]int{0, 1480}, [2]int{1480, 2960}, [2]int{2960, 3008})...)
	frags = append(frags, frag6(big6, 9, [2]int{0, 1448}, [2]int{1448, 2896}, [2]int{2896, 3008})...)
	d := NewDecoder()
	ps := make([]packet.Packet, len(frags))
	for i := range frags {
		if err := d.Decode(frags[i], &ps[i]); err != nil {
			b.Fatal(err)
		}
	}
	df := NewDefrag(DefragConfig{})
	b.ReportAllocs()
	for b.Loop() {
		for i := range ps {
			df.Add(&ps[i])
		}
	}
	if df.Stats().Reassembled != 2*uint64(b.N) {
		b.Fatalf("stats %+v after %d ops", df.Stats(), b.N)
	}
	reportPkts(b, len(ps))
}

// BenchmarkPcapRead reads a testdata capture from memory, repeated to make
// a large file (20 copies of the records of a classic pcap; 50 concatenated
// sections of a pcapng), so that opening the reader is amortised: frames
// only, and frames decoded.
func BenchmarkPcapRead(b *testing.B) {
	for _, name := range []string{"captured_synflood_burst_200_spoofed_sources.pcap", "captured_tcp_halfclose_keepalive_abort.pcapng"} {
		one, err := os.ReadFile(filepath.Join(pcapDir, name))
		if err != nil {
			b.Fatal(err)
		}
		var data []byte
		if filepath.Ext(name) == ".pcap" {
			data = append(data, one...)
			for i := 1; i < 20; i++ {
				data = append(data, one[24:]...)
			}
		} else {
			for i := 0; i < 50; i++ {
				data = append(data, one...)
			}
		}
		r, err := OpenPcap(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		count, err := readAll(r)
		if err != nil {
			b.Fatal(err)
		}
		for _, decode := range []bool{false, true} {
			sub := filepath.Ext(name)[1:] + "/read"
			if decode {
				sub += "+decode"
			}
			b.Run(sub, func(b *testing.B) {
				d := NewDecoder()
				var f Frame
				var p packet.Packet
				br := bytes.NewReader(data)
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					br.Reset(data)
					r, err := OpenPcap(br)
					if err != nil {
						b.Fatal(err)
					}
					for {
						if err := r.Next(&f); err != nil {
							if err != io.EOF {
								b.Fatal(err)
							}
							break
						}
						if decode && f.Skip == SkipNone {
							f.FillMeta(&p.Meta)
							_ = d.Decode(f.L3, &p)
						}
					}
				}
				reportPkts(b, count)
				b.ReportMetric(float64(count), "pkts/op")
			})
		}
	}
}
