package conntrack

// Reference: Linux net/netfilter/nf_conntrack_proto_tcp.c (6.x):
// tcp_conntracks[2][6][TCP_CONNTRACK_MAX], nf_conntrack_tcp_packet,
// tcp_in_window, tcp_new, tcp_error and tcp_valid_flags. The table below is
// transcribed from the kernel independently of the one in tcp.go.

import (
	"fmt"
	"testing"
	"time"

	"github.com/filterd/filterd/packet"
)

const (
	xNO = "NONE"
	xSS = "SYN_SENT"
	xSR = "SYN_RECV"
	xES = "ESTABLISHED"
	xFW = "FIN_WAIT"
	xCW = "CLOSE_WAIT"
	xLA = "LAST_ACK"
	xTW = "TIME_WAIT"
	xCL = "CLOSE"
	xS2 = "SYN_SENT2"
	xIV = "INVALID"
	xIG = "IGNORE"
)

var kernelStates = []string{xNO, xSS, xSR, xES, xFW, xCW, xLA, xTW, xCL, xS2}

// kernelTable[dir][index][old] from the kernel source.
var kernelTable = [2][6][10]string{
	{ // ORIGINAL
		/*syn*/ {xSS, xSS, xIG, xIG, xIG, xIG, xIG, xSS, xSS, xS2},
		/*synack*/ {xIV, xIV, xSR, xIV, xIV, xIV, xIV, xIV, xIV, xSR},
		/*fin*/ {xIV, xIV, xFW, xFW, xLA, xLA, xLA, xTW, xCL, xIV},
		/*ack*/ {xES, xIV, xES, xES, xCW, xCW, xTW, xTW, xCL, xIV},
		/*rst*/ {xIV, xCL, xCL, xCL, xCL, xCL, xCL, xCL, xCL, xCL},
		/*none*/ {xIV, xIV, xIV, xIV, xIV, xIV, xIV, xIV, xIV, xIV},
	},
	{ // REPLY
		/*syn*/ {xIV, xS2, xIV, xIV, xIV, xIV, xIV, xSS, xIV, xS2},
		/*synack*/ {xIV, xSR, xIG, xIG, xIG, xIG, xIG, xIG, xIG, xSR},
		/*fin*/ {xIV, xIV, xFW, xFW, xLA, xLA, xLA, xTW, xCL, xIV},
		/*ack*/ {xIV, xIG, xSR, xES, xCW, xCW, xTW, xTW, xCL, xIG},
		/*rst*/ {xIV, xCL, xCL, xCL, xCL, xCL, xCL, xCL, xCL, xCL},
		/*none*/ {xIV, xIV, xIV, xIV, xIV, xIV, xIV, xIV, xIV, xIV},
	},
}

var indexFlags = [6]uint8{fS, fSA, fFA, fA, fR, packet.TCPPsh}
var indexNames = [6]string{"syn", "synack", "fin", "ack", "rst", "none"}

// reach drives a fresh connection into the given kernel state with real
// packets.
func reach(t *testing.T, state string) *tconn {
	c := newTConn(t, New(Config{HashSeed: 7}))
	steps := map[string][]struct {
		dir   int
		flags uint8
	}{
		xNO: {},
		xSS: {{0, fS}},
		xSR: {{0, fS}, {1, fSA}},
		xES: {{0, fS}, {1, fSA}, {0, fA}},
		xFW: {{0, fS}, {1, fSA}, {0, fA}, {0, fFA}},
		xCW: {{0, fS}, {1, fSA}, {0, fA}, {0, fFA}, {1, fA}},
		xLA: {{0, fS}, {1, fSA}, {0, fA}, {0, fFA}, {1, fA}, {1, fFA}},
		xTW: {{0, fS}, {1, fSA}, {0, fA}, {0, fFA}, {1, fA}, {1, fFA}, {0, fA}},
		xCL: {{0, fS}, {1, fSA}, {0, fA}, {1, fA}, {0, fR}},
		xS2: {{0, fS}, {1, fS}},
	}[state]
	for _, s := range steps {
		if st := c.send(s.dir, s.flags, 0); st&packet.CTInvalid != 0 {
			t.Fatalf("reach %s: step %+v INVALID", state, s)
		}
	}
	want := state
	if state == xNO {
		want = "gone"
	}
	if got := c.state(); got != want {
		t.Fatalf("reach %s: got %s", state, got)
	}
	return c
}

// TestTCPTransitions sends, in every state of the kernel's table and in both
// directions, one in-window segment of each flag class and checks the new
// state and the packet's ctstate against tcp_conntracks. A few cells are
// shaped by nf_conntrack_tcp_packet beyond the table; each is named below.
func TestTCPTransitions(t *testing.T) {
	type cell struct{ dir, idx, old int }
	// Cells where nf_conntrack_tcp_packet does more than the table says.
	special := map[cell]struct{ state, ct, why string }{
		// !IPS_SEEN_REPLY and RST: nf_ct_kill_acct deletes the entry.
		{0, 4, 1}: {"gone", "NEW", "RST before any reply kills the entry"},
		{1, 4, 1}: {"gone", "ESTABLISHED", "RST answering the SYN kills the entry (refused connection)"},
		// new_state SYN_SENT from TIME_WAIT/CLOSE with CLOSE_INIT or our own
		// RST last: nf_ct_kill and -NF_REPEAT, tracked again as a new flow.
		{0, 0, 7}: {xSS, "NEW", "SYN reopens from TIME_WAIT (CLOSE_INIT set): new entry"},
		{0, 0, 8}: {xSS, "NEW", "SYN after our own RST: new entry"},
		{1, 0, 7}: {xSS, "NEW", "server SYN reopens from TIME_WAIT: new entry, server is the originator"},
	}
	for dir := 0; dir < 2; dir++ {
		for idx := 0; idx < 6; idx++ {
			for old := 0; old < 10; old++ {
				if old == 0 && dir == 1 {
					continue // a reply direction needs an entry
				}
				name := fmt.Sprintf("%s/%s/dir%d", kernelStates[old], indexNames[idx], dir)
				t.Run(name, func(t *testing.T) {
					c := reach(t, kernelStates[old])
					ct := c.send(dir, indexFlags[idx], 0)
					got := c.state()
					want := kernelTable[dir][idx][old]
					wantCT := "ESTABLISHED"
					if dir == 0 && (old == 0 || old == 1) {
						wantCT = "NEW" // no reply seen yet
					}
					switch want {
					case xIV:
						want, wantCT = kernelStates[old], "INVALID"
						if old == 0 {
							want = "gone"
						}
					case xIG:
						want = kernelStates[old] // ignored: state unchanged, packet still valid
					}
					if sp, ok := special[cell{dir, idx, old}]; ok {
						want, wantCT = sp.state, sp.ct
						t.Logf("special: %s", sp.why)
					}
					if got != want || ct.String() != wantCT {
						t.Errorf("got state %s ct %s, want %s ct %s", got, ct, want, wantCT)
					}
				})
			}
		}
	}
}

// probe sends a segment from side dir with seq and ack moved by dseq and
// dack from the connection's numbers, without advancing them.
func (c *tconn) probe(dir int, flags uint8, n int, dseq, dack int64) packet.CTState {
	c.at += time.Millisecond
	p := c.pkt(dir, flags, n)
	p.Seq = uint32(int64(p.Seq) + dseq)
	if flags&packet.TCPAck != 0 {
		p.Ack = uint32(int64(p.Ack) + dack)
	}
	return track(c.tab, p)
}

func (c *tconn) timeout() time.Duration {
	en, ok := entryOf(c.tab, c.key())
	if !ok {
		return -1
	}
	return en.Timeout
}

func established(t *testing.T, cfg Config) *tconn {
	c := newTConn(t, New(cfg))
	c.send(0, fS, 0)
	c.send(1, fSA, 0)
	c.send(0, fA, 0)
	if c.state() != xES {
		t.Fatalf("handshake: %s", c.state())
	}
	return c
}

// TestTCPWindow checks tcp_in_window's bounds and the RST rules of
// nf_conntrack_tcp_packet on an established connection (windows 64240 and
// 65160, no scaling).
func TestTCPWindow(t *testing.T) {
	type step struct {
		dir        int
		flags      uint8
		n          int
		dseq, dack int64
		advance    bool // send() instead of probe()
	}
	cases := []struct {
		name      string
		cfg       Config
		pre       []step
		probe     step
		wantCT    string
		wantState string
		wantTO    time.Duration // 0: not checked
		ignored   bool          // Stats.Ignore must grow
	}{
		{name: "in-window data", probe: step{0, fPA, 100, 0, 0, false}, wantCT: "ESTABLISHED", wantState: xES, wantTO: 5 * time.Minute /* unacked data */},
		{name: "data acked keeps 5 days", pre: []step{{0, fPA, 100, 0, 0, true}}, probe: step{1, fA, 0, 0, 0, false},
			wantCT: "ESTABLISHED", wantState: xES, wantTO: 5 * 24 * time.Hour},
		{name: "old retransmission below the window is ignored",
			pre: []step{{0, fPA, 60000, 0, 0, true}, {1, fA, 0, 0, 0, true}, {0, fPA, 60000, 0, 0, true}, {1, fA, 0, 0, 0, true}},
			// end = nxt-100000+100 is under sender.end - receiver.maxwin: "SEQ is under lower bound" -> IGNORE (accepted, entry untouched)
			probe: step{0, fPA, 100, -100000, 0, false}, wantCT: "ESTABLISHED", wantState: xES, ignored: true},
		{name: "far-future seq", probe: step{0, fPA, 100, 1 << 30, 0, false}, wantCT: "INVALID", wantState: xES},
		{name: "seq slightly over the window (overshot within receiver window) is ignored",
			probe: step{0, fPA, 100, 65160 + 50, 0, false}, wantCT: "ESTABLISHED", wantState: xES, ignored: true},
		{name: "ack for data not seen", probe: step{0, fA, 0, 0, 100000, false}, wantCT: "INVALID", wantState: xES},
		{name: "ack far in the past is ignored", probe: step{0, fA, 0, 0, -70000, false}, wantCT: "ESTABLISHED", wantState: xES, ignored: true},
		{name: "RST exact seq closes", probe: step{0, fR, 0, 0, 0, false}, wantCT: "ESTABLISHED", wantState: xCL, wantTO: 10 * time.Second},
		{name: "RST+ACK exact seq closes", probe: step{1, fRA, 0, 0, 0, false}, wantCT: "ESTABLISHED", wantState: xCL, wantTO: 10 * time.Second},
		// seq in window but not the expected one: state kept for a challenge ACK, timeout cut to CLOSE's.
		{name: "RST inexact seq keeps ESTABLISHED", probe: step{0, fR, 0, 5000, 0, false}, wantCT: "ESTABLISHED", wantState: xES, wantTO: 10 * time.Second},
		{name: "RST before the peer's max ack is invalid", probe: step{0, fR, 0, -10, 0, false}, wantCT: "INVALID", wantState: xES},
		{name: "RST far out of window is invalid", probe: step{0, fR, 0, 1 << 30, 0, false}, wantCT: "INVALID", wantState: xES},
		{name: "RST ending a data train closes", pre: []step{{0, fPA, 10, 0, 0, true}}, probe: step{0, fR, 0, 0, 0, false},
			wantCT: "ESTABLISHED", wantState: xCL},
		{name: "be_liberal accepts far-future seq", cfg: Config{TCPBeLiberal: On}, probe: step{0, fPA, 100, 1 << 30, 0, false},
			wantCT: "ESTABLISHED", wantState: xES},
		{name: "be_liberal still refuses RST before max ack", cfg: Config{TCPBeLiberal: On}, probe: step{0, fR, 0, -10, 0, false},
			wantCT: "INVALID", wantState: xES},
		{name: "ignore_invalid_rst accepts RST before max ack", cfg: Config{TCPIgnoreInvalidRST: On}, probe: step{0, fR, 0, -10, 0, false},
			wantCT: "ESTABLISHED", wantState: xES, wantTO: 10 * time.Second},
		{name: "bad flags SYN+FIN", probe: step{0, fS | packet.TCPFin, 0, 0, 0, false}, wantCT: "INVALID", wantState: xES},
		{name: "bad flags FIN without ACK", probe: step{0, fF, 0, 0, 0, false}, wantCT: "INVALID", wantState: xES},
		{name: "XMAS", probe: step{0, packet.TCPFin | packet.TCPPsh | packet.TCPUrg, 0, 0, 0, false}, wantCT: "INVALID", wantState: xES},
		{name: "ECE/CWR/PSH are always valid", probe: step{0, fA | packet.TCPEce | packet.TCPCwr | packet.TCPPsh, 0, 0, 0, false},
			wantCT: "ESTABLISHED", wantState: xES},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.HashSeed = 3
			c := established(t, tc.cfg)
			for _, s := range tc.pre {
				if s.advance {
					c.send(s.dir, s.flags, s.n)
				} else {
					c.probe(s.dir, s.flags, s.n, s.dseq, s.dack)
				}
			}
			ign := c.tab.Stats().Ignore
			s := tc.probe
			ct := c.probe(s.dir, s.flags, s.n, s.dseq, s.dack)
			if ct.String() != tc.wantCT {
				t.Errorf("ct %s, want %s", ct, tc.wantCT)
			}
			if got := c.state(); got != tc.wantState {
				t.Errorf("state %s, want %s", got, tc.wantState)
			}
			if tc.wantTO != 0 {
				if got := c.timeout(); got != tc.wantTO {
					t.Errorf("timeout %v, want %v", got, tc.wantTO)
				}
			}
			if got := c.tab.Stats().Ignore > ign; got != tc.ignored {
				t.Errorf("ignored=%v, want %v", got, tc.ignored)
			}
		})
	}
}

// TestTCPInvalidLeavesEntry: an INVALID packet changes neither state nor
// timeout nor counters of the entry.
func TestTCPInvalidLeavesEntry(t *testing.T) {
	c := established(t, Config{HashSeed: 9})
	before, _ := entryOf(c.tab, c.key())
	c.at += time.Hour
	if ct := c.probe(0, fPA, 100, 1<<30, 0); ct != packet.CTInvalid {
		t.Fatalf("ct %s", ct)
	}
	after, _ := entryOf(c.tab, c.key())
	if before.Expires != after.Expires || before.Packets != after.Packets || before.State != after.State {
		t.Errorf("entry changed: %+v -> %+v", before, after)
	}
}

func TestTCPWindowScaling(t *testing.T) {
	for _, tc := range []struct {
		name     string
		serverWS int8
		want     string
	}{
		// Both sides sent WS=7: the window 502 means 64256 bytes.
		{"both scale", 7, "ESTABLISHED"},
		// RFC 1323: scaling only when both sides send the option; without
		// it 502 is 502 bytes and data 60000 bytes ahead is out of window.
		{"server without scale", -1, "INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(Config{HashSeed: 5})
			c := newTConn(t, tab)
			syn := c.pkt(0, fS, 0)
			syn.TCPDataOff, syn.TCPOpt.WScale, syn.TCPOpt.SACKPerm = 40, 7, true
			track(tab, syn)
			c.nxt[0]++
			c.win = [2]uint16{502, 502}
			sa := c.pkt(1, fSA, 0)
			sa.TCPDataOff, sa.TCPOpt.WScale = 40, tc.serverWS
			track(tab, sa)
			c.nxt[1]++
			c.send(0, fA, 0)
			c.send(1, fA, 0) // the server's first scaled window
			if ct := c.probe(0, fPA, 100, 60000, 0); ct.String() != tc.want {
				t.Errorf("data 60000 ahead: %s, want %s", ct, tc.want)
			}
		})
	}
}

// TestTCPSpecialCases covers the branches of nf_conntrack_tcp_packet that
// are not in the table: resync after an ignored SYN, simultaneous open,
// challenge ACK in LAST_ACK, retransmission timeout, loose pickup.
func TestTCPSpecialCases(t *testing.T) {
	t.Run("SYN/ACK answering an ignored SYN resyncs", func(t *testing.T) {
		c := established(t, Config{HashSeed: 1})
		// The client restarts with a new ISN: SYN in ESTABLISHED is ignored...
		c.nxt[0] = 900000
		if ct := c.send(0, fS, 0); ct != packet.CTEstablished {
			t.Fatalf("SYN in ESTABLISHED: %s", ct)
		}
		if c.state() != xES {
			t.Fatalf("state %s", c.state())
		}
		// ...and the server's SYN/ACK for it (ack == last_end) resyncs us.
		c.nxt[1] = 700000
		if ct := c.send(1, fSA, 0); ct != packet.CTEstablished {
			t.Fatalf("SYN/ACK: %s", ct)
		}
		if c.state() != xSR {
			t.Fatalf("after resync: %s, want SYN_RECV", c.state())
		}
		c.send(0, fA, 0)
		if c.state() != xES {
			t.Fatalf("after ACK: %s", c.state())
		}
	})
	t.Run("simultaneous open", func(t *testing.T) {
		c := newTConn(t, New(Config{HashSeed: 1}))
		c.send(0, fS, 0)
		c.send(1, fS, 0) // SYN_SENT2
		c.nxt[0]--
		c.send(0, fSA, 0) // SYN/ACK to SYN2: SYN_RECV
		if c.state() != xSR {
			t.Fatalf("state %s", c.state())
		}
		c.send(1, fA, 0) // reply ACK with IP_CT_TCP_SIMULTANEOUS_OPEN: ESTABLISHED
		if c.state() != xES {
			t.Fatalf("state %s, want ESTABLISHED", c.state())
		}
	})
	t.Run("challenge ACK in LAST_ACK does not close", func(t *testing.T) {
		c := reach(t, xLA)
		c.probe(0, fS, 0, 12345, 0) // SYN in LAST_ACK: ignored, challenge ACK expected
		if ct := c.probe(1, fA, 0, 0, 0); ct != packet.CTEstablished {
			t.Fatalf("challenge ACK ct %s", ct)
		}
		if c.state() != xLA {
			t.Fatalf("state %s, want LAST_ACK", c.state())
		}
		c.send(0, fA, 0) // the real last ACK
		if c.state() != xTW {
			t.Fatalf("state %s, want TIME_WAIT", c.state())
		}
	})
	t.Run("retransmissions shorten the timeout", func(t *testing.T) {
		c := established(t, Config{HashSeed: 1, Timeouts: Timeouts{TCPUnack: 200 * time.Second, TCPMaxRetrans: 100 * time.Second}})
		for i := 0; i < 4; i++ {
			c.probe(0, fPA, 100, 0, 0)
		}
		if got := c.timeout(); got != 100*time.Second {
			t.Fatalf("timeout after 3 retransmissions %v, want 100s", got)
		}
		c = established(t, Config{HashSeed: 1, TCPMaxRetrans: 5, Timeouts: Timeouts{TCPUnack: 200 * time.Second, TCPMaxRetrans: 100 * time.Second}})
		for i := 0; i < 4; i++ {
			c.probe(0, fPA, 100, 0, 0)
		}
		if got := c.timeout(); got != 200*time.Second {
			t.Fatalf("max_retrans=5: timeout after 3 retransmissions %v, want 200s", got)
		}
	})
	t.Run("RST with seq 0 answering SYN", func(t *testing.T) {
		c := newTConn(t, New(Config{HashSeed: 1}))
		c.send(0, fS, 0)
		if ct := c.probe(1, fRA, 0, -5000, 0); ct != packet.CTEstablished {
			t.Fatalf("ct %s", ct)
		}
		if c.state() != "gone" {
			t.Fatalf("state %s", c.state())
		}
	})
	for _, loose := range []struct {
		sw   Switch
		want string
	}{{Default, "NEW"}, {On, "NEW"}, {Off, "INVALID"}} {
		t.Run(fmt.Sprintf("stray ACK loose=%d", loose.sw), func(t *testing.T) {
			c := newTConn(t, New(Config{HashSeed: 1, TCPLoose: loose.sw}))
			if ct := c.send(0, fA, 0); ct.String() != loose.want {
				t.Fatalf("ct %s, want %s", ct, loose.want)
			}
			if loose.want == "NEW" {
				if c.state() != xES || c.timeout() != 5*time.Minute {
					t.Fatalf("picked up: %s %v, want ESTABLISHED with the 300 s unacknowledged timeout", c.state(), c.timeout())
				}
				// The reply makes it a normal, assured connection.
				c.send(1, fA, 0)
				c.send(0, fA, 0)
				en, _ := entryOf(c.tab, c.key())
				if !en.Assured {
					t.Fatalf("not assured: %+v", en)
				}
			}
		})
	}
}

func TestTCPStateTimeouts(t *testing.T) {
	want := map[string]time.Duration{
		xSS: 120 * time.Second, xSR: 60 * time.Second, xES: 5 * 24 * time.Hour, xFW: 120 * time.Second,
		xCW: 60 * time.Second, xLA: 30 * time.Second, xTW: 120 * time.Second, xCL: 10 * time.Second,
		// The server's SYN arrives before any reply was seen: "do not renew
		// timeout on SYN retransmit" keeps the SYN_SENT timer of the first SYN.
		xS2: 120*time.Second - time.Millisecond,
	}
	for st, to := range want {
		t.Run(st, func(t *testing.T) {
			c := reach(t, st)
			if got := c.timeout(); got != to {
				t.Errorf("timeout %v, want %v", got, to)
			}
		})
	}
}
