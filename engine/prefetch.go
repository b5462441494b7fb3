package engine

import (
	"encoding/binary"
	"net/netip"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
)

// PrefetchMax is the most packets one Worker.Prefetch call looks at.
const PrefetchMax = 32

// Prefetch starts loading what Process will read for each of pkts (raw L3
// packets, at most PrefetchMax; the rest are ignored): their conntrack
// buckets, then the entries at the head of those buckets. A caller holding
// a batch (a pcap read ahead, a recvmmsg batch) calls it once and then
// Process for each packet: the cache misses of the batch then overlap
// instead of costing a memory latency each. It changes nothing and only
// plain IPv4/IPv6 TCP and UDP packets are looked at.
func (w *Worker) Prefetch(pkts [][]byte) {
	if len(pkts) > PrefetchMax {
		pkts = pkts[:PrefetchMax]
	}
	ct := w.e.cfg.Conntrack
	n := 0
	var k conntrack.Key
	for _, b := range pkts {
		if flowKey(b, &k) {
			w.pf[n] = ct.PrefetchBucket(&k)
			n++
		}
	}
	for i := 0; i < n; i++ {
		ct.PrefetchEntry(w.pf[i])
	}
}

// flowKey reads the conntrack tuple of a plain IPv4 or IPv6 TCP or UDP
// packet (not a fragment, no IPv6 extension header) without decoding it.
func flowKey(b []byte, k *conntrack.Key) bool {
	var l4 []byte
	switch {
	case len(b) >= 24 && b[0]>>4 == 4:
		ihl := int(b[0]&15) * 4
		if ihl < 20 || len(b) < ihl+4 || binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
			return false
		}
		k.Family, k.Proto = packet.IPv4, b[9]
		k.Src = netip.AddrFrom4([4]byte(b[12:16]))
		k.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:]
	case len(b) >= 44 && b[0]>>4 == 6:
		k.Family, k.Proto = packet.IPv6, b[6]
		k.Src = netip.AddrFrom16([16]byte(b[8:24]))
		k.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return false
	}
	if k.Proto != packet.ProtoTCP && k.Proto != packet.ProtoUDP {
		return false
	}
	k.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	k.DstPort = binary.BigEndian.Uint16(l4[2:4])
	return true
}
