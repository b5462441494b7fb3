package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/packet"
)

// KernelFlow is one entry of the kernel's conntrack table, as ctnetlink
// dumps it (conntrack -L).
type KernelFlow struct {
	Orig      conntrack.Key
	TCPState  string // conntrack-tools' name, "" for other protocols
	SeenReply bool
	Assured   bool
}

// ctnetlink constants (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	nfnlSubsysCTNetlink = 1
	ipctnlMsgCtGet      = 1
	ctaTupleOrig        = 1
	ctaStatus           = 3
	ctaProtoinfo        = 4
	ctaTupleIP          = 1
	ctaTupleProto       = 2
	ctaIPv4Src          = 1
	ctaIPv4Dst          = 2
	ctaIPv6Src          = 3
	ctaIPv6Dst          = 4
	ctaProtoNum         = 1
	ctaProtoSrcPort     = 2
	ctaProtoDstPort     = 3
	ctaProtoICMPID      = 4
	ctaProtoICMPType    = 5
	ctaProtoICMPCode    = 6
	ctaProtoICMPv6ID    = 7
	ctaProtoICMPv6Type  = 8
	ctaProtoICMPv6Code  = 9
	ctaProtoinfoTCP     = 1
	ctaProtoinfoTCPSt   = 1
	ipsSeenReply        = 1 << 1
	ipsAssured          = 1 << 2
)

// kernelTCPStates are enum tcp_conntrack's names as conntrack-tools prints them.
var kernelTCPStates = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
	"CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

// DumpKernelConntrack reads the kernel's conntrack table of the calling
// process's network namespace over ctnetlink (CAP_NET_ADMIN).
func DumpKernelConntrack() ([]KernelFlow, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("ctnetlink: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysCTNetlink<<8 | ipctnlMsgCtGet), Flags: netlink.Request | netlink.Dump},
		Data:   []byte{unix.AF_UNSPEC, 0, 0, 0},
	})
	if err != nil {
		return nil, fmt.Errorf("ctnetlink dump: %w", err)
	}
	out := make([]KernelFlow, 0, len(msgs))
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		f, err := parseCTMessage(m.Data[0], m.Data[4:])
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	return out, nil
}

func parseCTMessage(family byte, b []byte) (KernelFlow, error) {
	var f KernelFlow
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return f, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleOrig:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				f.Orig = parseTuple(nad)
				return nil
			})
		case ctaStatus:
			st := ad.Uint32()
			f.SeenReply, f.Assured = st&ipsSeenReply != 0, st&ipsAssured != 0
		case ctaProtoinfo:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == ctaProtoinfoTCP {
						nad.Nested(func(tad *netlink.AttributeDecoder) error {
							for tad.Next() {
								if tad.Type() == ctaProtoinfoTCPSt {
									if s := int(tad.Uint8()); s < len(kernelTCPStates) {
										f.TCPState = kernelTCPStates[s]
									}
								}
							}
							return nil
						})
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return f, err
	}
	if !f.Orig.Src.IsValid() {
		return f, errors.New("ctnetlink: entry without an original tuple")
	}
	f.Orig.Family = packet.IPv4
	if family == unix.AF_INET6 || f.Orig.Src.Is6() {
		f.Orig.Family = packet.IPv6
	}
	return f, nil
}

func parseTuple(ad *netlink.AttributeDecoder) conntrack.Key {
	var k conntrack.Key
	var icmpType, icmpCode uint8
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleIP:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					b := nad.Bytes()
					switch nad.Type() {
					case ctaIPv4Src, ctaIPv6Src:
						k.Src, _ = netip.AddrFromSlice(b)
					case ctaIPv4Dst, ctaIPv6Dst:
						k.Dst, _ = netip.AddrFromSlice(b)
					}
				}
				return nil
			})
		case ctaTupleProto:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case ctaProtoNum:
						k.Proto = nad.Uint8()
					case ctaProtoSrcPort, ctaProtoICMPID, ctaProtoICMPv6ID:
						k.SrcPort = nad.Uint16()
					case ctaProtoDstPort:
						k.DstPort = nad.Uint16()
					case ctaProtoICMPType, ctaProtoICMPv6Type:
						icmpType = nad.Uint8()
					case ctaProtoICMPCode, ctaProtoICMPv6Code:
						icmpCode = nad.Uint8()
					}
				}
				return nil
			})
		}
	}
	if k.Proto == packet.ProtoICMP || k.Proto == packet.ProtoICMPv6 {
		k.DstPort = uint16(icmpType)<<8 | uint16(icmpCode)
	}
	return k
}

// FlowDiff is one flow on which filterd's table and the kernel's disagree.
type FlowDiff struct {
	Key             conntrack.Key
	Kernel, Filterd string // "TCP-STATE flags" or "absent"
}

// FlowComparison is the result of CompareFlows.
type FlowComparison struct {
	Kernel, Filterd int // entries in each table
	Same            int // flows in both with the same state and flags
	Diffs           []FlowDiff
}

// CompareFlows compares the kernel's conntrack entries with filterd's
// table: every flow in either, by its original tuple, with its TCP state,
// [UNREPLIED] and [ASSURED]. Flows that change while the two are read
// show up as differences; compare a quiet moment or repeat.
func CompareFlows(kernel []KernelFlow, t *conntrack.Table) FlowComparison {
	var c FlowComparison
	seen := make(map[conntrack.Key]bool, len(kernel))
	c.Kernel = len(kernel)
	for _, kf := range kernel {
		seen[kf.Orig] = true
		ks := flowDesc(kf.TCPState, kf.SeenReply, kf.Assured)
		en, ok := t.Get(kf.Orig)
		if ok {
			seen[en.Orig] = true
		}
		if !ok {
			c.Diffs = append(c.Diffs, FlowDiff{Key: kf.Orig, Kernel: ks, Filterd: "absent"})
			continue
		}
		if fs := flowDesc(en.State, en.SeenReply, en.Assured); fs != ks {
			c.Diffs = append(c.Diffs, FlowDiff{Key: kf.Orig, Kernel: ks, Filterd: fs})
			continue
		}
		c.Same++
	}
	t.Range(func(en conntrack.Entry) bool {
		c.Filterd++
		if !seen[en.Orig] {
			c.Diffs = append(c.Diffs, FlowDiff{Key: en.Orig, Kernel: "absent", Filterd: flowDesc(en.State, en.SeenReply, en.Assured)})
		}
		return true
	})
	return c
}

func flowDesc(state string, seenReply, assured bool) string {
	s := state
	if !seenReply {
		s += " [UNREPLIED]"
	}
	if assured {
		s += " [ASSURED]"
	}
	return s
}
