package conntrack

// Acceptance tests on real captures (testdata/pcaps, see PROVENANCE.md).
// The expected states are what Linux nf_conntrack gives; where it is not
// obvious the reason is worked out from net/netfilter/nf_conntrack_proto_tcp.c
// (Linux 6.x) next to the frame.

import (
	"testing"

	"github.com/filterd/filterd/packet"
)

// replay tracks every IP packet of a capture through tab, accepting all,
// and returns the ctstate per frame number.
func replay(t *testing.T, tab *Table, name string) ([]frame, map[int]packet.CTState) {
	t.Helper()
	frames := readCapture(t, name)
	if len(frames) == 0 {
		t.Fatalf("%s: no IP packets", name)
	}
	got := map[int]packet.CTState{}
	for _, f := range frames {
		got[f.n] = track(tab, f.p)
	}
	return frames, got
}

func TestPcapHTTPSession(t *testing.T) {
	for _, name := range []string{"captured_http_ipv4_get.pcap", "captured_ipv6_http_session.pcap"} {
		t.Run(name, func(t *testing.T) {
			tab := New(Config{HashSeed: 21})
			frames, got := replay(t, tab, name)
			conns := 0
			for _, f := range frames {
				if f.p.Proto != packet.ProtoTCP {
					continue
				}
				want := packet.CTEstablished
				if f.p.TCPFlags == packet.TCPSyn {
					want = packet.CTNew
					conns++
				}
				if got[f.n] != want {
					t.Errorf("frame %d flags %#x: %s, want %s", f.n, f.p.TCPFlags, got[f.n], want)
				}
			}
			if conns < 3 {
				t.Fatalf("only %d connections", conns)
			}
			counts := tab.Counts()
			if counts["tcp TIME_WAIT"] != conns {
				t.Errorf("after the FIN/FIN-ACK closes want %d TIME_WAIT, got %v", conns, counts)
			}
			tab.Range(func(en Entry) bool {
				if en.Orig.Proto == packet.ProtoTCP && !en.Assured {
					t.Errorf("not assured: %s", en)
				}
				return true
			})
		})
	}
}

func TestPcapRefusedRST(t *testing.T) {
	tab := New(Config{HashSeed: 22})
	frames, got := replay(t, tab, "captured_tcp_refused_rst.pcap")
	if len(frames) != 8 {
		t.Fatalf("%d frames", len(frames))
	}
	for _, f := range frames {
		want := packet.CTNew // the SYN
		if f.p.TCPFlags&packet.TCPRst != 0 {
			// RST,ACK seq 0 in the reply direction: valid (tcp_in_window
			// takes seq 0 in SYN_SENT as the answer to the SYN), so
			// ESTABLISHED; with no reply seen before, nf_ct_kill_acct
			// deletes the entry.
			want = packet.CTEstablished
		}
		if got[f.n] != want {
			t.Errorf("frame %d: %s, want %s", f.n, got[f.n], want)
		}
	}
	if tab.Len() != 0 {
		t.Errorf("refused connections left entries: %v", tab.List())
	}
}

func TestPcapUDPAndICMPUnreachable(t *testing.T) {
	tab := New(Config{HashSeed: 23})
	frames, got := replay(t, tab, "captured_udp_echo_icmp_port_unreachable.pcap")
	want := map[int]packet.CTState{
		1: packet.CTNew, 2: packet.CTEstablished, 3: packet.CTEstablished, 4: packet.CTEstablished,
		5: packet.CTEstablished, 6: packet.CTEstablished,
		// ICMPv6 neighbour discovery: noct_valid_new -> UNTRACKED.
		7: packet.CTUntracked, 8: packet.CTUntracked, 9: packet.CTUntracked, 10: packet.CTUntracked,
		11: packet.CTNew, 12: packet.CTRelated, // port unreachable from the server
		13: packet.CTNew, 14: packet.CTRelated, // ICMPv6 port unreachable
		15: packet.CTNew, 16: packet.CTRelated, // unreachable from the router itself
	}
	if len(frames) != len(want) {
		t.Fatalf("%d IP frames, want %d", len(frames), len(want))
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("frame %d: %s, want %s", n, got[n], w)
		}
	}
	// The echo flow replied over more than 2 s: a stream, ASSURED.
	en, ok := entryOf(tab, Key{Family: packet.IPv4, Proto: packet.ProtoUDP, Src: mustAddr("198.18.1.2"), Dst: mustAddr("198.18.2.2"), SrcPort: 40000, DstPort: 7777})
	if !ok || !en.Assured || en.Packets != [2]uint64{3, 3} {
		t.Errorf("echo flow: %+v", en)
	}
}

func TestPcapFTP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dataConns int
	}{
		{"captured_ftp_pyftpdlib_passive_active.pcap", 5}, // PASV x3, PORT x2
		{"zeek_ftp_ipv6_epsv_eprt.pcap", 5},               // EPSV x3, EPRT x2
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, helper := range []bool{true, false} {
				tab := New(Config{HashSeed: 24, FTPHelper: helper})
				frames, got := replay(t, tab, tc.name)
				related, invalid := 0, 0
				for _, f := range frames {
					if f.p.Proto != packet.ProtoTCP {
						continue
					}
					isData := f.p.SrcPort != 21 && f.p.DstPort != 21
					switch {
					case got[f.n] == packet.CTInvalid:
						invalid++
						t.Errorf("helper=%v frame %d INVALID", helper, f.n)
					case f.p.TCPFlags == packet.TCPSyn && isData:
						want := packet.CTNew
						if helper {
							want = packet.CTRelated
						}
						if got[f.n] != want {
							t.Errorf("helper=%v data SYN frame %d: %s, want %s", helper, f.n, got[f.n], want)
						}
						if got[f.n] == packet.CTRelated {
							related++
						}
					case f.p.TCPFlags == packet.TCPSyn:
						if got[f.n] != packet.CTNew {
							t.Errorf("control SYN frame %d: %s", f.n, got[f.n])
						}
					default:
						if got[f.n] != packet.CTEstablished {
							t.Errorf("helper=%v frame %d flags %#x: %s, want ESTABLISHED", helper, f.n, f.p.TCPFlags, got[f.n])
						}
					}
				}
				if helper && related < tc.dataConns {
					t.Errorf("%d RELATED data connections, want >= %d", related, tc.dataConns)
				}
				if !helper && related != 0 {
					t.Errorf("helper off but %d RELATED", related)
				}
				if tab.Expectations() != 0 {
					t.Errorf("%d expectations left", tab.Expectations())
				}
			}
		})
	}
}

// TestPcapInvalidInjected: the injected segments of
// captured_tcp_invalid_injected.pcap get the states Linux gives them.
func TestPcapInvalidInjected(t *testing.T) {
	est, nw, inv := packet.CTEstablished, packet.CTNew, packet.CTInvalid
	want := map[int]packet.CTState{
		1: nw, 2: est, 3: est, 4: est, 5: est, 6: est, 7: est,
		// 10: RST, seq = snd_nxt+5000, no ACK. The RST case of
		// nf_conntrack_tcp_packet: seq is not before the server's td_maxack,
		// the entry is ESTABLISHED+ASSURED, seq != td_maxack and it does not
		// end a data train, so "new_state = old_state": the state stays
		// ESTABLISHED (for the challenge ACK). tcp_in_window accepts it (seq
		// below td_maxend), so the packet is ESTABLISHED, not INVALID; only
		// the timeout drops to the CLOSE timeout.
		10: est,
		11: est, // the server's challenge ACK
		// 12: RST at snd_nxt+2^30: same branch, but tcp_in_window finds seq
		// over td_maxend with an overshoot far bigger than the receiver's
		// window: "SEQ is over upper bound" -> NFCT_TCP_INVALID.
		12: inv,
		// 13: data at snd_nxt+2^30: same upper-bound failure -> INVALID.
		13: inv,
		14: est, // the server's duplicate ACK
		// 15: ACK for rcv_nxt+100000: sack beyond the server's td_end,
		// "ACK is over upper bound (ACKed data not seen yet)" -> INVALID.
		15: inv,
		16: est, 17: est, 18: est, 19: est, 20: est, 21: est, 22: est,
		// 23, 25: hping3 ACKs to a listening port with no entry: tcp_new with
		// nf_conntrack_tcp_loose=1 picks them up (NONE -ack-> ESTABLISHED),
		// ctinfo NEW. 24, 26: the server's RSTs are valid replies (ctinfo
		// ESTABLISHED_REPLY) and kill the unreplied entries.
		23: nw, 24: est, 25: nw, 26: est,
		// 27: FIN alone: not in tcp_valid_flags -> tcp_error INVALID.
		// 28: the RST,ACK answering it: no entry, tcp_new NONE -rst-> sIV.
		27: inv, 28: inv,
		29: inv, // SYN+FIN: tcp_valid_flags
		30: inv, // no flags: tcp_valid_flags
		31: inv, // FIN+PSH+URG: FIN|URG is not valid without ACK
		// 32: unsolicited SYN/ACK: tcp_new NONE -synack-> sIV. 33: the RST
		// answering it: NONE -rst-> sIV. 34: stray RST: likewise.
		32: inv, 33: inv, 34: inv,
	}
	tab := New(Config{HashSeed: 25})
	frames, got := replay(t, tab, "captured_tcp_invalid_injected.pcap")
	if len(frames) != len(want) {
		t.Fatalf("%d IP frames, want %d", len(frames), len(want))
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("frame %d: %s, want %s", n, got[n], w)
		}
	}
	// The real connection closed normally; the stray entries are gone.
	if c := tab.Counts(); len(c) != 1 || c["tcp TIME_WAIT"] != 1 {
		t.Errorf("entries left: %v", tab.List())
	}
}

// TestPcapStrayACKLoose: a stray ACK to nothing is NEW with loose=1 and
// INVALID with loose=0; the mid-stream HTTP capture likewise.
func TestPcapStrayACKLoose(t *testing.T) {
	for _, tc := range []struct {
		loose Switch
		want  packet.CTState
	}{{Default, packet.CTNew}, {Off, packet.CTInvalid}} {
		tab := New(Config{HashSeed: 26, TCPLoose: tc.loose})
		_, got := replay(t, tab, "captured_tcp_invalid_injected.pcap")
		if got[23] != tc.want || got[25] != tc.want {
			t.Errorf("loose=%d: stray ACKs %s %s, want %s", tc.loose, got[23], got[25], tc.want)
		}

		tab = New(Config{HashSeed: 26, TCPLoose: tc.loose})
		frames, got := replay(t, tab, "zeek_http_missing_syn.pcapng")
		// Frame 1 is the server's SYN/ACK with no SYN seen: NONE -synack-> sIV.
		if got[frames[0].n] != packet.CTInvalid {
			t.Errorf("lone SYN/ACK: %s", got[frames[0].n])
		}
		// Frame 2, the client's ACK, is picked up (loose=1) or INVALID.
		if got[frames[1].n] != tc.want {
			t.Errorf("loose=%d: mid-stream ACK %s, want %s", tc.loose, got[frames[1].n], tc.want)
		}
		if tc.loose == Default {
			// The GET still has no reply seen: NEW; everything after the
			// server's first ACK is ESTABLISHED.
			if got[frames[2].n] != packet.CTNew {
				t.Errorf("GET before any reply: %s", got[frames[2].n])
			}
			for _, f := range frames[3:] {
				if got[f.n] != packet.CTEstablished {
					t.Errorf("mid-stream frame %d: %s", f.n, got[f.n])
				}
			}
		}
	}
}

func TestPcapICMPErrorsRelated(t *testing.T) {
	tab := New(Config{HashSeed: 27})
	frames, got := replay(t, tab, "captured_icmp_ping_ttl_exceeded_host_unreach.pcap")
	errs := 0
	for _, f := range frames {
		isErr := (f.p.Proto == packet.ProtoICMP && icmpIsError(f.p.ICMPType)) ||
			(f.p.Proto == packet.ProtoICMPv6 && f.p.ICMPType < 128)
		nd := f.p.Proto == packet.ProtoICMPv6 && f.p.ICMPType >= 133 && f.p.ICMPType <= 136
		switch {
		case isErr:
			errs++
			// Time exceeded / unreachable quoting our ping or UDP probe,
			// from the router or the server: RELATED, reply direction.
			if got[f.n] != packet.CTRelated || f.p.CTDir != packet.DirReply {
				t.Errorf("frame %d (type %d): %s dir %d, want RELATED reply", f.n, f.p.ICMPType, got[f.n], f.p.CTDir)
			}
		case nd:
			if got[f.n] != packet.CTUntracked {
				t.Errorf("frame %d ND: %s", f.n, got[f.n])
			}
		case got[f.n] == packet.CTInvalid:
			t.Errorf("frame %d: INVALID", f.n)
		}
	}
	if errs < 10 {
		t.Fatalf("only %d ICMP errors", errs)
	}
}

func TestPcapHalfCloseKeepaliveAbort(t *testing.T) {
	tab := New(Config{HashSeed: 28})
	frames, got := replay(t, tab, "captured_tcp_halfclose_keepalive_abort.pcapng")
	for _, f := range frames {
		want := packet.CTEstablished
		if f.p.TCPFlags == packet.TCPSyn {
			want = packet.CTNew
		}
		if got[f.n] != want {
			t.Errorf("frame %d flags %#x: %s, want %s", f.n, f.p.TCPFlags, got[f.n], want)
		}
	}
	// Half-close ends in TIME_WAIT; the keepalive session's late RST and
	// the abortive close (RST,ACK) leave CLOSE entries.
	if c := tab.Counts(); c["tcp TIME_WAIT"] != 1 || c["tcp CLOSE"] != 2 {
		t.Errorf("counts %v", c)
	}
}

// TestPcapSynFloodBurst replays the captured burst (600 SYNs from 200
// spoofed sources, SYN-ACKs, ICMP host unreachable, then one real HTTP
// connection) into a 64-entry table: the spoofed half-open entries are
// early-dropped to make room and the real connection works.
func TestPcapSynFloodBurst(t *testing.T) {
	tab := New(Config{HashSeed: 29, Max: 64, Shards: 1})
	frames, got := replay(t, tab, "captured_synflood_burst_200_spoofed_sources.pcap")
	legit := mustAddr("198.18.1.2")
	n := 0
	for _, f := range frames {
		if f.p.Src != legit && f.p.Dst != legit {
			continue
		}
		n++
		want := packet.CTEstablished
		if f.p.TCPFlags == packet.TCPSyn {
			want = packet.CTNew
		}
		if got[f.n] != want {
			t.Errorf("real connection frame %d: %s, want %s", f.n, got[f.n], want)
		}
	}
	if n < 10 {
		t.Fatalf("real connection has %d frames", n)
	}
	st := tab.Stats()
	if st.Entries > 64 || st.EarlyDrop == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestPcapLoopbackOffload: the BSD loopback capture carries checksums never
// computed (offload). With nf_conntrack_checksum=0 the mid-stream pickup and
// the later handshake track cleanly.
func TestPcapLoopbackOffload(t *testing.T) {
	tab := New(Config{HashSeed: 30, Checksum: Off})
	frames, got := replay(t, tab, "gopacket_loopback_null_ipv6_http.pcap")
	for i, f := range frames {
		want := packet.CTEstablished
		if i == 0 || f.p.TCPFlags == packet.TCPSyn {
			want = packet.CTNew // loose pickup of a GET, then a real SYN
		}
		if got[f.n] != want {
			t.Errorf("frame %d: %s, want %s", f.n, got[f.n], want)
		}
	}
}
