package bench

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// reserialize rebuilds a decoded packet with gopacket computing lengths and
// checksums, as an independent check of the generator's own arithmetic.
func reserialize(t *testing.T, p gopacket.Packet) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	var ls []gopacket.SerializableLayer
	var netLayer gopacket.NetworkLayer
	for _, l := range p.Layers() {
		switch l := l.(type) {
		case *layers.Ethernet:
			ls = append(ls, l)
		case *layers.IPv4:
			netLayer = l
			ls = append(ls, l)
		case *layers.IPv6:
			netLayer = l
			ls = append(ls, l)
		case *layers.TCP:
			if err := l.SetNetworkLayerForChecksum(netLayer); err != nil {
				t.Fatal(err)
			}
			ls = append(ls, l, gopacket.Payload(l.Payload))
		}
	}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteFlood(t *testing.T) {
	tests := []struct {
		name string
		cfg  FloodConfig
	}{
		{"v4", FloodConfig{FloodSYNs: 3000, FloodSources: 1000, FloodRate: 100_000, Sessions: 5, Seed: 1}},
		{"v6", FloodConfig{Server: netip.MustParseAddr("fd00:198:18:2::2"), FloodSYNs: 500, FloodSources: 250, Sessions: 2, Seed: 2}},
		{"sessions only", FloodConfig{Sessions: 3, Seed: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			st, err := WriteFlood(&buf, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			r, err := pcapgo.NewReader(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			var (
				n, syns, synacks, fins int
				last                   time.Time
				srcs                   = map[netip.Addr]int{}
				allowed                = benchV4
			)
			if tt.cfg.Server.Is6() {
				allowed = benchV6
			}
			for {
				data, ci, err := r.ReadPacketData()
				if err != nil {
					break
				}
				n++
				if ci.Timestamp.Before(last) {
					t.Fatalf("packet %d goes back in time", n)
				}
				last = ci.Timestamp
				p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
				if el := p.ErrorLayer(); el != nil {
					t.Fatalf("packet %d: %v", n, el.Error())
				}
				got := reserialize(t, p)
				if len(got) > len(data) && len(got) == 60 && bytes.Count(got[len(data):], []byte{0}) == len(got)-len(data) {
					got = got[:len(data)] // gopacket pads Ethernet frames to 60 bytes; a capture need not
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("packet %d: bytes differ from gopacket's re-serialization (bad checksum or length)\n got %x\nwant %x", n, data, got)
				}
				src, _ := netip.AddrFromSlice(p.NetworkLayer().NetworkFlow().Src().Raw())
				dst, _ := netip.AddrFromSlice(p.NetworkLayer().NetworkFlow().Dst().Raw())
				if !allowed.Contains(src) || !allowed.Contains(dst) {
					t.Fatalf("packet %d: %v -> %v outside %v", n, src, dst, allowed)
				}
				tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				switch {
				case tcp.SYN && !tcp.ACK:
					syns++
					srcs[src]++
				case tcp.SYN && tcp.ACK:
					synacks++
				case tcp.FIN:
					fins++
				}
			}
			if n != st.Packets {
				t.Errorf("read %d packets, stats say %d", n, st.Packets)
			}
			if want := tt.cfg.FloodSYNs + tt.cfg.Sessions; syns != want {
				t.Errorf("SYNs = %d, want %d", syns, want)
			}
			if synacks != tt.cfg.Sessions || fins != 2*tt.cfg.Sessions {
				t.Errorf("SYN-ACKs = %d, FINs = %d; want %d and %d", synacks, fins, tt.cfg.Sessions, 2*tt.cfg.Sessions)
			}
			if tt.cfg.FloodSources > 0 {
				per := tt.cfg.FloodSYNs / tt.cfg.FloodSources
				for i := 0; i < tt.cfg.FloodSources; i++ {
					a, err := FloodSource(tt.cfg, i)
					if err != nil {
						t.Fatal(err)
					}
					if srcs[a] != per {
						t.Fatalf("flood source %v sent %d SYNs, want %d", a, srcs[a], per)
					}
				}
			}
			wantDur := time.Duration(float64(tt.cfg.FloodSYNs-1) / 100_000 * float64(time.Second))
			if tt.cfg.FloodSYNs > 0 && st.Duration < wantDur {
				t.Errorf("duration %v shorter than the flood's %v", st.Duration, wantDur)
			}
		})
	}
}

func TestWriteFloodRefusesOutsideRange(t *testing.T) {
	tests := []FloodConfig{
		{Server: netip.MustParseAddr("192.0.2.1"), Sessions: 1},
		{FloodPrefix: netip.MustParsePrefix("10.0.0.0/8"), FloodSYNs: 1, FloodSources: 1},
		{ClientPrefix: netip.MustParsePrefix("198.16.0.0/12"), Sessions: 1},
		{FloodSYNs: 10},
		{FloodPrefix: netip.MustParsePrefix("198.19.0.0/24"), FloodSYNs: 300, FloodSources: 300},
	}
	for i, cfg := range tests {
		var buf bytes.Buffer
		if _, err := WriteFlood(&buf, cfg); err == nil {
			t.Errorf("case %d: WriteFlood(%+v) accepted it", i, cfg)
		}
	}
}
