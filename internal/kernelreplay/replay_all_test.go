package kernelreplay

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Rules that accept everything and count every packet per chain with a rule
// that has no target.
const countRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT
-A FORWARD
-A OUTPUT
COMMIT
`

// traversals counts how many packets each hook/family sees in the kernel:
// IPv4 and IPv6 fragments are reassembled first (conntrack is active), so a
// complete datagram counts once and an incomplete one never; FORWARD packets
// with TTL/hop limit <= 1 never reach the FORWARD hook.
func traversals(t *testing.T, pl *plan) map[string]int {
	t.Helper()
	type fragKey struct {
		src, dst netip.Addr
		id       uint32
	}
	type fragSet struct {
		hook  Hook
		fam   int
		cover map[int]int // offset -> end
		end   int         // end of the datagram (from the last fragment); -1 unknown
	}
	out := map[string]int{}
	frags := map[fragKey]*fragSet{}
	var order []fragKey
	for i, p := range pl.pkts {
		h, err := parseIP(p.L3)
		if err != nil {
			t.Fatal(err)
		}
		hook, fam := pl.hooks[i], 4
		if h.v6 {
			fam = 6
		}
		if hook == HookForward && ttl(p.L3) <= 1 {
			continue
		}
		if !h.frag {
			out[fmt.Sprintf("%s/ipv%d", hook, fam)]++
			continue
		}
		var k fragKey
		var off, end int
		var more bool
		if h.v6 {
			// Find the fragment header again: it ends at h.l4.
			fh := p.L3[h.l4-8:]
			fo := binary.BigEndian.Uint16(fh[2:])
			k = fragKey{h.src(p.L3), h.dst(p.L3), binary.BigEndian.Uint32(fh[4:])}
			off, more = int(fo>>3)*8, fo&1 == 1
			end = off + h.end - h.l4
		} else {
			fo := binary.BigEndian.Uint16(p.L3[6:])
			k = fragKey{h.src(p.L3), h.dst(p.L3), uint32(binary.BigEndian.Uint16(p.L3[4:]))<<8 | uint32(h.proto)}
			off, more = int(fo&0x1fff)*8, fo&0x2000 != 0
			end = off + h.end - h.hlen
		}
		fs := frags[k]
		if fs == nil {
			fs = &fragSet{hook: hook, fam: fam, cover: map[int]int{}, end: -1}
			frags[k] = fs
			order = append(order, k)
		}
		fs.cover[off] = end
		if !more {
			fs.end = end
		}
	}
	for _, k := range order {
		fs := frags[k]
		pos := 0
		for fs.end >= 0 && pos < fs.end {
			e, ok := fs.cover[pos]
			if !ok {
				break
			}
			pos = e
		}
		if fs.end >= 0 && pos == fs.end {
			out[fmt.Sprintf("%s/ipv%d", fs.hook, fs.fam)]++
		}
	}
	return out
}

// TestKernelReplayEveryPcap replays every capture in testdata/pcaps through
// rules that count each chain's packets, and checks that each packet went
// through exactly the hook the --local mapping gives it: the kernel's count
// per chain equals the capture's packets per hook (after reassembly, less
// FORWARD packets whose TTL runs out), and nothing failed to send.
func TestKernelReplayEveryPcap(t *testing.T) {
	needRoot(t)
	for _, path := range pcapFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			var local []netip.Prefix
			if strings.HasPrefix(name, "captured_") {
				local = []netip.Prefix{netip.MustParsePrefix("198.18.2.2/32"), netip.MustParsePrefix("fd00:198:18:2::2/128")}
			}
			cfg := Config{Rules: countRules, Rules6: countRules, Pcap: path, Local: local, Interval: 200 * time.Microsecond, Capture: true}
			pl, err := makePlan(cfg)
			if err != nil {
				t.Fatal(err)
			}
			want := traversals(t, pl)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.SendErrors != 0 {
				for _, v := range res.Verdicts {
					if v.Err != "" {
						t.Errorf("packet %d (%s, %d B): %s", v.Index, v.Hook, v.Len, v.Err)
					}
				}
			}
			got := map[string]int{}
			for fam, save := range map[int]string{4: res.Save4, 6: res.Save6} {
				for k, c := range Counters(save) {
					if c.Packets > 0 && strings.HasPrefix(k, "filter/-A ") {
						got[fmt.Sprintf("%s/ipv%d", strings.TrimPrefix(k, "filter/-A "), fam)] = int(c.Packets)
					}
				}
			}
			t.Logf("per hook: kernel %v, capture %v; TTL expired %v; own drops v4 %v v6 %v", got, want, res.TTLExpired, res.OwnDropped4, res.OwnDropped6)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("kernel counted %v, capture gives %v (sent %v, TTL expired %v)", got, want, res.Sent, res.TTLExpired)
			}
			// Everything is accepted: every packet is seen where it should
			// arrive, except FORWARD packets whose TTL runs out.
			expired := map[int]bool{}
			for _, i := range res.TTLExpired {
				expired[i] = true
			}
			for _, v := range res.Verdicts {
				want := VerdictPassed
				if expired[v.Index] {
					want = VerdictDropped
				}
				if v.Verdict != want && v.Verdict != VerdictUnknown {
					t.Errorf("packet %d (%s ipv%d, %d B): %v, want %v", v.Index, v.Hook, v.Family, v.Len, v.Verdict, want)
				}
			}
			if left := ourNamespaces(t); len(left) != 0 {
				t.Errorf("namespaces left behind: %v", left)
			}
		})
	}
}
