package conntrack

import (
	"bytes"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/filterd/filterd/packet"
)

// ftpInfo is struct nf_ct_ftp_master: the sequence numbers just after a
// '\n' per direction, so that commands are only looked for at line starts.
type ftpInfo struct {
	seqAftNl    [2][2]uint32
	seqAftNlNum [2]uint8
}

const maxExpectations = 4096 // bound on pending expectations (nf_ct_expect_max)

type expectation struct {
	src, dst netip.Addr
	dport    uint16
	family   packet.Family
	expires  int64
	master   *entry
}

// expectations holds the pending FTP expectations. The lock order is shard
// lock first, then expectations.mu.
type expectations struct {
	mu   sync.Mutex
	n    atomic.Int32
	list []expectation
}

func (x *expectations) del(i int) {
	last := len(x.list) - 1
	x.list[i] = x.list[last]
	x.list[last] = expectation{}
	x.list = x.list[:last]
	x.n.Store(int32(len(x.list)))
}

// match is nf_ct_find_expectation: a new flow matching an expectation
// consumes it (expectations are not permanent).
func (x *expectations) match(k *Key, now int64) bool {
	if k.Proto != packet.ProtoTCP {
		return false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := 0; i < len(x.list); {
		ex := &x.list[i]
		if ex.expires <= now {
			x.del(i)
			continue
		}
		if ex.family == k.Family && ex.src == k.Src && ex.dst == k.Dst && ex.dport == k.DstPort {
			x.del(i)
			return true
		}
		i++
	}
	return false
}

// add registers an expectation; a master has at most one (max_expected=1 in
// ftp_exp_policy), a newer one replaces the older.
func (x *expectations) add(ex expectation) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := 0; i < len(x.list); i++ {
		if x.list[i].master == ex.master {
			x.del(i)
			break
		}
	}
	if len(x.list) >= maxExpectations {
		x.del(0)
	}
	x.list = append(x.list, ex)
	x.n.Store(int32(len(x.list)))
}

// removeMaster drops the expectations of a dying master entry.
func (x *expectations) removeMaster(e *entry) {
	if x.n.Load() == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := 0; i < len(x.list); {
		if x.list[i].master == e {
			x.del(i)
			continue
		}
		i++
	}
}

func (x *expectations) expire(now int64) {
	if x.n.Load() == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := 0; i < len(x.list); {
		if x.list[i].expires <= now {
			x.del(i)
			continue
		}
		i++
	}
}

// Expectations returns the number of pending expectations.
func (t *Table) Expectations() int { return int(t.exp.n.Load()) }

// ftpHelp is the help() function of nf_conntrack_ftp.c, run on an accepted
// packet of an FTP control connection. Called with the entry's shard locked.
func (t *Table) ftpHelp(e *entry, p *packet.Packet, dir uint8, now int64) {
	if p.Proto != packet.ProtoTCP || len(p.Payload) == 0 {
		return
	}
	info := &e.ftp
	key := e.key.key()
	data := p.Payload
	endsNL := data[len(data)-1] == '\n'
	nextSeq := p.Seq + uint32(len(data))
	if ftpFindNlSeq(p.Seq, info, dir) {
		// The sender's own address, as the kernel's cmd.u3 default.
		self := key.Src
		if dir == 1 {
			self = key.Dst
		}
		cmd, found := ftpParse(data, dir, key.Family, self)
		if found == 1 && cmd.addr == self {
			// Expect the peer to connect to the announced port of the
			// command's sender. A different address is not recorded
			// (the module parameter loose=0).
			peer := key.Dst
			if dir == 1 {
				peer = key.Src
			}
			t.exp.add(expectation{
				family:  key.Family,
				src:     peer,
				dst:     self,
				dport:   cmd.port,
				expires: now + t.cfg.ftpExpect,
				master:  e,
			})
		}
		// found == -1 (partial match) makes the kernel drop the packet;
		// the verdict was already given here, so it is only ignored.
	}
	if endsNL {
		ftpUpdateNlSeq(nextSeq, info, dir)
	}
}

func ftpFindNlSeq(seq uint32, info *ftpInfo, dir uint8) bool {
	for i := uint8(0); i < info.seqAftNlNum[dir]; i++ {
		if info.seqAftNl[dir][i] == seq {
			return true
		}
	}
	return false
}

func ftpUpdateNlSeq(nl uint32, info *ftpInfo, dir uint8) {
	for i := uint8(0); i < info.seqAftNlNum[dir]; i++ {
		if info.seqAftNl[dir][i] == nl {
			return
		}
	}
	if info.seqAftNlNum[dir] < 2 {
		info.seqAftNl[dir][info.seqAftNlNum[dir]] = nl
		info.seqAftNlNum[dir]++
		return
	}
	oldest := 1
	if before(info.seqAftNl[dir][0], info.seqAftNl[dir][1]) {
		oldest = 0
	}
	if after(nl, info.seqAftNl[dir][oldest]) {
		info.seqAftNl[dir][oldest] = nl
	}
}

// FTPCommand is what the FTP helper found in a control-connection line.
type FTPCommand struct {
	Kind string // "PORT", "EPRT", "PASV" (227 reply) or "EPSV" (229 reply)
	addr netip.Addr
	port uint16
}

// Addr is the address announced (for EPSV, the sender's own address).
func (c FTPCommand) Addr() netip.Addr { return c.addr }

// Port is the announced data port.
func (c FTPCommand) Port() uint16 { return c.port }

type ftpSearch struct {
	pattern    string
	kind       string
	skip, term byte
	getnum     func(data []byte, term byte, fam packet.Family, cmd *FTPCommand) int
}

var ftpSearches = [2][2]ftpSearch{
	{ // ORIGINAL: commands from the client
		{pattern: "PORT", kind: "PORT", skip: ' ', term: '\r', getnum: tryRFC959},
		{pattern: "EPRT", kind: "EPRT", skip: ' ', term: '\r', getnum: tryEPRT},
	},
	{ // REPLY: responses from the server
		{pattern: "227 ", kind: "PASV", getnum: tryRFC1123},
		{pattern: "229 ", kind: "EPSV", skip: '(', term: ')', getnum: tryEPSV},
	},
}

// ftpParse runs find_pattern over the searches of direction dir. It returns
// 1 on a match, 0 when no command is there and -1 on a partial or
// malformed match. self is the sender's address, the default for EPSV.
func ftpParse(data []byte, dir uint8, fam packet.Family, self netip.Addr) (FTPCommand, int) {
	for _, s := range ftpSearches[dir&1] {
		cmd := FTPCommand{Kind: s.kind, addr: self}
		if found := findPattern(data, s, fam, &cmd); found != 0 {
			return cmd, found
		}
	}
	return FTPCommand{}, 0
}

// ParseFTP parses one FTP control-connection payload as the kernel's FTP
// helper does: dir 0 for client commands (PORT, EPRT), 1 for server replies
// (227, 229). self is the sender's address. ok is false when there is no
// complete command.
func ParseFTP(payload []byte, dir packet.CTDir, fam packet.Family, self netip.Addr) (FTPCommand, bool) {
	cmd, found := ftpParse(payload, uint8(dir), fam, self)
	return cmd, found == 1
}

func findPattern(data []byte, s ftpSearch, fam packet.Family, cmd *FTPCommand) int {
	plen := len(s.pattern)
	if len(data) <= plen {
		if bytes.EqualFold(data, []byte(s.pattern[:len(data)])) {
			return -1
		}
		return 0
	}
	if !bytes.EqualFold(data[:plen], []byte(s.pattern)) {
		return 0
	}
	i := plen
	if s.skip != 0 {
		for data[i] != s.skip {
			if i == len(data)-1 {
				return -1
			}
			i++
		}
		i++
	}
	if s.getnum(data[i:], s.term, fam, cmd) == 0 {
		return -1
	}
	return 1
}

// tryNumber is try_number: n numbers separated by sep, ended by term (or by
// anything when term is 0). Returns the length consumed, 0 on failure.
func tryNumber(data []byte, arr []uint32, sep, term byte) int {
	for i := range arr {
		arr[i] = 0
	}
	i := 0
	for l := 0; l < len(data) && i < len(arr); l++ {
		c := data[l]
		switch {
		case c >= '0' && c <= '9':
			arr[i] = arr[i]*10 + uint32(c-'0')
		case c == sep:
			i++
		default:
			if (c == term || term == 0) && i == len(arr)-1 {
				return l
			}
			return 0
		}
	}
	return 0
}

func v4addr(a, b, c, d uint32) netip.Addr {
	u := a<<24 | b<<16 | c<<8 | d
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

// tryRFC959 parses "h1,h2,h3,h4,p1,p2".
func tryRFC959(data []byte, term byte, fam packet.Family, cmd *FTPCommand) int {
	var a [6]uint32
	n := tryNumber(data, a[:], ',', term)
	if n == 0 {
		return 0
	}
	cmd.addr = v4addr(a[0], a[1], a[2], a[3])
	cmd.port = uint16(a[4]<<8 | a[5])
	return n
}

// tryRFC1123 scans a 227 reply for the first digit, then parses as PORT.
func tryRFC1123(data []byte, term byte, fam packet.Family, cmd *FTPCommand) int {
	i := 0
	for i < len(data) && !(data[i] >= '0' && data[i] <= '9') {
		i++
	}
	if i == len(data) {
		return 0
	}
	return tryRFC959(data[i:], 0, fam, cmd)
}

// getPort is get_port: digits up to delim, nonzero.
func getPort(data []byte, start int, delim byte, port *uint16) int {
	var p uint16
	for i := start; i < len(data); i++ {
		c := data[i]
		switch {
		case c == delim:
			if p == 0 {
				return 0
			}
			*port = p
			return i + 1
		case c >= '0' && c <= '9':
			p = p*10 + uint16(c-'0')
		default:
			return 0
		}
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// tryEPRT parses "|1|132.235.1.2|6275|" or "|2|3ffe::1|6275|".
func tryEPRT(data []byte, term byte, fam packet.Family, cmd *FTPCommand) int {
	if len(data) <= 3 {
		return 0
	}
	delim := data[0]
	if isDigit(delim) || delim < 33 || delim > 126 || data[2] != delim {
		return 0
	}
	if (fam == packet.IPv4 && data[1] != '1') || (fam == packet.IPv6 && data[1] != '2') {
		return 0
	}
	var length int
	if data[1] == '1' {
		var a [4]uint32
		length = tryNumber(data[3:], a[:], '.', delim)
		if length != 0 {
			cmd.addr = v4addr(a[0], a[1], a[2], a[3])
		}
	} else {
		// in6_pton up to the delimiter.
		rest := data[3:]
		j := bytes.IndexByte(rest, delim)
		if j <= 0 {
			return 0
		}
		s := string(rest[:j])
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return 0
		}
		cmd.addr = a
		length = j
	}
	if length == 0 {
		return 0
	}
	return getPort(data, 3+length+1, delim, &cmd.port)
}

// tryEPSV parses the "|||6446|" of a 229 reply.
func tryEPSV(data []byte, term byte, fam packet.Family, cmd *FTPCommand) int {
	if len(data) <= 3 {
		return 0
	}
	delim := data[0]
	if isDigit(delim) || delim < 33 || delim > 126 || data[1] != delim || data[2] != delim {
		return 0
	}
	return getPort(data, 3, delim, &cmd.port)
}
