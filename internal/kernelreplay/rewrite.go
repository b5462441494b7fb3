package kernelreplay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// addrSlot is one address field inside a packet.
type addrSlot struct{ off, n int }

// slots lists every address field of an IP packet: the header's source and
// destination, those of the packet quoted inside an ICMP/ICMPv6 error, and the
// target (and destination) of IPv6 neighbor discovery and redirect messages.
func slots(b []byte) ([]addrSlot, ipHdr, *ipHdr, error) {
	h, err := parseIP(b)
	if err != nil {
		return nil, h, nil, err
	}
	out := []addrSlot{{h.srcOff, h.alen}, {h.dstOff, h.alen}}
	if !h.l4Known || !h.first {
		return out, h, nil, nil
	}
	icmp := (h.proto == 1 && !h.v6) || (h.proto == 58 && h.v6)
	if !icmp || h.l4+8 > h.end {
		return out, h, nil, nil
	}
	typ := b[h.l4]
	if isICMPError(h.v6, typ) {
		ih, err := parseIP(b[h.l4+8 : h.end])
		if err != nil {
			return out, h, nil, nil // not a quoted IP packet we can read: leave it
		}
		base := h.l4 + 8
		out = append(out, addrSlot{base + ih.srcOff, ih.alen}, addrSlot{base + ih.dstOff, ih.alen})
		return out, h, &ih, nil
	}
	if h.v6 {
		switch typ {
		case 135, 136: // neighbor solicitation / advertisement: target
			if h.l4+24 <= h.end {
				out = append(out, addrSlot{h.l4 + 8, 16})
			}
		case 137: // redirect: target, destination
			if h.l4+40 <= h.end {
				out = append(out, addrSlot{h.l4 + 8, 16}, addrSlot{h.l4 + 24, 16})
			}
		}
	}
	return out, h, nil, nil
}

// Addrs returns every address a packet carries (see slots).
func Addrs(l3 []byte) ([]netip.Addr, error) {
	ss, _, _, err := slots(l3)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = addrAt(l3, s.off, s.n)
	}
	return out, nil
}

// CheckAddrs returns an error unless every address the packet carries is
// inside 198.18.0.0/15 or fd00:198:18::/48. The replay calls it on every
// packet before sending it.
func CheckAddrs(l3 []byte) error {
	as, err := Addrs(l3)
	if err != nil {
		return err
	}
	for _, a := range as {
		if !InRange(a) {
			return fmt.Errorf("address %s outside %s and %s", a, Range4, Range6)
		}
	}
	return nil
}

// Rewrite maps every address of the packet (in place) and updates the IPv4
// header checksum, the transport checksum and those of a quoted packet
// incrementally, so that each keeps its validity. Every address must be one
// the map was built with.
func (m *AddrMap) Rewrite(l3 []byte) error {
	ss, h, inner, err := slots(l3)
	if err != nil {
		return err
	}
	old := append([]byte(nil), l3...)
	for _, s := range ss {
		a := addrAt(l3, s.off, s.n)
		img, ok := m.Map(a)
		if !ok {
			return fmt.Errorf("address %s not in the address map", a)
		}
		copy(l3[s.off:s.off+s.n], img.AsSlice())
	}
	if inner != nil {
		base := h.l4 + 8
		ib := l3[base:h.end]
		iold := old[base:h.end]
		if !inner.v6 && inner.hlen <= len(ib) {
			adjust(ib[10:12], iold[:inner.hlen], ib[:inner.hlen])
		}
		if off, pseudo, ok := csumOff(inner.proto); ok && pseudo && inner.l4Known && inner.first && inner.l4+off+2 <= len(ib) &&
			!(inner.proto == 17 && !inner.v6 && binary.BigEndian.Uint16(ib[inner.l4+off:]) == 0) {
			f := ib[inner.l4+off : inner.l4+off+2]
			adjust(f, pseudoAddrs(iold, *inner), pseudoAddrs(ib, *inner))
		}
	}
	if !h.v6 && h.hlen <= len(l3) {
		adjust(l3[10:12], old[:h.hlen], l3[:h.hlen])
	}
	off, pseudo, ok := csumOff(h.proto)
	if !ok || !h.l4Known || !h.first || h.l4+off+2 > h.end {
		return nil
	}
	if h.proto == 1 && h.v6 || h.proto == 58 && !h.v6 {
		return nil
	}
	f := l3[h.l4+off : h.l4+off+2]
	if h.proto == 17 && !h.v6 && binary.BigEndian.Uint16(f) == 0 {
		return nil // IPv4 UDP without checksum
	}
	// The covered bytes first, while the field itself is still unchanged
	// (so it adds nothing to the difference), then the pseudo-header.
	adjust(f, old[h.l4:h.end], l3[h.l4:h.end])
	if pseudo {
		adjust(f, pseudoAddrs(old, h), pseudoAddrs(l3, h))
	}
	if h.proto == 17 && binary.BigEndian.Uint16(f) == 0 {
		binary.BigEndian.PutUint16(f, 0xffff)
	}
	return nil
}

func pseudoAddrs(b []byte, h ipHdr) []byte {
	out := make([]byte, 0, 2*h.alen)
	out = append(out, b[h.srcOff:h.srcOff+h.alen]...)
	return append(out, b[h.dstOff:h.dstOff+h.alen]...)
}

// CollectAddrs returns every distinct address the packets carry, in order of
// first appearance. Packets that are not valid IP are skipped.
func CollectAddrs(pkts []Packet) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, p := range pkts {
		as, err := Addrs(p.L3)
		if err != nil {
			continue
		}
		for _, a := range as {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// addrOptions are the iptables options whose argument is an address, prefix
// or comma-separated list of them.
var addrOptions = map[string]bool{
	"-s": true, "--source": true, "--src": true, "-d": true, "--destination": true, "--dst": true,
}

// RulePrefixes returns the prefixes and addresses (as full-length prefixes)
// that an iptables-restore file names after -s/-d/--source/--destination.
// Host names are not resolved; address ranges (-m iprange) are not read.
func RulePrefixes(rules string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for ln, line := range strings.Split(rules, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if !addrOptions[f[i]] {
				continue
			}
			arg := f[i+1]
			if arg == "!" && i+2 < len(f) {
				arg = f[i+2]
			}
			for _, tok := range strings.Split(arg, ",") {
				p, err := parsePrefix(tok)
				if err != nil {
					return nil, fmt.Errorf("rules line %d: %s %q: %w", ln+1, f[i], tok, err)
				}
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// parsePrefix reads ADDR, ADDR/LEN or ADDR/DOTTED-MASK. An IPv4 address may
// be abbreviated as iptables allows (xtables' numeric_to_ipaddr fills the
// missing bytes with zeros): "0/0" is 0.0.0.0/0, "10/8" is 10.0.0.0/8.
func parsePrefix(s string) (netip.Prefix, error) {
	addr, mask, has := strings.Cut(s, "/")
	a, err := netip.ParseAddr(completeIPv4(addr))
	if err != nil {
		return netip.Prefix{}, err
	}
	if !has {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	if m, err := netip.ParseAddr(mask); err == nil && m.Is4() {
		v := binary.BigEndian.Uint32(m.AsSlice())
		n := 0
		for v&0x80000000 != 0 {
			n, v = n+1, v<<1
		}
		if v != 0 {
			return netip.Prefix{}, fmt.Errorf("non-contiguous netmask %s", mask)
		}
		return netip.PrefixFrom(a, n).Masked(), nil
	}
	n, err := strconv.Atoi(mask)
	if err != nil || n < 0 || n > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("bad prefix length %q in %q", mask, s)
	}
	return netip.PrefixFrom(a, n).Masked(), nil
}

// completeIPv4 turns an abbreviated IPv4 address of one to three
// dot-separated numbers into four ("10" → "10.0.0.0", "10.1" → "10.1.0.0");
// anything else is returned as it is.
func completeIPv4(s string) string {
	if s == "" || strings.Count(s, ".") >= 3 || strings.Trim(s, "0123456789.") != "" {
		return s
	}
	return s + strings.Repeat(".0", 3-strings.Count(s, "."))
}

// RewriteRules replaces every address and prefix the rules name (see
// RulePrefixes) by its image under m, so that the rewritten rules select the
// rewritten packets exactly as the original rules select the original ones.
func (m *AddrMap) RewriteRules(rules string) (string, error) {
	lines := strings.Split(rules, "\n")
	for ln, line := range lines {
		f := strings.Fields(line)
		changed := false
		for i := 0; i+1 < len(f); i++ {
			if !addrOptions[f[i]] {
				continue
			}
			j := i + 1
			if f[j] == "!" && j+1 < len(f) {
				j++
			}
			toks := strings.Split(f[j], ",")
			for k, tok := range toks {
				p, err := parsePrefix(tok)
				if err != nil {
					return "", fmt.Errorf("rules line %d: %q: %w", ln+1, tok, err)
				}
				img, ok := m.MapPrefix(p)
				if !ok {
					return "", fmt.Errorf("rules line %d: prefix %s not in the address map", ln+1, p)
				}
				if img.Bits() == img.Addr().BitLen() && !strings.Contains(tok, "/") {
					toks[k] = img.Addr().String()
				} else {
					toks[k] = img.String()
				}
			}
			if s := strings.Join(toks, ","); s != f[j] {
				f[j], changed = s, true
			}
		}
		if changed {
			lines[ln] = strings.Join(f, " ")
		}
	}
	return strings.Join(lines, "\n"), nil
}

// RewriteResult describes one rewrite.
type RewriteResult struct {
	Read    ReadResult
	Packets []Packet // the rewritten packets, raw IP
	Map     *AddrMap
	// Rules and Rules6 are the rules files with their addresses rewritten.
	Rules, Rules6 string
	// Dropped lists "packet N: reason" for IP packets that could not be rewritten.
	Dropped []string
}

// Rewrite reads a capture, builds the address map from its addresses, the
// extra addresses (e.g. --local ones) and the prefixes the rules files name,
// and rewrites every packet and both rules files.
func Rewrite(pcapPath string, rules, rules6 string, extra []netip.Addr, extraPrefixes []netip.Prefix) (*RewriteResult, error) {
	pkts, rr, err := ReadPcap(pcapPath)
	if err != nil {
		return nil, err
	}
	res := &RewriteResult{Read: rr}
	var prefixes []netip.Prefix
	for _, r := range []string{rules, rules6} {
		ps, err := RulePrefixes(r)
		if err != nil {
			return nil, fmt.Errorf("kernelreplay: %w", err)
		}
		prefixes = append(prefixes, ps...)
	}
	prefixes = append(prefixes, extraPrefixes...)
	addrs := append(CollectAddrs(pkts), extra...)
	m, err := NewAddrMap(addrs, prefixes)
	if err != nil {
		return nil, err
	}
	res.Map = m
	out := pkts[:0]
	for _, p := range pkts {
		if err := m.Rewrite(p.L3); err != nil {
			res.Dropped = append(res.Dropped, fmt.Sprintf("packet %d: %v", p.Index, err))
			continue
		}
		if err := CheckAddrs(p.L3); err != nil {
			return nil, fmt.Errorf("kernelreplay: packet %d after rewrite: %w", p.Index, err)
		}
		out = append(out, p)
	}
	res.Packets = out
	if res.Rules, err = m.RewriteRules(rules); err != nil {
		return nil, fmt.Errorf("kernelreplay: rules: %w", err)
	}
	if res.Rules6, err = m.RewriteRules(rules6); err != nil {
		return nil, fmt.Errorf("kernelreplay: rules6: %w", err)
	}
	return res, nil
}

// RewriteFile rewrites a capture (see Rewrite) and writes it as a raw-IP pcap.
func RewriteFile(in, out string, rules, rules6 string) (*RewriteResult, error) {
	res, err := Rewrite(in, rules, rules6, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := WritePcap(out, res.Packets, res.Read.Nanos); err != nil {
		return nil, err
	}
	return res, nil
}
