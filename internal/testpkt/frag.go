// Package testpkt builds raw packets for tests of packages that cannot
// share test helpers otherwise (engine and the drivers above it). Its
// checksum is its own, independent of the engine's.
package testpkt

import "encoding/binary"

// FragmentUDP returns an IPv4 UDP datagram 198.18.1.2:40000 → 198.18.1.1
// port dport with n payload bytes and IP ID ipid, cut into fragments of at
// most mtu bytes (one packet when it fits).
func FragmentUDP(dport uint16, n, mtu int, ipid uint16) [][]byte {
	l4 := make([]byte, 8+n)
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	ph := append([]byte{198, 18, 1, 2, 198, 18, 1, 1, 0, 17, byte(len(l4) >> 8), byte(len(l4))}, l4...)
	binary.BigEndian.PutUint16(l4[6:], checksum(ph))
	var out [][]byte
	step := (mtu - 20) &^ 7
	for off := 0; off < len(l4); off += step {
		end := min(off+step, len(l4))
		h := []byte{0x45, 0, 0, 0, byte(ipid >> 8), byte(ipid), 0, 0, 64, 17, 0, 0, 198, 18, 1, 2, 198, 18, 1, 1}
		binary.BigEndian.PutUint16(h[2:], uint16(20+end-off))
		fo := uint16(off / 8)
		if end < len(l4) {
			fo |= 0x2000 // MF
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		out = append(out, append(h, l4[off:end]...))
	}
	return out
}

// checksum is the Internet checksum (RFC 1071) of b, summed 16 bits at a
// time.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
