package engine

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

// testdataL3 returns the IP packets of every testdata capture.
func testdataL3(f *testing.F) [][]byte {
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	var out [][]byte
	for _, fn := range files {
		r, err := OpenPcapFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		var fr Frame
		for r.Next(&fr) == nil {
			if fr.Skip == SkipNone {
				out = append(out, append([]byte(nil), fr.L3...))
			}
		}
		r.Close()
	}
	return out
}

// FuzzDecode feeds raw L3 bytes to the Decoder (and fragments to a Defrag):
// no panic, errors of the documented kinds, and a decoded packet whose
// slices lie inside the input.
func FuzzDecode(f *testing.F) {
	for _, b := range testdataL3(f) {
		f.Add(b)
	}
	d := NewDecoder()
	general := NewDecoder()
	general.noFast = true
	f.Fuzz(func(t *testing.T, b []byte) {
		var p, pg packet.Packet
		err := d.Decode(b, &p)
		// The hand-written fast path and gopacket's DecodingLayerParser
		// agree on every field and error.
		if diff := diffDecode(&p, &pg, err, general.Decode(b, &pg)); diff != "" {
			t.Fatalf("fast and general decode differ: %s", diff)
		}
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error of unknown kind: %v", err)
			}
			_ = err.Error()
			// a cut datagram may also be malformed; a truncation error always
			// marks the packet
			if errors.Is(err, ErrTruncated) && !p.Truncated {
				t.Fatalf("Truncated %v for %v", p.Truncated, err)
			}
			return
		}
		if len(p.L3) > len(b) || (len(p.L3) > 0 && &p.L3[0] != &b[0]) {
			t.Fatalf("L3 is not a prefix of the input")
		}
		if len(p.Payload) > len(p.L3) {
			t.Fatalf("payload longer than the packet")
		}
		switch p.Family {
		case packet.IPv4:
			if !p.Src.Is4() || !p.Dst.Is4() {
				t.Fatal("IPv4 packet with non-IPv4 addresses")
			}
		case packet.IPv6:
			if !p.Src.Is6() || !p.Dst.Is6() {
				t.Fatal("IPv6 packet with non-IPv6 addresses")
			}
		default:
			t.Fatal("no family")
		}
		if p.Checksum != packet.ChecksumUnknown && (p.Truncated || p.Fragment || p.MoreFrags) {
			t.Fatal("checksum verdict on a fragment or truncated packet")
		}
		if p.Fragment || p.MoreFrags {
			df := NewDefrag(DefragConfig{})
			p.Time = time.Unix(1, 0)
			df.Add(&p)
			df.Add(&p) // a duplicate, or a second first fragment
		}
	})
}

// FuzzPcap feeds file bytes to the pcap reader and decodes what it yields:
// no panic, and an error is io.EOF or a *PcapError.
func FuzzPcap(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 8192 { // keep seeds small for the fuzzer; the head of the file
			b = b[:8192]
		}
		f.Add(b)
	}
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, b []byte) {
		comparePcapPaths(t, b)
		r, err := OpenPcap(bytes.NewReader(b))
		if err != nil {
			var pe *PcapError
			if !errors.As(err, &pe) {
				t.Fatalf("open: %T %v", err, err)
			}
			return
		}
		var fr Frame
		var p packet.Packet
		for i := 0; ; i++ {
			err := r.Next(&fr)
			if err == io.EOF {
				return
			}
			if err != nil {
				var pe *PcapError
				if !errors.As(err, &pe) || pe.Packet != i+1 {
					t.Fatalf("after %d packets: %T %v", i, err, err)
				}
				return
			}
			if fr.Num != i+1 || len(fr.Data) > MaxSnaplen {
				t.Fatalf("frame %d: num %d len %d", i+1, fr.Num, len(fr.Data))
			}
			if fr.Skip == SkipNone {
				_ = d.Decode(fr.L3, &p)
			}
		}
	})
}
