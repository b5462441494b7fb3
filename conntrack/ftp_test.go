package conntrack

// Reference: Linux net/netfilter/nf_conntrack_ftp.c: search[][] (PORT,
// EPRT from the client; 227, 229 from the server), try_rfc959,
// try_rfc1123, try_eprt, try_epsv_response, get_port, find_pattern,
// find_nl_seq/update_nl_seq, help(), ftp_exp_policy (max_expected 1,
// timeout 5 min).

import (
	"net/netip"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

func TestParseFTP(t *testing.T) {
	c4, s4 := mustAddr("198.18.1.2"), mustAddr("198.18.2.2")
	c6, s6 := mustAddr("fd00:198:18:1::2"), mustAddr("fd00:198:18:2::2")
	cases := []struct {
		name  string
		dir   packet.CTDir
		fam   packet.Family
		self  netip.Addr
		line  string
		found int
		kind  string
		addr  netip.Addr
		port  uint16
	}{
		{"PORT", 0, packet.IPv4, c4, "PORT 198,18,1,2,156,65\r\n", 1, "PORT", c4, 156<<8 | 65},
		{"port lower case", 0, packet.IPv4, c4, "port 198,18,1,2,0,20\r\n", 1, "PORT", c4, 20},
		{"PORT other address", 0, packet.IPv4, c4, "PORT 10,0,0,1,4,1\r\n", 1, "PORT", mustAddr("10.0.0.1"), 1025},
		{"PORT too few numbers", 0, packet.IPv4, c4, "PORT 198,18,1,2,156\r\n", -1, "", netip.Addr{}, 0},
		{"PORT without CR", 0, packet.IPv4, c4, "PORT 198,18,1,2,156,65\n", -1, "", netip.Addr{}, 0},
		{"partial PORT", 0, packet.IPv4, c4, "POR", -1, "", netip.Addr{}, 0},
		{"other command", 0, packet.IPv4, c4, "RETR notes.txt\r\n", 0, "", netip.Addr{}, 0},
		{"EPRT v4", 0, packet.IPv4, c4, "EPRT |1|198.18.1.2|40001|\r\n", 1, "EPRT", c4, 40001},
		{"EPRT v6", 0, packet.IPv6, c6, "EPRT |2|fd00:198:18:1::2|49189|\r\n", 1, "EPRT", c6, 49189},
		{"EPRT other delimiter", 0, packet.IPv6, c6, "EPRT !2!fd00:198:18:1::2!5000!\r\n", 1, "EPRT", c6, 5000},
		{"EPRT v4 on a v6 connection", 0, packet.IPv6, c6, "EPRT |1|198.18.1.2|40001|\r\n", -1, "", netip.Addr{}, 0},
		{"EPRT port 0", 0, packet.IPv4, c4, "EPRT |1|198.18.1.2|0|\r\n", -1, "", netip.Addr{}, 0},
		{"EPRT digit delimiter", 0, packet.IPv4, c4, "EPRT 212.18.1.22400022\r\n", -1, "", netip.Addr{}, 0},
		{"227", 1, packet.IPv4, s4, "227 Entering Passive Mode (198,18,2,2,195,189).\r\n", 1, "PASV", s4, 195<<8 | 189},
		{"227 without parentheses", 1, packet.IPv4, s4, "227 =198,18,2,2,4,0\r\n", 1, "PASV", s4, 1024},
		{"227 without numbers", 1, packet.IPv4, s4, "227 nothing here\r\n", -1, "", netip.Addr{}, 0},
		{"229", 1, packet.IPv6, s6, "229 Entering Extended Passive Mode (|||57086|)\r\n", 1, "EPSV", s6, 57086},
		{"229 on IPv4", 1, packet.IPv4, s4, "229 Entering Extended Passive Mode (|||50104|).\r\n", 1, "EPSV", s4, 50104},
		{"229 bad delimiters", 1, packet.IPv4, s4, "229 Entering Extended Passive Mode (||50104|).\r\n", -1, "", netip.Addr{}, 0},
		{"PORT from the server is not looked for", 1, packet.IPv4, s4, "PORT 198,18,1,2,156,65\r\n", 0, "", netip.Addr{}, 0},
		{"227 from the client is not looked for", 0, packet.IPv4, c4, "227 Entering Passive Mode (198,18,2,2,195,189).\r\n", 0, "", netip.Addr{}, 0},
		{"other reply", 1, packet.IPv4, s4, "226 Transfer complete.\r\n", 0, "", netip.Addr{}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd, found := ftpParse([]byte(tc.line), uint8(tc.dir), tc.fam, tc.self)
			if found != tc.found {
				t.Fatalf("found %d, want %d", found, tc.found)
			}
			if found != 1 {
				return
			}
			if cmd.Kind != tc.kind || cmd.Addr() != tc.addr || cmd.Port() != tc.port {
				t.Fatalf("got %s %s %d, want %s %s %d", cmd.Kind, cmd.Addr(), cmd.Port(), tc.kind, tc.addr, tc.port)
			}
			pub, ok := ParseFTP([]byte(tc.line), tc.dir, tc.fam, tc.self)
			if !ok || pub != cmd {
				t.Fatalf("ParseFTP differs: %v %v", pub, ok)
			}
		})
	}
}

// ftpSession drives an FTP control connection on port 21 and returns it.
func ftpSession(t *testing.T, tab *Table) *tconn {
	c := newTConn(t, tab)
	c.port[1] = 21
	c.send(0, fS, 0)
	c.send(1, fSA, 0)
	c.send(0, fA, 0)
	return c
}

func (c *tconn) line(dir int, s string) packet.CTState {
	c.at += time.Millisecond
	p := c.pkt(dir, fPA, 0)
	p.Payload = []byte(s)
	p.Length += len(s)
	st := track(c.tab, p)
	c.nxt[dir] += uint32(len(s))
	return st
}

func TestFTPExpectations(t *testing.T) {
	dataSyn := func(c *tconn, src, dst string, sport, dport uint16, after time.Duration) packet.CTState {
		p := seg{src: src, dst: dst, sport: sport, dport: dport, flags: fS, seq: 1, win: 1000, at: c.at + after}.packet()
		return track(c.tab, p)
	}
	t.Run("first line per direction is never parsed", func(t *testing.T) {
		tab := New(Config{HashSeed: 31, FTPHelper: true})
		c := ftpSession(t, tab)
		// The client's very first line: no '\n' position known yet (find_nl_seq fails).
		c.line(0, "PORT 198,18,1,2,156,65\r\n")
		if tab.Expectations() != 0 {
			t.Fatalf("first line parsed")
		}
		c.line(0, "PORT 198,18,1,2,156,66\r\n")
		if tab.Expectations() != 1 {
			t.Fatalf("second line not parsed")
		}
	})
	t.Run("active PORT: the server's connection back is RELATED once", func(t *testing.T) {
		tab := New(Config{HashSeed: 31, FTPHelper: true})
		c := ftpSession(t, tab)
		c.line(1, "220 hi\r\n")
		c.line(0, "USER x\r\n")
		c.line(0, "PORT 198,18,1,2,156,65\r\n")
		if got := dataSyn(c, "198.18.2.2", "198.18.1.2", 20, 156<<8|65, time.Millisecond); got != packet.CTRelated {
			t.Fatalf("data SYN: %s", got)
		}
		// Expectation consumed: a second connection to the same port is NEW.
		if got := dataSyn(c, "198.18.2.2", "198.18.1.2", 21000, 156<<8|65, 2*time.Millisecond); got != packet.CTNew {
			t.Fatalf("second data SYN: %s", got)
		}
	})
	t.Run("passive 227: the client's connection is RELATED", func(t *testing.T) {
		tab := New(Config{HashSeed: 31, FTPHelper: true})
		c := ftpSession(t, tab)
		c.line(1, "220 hi\r\n")
		c.line(1, "227 Entering Passive Mode (198,18,2,2,195,189).\r\n")
		if got := dataSyn(c, "198.18.1.2", "198.18.2.2", 45000, 195<<8|189, time.Millisecond); got != packet.CTRelated {
			t.Fatalf("data SYN: %s", got)
		}
	})
	t.Run("227 announcing another address is not recorded (loose=0)", func(t *testing.T) {
		tab := New(Config{HashSeed: 31, FTPHelper: true})
		c := ftpSession(t, tab)
		c.line(1, "220 hi\r\n")
		c.line(1, "227 Entering Passive Mode (10,9,9,9,195,189).\r\n")
		if tab.Expectations() != 0 {
			t.Fatalf("recorded")
		}
	})
	t.Run("expectation expires after 5 minutes", func(t *testing.T) {
		tab := New(Config{HashSeed: 31, FTPHelper: true})
		c := ftpSession(t, tab)
		c.line(1, "220 hi\r\n")
		c.line(1, "229 Entering Extended Passive Mode (|||50104|)\r\n")
		if got := dataSyn(c, "198.18.1.2", "198.18.2.2", 45000, 50104, 5*time.Minute+time.Second); got != packet.CTNew {
			t.Fatalf("late data SYN: %s", got)
		}
		c.line(1, "229 Entering Extended Passive Mode (|||50105|)\r\n")
		tab.Sweep(t0.Add(c.at+6*time.Minute), 10)
		if tab.Expectations() != 0 {
			t.Fatalf("Sweep kept an expired expectation")
		}
	})
	t.Run("one expectation per master", func(t *testing.T) {
		tab := New(Config{HashSeed: 31, FTPHelper: true})
		c := ftpSession(t, tab)
		c.line(1, "220 hi\r\n")
		c.line(1, "227 Entering Passive Mode (198,18,2,2,195,1).\r\n")
		c.line(1, "227 Entering Passive Mode (198,18,2,2,195,2).\r\n")
		if tab.Expectations() != 1 {
			t.Fatalf("%d expectations", tab.Expectations())
		}
		if got := dataSyn(c, "198.18.1.2", "198.18.2.2", 45000, 195<<8|1, time.Millisecond); got != packet.CTNew {
			t.Fatalf("replaced expectation still matched: %s", got)
		}
	})
	t.Run("helper off or other port", func(t *testing.T) {
		for _, cfg := range []Config{{HashSeed: 31}, {HashSeed: 31, FTPHelper: true, FTPPorts: []uint16{2121}}} {
			tab := New(cfg)
			c := ftpSession(t, tab)
			c.line(1, "220 hi\r\n")
			c.line(1, "227 Entering Passive Mode (198,18,2,2,195,189).\r\n")
			if tab.Expectations() != 0 {
				t.Fatalf("cfg %+v: expectation created", cfg)
			}
		}
	})
	t.Run("expectations die with their master", func(t *testing.T) {
		tab := New(Config{HashSeed: 31, FTPHelper: true})
		c := ftpSession(t, tab)
		c.line(1, "220 hi\r\n")
		c.line(1, "227 Entering Passive Mode (198,18,2,2,195,189).\r\n")
		c.send(0, fR, 0) // control connection reset
		c.at += 11 * time.Second
		tab.Sweep(t0.Add(c.at), 1<<20)
		if tab.Len() != 0 || tab.Expectations() != 0 {
			t.Fatalf("len %d expectations %d", tab.Len(), tab.Expectations())
		}
	})
}
