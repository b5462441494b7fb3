package ruleset

import (
	"fmt"
	"math/bits"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/filterd/filterd/packet"
)

var placeholderRE = regexp.MustCompile(`^[0-9xXyYzZnN*]{1,3}(\.[0-9xXyYzZnN*]{1,3}){3}$`)
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$`)

// parseAddrs parses a -s/-d argument: a comma list of addresses, each with an
// optional /prefix-length or (IPv4) /dotted.mask; hostnames are resolved with
// the injected resolver. It returns nil for "any" (0/0, not inverted).
func (rs *ruleState) parseAddrs(t token, inv bool) ([]netip.Prefix, bool) {
	fam := rs.p.opts.Family
	var out []netip.Prefix
	ok := true
	for _, e := range strings.Split(t.text, ",") {
		ps, good := rs.parseAddr(t, e, fam)
		if !good {
			ok = false
			continue
		}
		out = append(out, ps...)
	}
	if !ok {
		return nil, false
	}
	if len(out) == 1 && out[0].Bits() == 0 {
		if inv {
			rs.errorf(t, "drop the rule, or the '!'", "! with %s matches no packet; iptables-restore (nf_tables) rejects it", t.text)
			return nil, false
		}
		return nil, true
	}
	return out, true
}

// parseAddr parses one address of a list.
func (rs *ruleState) parseAddr(t token, e string, fam packet.Family) ([]netip.Prefix, bool) {
	host, mask, hasMask := strings.Cut(e, "/")
	maxBits := 32
	if fam == packet.IPv6 {
		maxBits = 128
	}
	if host == "" {
		rs.errorf(t, "", "empty address in %q", t.text)
		return nil, false
	}
	bitsN := maxBits
	if hasMask {
		if n, err := strconv.Atoi(mask); err == nil {
			if n < 0 || n > maxBits {
				rs.errorf(t, "", "invalid prefix length /%s (0 to %d)", mask, maxBits)
				return nil, false
			}
			bitsN = n
		} else if m, err := netip.ParseAddr(mask); err == nil && m.Is4() && fam == packet.IPv4 {
			v := m.As4()
			u := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
			ones := bits.LeadingZeros32(^u)
			if ones < 32 && u<<ones != 0 {
				rs.unsupportedf(t, "non-contiguous netmask %s is not supported by filterd yet", mask)
				return nil, false
			}
			bitsN = ones
		} else {
			rs.errorf(t, "", "invalid netmask %q", mask)
			return nil, false
		}
	}
	var addrs []netip.Addr
	if a, ok := parseIPv4Loose(host); ok && fam == packet.IPv4 {
		addrs = []netip.Addr{a}
	} else if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			rs.errorf(t, "", "address %q has a zone", host)
			return nil, false
		}
		if a.Is4In6() && fam == packet.IPv4 {
			a = a.Unmap()
		}
		if (fam == packet.IPv4) != a.Is4() {
			hint := "read the file as IPv6 with -6 (ip6tables-restore)"
			if fam == packet.IPv6 {
				hint = "this file is read as IPv6; IPv4 rules go in an iptables file"
			}
			rs.errorf(t, hint, "%s address %s in an %s rule", famOf(a), host, fam)
			return nil, false
		}
		addrs = []netip.Addr{a}
	} else if placeholderRE.MatchString(host) && !looksNumeric(host) {
		rs.errorf(t, "replace it with the address it stands for", "%q is a placeholder, not an address", host)
		return nil, false
	} else if looksNumeric(host) || !hostnameRE.MatchString(host) {
		rs.errorf(t, "", "invalid address %q", host)
		return nil, false
	} else {
		if rs.p.opts.Resolve == nil {
			rs.unsupportedf(t, "hostname %q: filterd does not resolve hostnames here; write the address", host)
			return nil, false
		}
		res, err := rs.p.opts.Resolve(host)
		for _, a := range res {
			a = a.Unmap()
			if (fam == packet.IPv4) == a.Is4() {
				addrs = append(addrs, a)
			}
		}
		if err != nil || len(addrs) == 0 {
			why := "no " + fam.String() + " address"
			if err != nil {
				why = err.Error()
			}
			rs.unsupportedf(t, "hostname %q cannot be resolved (%s); write the address", host, why)
			return nil, false
		}
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		pf, err := a.Prefix(bitsN)
		if err != nil {
			rs.errorf(t, "", "invalid address %q", e)
			return nil, false
		}
		out = append(out, pf)
	}
	return out, true
}

func famOf(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func looksNumeric(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return true
}

// parseAddrOrPrefix parses "addr" or "addr/len" for conntrack-style options.
func parseAddrOrPrefix(s string, fam packet.Family) (netip.Prefix, error) {
	host, mask, hasMask := strings.Cut(s, "/")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q", host)
	}
	a = a.Unmap()
	if (fam == packet.IPv4) != a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%s address %s in an %s rule", famOf(a), host, fam)
	}
	n := a.BitLen()
	if hasMask {
		if v, err := strconv.Atoi(mask); err == nil && v >= 0 && v <= a.BitLen() {
			n = v
		} else if m, err := netip.ParseAddr(mask); err == nil && m.Is4() && a.Is4() {
			v := m.As4()
			u := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
			ones := bits.LeadingZeros32(^u)
			if ones < 32 && u<<ones != 0 {
				return netip.Prefix{}, fmt.Errorf("non-contiguous netmask %s", mask)
			}
			n = ones
		} else {
			return netip.Prefix{}, fmt.Errorf("invalid mask %q", mask)
		}
	}
	return a.Prefix(n)
}

// parseIPv4Loose parses an IPv4 address as iptables does
// (xtables_numeric_to_ipaddr): one to four parts, each a C number (decimal,
// 0x hex or 0 octal) up to 255, missing trailing parts zero ("198.18/15",
// "0/0").
func parseIPv4Loose(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 || s == "" {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 0, 8)
		if err != nil || p == "" || strings.HasPrefix(p, "+") || strings.Contains(p, "_") {
			return netip.Addr{}, false
		}
		b[i] = byte(v)
	}
	return netip.AddrFrom4(b), true
}
