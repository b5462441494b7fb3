package ruleset

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/filterd/filterd/packet"
)

// ListOptions are iptables -L's -v, -x and -n.
type ListOptions struct {
	Verbose bool // -v: counters and interfaces
	Exact   bool // -x: exact counter values
	// Numeric is -n: addresses, ports and protocols as numbers. Without it
	// filterd prints protocol, port, ICMP type and flag names and "anywhere",
	// but never looks up host or user names (iptables would).
	Numeric bool
	// UserName, if set, names a uid in listings without -n, as iptables
	// prints "owner UID match root".
	UserName func(uid uint32) (string, bool)
}

// List prints t as "iptables -L" with the given options prints it.
func List(w io.Writer, t *Table, opts ListOptions) error {
	var b strings.Builder
	for i, c := range SaveOrder(t) {
		if i > 0 {
			b.WriteByte('\n')
		}
		listChain(&b, t, c, opts)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	return nil
}

// listNum prints a counter as xtables_print_num does.
func listNum(n uint64, opts ListOptions, table bool) string {
	if opts.Exact {
		if table {
			return fmt.Sprintf("%8d ", n)
		}
		return fmt.Sprintf("%d ", n)
	}
	f := func(w int, suffix string, v uint64) string {
		if table {
			return fmt.Sprintf("%*d%s ", w, v, suffix)
		}
		return fmt.Sprintf("%d%s ", v, suffix)
	}
	if n <= 99999 {
		return f(5, "", n)
	}
	for _, s := range []string{"K", "M", "G"} {
		n = (n + 500) / 1000
		if n <= 9999 {
			return f(4, s, n)
		}
	}
	n = (n + 500) / 1000
	return f(4, "T", n)
}

func listChain(b *strings.Builder, t *Table, c *Chain, opts ListOptions) {
	if c.Builtin {
		fmt.Fprintf(b, "Chain %s (policy %s", c.Name, c.Policy)
		if opts.Verbose {
			fmt.Fprintf(b, " %spackets, %sbytes", listNum(c.Counters.Packets, opts, false), listNum(c.Counters.Bytes, opts, false))
		}
		b.WriteString(")\n")
	} else {
		fmt.Fprintf(b, "Chain %s (%d references)\n", c.Name, countRefs(t, c.Name))
	}
	if opts.Verbose {
		if opts.Exact {
			fmt.Fprintf(b, "%8s %10s ", "pkts", "bytes")
		} else {
			fmt.Fprintf(b, "%5s %5s ", "pkts", "bytes")
		}
	}
	fmt.Fprintf(b, "%-9s  prot opt", "target")
	if opts.Verbose {
		fmt.Fprintf(b, " %-6s %-6s ", "in", "out")
	}
	fmt.Fprintf(b, " %-19s  %-19s \n", "source", "destination")
	for _, r := range c.Rules {
		b.WriteString(ListRule(r, t.Family, opts))
		b.WriteByte('\n')
	}
}

func listAddr(m AddrMatch, fam packet.Family, numeric bool) string {
	p := m.Prefix
	s := ""
	if !p.IsValid() || p.Bits() == 0 {
		if !numeric {
			s = "anywhere"
		} else if fam == packet.IPv6 {
			s = "::/0"
		} else {
			s = "0.0.0.0/0"
		}
	} else if p.Bits() == p.Addr().BitLen() {
		s = p.Addr().String()
	} else {
		s = p.String()
	}
	c := " "
	if m.Invert {
		c = "!"
	}
	return c + fmt.Sprintf("%-19s ", s)
}

// ListRule prints one rule line of iptables -L (without the newline).
func ListRule(r *Rule, fam packet.Family, opts ListOptions) string {
	var b strings.Builder
	if opts.Verbose {
		b.WriteString(listNum(r.Counters.Packets, opts, true))
		b.WriteString(listNum(r.Counters.Bytes, opts, true))
	}
	tname := ""
	switch r.Target.Kind {
	case TargetAccept:
		tname = "ACCEPT"
	case TargetDrop:
		tname = "DROP"
	case TargetReturn:
		tname = "RETURN"
	case TargetJump, TargetGoto:
		tname = r.Target.Chain
	case TargetReject:
		tname = "REJECT"
	case TargetLog:
		tname = "LOG"
	}
	fmt.Fprintf(&b, "%-9s ", tname)
	if r.Proto.Invert {
		b.WriteByte('!')
	} else {
		b.WriteByte(' ')
	}
	var pn string
	switch {
	case opts.Numeric && r.Proto.Any:
		pn = "0"
	case opts.Numeric:
		pn = strconv.Itoa(int(r.Proto.Num))
	case r.Proto.Any:
		pn = "all"
	default:
		pn = protoString(r.Proto.Num)
	}
	fmt.Fprintf(&b, "%-4s ", pn)
	switch r.Frag {
	case True:
		b.WriteString("-f ")
	case False:
		b.WriteString("!f ")
	default:
		b.WriteString("-- ")
	}
	if opts.Verbose {
		iface := func(m IfaceMatch) string {
			s := m.Name
			if s == "" {
				s = "*"
				if !opts.Numeric {
					s = "any"
				}
			}
			if m.Invert {
				s = "!" + s
			}
			return s
		}
		fmt.Fprintf(&b, " %-6s %-6s ", iface(r.InIface), iface(r.OutIface))
	}
	b.WriteString(listAddr(r.Src, fam, opts.Numeric))
	b.WriteString(listAddr(r.Dst, fam, opts.Numeric))
	if r.Target.Kind == TargetGoto {
		b.WriteString("[goto] ")
	}
	for _, m := range r.Matches {
		b.WriteString(listMatch(m, fam, opts, r.Proto.Num))
	}
	switch r.Target.Kind {
	case TargetReject:
		b.WriteString(" reject-with " + rejectSaveNames[r.Target.Reject])
	case TargetLog:
		l := r.Target.Log
		flags := 0
		for i, on := range []bool{l.TCPSequence, l.TCPOptions, l.IPOptions, l.UID, false, l.MACDecode} {
			if on {
				flags |= 1 << i
			}
		}
		if opts.Numeric {
			fmt.Fprintf(&b, " LOG flags %d level %d", flags, l.Level)
		} else {
			names := []string{"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"}
			fmt.Fprintf(&b, " LOG level %s", names[l.Level&7])
			for _, f := range []struct {
				on bool
				s  string
			}{{l.TCPSequence, " tcp-sequence"}, {l.TCPOptions, " tcp-options"}, {l.IPOptions, " ip-options"}, {l.UID, " uid"}, {l.MACDecode, " macdecode"}} {
				if f.on {
					b.WriteString(f.s)
				}
			}
		}
		if l.Prefix != "" {
			fmt.Fprintf(&b, " prefix \"%s\"", l.Prefix)
		}
	}
	return b.String()
}

func listPorts(b *strings.Builder, name string, p PortMatch, numeric bool, proto uint8) {
	if !p.Set || (p.Lo == 0 && p.Hi == 65535 && !p.Invert) {
		return
	}
	port := func(n uint16) string {
		if !numeric {
			if s := portName(n, proto); s != "" {
				return s
			}
		}
		return strconv.Itoa(int(n))
	}
	iv := ""
	if p.Invert {
		iv = "!"
	}
	if p.Lo == p.Hi {
		fmt.Fprintf(b, " %s:%s%s", name, iv, port(p.Lo))
	} else {
		fmt.Fprintf(b, " %ss:%s%s:%s", name, iv, port(p.Lo), port(p.Hi))
	}
}

func icmpName(types []icmpType, t, lo, hi uint8) string {
	for _, it := range types {
		if it.typ == t && it.codeLo == lo && it.codeHi == hi {
			return it.name
		}
	}
	return ""
}

// listMatch describes a match as iptables -L does.
func listMatch(m Match, fam packet.Family, opts ListOptions, proto uint8) string {
	numeric := opts.Numeric
	var b strings.Builder
	switch v := m.(type) {
	case *TCPMatch:
		b.WriteString(" tcp")
		listPorts(&b, "spt", v.Sport, numeric, 6)
		listPorts(&b, "dpt", v.Dport, numeric, 6)
		if v.OptionSet {
			iv := ""
			if v.OptionInvert {
				iv = "!"
			}
			fmt.Fprintf(&b, " option=%s%d", iv, v.Option)
		}
		if v.Flags.Set && (v.Flags.Mask != 0 || v.Flags.Invert) {
			iv := ""
			if v.Flags.Invert {
				iv = "!"
			}
			if numeric {
				fmt.Fprintf(&b, " flags:%s0x%02X/0x%02X", iv, v.Flags.Mask, v.Flags.Comp)
			} else {
				fmt.Fprintf(&b, " flags:%s%s/%s", iv, tcpFlagString(v.Flags.Mask), tcpFlagString(v.Flags.Comp))
			}
		}
	case *UDPMatch:
		b.WriteString(" udp")
		listPorts(&b, "spt", v.Sport, numeric, 17)
		listPorts(&b, "dpt", v.Dport, numeric, 17)
	case *MultiportMatch:
		dir := [...]string{MultiportSrc: "sports", MultiportDst: "dports", MultiportBoth: "ports"}[v.Dir]
		fmt.Fprintf(&b, " multiport %s ", dir)
		if v.Invert {
			b.WriteString(" !")
		}
		var name func(uint16) string
		if !numeric {
			name = func(n uint16) string {
				if s := portName(n, proto); s != "" {
					return s
				}
				return strconv.Itoa(int(n))
			}
		}
		b.WriteString(multiportList(v.Ports, name))
	case *ICMPMatch:
		types, label := icmpTypes, " icmp"
		if v.V6 {
			types, label = icmp6Types, " ipv6-icmp"
		}
		b.WriteString(label)
		if !numeric {
			if n := icmpName(types, v.Type, v.CodeLo, v.CodeHi); n != "" {
				iv := ""
				if v.Invert {
					iv = "!"
				}
				fmt.Fprintf(&b, " %s%s", iv, n)
				break
			}
		}
		if v.Invert {
			b.WriteString(" !")
		}
		fmt.Fprintf(&b, "type %d", v.Type)
		if v.CodeLo == v.CodeHi {
			fmt.Fprintf(&b, " code %d", v.CodeLo)
		} else if v.CodeLo != 0 || v.CodeHi != 0xFF {
			fmt.Fprintf(&b, " codes %d-%d", v.CodeLo, v.CodeHi)
		}
	case *StateMatch:
		fmt.Fprintf(&b, "%s state %s", svInv(v.Invert), v.States)
	case *ConntrackMatch:
		b.WriteString(conntrackOpts(v, "ct"))
	case *LimitMatch:
		fmt.Fprintf(&b, " limit: avg %s burst %d", v.Rate, v.Burst)
	case *HashlimitMatch:
		if v.Above {
			b.WriteString(" limit: above")
		} else {
			b.WriteString(" limit: up to")
		}
		if v.Bytes {
			b.WriteString(" " + byteRate(v.Rate.Count))
		} else {
			fmt.Fprintf(&b, " %s burst %d", v.Rate, v.Burst)
		}
		if v.Mode != 0 {
			b.WriteString(" mode " + hashMode(v.Mode, "-"))
		}
		b.WriteString(hashlimitTail(v, fam, "", "htable-"))
	case *RecentMatch:
		b.WriteString(svInv(v.Invert))
		b.WriteString([...]string{RecentSet: " recent: SET", RecentCheck: " recent: CHECK", RecentUpdate: " recent: UPDATE", RecentRemove: " recent: REMOVE"}[v.Cmd])
		if v.Seconds != 0 {
			fmt.Fprintf(&b, " seconds: %d", v.Seconds)
		}
		if v.Reap {
			b.WriteString(" reap")
		}
		if v.Hitcount != 0 {
			fmt.Fprintf(&b, " hit_count: %d", v.Hitcount)
		}
		if v.RTTL {
			b.WriteString(" TTL-Match")
		}
		fmt.Fprintf(&b, " name: %s", v.Name)
		if v.Dest {
			b.WriteString(" side: dest")
		} else {
			b.WriteString(" side: source")
		}
		if v.Mask.IsValid() {
			fmt.Fprintf(&b, " mask: %s", v.Mask)
		}
	case *CommentMatch:
		fmt.Fprintf(&b, " /* %s */", v.Text)
	case *IPRangeMatch:
		if v.Src.From.IsValid() {
			fmt.Fprintf(&b, " source IP range%s %s-%s", svInv(v.Src.Invert), v.Src.From, v.Src.To)
		}
		if v.Dst.From.IsValid() {
			fmt.Fprintf(&b, " destination IP range%s %s-%s", svInv(v.Dst.Invert), v.Dst.From, v.Dst.To)
		}
	case *AddrtypeMatch:
		b.WriteString(" ADDRTYPE match")
		if v.Src != 0 {
			b.WriteString(" src-type ")
			if v.SrcInvert {
				b.WriteString("!")
			}
			b.WriteString(addrTypes(v.Src))
		}
		if v.Dst != 0 {
			b.WriteString(" dst-type ")
			if v.DstInvert {
				b.WriteString("!")
			}
			b.WriteString(addrTypes(v.Dst))
		}
		if v.LimitIfaceIn {
			b.WriteString(" limit-in")
		}
		if v.LimitIfaceOut {
			b.WriteString(" limit-out")
		}
	case *ConnlimitMatch:
		side, op := "src", "<="
		if v.Dest {
			side = "dst"
		}
		if v.Above {
			op = ">"
		}
		fmt.Fprintf(&b, " #conn %s/%d %s %d", side, v.Mask, op, v.Limit)
	case *MarkMatch:
		fmt.Fprintf(&b, " mark match%s %s", svInv(v.Invert), markString(v.Value, v.Mask))
	case *OwnerMatch:
		switch v.SocketExists {
		case True:
			b.WriteString(" owner socket exists")
		case False:
			b.WriteString(" ! owner socket exists")
		}
		if v.UID.Set {
			id := svIDRange(v.UID)
			if !numeric && v.UID.Lo == v.UID.Hi && opts.UserName != nil {
				if n, ok := opts.UserName(v.UID.Lo); ok {
					id = n
				}
			}
			fmt.Fprintf(&b, "%s owner UID match %s", svInv(v.UID.Invert), id)
		}
		if v.GID.Set {
			fmt.Fprintf(&b, "%s owner GID match %s", svInv(v.GID.Invert), svIDRange(v.GID))
		}
	case *LengthMatch:
		iv := ""
		if v.Invert {
			iv = "!"
		}
		fmt.Fprintf(&b, " length %s%s", iv, svPortRange(v.Lo, v.Hi))
	case *TTLMatch:
		n := "TTL"
		if v.V6 {
			n = "HL"
		}
		op := [...]string{CmpEq: "==", CmpNe: "!=", CmpLt: "<", CmpGt: ">"}[v.Op]
		fmt.Fprintf(&b, " %s match %s %s %d", n, n, op, v.Value)
	case *PkttypeMatch:
		op := "="
		if v.Invert {
			op = "!="
		}
		fmt.Fprintf(&b, " PKTTYPE %s %s", op, pktTypeNames[v.Type])
	case *MACMatch:
		fmt.Fprintf(&b, " MAC%s %s", svInv(v.Invert), macString(v.Addr))
	case *FragMatch:
		b.WriteString(" frag ")
		if v.HasID && (v.IDLo != 0 || v.IDHi != 0xFFFFFFFF || v.IDInvert) {
			iv := ""
			if v.IDInvert {
				iv = "!"
			}
			if v.IDLo == v.IDHi {
				fmt.Fprintf(&b, "id:%s%d", iv, v.IDLo)
			} else {
				fmt.Fprintf(&b, "ids:%s%d:%d", iv, v.IDLo, v.IDHi)
			}
		}
		if v.First {
			b.WriteString(" first")
		}
		if v.More {
			b.WriteString(" more")
		}
		if v.Last {
			b.WriteString(" last")
		}
	}
	return b.String()
}
