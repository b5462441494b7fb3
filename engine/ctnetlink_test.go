package engine

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/netlink"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
)

// ctMessage encodes a ctnetlink entry as the kernel sends it (after the
// nfgenmsg header).
func ctMessage(t *testing.T, src, dst netip.Addr, proto uint8, sport, dport uint16, status uint32, tcpState uint8) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.Nested(ctaTupleOrig, func(nae *netlink.AttributeEncoder) error {
		nae.Nested(ctaTupleIP, func(ip *netlink.AttributeEncoder) error {
			if src.Is4() {
				ip.Bytes(ctaIPv4Src, src.AsSlice())
				ip.Bytes(ctaIPv4Dst, dst.AsSlice())
			} else {
				ip.Bytes(ctaIPv6Src, src.AsSlice())
				ip.Bytes(ctaIPv6Dst, dst.AsSlice())
			}
			return nil
		})
		nae.Nested(ctaTupleProto, func(p *netlink.AttributeEncoder) error {
			p.Uint8(ctaProtoNum, proto)
			p.ByteOrder = binary.BigEndian
			p.Uint16(ctaProtoSrcPort, sport)
			p.Uint16(ctaProtoDstPort, dport)
			return nil
		})
		return nil
	})
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(ctaStatus, status)
	if proto == packet.ProtoTCP {
		ae.Nested(ctaProtoinfo, func(pi *netlink.AttributeEncoder) error {
			pi.Nested(ctaProtoinfoTCP, func(tcp *netlink.AttributeEncoder) error {
				tcp.Uint8(ctaProtoinfoTCPSt, tcpState)
				return nil
			})
			return nil
		})
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCompareFlows(t *testing.T) {
	cli, srv := netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.1.1")
	// filterd's table: one TCP handshake seen (SYN in, SYN-ACK out, ACK in).
	ct := conntrack.New(conntrack.Config{})
	eng, _ := New(Config{Conntrack: ct})
	w := eng.NewWorker()
	now := time.Unix(1000, 0)
	for _, s := range []struct {
		pkt  []byte
		hook packet.Hook
	}{
		{buildIP(cli, srv, 6, tcpSeg(40000, 80, 100, 0, 0x02, 0), 0), packet.HookInput},
		{buildIP(srv, cli, 6, tcpSeg(80, 40000, 500, 101, 0x12, 0), 0), packet.HookOutput},
		{buildIP(cli, srv, 6, tcpSeg(40000, 80, 101, 501, 0x10, 0), 0), packet.HookInput},
	} {
		now = now.Add(time.Millisecond)
		w.Process(s.pkt, packet.Meta{Time: now, Hook: s.hook, Local: s.hook == packet.HookOutput})
	}
	mk := func(sport uint16, status uint32, st uint8) KernelFlow {
		f, err := parseCTMessage(2, ctMessage(t, cli, srv, 6, sport, 80, status, st))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	// ESTABLISHED [ASSURED]: both set it on the handshake's last ACK.
	same := mk(40000, ipsSeenReply|ipsAssured, 3)
	if same.Orig.Src != cli || same.Orig.DstPort != 80 || same.TCPState != "ESTABLISHED" || !same.SeenReply || !same.Assured {
		t.Fatalf("parsed %+v", same)
	}
	c := CompareFlows([]KernelFlow{same}, ct)
	if c.Same != 1 || len(c.Diffs) != 0 || c.Kernel != 1 || c.Filterd != 1 {
		t.Fatalf("same flow: %+v", c)
	}
	// A state that differs, and a flow only the kernel has.
	c = CompareFlows([]KernelFlow{mk(40000, ipsSeenReply|ipsAssured, 7), mk(40001, 0, 1)}, ct)
	if c.Same != 0 || len(c.Diffs) != 2 {
		t.Fatalf("diffs: %+v", c)
	}
	if d := c.Diffs[0]; d.Kernel != "TIME_WAIT [ASSURED]" || d.Filterd != "ESTABLISHED [ASSURED]" {
		t.Errorf("first diff %+v", d)
	}
	if d := c.Diffs[1]; d.Filterd != "absent" || d.Kernel != "SYN_SENT [UNREPLIED]" {
		t.Errorf("second diff %+v", d)
	}
	// A flow only filterd has.
	c = CompareFlows(nil, ct)
	if len(c.Diffs) != 1 || c.Diffs[0].Kernel != "absent" {
		t.Errorf("filterd-only flow: %+v", c)
	}
}
