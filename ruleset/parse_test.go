package ruleset

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/filterd/filterd/packet"
)

// wrap puts rule lines into a filter table with user chains USER and LOGDROP.
func wrap(lines ...string) string {
	return "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:USER - [0:0]\n:LOGDROP - [0:0]\n" +
		strings.Join(lines, "\n") + "\nCOMMIT\n"
}

func saveRules(t *testing.T, f *File, chain string) []string {
	t.Helper()
	var out []string
	c := f.Filter.Chain(chain)
	for _, r := range c.Rules {
		out = append(out, FormatRule(chain, r, f.Family))
	}
	return out
}

func diagText(ds Diagnostics) string {
	var b bytes.Buffer
	ds.Format(&b)
	return b.String()
}

const v4, v6 = packet.IPv4, packet.IPv6

// parseOptionCases are valid rules and the iptables-save lines they become;
// TestParseOptions checks filterd, TestOptionsMatchKernel checks the same
// expectations against iptables-save.
var parseOptionCases = []struct {
	name string
	fam  packet.Family
	rule string
	want []string
}{
	{"plain accept", v4, "-A INPUT -j ACCEPT", []string{"-A INPUT -j ACCEPT"}},
	{"no target", v4, "-A USER", []string{"-A USER"}},
	{"protocol name", v4, "-A INPUT -p tcp -j DROP", []string{"-A INPUT -p tcp -j DROP"}},
	{"protocol number", v4, "-A INPUT -p 50 -j DROP", []string{"-A INPUT -p esp -j DROP"}},
	{"protocol number without name", v4, "-A INPUT -p 253 -j DROP", []string{"-A INPUT -p 253 -j DROP"}},
	{"protocol all", v4, "-A INPUT -p all -j DROP", []string{"-A INPUT -j DROP"}},
	{"protocol upper case", v4, "-A INPUT -p TCP -j DROP", []string{"-A INPUT -p tcp -j DROP"}},
	{"protocol inverted", v4, "-A INPUT ! -p udp -j DROP", []string{"-A INPUT ! -p udp -j DROP"}},
	{"icmpv6 alias", v6, "-A INPUT -p icmpv6 -j DROP", []string{"-A INPUT -p ipv6-icmp -j DROP"}},
	{"source host", v4, "-A INPUT -s 198.18.1.2 -j DROP", []string{"-A INPUT -s 198.18.1.2/32 -j DROP"}},
	{"source prefix masked", v4, "-A INPUT -s 198.18.1.5/24 -j DROP", []string{"-A INPUT -s 198.18.1.0/24 -j DROP"}},
	{"dotted netmask", v4, "-A INPUT -s 198.18.0.0/255.254.0.0 -j DROP", []string{"-A INPUT -s 198.18.0.0/15 -j DROP"}},
	{"abbreviated addresses", v4, "-A INPUT -s 198.18/15 -d 198.18.1 -j DROP", []string{"-A INPUT -s 198.18.0.0/15 -d 198.18.1.0/32 -j DROP"}},
	{"hex and octal address parts", v4, "-A INPUT -s 0xc6.18.0.010 -j DROP", []string{"-A INPUT -s 198.18.0.8/32 -j DROP"}},
	{"C numbers", v4, "-A INPUT -p 0x6 --dport 022 -m multiport --sports 010,0x10:0x20 -m length --length 010 -j DROP", []string{"-A INPUT -p tcp -m tcp --dport 18 -m multiport --sports 8,16:32 -m length --length 8 -j DROP"}},
	{"zero slash zero", v4, "-A INPUT -s 0/0 -d 0.0.0.0/0 -j DROP", []string{"-A INPUT -j DROP"}},
	{"long options", v4, "--append INPUT --protocol tcp --source 198.18.0.1 --destination 198.18.0.2 --in-interface eth0 --jump ACCEPT",
		[]string{"-A INPUT -s 198.18.0.1/32 -d 198.18.0.2/32 -i eth0 -p tcp -j ACCEPT"}},
	{"src dst aliases", v4, "-A INPUT --src 198.18.0.1 --dst 198.18.0.2 -j ACCEPT", []string{"-A INPUT -s 198.18.0.1/32 -d 198.18.0.2/32 -j ACCEPT"}},
	{"comma lists expand", v4, "-A INPUT -s 198.18.0.1,198.18.0.2 -d 198.18.1.1,198.18.1.2 -j DROP", []string{
		"-A INPUT -s 198.18.0.1/32 -d 198.18.1.1/32 -j DROP", "-A INPUT -s 198.18.0.1/32 -d 198.18.1.2/32 -j DROP",
		"-A INPUT -s 198.18.0.2/32 -d 198.18.1.1/32 -j DROP", "-A INPUT -s 198.18.0.2/32 -d 198.18.1.2/32 -j DROP"}},
	{"target first", v4, "-A INPUT -j RETURN -d 198.18.0.1,198.18.0.2", []string{"-A INPUT -d 198.18.0.1/32 -j RETURN", "-A INPUT -d 198.18.0.2/32 -j RETURN"}},
	{"ipv6 address", v6, "-A INPUT -s fd00:198:18::2 -d fd00:198:18::/48 -j ACCEPT", []string{"-A INPUT -s fd00:198:18::2/128 -d fd00:198:18::/48 -j ACCEPT"}},
	{"interfaces", v4, "-A FORWARD -i eth+ ! -o ppp0 -j ACCEPT", []string{"-A FORWARD -i eth+ ! -o ppp0 -j ACCEPT"}},
	{"fragment", v4, "-A INPUT -f -j DROP", []string{"-A INPUT -f -j DROP"}},
	{"not fragment", v4, "-A INPUT ! -f -j DROP", []string{"-A INPUT ! -f -j DROP"}},
	{"jump", v4, "-A INPUT -j USER", []string{"-A INPUT -j USER"}},
	{"goto", v4, "-A INPUT -g USER", []string{"-A INPUT -g USER"}},
	{"implicit tcp", v4, "-A INPUT -p tcp --dport 22 -j ACCEPT", []string{"-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"}},
	{"tcp ports", v4, "-A INPUT -p tcp -m tcp --dport 22 --sport 1024: -j ACCEPT", []string{"-A INPUT -p tcp -m tcp --sport 1024:65535 --dport 22 -j ACCEPT"}},
	{"tcp port aliases", v4, "-A INPUT -p tcp --source-port :1023 --destination-port 80 -j ACCEPT", []string{"-A INPUT -p tcp -m tcp --sport 0:1023 --dport 80 -j ACCEPT"}},
	{"tcp full range dropped", v4, "-A INPUT -p tcp --dport 0:65535 -j ACCEPT", []string{"-A INPUT -p tcp -m tcp -j ACCEPT"}},
	{"tcp inverted port", v4, "-A INPUT -p tcp ! --sport 1023:2999 -j DROP", []string{"-A INPUT -p tcp -m tcp ! --sport 1023:2999 -j DROP"}},
	{"service name", v4, "-A INPUT -p tcp --dport ssh -j ACCEPT", []string{"-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"}},
	{"option=value", v4, "-A INPUT -p tcp --dport=25 -j ACCEPT", []string{"-A INPUT -p tcp -m tcp --dport 25 -j ACCEPT"}},
	{"option abbreviation", v4, "-A INPUT -p tcp --dpo 23 -j ACCEPT", []string{"-A INPUT -p tcp -m tcp --dport 23 -j ACCEPT"}},
	{"syn", v4, "-A INPUT -p tcp --syn -j ACCEPT", []string{"-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"}},
	{"syn after target", v4, "-A INPUT -p tcp -m tcp --dport 110 -j ACCEPT --syn", []string{"-A INPUT -p tcp -m tcp --dport 110 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"}},
	{"not syn", v4, "-A INPUT -p tcp ! --syn -j DROP", []string{"-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j DROP"}},
	{"tcp flags all none", v4, "-A INPUT -p tcp --tcp-flags ALL NONE -j DROP", []string{"-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP"}},
	{"tcp flags order", v4, "-A INPUT -p tcp --tcp-flags SYN,ACK,FIN FIN -j DROP", []string{"-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,ACK FIN -j DROP"}},
	{"tcp option", v4, "-A INPUT -p tcp ! --tcp-option 2 -j DROP", []string{"-A INPUT -p tcp -m tcp ! --tcp-option 2 -j DROP"}},
	{"udp", v4, "-A INPUT -p udp --sport 53 -j ACCEPT", []string{"-A INPUT -p udp -m udp --sport 53 -j ACCEPT"}},
	{"udp before proto", v4, "-A INPUT -m udp -p udp --dport 161 -j ACCEPT", []string{"-A INPUT -p udp -m udp --dport 161 -j ACCEPT"}},
	{"multiport", v4, "-A INPUT -p tcp -m multiport --dports 21,25,80:90 -j ACCEPT", []string{"-A INPUT -p tcp -m multiport --dports 21,25,80:90 -j ACCEPT"}},
	{"multiport sports inverted", v4, "-A INPUT -p udp -m multiport ! --sports domain,123 -j ACCEPT", []string{"-A INPUT -p udp -m multiport ! --sports 53,123 -j ACCEPT"}},
	{"multiport ports", v4, "-A INPUT -p tcp -m multiport --ports 1,2 -j ACCEPT", []string{"-A INPUT -p tcp -m multiport --ports 1,2 -j ACCEPT"}},
	{"icmp name", v4, "-A INPUT -p icmp --icmp-type echo-request -j ACCEPT", []string{"-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT"}},
	{"icmp name with code", v4, "-A INPUT -p icmp --icmp-type fragmentation-needed -j ACCEPT", []string{"-A INPUT -p icmp -m icmp --icmp-type 3/4 -j ACCEPT"}},
	{"icmp type/code", v4, "-A INPUT -p icmp -m icmp --icmp-type 3/1 -j ACCEPT", []string{"-A INPUT -p icmp -m icmp --icmp-type 3/1 -j ACCEPT"}},
	{"icmp any inverted", v4, "-A INPUT -p icmp ! --icmp-type any -j ACCEPT", []string{"-A INPUT -p icmp -m icmp ! --icmp-type any -j ACCEPT"}},
	{"icmp alias", v4, "-A INPUT -p icmp --icmp-type ping -j ACCEPT", []string{"-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT"}},
	{"icmp6 name", v6, "-A INPUT -p ipv6-icmp --icmpv6-type neighbor-solicitation -j ACCEPT", []string{"-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT"}},
	{"icmp6 module alias", v6, "-A INPUT -m icmpv6 -p icmpv6 --icmpv6-type 1/3 -j ACCEPT", []string{"-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 1/3 -j ACCEPT"}},
	{"state", v4, "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT", []string{"-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT"}},
	{"state inverted lower case", v4, "-A INPUT -m state ! --state new -j DROP", []string{"-A INPUT -m state ! --state NEW -j DROP"}},
	{"conntrack all", v4, "-A INPUT -m conntrack --ctstate NEW,UNTRACKED --ctproto tcp --ctorigsrc 198.18.0.1 ! --ctorigdst 198.18.0.0/16 --ctreplsrc 198.18.0.2 --ctrepldst 198.18.0.3/32 --ctorigsrcport 10 --ctorigdstport 20:30 --ctreplsrcport 40 --ctrepldstport 50 --ctstatus ASSURED,SEEN_REPLY --ctdir REPLY -j ACCEPT",
		[]string{"-A INPUT -m conntrack --ctstate NEW,UNTRACKED --ctproto 6 --ctorigsrc 198.18.0.1 ! --ctorigdst 198.18.0.0/16 --ctreplsrc 198.18.0.2 --ctrepldst 198.18.0.3 --ctorigsrcport 10 --ctorigdstport 20:30 --ctreplsrcport 40 --ctrepldstport 50 --ctstatus SEEN_REPLY,ASSURED --ctdir REPLY -j ACCEPT"}},
	{"limit default", v4, "-A INPUT -m limit -j ACCEPT", []string{"-A INPUT -m limit --limit 3/hour -j ACCEPT"}},
	{"limit second", v4, "-A FWALL -p tcp --syn -m limit --limit 5/second -j ACCEPT", nil},
	{"limit normalised", v4, "-A INPUT -m limit --limit 60/minute --limit-burst 10 -j ACCEPT", []string{"-A INPUT -m limit --limit 1/sec --limit-burst 10 -j ACCEPT"}},
	{"limit units", v4, "-A INPUT -m limit --limit 2/d -j ACCEPT", []string{"-A INPUT -m limit --limit 2/day -j ACCEPT"}},
	{"limit per second implied", v4, "-A INPUT -m limit --limit 7 -j ACCEPT", []string{"-A INPUT -m limit --limit 7/sec -j ACCEPT"}},
	{"hashlimit", v4, "-A INPUT -p tcp -m hashlimit --hashlimit-above 20/second --hashlimit-burst 40 --hashlimit-mode dstport,srcip --hashlimit-name syn --hashlimit-srcmask 24 --hashlimit-htable-max 1000 --hashlimit-htable-expire 30000 -j DROP",
		[]string{"-A INPUT -p tcp -m hashlimit --hashlimit-above 20/sec --hashlimit-burst 40 --hashlimit-mode srcip,dstport --hashlimit-name syn --hashlimit-htable-max 1000 --hashlimit-htable-expire 30000 --hashlimit-srcmask 24 -j DROP"}},
	{"hashlimit upto defaults", v4, "-A INPUT -m hashlimit --hashlimit-upto 30/min --hashlimit-name h2 --hashlimit-dstmask 16 --hashlimit-htable-size 64 --hashlimit-htable-gcinterval 500 -j ACCEPT",
		[]string{"-A INPUT -m hashlimit --hashlimit-upto 30/min --hashlimit-burst 5 --hashlimit-name h2 --hashlimit-htable-size 64 --hashlimit-htable-gcinterval 500 --hashlimit-dstmask 16 -j ACCEPT"}},
	{"hashlimit legacy option", v4, "-A INPUT -m hashlimit --hashlimit 5/s --hashlimit-name a -j DROP", []string{"-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-name a -j DROP"}},
	{"hashlimit bytes", v4, "-A INPUT -m hashlimit --hashlimit-upto 1kb/s --hashlimit-name h3 -j ACCEPT", []string{"-A INPUT -m hashlimit --hashlimit-upto 1kb/s --hashlimit-name h3 -j ACCEPT"}},
	{"hashlimit v6 mask", v6, "-A INPUT -m hashlimit --hashlimit-above 20/sec --hashlimit-mode srcip --hashlimit-name s6 --hashlimit-srcmask 64 -j DROP",
		[]string{"-A INPUT -m hashlimit --hashlimit-above 20/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name s6 --hashlimit-srcmask 64 -j DROP"}},
	{"recent set", v4, "-A INPUT -m recent --set --name SSH --rsource", []string{"-A INPUT -m recent --set --name SSH --mask 255.255.255.255 --rsource"}},
	{"recent update", v4, "-A INPUT -m recent --update --seconds 60 --hitcount 4 --rttl --name SSH -j DROP", []string{"-A INPUT -m recent --update --seconds 60 --hitcount 4 --rttl --name SSH --mask 255.255.255.255 --rsource -j DROP"}},
	{"recent rcheck inverted", v4, "-A INPUT -m recent ! --rcheck --seconds 60 --reap --name X --rdest --mask 255.255.255.0 -j DROP", []string{"-A INPUT -m recent ! --rcheck --seconds 60 --reap --name X --mask 255.255.255.0 --rdest -j DROP"}},
	{"recent remove default name", v4, "-A INPUT -m recent --remove", []string{"-A INPUT -m recent --remove --name DEFAULT --mask 255.255.255.255 --rsource"}},
	{"recent v6 mask", v6, "-A INPUT -m recent --set", []string{"-A INPUT -m recent --set --name DEFAULT --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource"}},
	{"comment quoted", v4, `-A INPUT -m comment --comment "hello world" -j ACCEPT`, []string{`-A INPUT -m comment --comment "hello world" -j ACCEPT`}},
	{"comment plain", v4, "-A INPUT -j ACCEPT -m comment --comment hi", []string{"-A INPUT -m comment --comment hi -j ACCEPT"}},
	{"comment with run-together look", v4, `-A INPUT -m comment --comment "see  -A INPUT" -j ACCEPT`, []string{`-A INPUT -m comment --comment "see  -A INPUT" -j ACCEPT`}},
	{"latin-1 comment kept", v4, "-A INPUT -m comment --comment \"caf\xe9\" -j ACCEPT", []string{"-A INPUT -m comment --comment \"caf\xe9\" -j ACCEPT"}},
	{"comment escapes", v4, `-A INPUT -m comment --comment "a \"b\" 'c'" -j ACCEPT`, []string{`-A INPUT -m comment --comment "a \"b\" \'c\'" -j ACCEPT`}},
	{"iprange", v4, "-A INPUT -m iprange --src-range 198.18.0.1-198.18.0.9 ! --dst-range 198.18.1.1-198.18.1.2 -j ACCEPT", []string{"-A INPUT -m iprange --src-range 198.18.0.1-198.18.0.9 ! --dst-range 198.18.1.1-198.18.1.2 -j ACCEPT"}},
	{"addrtype", v4, "-A INPUT -m addrtype --dst-type LOCAL,BROADCAST ! --src-type MULTICAST --limit-iface-in -j ACCEPT", []string{"-A INPUT -m addrtype ! --src-type MULTICAST --dst-type LOCAL,BROADCAST --limit-iface-in -j ACCEPT"}},
	{"connlimit above", v4, "-A INPUT -p tcp -m connlimit --connlimit-above 10 --connlimit-mask 24 -j REJECT --reject-with tcp-reset", []string{"-A INPUT -p tcp -m connlimit --connlimit-above 10 --connlimit-mask 24 --connlimit-saddr -j REJECT --reject-with tcp-reset"}},
	{"connlimit upto daddr", v6, "-A INPUT -m connlimit --connlimit-upto 10 --connlimit-daddr -j ACCEPT", []string{"-A INPUT -m connlimit --connlimit-upto 10 --connlimit-mask 128 --connlimit-daddr -j ACCEPT"}},
	{"mark", v4, "-A INPUT -m mark --mark 0x1/0xff -j ACCEPT", []string{"-A INPUT -m mark --mark 0x1/0xff -j ACCEPT"}},
	{"mark decimal inverted", v4, "-A INPUT -m mark ! --mark 5 -j ACCEPT", []string{"-A INPUT -m mark ! --mark 0x5 -j ACCEPT"}},
	{"owner", v4, "-A OUTPUT -m owner --uid-owner 0 --gid-owner 10-20 ! --socket-exists -j ACCEPT", []string{"-A OUTPUT -m owner ! --socket-exists --uid-owner 0 --gid-owner 10-20 -j ACCEPT"}},
	{"length", v4, "-A INPUT -m length --length :100 -j DROP", []string{"-A INPUT -m length --length 0:100 -j DROP"}},
	{"length inverted", v4, "-A INPUT -m length ! --length 60 -j DROP", []string{"-A INPUT -m length ! --length 60 -j DROP"}},
	{"ttl", v4, "-A INPUT -m ttl --ttl-gt 5 -j DROP", []string{"-A INPUT -m ttl --ttl-gt 5 -j DROP"}},
	{"ttl ne", v4, "-A INPUT -m ttl ! --ttl-eq 5 -j DROP", []string{"-A INPUT -m ttl ! --ttl-eq 5 -j DROP"}},
	{"hl", v6, "-A INPUT -m hl --hl-lt 2 -j ACCEPT", []string{"-A INPUT -m hl --hl-lt 2 -j ACCEPT"}},
	{"pkttype", v4, "-A INPUT -m pkttype ! --pkt-type multicast -j DROP", []string{"-A INPUT -m pkttype ! --pkt-type multicast -j DROP"}},
	{"mac", v4, "-A INPUT -m mac --mac-source 02:00:00:00:00:0A -j DROP", []string{"-A INPUT -m mac --mac-source 02:00:00:00:00:0a -j DROP"}},
	{"mac abbreviated option", v4, "-A INPUT -m mac --mac 02:00:00:00:00:0a -j DROP", []string{"-A INPUT -m mac --mac-source 02:00:00:00:00:0a -j DROP"}},
	{"frag", v6, "-A INPUT -m frag --fragid 5:10 --fragfirst -j DROP", []string{"-A INPUT -m frag --fragid 5:10 --fragfirst -j DROP"}},
	{"frag plain", v6, "-A INPUT -m frag -j DROP", []string{"-A INPUT -m frag -j DROP"}},
	{"reject default v4", v4, "-A INPUT -j REJECT", []string{"-A INPUT -j REJECT --reject-with icmp-port-unreachable"}},
	{"reject default v6", v6, "-A INPUT -j REJECT", []string{"-A INPUT -j REJECT --reject-with icmp6-port-unreachable"}},
	{"reject alias", v4, "-A INPUT -j REJECT --reject-with host-prohib", []string{"-A INPUT -j REJECT --reject-with icmp-host-prohibited"}},
	{"reject v6 types", v6, "-A INPUT -j REJECT --reject-with adm-prohibited", []string{"-A INPUT -j REJECT --reject-with icmp6-adm-prohibited"}},
	{"reject prefix", v4, "-A INPUT -j REJECT --reject-with ICMP-HOST-P", []string{"-A INPUT -j REJECT --reject-with icmp-host-prohibited"}},
	{"reject shortest prefix", v4, "-A INPUT -j REJECT --reject-with icmp-", []string{"-A INPUT -j REJECT --reject-with icmp-net-unreachable"}},
	{"reject unreach alias prefix", v4, "-A INPUT -j REJECT --reject-with icmp-host-unreach", []string{"-A INPUT -j REJECT --reject-with icmp-host-unreachable"}},
	{"log level name", v4, "-A INPUT -j LOG --log-level alert", []string{"-A INPUT -j LOG --log-level 1"}},
	{"log default level", v4, "-A INPUT -j LOG --log-level warning --log-prefix x", []string{"-A INPUT -j LOG --log-prefix x"}},
	{"log prefix cut", v4, `-A INPUT -j LOG --log-prefix "0123456789012345678901234567890"`, []string{"-A INPUT -j LOG --log-prefix 01234567890123456789012345678"}},
	{"log prefix quoted", v4, `-A INPUT -j LOG --log-prefix "Dropped: "`, []string{`-A INPUT -j LOG --log-prefix "Dropped: "`}},
	{"log flags", v4, "-A INPUT -j LOG --log-uid --log-macdecode --log-ip-options --log-tcp-options --log-tcp-sequence", []string{"-A INPUT -j LOG --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid --log-macdecode"}},
	{"counters prefix", v4, "[7:700] -A INPUT -j ACCEPT", []string{"-A INPUT -j ACCEPT"}},
	{"counters option", v4, "-A INPUT -j ACCEPT -c 3 30", []string{"-A INPUT -j ACCEPT"}},
	{"family prefix same", v4, "-4 -A INPUT -j ACCEPT", []string{"-A INPUT -j ACCEPT"}},
	{"family prefix other", v4, "-6 -A INPUT -j ACCEPT", nil},
	{"family option other", v6, "-A INPUT -4 -j ACCEPT", nil},
	{"insert", v4, "-A INPUT -j DROP\n-I INPUT -j ACCEPT\n-I INPUT 2 -j RETURN", []string{"-A INPUT -j ACCEPT", "-A INPUT -j RETURN", "-A INPUT -j DROP"}},
	{"insert comma list", v4, "-A INPUT -j ACCEPT\n-I INPUT 1 -s 198.18.0.1,198.18.0.2 -j DROP\n-I INPUT -d 198.18.0.3 -j DROP", []string{"-A INPUT -d 198.18.0.3/32 -j DROP", "-A INPUT -s 198.18.0.2/32 -j DROP", "-A INPUT -s 198.18.0.1/32 -j DROP", "-A INPUT -j ACCEPT"}},
	{"two matches same module", v4, "-A INPUT -m state --state NEW -m state --state INVALID -j DROP", []string{"-A INPUT -m state --state NEW -m state --state INVALID -j DROP"}},
	{"match order kept", v4, "-A INPUT -p tcp -m multiport --dports 1:5,7 -m tcp --dport 9 -j DROP", []string{"-A INPUT -p tcp -m multiport --dports 1:5,7 -m tcp --dport 9 -j DROP"}},
}

// TestParseOptions loads one rule per case and checks the canonical
// iptables-save form of the rules it becomes (values cross-checked with
// iptables-save 1.8.9 by TestSaveAndListMatchKernel on all-options.rules).
func TestParseOptions(t *testing.T) {
	cases := parseOptionCases
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := wrap(tc.rule)
			if tc.name == "limit second" {
				src = "*filter\n:FWALL - [0:0]\n" + tc.rule + "\nCOMMIT\n"
			}
			f, ds := Load("t.rules", []byte(src), LoadOptions{Family: tc.fam})
			if len(ds) != 0 && !(tc.name == "log prefix cut" && len(ds) == 1 && ds[0].Severity == SevWarning) {
				t.Fatalf("unexpected diagnostics:\n%s", diagText(ds))
			}
			chain := ""
			fs := strings.Fields(tc.rule)
			for i, w := range fs {
				if (w == "-A" || w == "--append" || w == "-I") && i+1 < len(fs) {
					chain = fs[i+1]
					break
				}
			}
			if tc.name == "limit second" {
				r := f.Filter.Chain("FWALL").Rules[0]
				l, ok := r.Matches[1].(*LimitMatch)
				if !ok || l.Rate != (Rate{5, PerSecond}) || l.Burst != 5 {
					t.Fatalf("limit = %+v", r.Matches)
				}
				return
			}
			got := saveRules(t, f, chain)
			if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// TestParseAST checks the parsed values of a few rules field by field.
func TestParseAST(t *testing.T) {
	src := wrap(
		"[3:180] -A INPUT ! -s 198.18.0.0/15 -i lo -p tcp -m tcp --dport 22 -j USER",
		"-A INPUT -p udp -m udp --sport 1023:2999 -j LOG --log-prefix \"Dropped: \" --log-level alert",
		"-A OUTPUT -j REJECT --reject-with tcp-reset -p tcp",
	)
	f, ds := Load("t.rules", []byte(src), LoadOptions{})
	if len(ds) != 0 {
		t.Fatal(diagText(ds))
	}
	in := f.Filter.Chain("INPUT")
	r := in.Rules[0]
	if r.Counters != (Counters{3, 180}) || r.Pos.Line != 7 || r.Pos.Col != 9 {
		t.Errorf("counters/pos = %+v %+v", r.Counters, r.Pos)
	}
	if r.Src.Prefix != netip.MustParsePrefix("198.18.0.0/15") || !r.Src.Invert || r.Dst.Prefix.IsValid() {
		t.Errorf("addresses = %+v %+v", r.Src, r.Dst)
	}
	if r.InIface != (IfaceMatch{Name: "lo"}) || r.Proto != (ProtoMatch{Num: packet.ProtoTCP}) {
		t.Errorf("iface/proto = %+v %+v", r.InIface, r.Proto)
	}
	if tm := r.Matches[0].(*TCPMatch); tm.Dport != (PortMatch{Set: true, Lo: 22, Hi: 22}) || tm.Sport.Set {
		t.Errorf("tcp = %+v", tm)
	}
	if r.Target.Kind != TargetJump || r.Target.Chain != "USER" || r.Target.Pos.Col != strings.Index(src[strings.Index(src, "[3:180]"):], "USER")+1 {
		t.Errorf("target = %+v", r.Target)
	}
	r = in.Rules[1]
	if r.Target.Kind != TargetLog || r.Target.Log != (LogOptions{Prefix: "Dropped: ", Level: 1}) {
		t.Errorf("log = %+v", r.Target)
	}
	if um := r.Matches[0].(*UDPMatch); um.Sport != (PortMatch{Set: true, Lo: 1023, Hi: 2999}) {
		t.Errorf("udp = %+v", um)
	}
	r = f.Filter.Chain("OUTPUT").Rules[0]
	if r.Target.Kind != TargetReject || r.Target.Reject != RejectTCPReset || !r.Proto.Any == true && r.Proto.Num != 6 {
		t.Errorf("reject = %+v %+v", r.Target, r.Proto)
	}
	if f.Filter.Chain("INPUT").Policy != PolicyAccept || f.Filter.Chain("USER").Policy != PolicyNone || f.Filter.Chain("USER").Builtin {
		t.Error("policies")
	}
}

// parseErrorCases are mistakes (errors) and valid-but-unimplemented options
// (unsupported); TestParseErrors checks filterd's diagnostics and
// TestErrorsMatchKernel checks iptables-restore's verdict on the same text.
var parseErrorCases = []struct {
	name string
	fam  packet.Family
	src  string // whole file; a leading "@" wraps rule lines into a table (they start on line 7)
	sev  Severity
	line int
	at   string // the diagnostic points at the first occurrence of this text on its line ("" = column 1)
	msg  string
	hint string
}{
	{"old style negation", 0, "@-A INPUT -d ! 198.18.0.1 -j DROP", SevError, 7, "!", "old-style negation", `write "! -d 198.18.0.1"`},
	{"old style negation ext", 0, "@-A INPUT -p tcp --dport ! 22 -j DROP", SevError, 7, "!", "old-style negation", `"! --dport 22"`},
	{"en dash", 0, "@-A INPUT –p tcp -j DROP", SevError, 7, "–p", `"–p" starts with an en dash (U+2013); did you mean "-p"?`, "ASCII"},
	{"missing space", 0, "@-A USER-p tcp -j DROP", SevError, 7, "USER-p", `unknown chain "USER-p"; did you mean "USER -p"?`, "space is missing"},
	{"unknown chain suggestion", 0, "@-A USR -j DROP", SevError, 7, "USR", `unknown chain "USR"; did you mean "USER"?`, ""},
	{"unknown jump", 0, "@-A INPUT -j LOGDRP", SevError, 7, "LOGDRP", `no chain or target named "LOGDRP"; did you mean "LOGDROP"?`, ""},
	{"target in lower case", 0, "@-A INPUT -j accept", SevError, 7, "accept", `no chain or target named "accept"; did you mean "ACCEPT"?`, ""},
	{"jump to builtin", 0, "@-A INPUT -j OUTPUT", SevError, 7, "OUTPUT", "cannot jump to built-in chain OUTPUT", ""},
	{"goto builtin target", 0, "@-A INPUT -g ACCEPT", SevError, 7, "ACCEPT", "goto needs a user-defined chain", "-j ACCEPT"},
	{"jump loop", 0, "@-A INPUT -j USER\n-A USER -j LOGDROP\n-A LOGDROP -j USER", SevError, 5, "", "jump loop: USER -> LOGDROP -> USER", ""},
	{"unreached jump loop", 0, "@-A USER -j LOGDROP\n-A LOGDROP -j USER", SevWarning, 5, "", "jump loop: USER -> LOGDROP -> USER (no built-in chain reaches it", ""},
	{"self loop", 0, "@-A FORWARD -j USER\n-A USER -g USER", SevError, 5, "", "jump loop: USER -> USER", ""},
	{"inverted any", 0, "@-A INPUT ! -s 0/0 -j DROP", SevError, 7, "0/0", "matches no packet", ""},
	{"inverted address list", 0, "@-A INPUT ! -s 198.18.0.1,198.18.0.2 -j DROP", SevError, 7, "198", "! not allowed with multiple", ""},
	{"placeholder", 0, "@-A INPUT -s x.x.x.x -j DROP", SevError, 7, "x.x.x.x", `"x.x.x.x" is a placeholder`, "replace"},
	{"bad address", 0, "@-A INPUT -s 198.18.0.256 -j DROP", SevError, 7, "198", "invalid address", ""},
	{"ipv6 in ipv4", 0, "@-A INPUT -s fd00:198:18::1 -j DROP", SevError, 7, "fd00", "IPv6 address fd00:198:18::1 in an ipv4 rule", "-6"},
	{"bad prefix len", 0, "@-A INPUT -s 198.18.0.0/33 -j DROP", SevError, 7, "198", "invalid prefix length", ""},
	{"unknown protocol", 0, "@-A INPUT -p tpc -j DROP", SevError, 7, "tpc", `unknown protocol "tpc"`, `did you mean "tcp"?`},
	{"dport without proto", 0, "@-A INPUT --dport 22 -j ACCEPT", SevError, 7, "--dport", `unknown option "--dport"`, "-p tcp"},
	{"syn without proto", 0, "@-A INPUT -j ACCEPT --syn", SevError, 7, "--syn", `unknown option "--syn"`, "-p tcp"},
	{"tcp match needs proto", 0, "@-A INPUT -m tcp --dport 22 -j DROP", SevError, 7, "tcp", "TCP match requires '-p tcp'", ""},
	{"multiport needs proto", 0, "@-A INPUT -m multiport --dports 22 -j DROP", SevError, 7, "multiport", "multiport needs", ""},
	{"icmp needs proto", 0, "@-A INPUT -m icmp --icmp-type 8 -j DROP", SevError, 7, "icmp", "icmp match requires '-p icmp'", ""},
	{"bad port", 0, "@-A INPUT -p tcp --dport 70000 -j DROP", SevError, 7, "70000", `invalid port/service "70000"`, ""},
	{"port range dash", 0, "@-A INPUT -p tcp --dport 1024-2000 -j DROP", SevError, 7, "1024", "invalid port/service", "colon"},
	{"reversed range", 0, "@-A INPUT -p tcp --dport 20:10 -j DROP", SevError, 7, "20:10", "min > max", "10:20"},
	{"unknown service", 0, "@-A INPUT -p tcp --dport nosuchservice -j DROP", SevError, 7, "nosuch", "invalid port/service", ""},
	{"too many ports", 0, "@-A INPUT -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15:16 -j DROP", SevError, 7, "1,", "too many ports", ""},
	{"multiport open range", 0, "@-A INPUT -p tcp -m multiport --dports 1024: -j DROP", SevError, 7, "1024:", "multiport: invalid port range", "both ends"},
	{"truncated line", 0, `@-A INPUT -m comment --comment "See the Oracle-Provided Images section in the Orac$`, SevError, 7, `"See`, "unterminated double quote", "cut-off line"},
	{"truncated target", 0, `@-A INPUT -j $`, SevError, 7, "$", "the rule looks truncated", "cut-off line"},
	{"obsolete time option", 0, "@-A INPUT -m time --days Mon -j DROP", SevError, 7, "--days", `unknown option "--days"`, "--weekdays"},
	{"bad state", 0, "@-A INPUT -m state --state ESTABLISHED,REALTED -j DROP", SevError, 7, "EST", `bad state "REALTED"`, ""},
	{"state required", 0, "@-A INPUT -m state -j DROP", SevError, 7, "state", `"--state" must be specified`, ""},
	{"limit not invertible", 0, "@-A INPUT -m limit ! --limit 5/s -j DROP", SevError, 7, "!", "cannot be inverted", ""},
	{"bad rate", 0, "@-A INPUT -m limit --limit 5/fortnight -j DROP", SevError, 7, "5/", "bad rate", "units"},
	{"rate too fast", 0, "@-A INPUT -m limit --limit 20000/second -j DROP", SevError, 7, "20000", "rate too fast", ""},
	{"hashlimit needs name", 0, "@-A INPUT -m hashlimit --hashlimit-upto 5/s -j DROP", SevError, 7, "hashlimit", "--hashlimit-name is required", ""},
	{"recent needs command", 0, "@-A INPUT -m recent --name X -j DROP", SevError, 7, "recent", "--set, --rcheck, --update or --remove", ""},
	{"recent two commands", 0, "@-A INPUT -m recent --set --rcheck -j DROP", SevError, 7, "--rcheck", "only one of", ""},
	{"reject unknown", 0, "@-A INPUT -j REJECT --reject-with icmp-hots-unreachable", SevError, 7, "icmp-", "unknown --reject-with", `did you mean "icmp-host-unreachable"?`},
	{"tcp reset needs tcp", 0, "@-A INPUT -j REJECT --reject-with tcp-reset", SevError, 7, "REJECT", "only for -p tcp", ""},
	{"log prefix too long", 0, `@-A INPUT -j LOG --log-prefix "012345678901234567890123456789"`, SevWarning, 7, `"0`, "cut to its first 29 characters", ""},
	{"log level bad", 0, "@-A INPUT -j LOG --log-level loud", SevError, 7, "loud", "bad --log-level", ""},
	{"output with -i", 0, "@-A OUTPUT -i eth0 -j DROP", SevError, 7, "-i", "can't use -i with OUTPUT", ""},
	{"input with -o", 0, "@-A INPUT -o eth0 -j DROP", SevError, 7, "-o", "can't use -o with INPUT", ""},
	{"owner in input", 0, "@-A INPUT -m owner --uid-owner 0 -j DROP", SevError, 7, "owner", "only valid in the OUTPUT chain", ""},
	{"bad mac", 0, "@-A INPUT -m mac --mac-source XX:XX:XX:XX:XX:XX -j DROP", SevError, 7, "XX", "invalid MAC address", "anonymised"},
	{"two targets", 0, "@-A INPUT -j ACCEPT -j DROP", SevError, 7, "-j DROP", "second target", ""},
	{"stray argument", 0, "@-A INPUT -p tcp 22 -j DROP", SevError, 7, "22", `unexpected argument "22"`, ""},
	{"double bang", 0, "@-A INPUT ! ! -p tcp -j DROP", SevError, 7, "! -p", "multiple '!'", ""},
	{"bang at end", 0, "@-A INPUT -j DROP !", SevError, 7, "!", "'!' at the end", ""},
	{"not invertible core", 0, "@-A INPUT ! -j DROP", SevError, 7, "!", "cannot be inverted", ""},
	{"missing argument", 0, "@-A INPUT -p", SevError, 7, "-p", "needs an argument", ""},
	{"unterminated quote", 0, `@-A INPUT -m comment --comment "abc -j DROP`, SevError, 7, `"abc`, "unterminated double quote", ""},
	{"single quotes", 0, "@-A INPUT -j LOG --log-prefix 'SSH attack: '", SevError, 7, "attack", `unexpected "attack:"`, "double quotes"},
	{"unknown match", 0, "@-A INPUT -m stat --state NEW -j DROP", SevError, 7, "stat", `unknown match module "stat"`, "-m state"},
	{"frag option in v4", packet.IPv4, "@-A INPUT -m frag -j DROP", SevError, 7, "frag", "does not exist for ipv4", ""},
	{"-f in v6", packet.IPv6, "@-A INPUT -f -j DROP", SevError, 7, "-f", "-f is not available in IPv6", "-m frag"},
	{"icmp in v6", packet.IPv6, "@-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP", SevError, 7, "icmp --", "does not exist for ipv6", "icmp6"},
	{"no table", 0, "-A INPUT -j DROP\n", SevError, 1, "", `"-A" outside a table`, "*filter"},
	{"after commit", 0, "*filter\nCOMMIT\n-A INPUT -j DROP\n", SevError, 3, "", `outside a table`, "after COMMIT on line 2"},
	{"missing commit", 0, "*filter\n-A INPUT -j DROP\n", SevError, 1, "", "COMMIT expected", ""},
	{"reopened table", 0, "*filter\n*filter\nCOMMIT\n", SevError, 2, "", "is not COMMITted", ""},
	{"bad policy", 0, "*filter\n:INPUT REJECT [0:0]\nCOMMIT\n", SevError, 2, "REJECT", `bad policy "REJECT"`, ""},
	{"builtin without policy", 0, "*filter\n:INPUT [0:0]\nCOMMIT\n", SevError, 2, "[0:0]", `bad policy "[0:0]"`, ""},
	{"bad counters", 0, "*filter\n:INPUT ACCEPT [x:0]\nCOMMIT\n", SevWarning, 2, "[x", "invalid policy counters", ""},
	{"unknown table", 0, "*filtre\nCOMMIT\n", SevError, 1, "", `unknown table "filtre"`, ""},
	{"crlf", 0, "*filter\r\nCOMMIT\r\n", SevError, 1, "\r", "carriage return", "dos2unix"},
	{"rules run together", 0, "@-A INPUT -j ACCEPT  -A INPUT -j DROP", SevError, 7, "-A INPUT -j DROP", "several lines run together on one line", "own line"},
	{"comment run together", 0, "@#allow ssh  -A INPUT -p tcp --dport 22 -j ACCEPT", SevError, 7, "-A", "this line starts with '#'", "own line"},
	{"hash mid line", 0, "@-A INPUT -j ACCEPT  # allow all", SevError, 7, "#", "'#' starts a comment only at the beginning", ""},
	{"chain name too long", 0, "*filter\n:A123456789012345678901234567890 - [0:0]\nCOMMIT\n", SevError, 2, "A1", "longer than 28", ""},
	{"chain named like target", 0, "*filter\n-N DROP\nCOMMIT\n", SevError, 2, "DROP", "name of a target", ""},
	{"chain exists", 0, "@-N USER", SevError, 7, "USER", "already exists", ""},
	{"delete non-empty chain", 0, "@-A USER -j DROP\n-X USER", SevError, 8, "USER", "not empty", ""},
	{"insert too far", 0, "@-I INPUT 3 -j DROP", SevError, 7, "3", "index out of range", ""},
	{"nat skipped", 0, "*nat\nCOMMIT\n", SevWarning, 1, "", "table *nat skipped", ""},
	// unsupported: valid iptables, not implemented by filterd (exit 3)
	{"set match", 0, "@-A INPUT -m set --match-set blocklist src -j DROP", SevUnsupported, 7, "set", "match -m set is not supported", ""},
	{"nfqueue target", 0, "@-A INPUT -j NFQUEUE --queue-num 1", SevUnsupported, 7, "NFQUEUE", "target -j NFQUEUE is not supported", ""},
	{"mark target", 0, "@-A INPUT -j MARK --set-xmark 0x1/0xff", SevUnsupported, 7, "MARK", "target -j MARK is not supported", ""},
	{"string match", 0, `@-A INPUT -p udp -m string --hex-string "|0000|" --algo bm --from 40 -j DROP`, SevUnsupported, 7, "string", "match -m string", ""},
	{"unknown option of unsupported match", 0, "@-A INPUT -m time --days Mon -j DROP", SevError, 7, "--days", `unknown option "--days"`, ""},
	{"hostname without resolver", 0, "@-A INPUT -s pxe.example.org -j ACCEPT", SevUnsupported, 7, "pxe", `hostname "pxe.example.org"`, ""},
	{"non-contiguous mask", 0, "@-A INPUT -s 198.18.0.0/255.0.255.0 -j ACCEPT", SevUnsupported, 7, "198", "non-contiguous netmask", ""},
	{"ctstate dnat", 0, "@-A INPUT -m conntrack --ctstate DNAT -j ACCEPT", SevUnsupported, 7, "DNAT", "conntrack state DNAT", ""},
	{"hashlimit rate-match", 0, "@-A INPUT -m hashlimit --hashlimit-upto 5/s --hashlimit-name x --hashlimit-rate-match -j ACCEPT", SevUnsupported, 7, "--hashlimit-rate-match", "--hashlimit-rate-match", ""},
	{"delete by spec", 0, "@-D INPUT -j DROP", SevUnsupported, 7, "", "-D with a rule specification", ""},
	{"sctp implicit", 0, "@-A INPUT -p sctp --dport 22 -j ACCEPT", SevUnsupported, 7, "--dport", "match sctp (implicit with -p sctp, for --dport)", ""},
}

// TestParseErrors checks that mistakes are errors (exit 2) naming the place,
// and that valid-but-unimplemented options are "unsupported" (exit 3).
func TestParseErrors(t *testing.T) {
	cases := parseErrorCases
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if strings.HasPrefix(src, "@") {
				src = wrap(src[1:])
			}
			fam := tc.fam
			if fam == 0 {
				fam = packet.IPv4
			}
			_, ds := Load("t.rules", []byte(src), LoadOptions{Family: fam})
			lines := strings.Split(src, "\n")
			col := 1
			if tc.at != "" && tc.line <= len(lines) {
				i := strings.Index(lines[tc.line-1], tc.at)
				if i < 0 {
					t.Fatalf("test bug: %q not on line %d", tc.at, tc.line)
				}
				col = runeCol(lines[tc.line-1], i)
			}
			for _, d := range ds {
				if d.Severity == tc.sev && strings.Contains(d.Msg, tc.msg) {
					if d.Pos.Line != tc.line || d.Pos.Col != col {
						t.Errorf("at %d:%d, want %d:%d: %s", d.Pos.Line, d.Pos.Col, tc.line, col, d.Error())
					}
					if !strings.Contains(d.Hint+d.Msg, tc.hint) {
						t.Errorf("hint %q lacks %q", d.Hint, tc.hint)
					}
					if d.Source == "" && d.Pos.Col > 0 && !strings.Contains(tc.name, "loop") && tc.name != "missing commit" {
						t.Errorf("no source line for %s", d.Error())
					}
					return
				}
			}
			t.Errorf("no %s diagnostic containing %q; got:\n%s", tc.sev, tc.msg, diagText(ds))
		})
	}
}

// TestStrict: skipped tables are an error under --strict.
func TestStrict(t *testing.T) {
	src := "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DNAT --to-destination 198.18.0.1\nCOMMIT\n" + wrap("-A INPUT -j ACCEPT")
	f, ds := Load("t.rules", []byte(src), LoadOptions{})
	if ds.Count(SevWarning) != 1 || ds.HasErrors() || len(f.Skipped) != 1 || f.Skipped[0] != (SkippedTable{Name: "nat", Pos: Pos{File: "t.rules", Line: 1, Col: 1}}) {
		t.Fatalf("lenient: %v %+v", ds, f.Skipped)
	}
	_, ds = Load("t.rules", []byte(src), LoadOptions{Strict: true})
	if ds.Count(SevError) != 1 || !strings.Contains(ds[0].Msg, "*nat") {
		t.Fatalf("strict: %v", ds)
	}
}

// TestResolver: hostnames resolve through the injected resolver and expand
// into one rule per address of the file's family; failures are unsupported.
func TestResolver(t *testing.T) {
	res := func(host string) ([]netip.Addr, error) {
		switch host {
		case "two.example":
			return []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("fd00:198:18::1"), netip.MustParseAddr("198.18.0.2")}, nil
		}
		return nil, errors.New("no such host")
	}
	f, ds := Load("t.rules", []byte(wrap("-A INPUT -s two.example/24 -j ACCEPT")), LoadOptions{Resolve: res})
	if len(ds) != 0 {
		t.Fatal(diagText(ds))
	}
	got := saveRules(t, f, "INPUT")
	want := []string{"-A INPUT -s 198.18.0.0/24 -j ACCEPT", "-A INPUT -s 198.18.0.0/24 -j ACCEPT"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
	_, ds = Load("t.rules", []byte(wrap("-A INPUT -d nowhere.example -j ACCEPT")), LoadOptions{Resolve: res})
	if ds.Count(SevUnsupported) != 1 || !strings.Contains(ds[0].Msg, "no such host") {
		t.Errorf("unresolvable: %v", ds)
	}
}

// TestChainCommands covers -N, -P, -F, -X, -E, -Z, -D and -R inside a file.
func TestChainCommands(t *testing.T) {
	src := "*filter\n-P INPUT DROP\n-N A\n-N B\n-A A -j ACCEPT\n-A A -j DROP\n-A INPUT -j A\n-D A 1\n-N C\n-X C\n" +
		"-E B BB\n-A BB -j RETURN\n-F BB\n-R A 1 -j RETURN\n-A INPUT -j BB\n-Z\nCOMMIT\n"
	f, ds := Load("t.rules", []byte(src), LoadOptions{})
	if len(ds) != 0 {
		t.Fatal(diagText(ds))
	}
	var b bytes.Buffer
	if err := Save(&b, f.Filter, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:BB - [0:0]\n-A INPUT -j A\n-A INPUT -j BB\n-A A -j RETURN\nCOMMIT\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestDiagnosticFormat checks the compiler-style rendering.
func TestDiagnosticFormat(t *testing.T) {
	_, ds := Load("rules.v4", []byte(wrap("-A USER-p tcp -j DROP")), LoadOptions{})
	if len(ds) != 1 {
		t.Fatalf("%v", ds)
	}
	want := "rules.v4:7:4: error: unknown chain \"USER-p\"; did you mean \"USER -p\"?\n" +
		"    -A USER-p tcp -j DROP\n" +
		"       ^~~~~~\n" +
		"    hint: a space is missing between the chain name and the option\n"
	if got := diagText(ds); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if ds.Err() == nil || Diagnostics(nil).Err() != nil {
		t.Error("Err")
	}
}

// TestFileForms covers the file-level variants real files use.
func TestFileForms(t *testing.T) {
	cases := []struct {
		name  string
		src   string
		rules int
		warn  int
	}{
		{"no final newline", "*filter\n-A INPUT -j ACCEPT\nCOMMIT", 1, 0},
		{"blank and comment lines, trailing blanks", "# header\n\n*filter \n:INPUT ACCEPT [0:0]  \n\n# c\n-A INPUT -j ACCEPT   \nCOMMIT\n# Completed\n", 1, 0},
		{"chain without policy field", "*filter\n:NF_PERSIST [0:0]\n-A INPUT -j NF_PERSIST\nCOMMIT\n", 1, 0},
		{"odd user chain declaration", "*filter\n:LOGGING - DROP [0:0]\n-A INPUT -j LOGGING\nCOMMIT\n", 1, 0},
		{"user chain with a policy", "*filter\n:LOGGING DROP [0:0]\nCOMMIT\n", 0, 1},
		{"chain declared after the rule jumping to it", "*filter\n-A INPUT -j LATER\n:LATER - [0:0]\nCOMMIT\n", 1, 0},
		{"-N and -P commands", "*filter\n-P INPUT DROP\n-N LOGGING\n-A LOGGING -j DROP\nCOMMIT\n", 1, 0},
		{"declared twice", "*filter\n:A - [0:0]\n:A - [0:0]\n-A A -j DROP\nCOMMIT\n", 1, 0},
		{"nat then filter", "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DNAT --to-destination 198.18.0.1\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", 1, 1},
		{"two filter tables", "*filter\n-A INPUT -j DROP\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", 1, 1},
		{"commented-out rule", "*filter\n#  -A INPUT -j DROP\n# e.g. :  -A INPUT -m set --match-set <set> src -j DROP\nCOMMIT\n", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, ds := Load("t.rules", []byte(tc.src), LoadOptions{})
			if ds.HasErrors() || ds.HasUnsupported() || ds.Count(SevWarning) != tc.warn {
				t.Fatalf("diagnostics:\n%s", diagText(ds))
			}
			n := 0
			for _, c := range f.Filter.Chains {
				n += len(c.Rules)
			}
			if n != tc.rules {
				t.Errorf("%d rules, want %d", n, tc.rules)
			}
		})
	}
}
