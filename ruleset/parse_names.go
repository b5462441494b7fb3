package ruleset

import (
	"sort"
	"strings"
)

// protoByName maps protocol names (as in /etc/protocols and iptables' own
// table) to numbers. filterd does not read /etc/protocols.
var protoByName = map[string]uint8{
	"ip": 0, "icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "st": 5, "tcp": 6, "egp": 8, "igp": 9,
	"pup": 12, "udp": 17, "hmp": 20, "xns-idp": 22, "rdp": 27, "iso-tp4": 29, "dccp": 33, "xtp": 36,
	"ddp": 37, "idpr-cmtp": 38, "ipv6": 41, "ipv6-route": 43, "ipv6-frag": 44, "idrp": 45,
	"rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "skip": 57, "ipv6-icmp": 58, "icmpv6": 58,
	"ipv6-nonxt": 59, "ipv6-opts": 60, "rspf": 73, "vmtp": 81, "eigrp": 88, "ospf": 89,
	"ax.25": 93, "ipip": 94, "etherip": 97, "encap": 98, "pim": 103, "ipcomp": 108, "vrrp": 112,
	"l2tp": 115, "isis": 124, "sctp": 132, "fc": 133, "mobility-header": 135, "ipv6-mh": 135,
	"mh": 135, "udplite": 136, "mpls-in-ip": 137, "manet": 138, "hip": 139, "shim6": 140,
	"wesp": 141, "rohc": 142, "ethernet": 143,
}

// protoName is the name iptables-save prints for a protocol number: its own
// table first (tcp, udp, icmp, ipv6-icmp, esp, ah, sctp, udplite, mh), then
// /etc/protocols.
var protoName = map[uint8]string{
	1: "icmp", 2: "igmp", 3: "ggp", 4: "ipencap", 5: "st", 6: "tcp", 8: "egp", 9: "igp", 12: "pup",
	17: "udp", 20: "hmp", 22: "xns-idp", 27: "rdp", 29: "iso-tp4", 33: "dccp", 36: "xtp", 37: "ddp",
	38: "idpr-cmtp", 41: "ipv6", 43: "ipv6-route", 44: "ipv6-frag", 45: "idrp", 46: "rsvp", 47: "gre",
	50: "esp", 51: "ah", 57: "skip", 58: "ipv6-icmp", 59: "ipv6-nonxt", 60: "ipv6-opts", 73: "rspf",
	81: "vmtp", 88: "eigrp", 89: "ospf", 93: "ax.25", 94: "ipip", 97: "etherip", 98: "encap",
	103: "pim", 108: "ipcomp", 112: "vrrp", 115: "l2tp", 124: "isis", 132: "sctp", 133: "fc",
	135: "mh", 136: "udplite", 137: "mpls-in-ip", 138: "manet", 139: "hip", 140: "shim6", 141: "wesp",
	142: "rohc", 143: "ethernet",
}

func protoNamesList() []string {
	var out []string
	for n := range protoByName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// parseProto parses a -p argument: a number, a name, or "all".
func parseProto(s string) (num uint8, any bool, ok bool) {
	if n, ok := parseUint(s, 255); ok {
		return uint8(n), n == 0, true
	}
	l := strings.ToLower(s)
	if l == "all" {
		return 0, true, true
	}
	if n, ok := protoByName[l]; ok {
		return n, n == 0, true
	}
	return 0, false, false
}

// services is a built-in subset of /etc/services (tcp and udp share ports
// for these names), so that port names work without /etc/services.
var services = map[string]uint16{
	"tcpmux": 1, "echo": 7, "discard": 9, "systat": 11, "daytime": 13, "netstat": 15, "qotd": 17,
	"chargen": 19, "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "time": 37,
	"whois": 43, "tacacs": 49, "domain": 53, "gopher": 70, "bootps": 67, "bootpc": 68, "tftp": 69,
	"finger": 79, "http": 80, "www": 80, "kerberos": 88, "pop3": 110, "sunrpc": 111, "auth": 113,
	"ident": 113, "nntp": 119, "ntp": 123, "epmap": 135, "netbios-ns": 137, "netbios-dgm": 138,
	"netbios-ssn": 139, "imap2": 143, "imap": 143, "snmp": 161, "snmp-trap": 162, "bgp": 179,
	"irc": 194, "ldap": 389, "https": 443, "microsoft-ds": 445, "kpasswd": 464, "submissions": 465,
	"isakmp": 500, "syslog": 514, "printer": 515, "submission": 587, "ldaps": 636, "rsync": 873,
	"ftps-data": 989, "ftps": 990, "imaps": 993, "pop3s": 995, "socks": 1080, "openvpn": 1194,
	"ms-sql-s": 1433, "l2tp": 1701, "pptp": 1723, "radius": 1812, "radius-acct": 1813, "nfs": 2049,
	"mysql": 3306, "ipsec-nat-t": 4500, "sip": 5060, "sip-tls": 5061, "xmpp-client": 5222,
	"postgresql": 5432, "x11": 6000, "http-alt": 8080, "webcache": 8080, "zabbix-agent": 10050,
	"zabbix-trapper": 10051,
}

// tcpPortNames and udpPortNames are the primary names Debian's netbase
// /etc/services gives these ports (what getservbyport returns), for
// listings without -n.
var tcpPortNames = map[uint16]string{
	1: "tcpmux", 7: "echo", 9: "discard", 11: "systat", 13: "daytime", 15: "netstat", 17: "qotd",
	19: "chargen", 20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 37: "time",
	43: "whois", 49: "tacacs", 53: "domain", 70: "gopher", 79: "finger", 80: "http", 88: "kerberos",
	110: "pop3", 111: "sunrpc", 113: "auth", 119: "nntp", 135: "epmap", 139: "netbios-ssn",
	143: "imap2", 161: "snmp", 162: "snmp-trap", 179: "bgp", 389: "ldap", 443: "https",
	445: "microsoft-ds", 464: "kpasswd", 465: "submissions", 514: "shell", 515: "printer",
	587: "submission", 636: "ldaps", 873: "rsync", 989: "ftps-data", 990: "ftps", 993: "imaps",
	995: "pop3s", 1080: "socks", 1194: "openvpn", 1433: "ms-sql-s", 1812: "radius",
	1813: "radius-acct", 2049: "nfs", 3306: "mysql", 5060: "sip", 5061: "sip-tls",
	5222: "xmpp-client", 5432: "postgresql", 6000: "x11", 8080: "http-alt", 10050: "zabbix-agent",
	10051: "zabbix-trapper",
}

var udpPortNames = map[uint16]string{
	7: "echo", 9: "discard", 13: "daytime", 19: "chargen", 21: "fsp", 37: "time", 49: "tacacs",
	53: "domain", 67: "bootps", 68: "bootpc", 69: "tftp", 88: "kerberos", 111: "sunrpc", 123: "ntp",
	137: "netbios-ns", 138: "netbios-dgm", 161: "snmp", 162: "snmp-trap", 389: "ldap", 443: "https",
	464: "kpasswd", 500: "isakmp", 514: "syslog", 636: "ldaps", 1194: "openvpn", 1701: "l2f",
	1812: "radius", 1813: "radius-acct", 2049: "nfs", 4500: "ipsec-nat-t", 5060: "sip", 5061: "sip-tls",
}

// portName returns the service name for a port of the protocol (for
// listings without -n), or "".
func portName(port uint16, proto uint8) string {
	switch proto {
	case 6:
		return tcpPortNames[port]
	case 17:
		return udpPortNames[port]
	}
	return ""
}

// icmpType is a named ICMP type, optionally with a code.
type icmpType struct {
	name   string
	typ    uint8
	codeLo uint8
	codeHi uint8
}

// icmpTypes are iptables' ICMP type names (libxt_icmp), in its order.
var icmpTypes = []icmpType{
	{"any", 0xFF, 0, 0xFF},
	{"echo-reply", 0, 0, 0xFF},
	{"destination-unreachable", 3, 0, 0xFF},
	{"network-unreachable", 3, 0, 0},
	{"host-unreachable", 3, 1, 1},
	{"protocol-unreachable", 3, 2, 2},
	{"port-unreachable", 3, 3, 3},
	{"fragmentation-needed", 3, 4, 4},
	{"source-route-failed", 3, 5, 5},
	{"network-unknown", 3, 6, 6},
	{"host-unknown", 3, 7, 7},
	{"network-prohibited", 3, 9, 9},
	{"host-prohibited", 3, 10, 10},
	{"TOS-network-unreachable", 3, 11, 11},
	{"TOS-host-unreachable", 3, 12, 12},
	{"communication-prohibited", 3, 13, 13},
	{"host-precedence-violation", 3, 14, 14},
	{"precedence-cutoff", 3, 15, 15},
	{"source-quench", 4, 0, 0xFF},
	{"redirect", 5, 0, 0xFF},
	{"network-redirect", 5, 0, 0},
	{"host-redirect", 5, 1, 1},
	{"TOS-network-redirect", 5, 2, 2},
	{"TOS-host-redirect", 5, 3, 3},
	{"echo-request", 8, 0, 0xFF},
	{"router-advertisement", 9, 0, 0xFF},
	{"router-solicitation", 10, 0, 0xFF},
	{"time-exceeded", 11, 0, 0xFF},
	{"ttl-zero-during-transit", 11, 0, 0},
	{"ttl-zero-during-reassembly", 11, 1, 1},
	{"parameter-problem", 12, 0, 0xFF},
	{"ip-header-bad", 12, 0, 0},
	{"required-option-missing", 12, 1, 1},
	{"timestamp-request", 13, 0, 0xFF},
	{"timestamp-reply", 14, 0, 0xFF},
	{"address-mask-request", 17, 0, 0xFF},
	{"address-mask-reply", 18, 0, 0xFF},
}

var icmpAliases = map[string]string{"pong": "echo-reply", "ping": "echo-request", "ttl-exceeded": "time-exceeded"}

// icmp6Types are ip6tables' ICMPv6 type names (libip6t_icmp6).
var icmp6Types = []icmpType{
	{"destination-unreachable", 1, 0, 0xFF},
	{"no-route", 1, 0, 0},
	{"communication-prohibited", 1, 1, 1},
	{"beyond-scope", 1, 2, 2},
	{"address-unreachable", 1, 3, 3},
	{"port-unreachable", 1, 4, 4},
	{"failed-policy", 1, 5, 5},
	{"reject-route", 1, 6, 6},
	{"packet-too-big", 2, 0, 0xFF},
	{"time-exceeded", 3, 0, 0xFF},
	{"ttl-zero-during-transit", 3, 0, 0},
	{"ttl-zero-during-reassembly", 3, 1, 1},
	{"parameter-problem", 4, 0, 0xFF},
	{"bad-header", 4, 0, 0},
	{"unknown-header-type", 4, 1, 1},
	{"unknown-option", 4, 2, 2},
	{"echo-request", 128, 0, 0xFF},
	{"echo-reply", 129, 0, 0xFF},
	{"mld-listener-query", 130, 0, 0xFF},
	{"mld-listener-report", 131, 0, 0xFF},
	{"mld-listener-done", 132, 0, 0xFF},
	{"router-solicitation", 133, 0, 0xFF},
	{"router-advertisement", 134, 0, 0xFF},
	{"neighbour-solicitation", 135, 0, 0xFF},
	{"neighbour-advertisement", 136, 0, 0xFF},
	{"redirect", 137, 0, 0xFF},
}

var icmp6Aliases = map[string]string{"ping": "echo-request", "pong": "echo-reply", "ttl-exceeded": "time-exceeded",
	"neighbor-solicitation": "neighbour-solicitation", "neighbor-advertisement": "neighbour-advertisement",
	"mld-listener-reduction": "mld-listener-done"}

// knownMatches are the match extensions iptables 1.8.9 ships (libxt_*,
// libipt_*, libip6t_*), with the family they exist for ("" both, "4", "6").
// Those filterd does not implement are reported as unsupported, not as errors.
var knownMatches = map[string]string{
	"addrtype": "", "bpf": "", "cgroup": "", "cluster": "", "comment": "", "connbytes": "",
	"connlabel": "", "connlimit": "", "connmark": "", "conntrack": "", "cpu": "", "dccp": "",
	"devgroup": "", "dscp": "", "ecn": "", "esp": "", "hashlimit": "", "helper": "", "ipcomp": "",
	"iprange": "", "ipvs": "", "length": "", "limit": "", "mac": "", "mark": "", "multiport": "",
	"nfacct": "", "osf": "", "owner": "", "physdev": "", "pkttype": "", "policy": "", "quota": "",
	"rateest": "", "recent": "", "rpfilter": "", "sctp": "", "set": "", "socket": "", "state": "",
	"statistic": "", "string": "", "tcp": "", "tcpmss": "", "time": "", "tos": "", "u32": "",
	"udp": "", "udplite": "", "ah": "", "icmp": "4", "realm": "4", "ttl": "4",
	"dst": "6", "eui64": "6", "frag": "6", "hbh": "6", "hl": "6", "icmp6": "6", "icmpv6": "6",
	"ipv6header": "6", "mh": "6", "rt": "6", "srh": "6",
}

// knownTargets are the target extensions iptables 1.8.9 ships, with their
// family ("" both, "4", "6"). All but REJECT and LOG are unsupported.
var knownTargets = map[string]string{
	"AUDIT": "", "CHECKSUM": "", "CLASSIFY": "", "CONNMARK": "", "CONNSECMARK": "", "CT": "",
	"DNAT": "", "DSCP": "", "HMARK": "", "IDLETIMER": "", "LED": "", "LOG": "", "MARK": "",
	"MASQUERADE": "", "NETMAP": "", "NFLOG": "", "NFQUEUE": "", "NOTRACK": "", "RATEEST": "",
	"REDIRECT": "", "REJECT": "", "SECMARK": "", "SET": "", "SNAT": "", "SYNPROXY": "", "TCPMSS": "",
	"TCPOPTSTRIP": "", "TEE": "", "TOS": "", "TPROXY": "", "TRACE": "", "QUEUE": "",
	"CLUSTERIP": "4", "ECN": "4", "TTL": "4", "ULOG": "4",
	"DNPT": "6", "HL": "6", "SNPT": "6",
}

func isKnownTarget(name string) bool {
	_, ok := knownTargets[name]
	return ok
}

// unsupportedOpts are the options (from iptables-extensions(8)) of the
// extensions filterd does not implement yet, so that a misspelt or obsolete
// option of such a module is still an error rather than "unsupported".
var unsupportedOpts = map[string][]string{
	"time":       {"datestart", "datestop", "timestart", "timestop", "monthdays", "weekdays", "contiguous", "kerneltz", "utc", "localtz"},
	"set":        {"match-set", "return-nomatch", "update-counters", "update-subcounters", "packets-eq", "packets-lt", "packets-gt", "bytes-eq", "bytes-lt", "bytes-gt", "set"},
	"string":     {"algo", "from", "to", "string", "hex-string", "icase"},
	"policy":     {"dir", "pol", "strict", "reqid", "spi", "proto", "mode", "tunnel-src", "tunnel-dst", "next"},
	"physdev":    {"physdev-in", "physdev-out", "physdev-is-in", "physdev-is-out", "physdev-is-bridged"},
	"tcpmss":     {"mss"},
	"rt":         {"rt-type", "rt-segsleft", "rt-len", "rt-0-res", "rt-0-addrs", "rt-0-not-strict"},
	"rpfilter":   {"loose", "validmark", "accept-local", "invert"},
	"sctp":       {"source-port", "sport", "destination-port", "dport", "chunk-types"},
	"connmark":   {"mark"},
	"dscp":       {"dscp", "dscp-class"},
	"tos":        {"tos"},
	"statistic":  {"mode", "probability", "every", "packet"},
	"quota":      {"quota"},
	"helper":     {"helper"},
	"socket":     {"transparent", "nowildcard", "restore-skmark"},
	"ah":         {"ahspi", "ahlen", "ahres"},
	"esp":        {"espspi"},
	"ipv6header": {"header", "soft"},
	"hbh":        {"hbh-len", "hbh-opts"},
	"dst":        {"dst-len", "dst-opts"},
	"ecn":        {"ecn-tcp-cwr", "ecn-tcp-ece", "ecn-ip-ect"},
	"connbytes":  {"connbytes", "connbytes-dir", "connbytes-mode"},
	"u32":        {"u32"},
	"NFLOG":      {"nflog-group", "nflog-prefix", "nflog-range", "nflog-size", "nflog-threshold"},
	"NFQUEUE":    {"queue-num", "queue-balance", "queue-bypass", "fail-open", "queue-cpu-fanout"},
	"MARK":       {"set-xmark", "set-mark", "and-mark", "or-mark", "xor-mark"},
	"CONNMARK":   {"set-xmark", "save-mark", "restore-mark", "and-mark", "or-mark", "xor-mark", "set-mark", "nfmask", "ctmask", "mask"},
	"CT":         {"notrack", "helper", "ctevents", "expevents", "zone-orig", "zone-reply", "zone", "timeout"},
	"DNAT":       {"to-destination", "random", "persistent"},
	"SNAT":       {"to-source", "random", "random-fully", "persistent"},
	"MASQUERADE": {"to-ports", "random", "random-fully"},
	"REDIRECT":   {"to-ports", "random"},
	"TCPMSS":     {"set-mss", "clamp-mss-to-pmtu"},
	"CHECKSUM":   {"checksum-fill"},
	"SYNPROXY":   {"mss", "wscale", "sack-perm", "timestamp", "ecn"},
	"ULOG":       {"ulog-nlgroup", "ulog-prefix", "ulog-cprange", "ulog-qthreshold"},
	"NOTRACK":    {},
	"TRACE":      {},
}
