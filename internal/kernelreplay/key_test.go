package kernelreplay

import (
	"net/netip"
	"path/filepath"
	"testing"
)

// TestPacketKeyICMPErrors: ICMP errors from one router to one host about
// different packets (the captured hping3 flood has six host-unreachables
// about 198.18.1.54 in a row) get different keys, so that the capture
// matching tells which of them the kernel let through; the same packet
// gets the same key.
func TestPacketKeyICMPErrors(t *testing.T) {
	pkts, _, err := ReadPcap(filepath.Join(pcapDir, "captured_synflood_hping3_slow_vs_fast.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	router, host := netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2")
	keys := map[string][]byte{} // key -> quoted packet
	n, distinct := 0, map[string]bool{}
	for _, p := range pkts {
		h, err := parseIP(p.L3)
		if err != nil || h.v6 || h.proto != 1 || h.src(p.L3) != router || h.dst(p.L3) != host || p.L3[h.l4] != 3 {
			continue
		}
		n++
		k := packetKey(p.L3)
		if k == "" || k != packetKey(append([]byte(nil), p.L3...)) {
			t.Fatalf("packet %d: key %q not stable", p.Index, k)
		}
		quoted := p.L3[h.l4+8 : min(h.l4+64, len(p.L3))]
		if prev, dup := keys[k]; dup && string(prev) != string(quoted) {
			t.Errorf("packet %d has the key of an error quoting another packet", p.Index)
		}
		keys[k] = quoted
		distinct[string(quoted)] = true
	}
	if n < 6 || len(distinct) < 2 {
		t.Fatalf("found %d ICMP host unreachables from the router quoting %d packets; the capture has more", n, len(distinct))
	}
	if len(keys) != len(distinct) {
		t.Errorf("%d keys for %d distinct quoted packets", len(keys), len(distinct))
	}
}
