package engine

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
)

// TestFlowKeyMatchesDecode: for every IP packet of every testdata capture,
// the tuple flowKey reads without decoding equals the decoded packet's
// conntrack tuple whenever flowKey gives one, and it gives one for every
// plain TCP or UDP packet.
func TestFlowKeyMatchesDecode(t *testing.T) {
	d := NewDecoder()
	var p packet.Packet
	keyed, plain := 0, 0
	eachCapturedFrame(t, func(name string, f *Frame) {
		var k conntrack.Key
		ok := flowKey(f.L3, &k)
		err := d.Decode(f.L3, &p)
		isPlain := err == nil && (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP) &&
			!p.Fragment && !p.MoreFrags && p.FragOffset == 0 && len(p.ExtHeaders) == 0
		if isPlain {
			plain++
			if !ok {
				t.Errorf("%s packet %d: plain %d packet without a flow key", name, f.Num, p.Proto)
			}
		}
		if ok {
			keyed++
			if err == nil && k != conntrack.KeyOf(&p) {
				t.Errorf("%s packet %d: flowKey %+v, decoded %+v", name, f.Num, k, conntrack.KeyOf(&p))
			}
		}
	})
	if plain < 1000 || keyed < plain {
		t.Errorf("%d plain TCP/UDP packets, %d keyed", plain, keyed)
	}
}

// TestReplayBatchesLikeFrames: Replay (which reads ahead in batches and
// prefetches) gives the same summary as feeding the same frames one by one
// to Frame, for every testdata capture.
func TestReplayBatchesLikeFrames(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(pcapDir, "*.pcap*"))
	for _, fn := range files {
		newRP := func() *Replayer {
			e, err := New(Config{Conntrack: conntrack.New(conntrack.Config{HashSeed: 1}), Route: true})
			if err != nil {
				t.Fatal(err)
			}
			return NewReplayer(e, ReplayOptions{})
		}
		a, b := newRP(), newRP()
		if err := a.ReplayFile(context.Background(), fn); err != nil {
			t.Fatal(err)
		}
		r, err := OpenPcapFile(fn)
		if err != nil {
			t.Fatal(err)
		}
		var f Frame
		for r.Next(&f) == nil {
			if err := b.Frame(&f); err != nil {
				t.Fatal(err)
			}
		}
		r.Close()
		sa, sb := a.Summary("", ""), b.Summary("", "")
		sa.Elapsed, sb.Elapsed, sa.Files = 0, 0, nil
		if sa.Packets == 0 {
			t.Fatalf("%s: no packets replayed", fn)
		}
		if !reflect.DeepEqual(sa, sb) {
			t.Errorf("%s: batched replay\n%+v\none frame at a time\n%+v", filepath.Base(fn), sa, sb)
		}
	}
}
