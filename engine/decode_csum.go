package engine

import (
	"encoding/binary"
	"math/bits"
)

// csumAdd adds b to a ones'-complement running sum (RFC 1071) kept in 64
// bits with end-around carry. b is taken as big-endian 16-bit words starting
// at an even offset; an odd last byte is padded with zero.
func csumAdd(sum uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 32 {
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[0:8]), 0)
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[8:16]), c)
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[16:24]), c)
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[24:32]), c)
		sum += c
		b = b[32:]
	}
	for len(b) >= 8 {
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[0:8]), 0)
		sum += c
		b = b[8:]
	}
	if len(b) >= 4 {
		sum, c = bits.Add64(sum, uint64(binary.BigEndian.Uint32(b[0:4])), 0)
		sum += c
		b = b[4:]
	}
	if len(b) >= 2 {
		sum, c = bits.Add64(sum, uint64(binary.BigEndian.Uint16(b[0:2])), 0)
		sum += c
		b = b[2:]
	}
	if len(b) == 1 {
		sum, c = bits.Add64(sum, uint64(b[0])<<8, 0)
		sum += c
	}
	return sum
}

// fold reduces a 64-bit ones'-complement sum to 16 bits. A packet whose
// checksum field is right folds to 0xffff.
func fold(sum uint64) uint16 {
	sum = (sum >> 32) + (sum & 0xffffffff)
	sum = (sum >> 32) + (sum & 0xffffffff)
	sum = (sum >> 16) + (sum & 0xffff)
	sum = (sum >> 16) + (sum & 0xffff)
	sum = (sum >> 16) + (sum & 0xffff)
	return uint16(sum)
}

// ipChecksum is the folded sum over an IPv4 header; 0xffff when it is right.
func ipChecksum(h []byte) uint16 { return fold(csumAdd(0, h)) }

// Checksum returns the Internet checksum (RFC 1071) of b, to be stored in a
// header whose checksum field was zero while summing. Exported for the
// engine's REJECT replies and for tests.
func Checksum(initial uint64, b []byte) uint16 { return ^fold(csumAdd(initial, b)) }
