package engine

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// MaxSnaplen is the largest captured frame a pcap source accepts, as
// tcpdump's MAXIMUM_SNAPLEN. A record claiming more is a corrupt file.
const MaxSnaplen = 262144

// maxBlock bounds a pcapng block (a packet block holds at most MaxSnaplen
// bytes of packet data plus options).
const maxBlock = MaxSnaplen + 64*1024

// Pcap error kinds, for errors.Is.
var (
	// ErrPcapTruncated: the file ends inside a header or record.
	ErrPcapTruncated = errors.New("capture file truncated")
	// ErrPcapCorrupt: a header or record is impossible.
	ErrPcapCorrupt = errors.New("capture file corrupt")
)

// PcapError names where reading a capture failed: the number of the packet
// that could not be read (1-based; every packet before it was delivered),
// the byte offset of the header or record at fault, and what was expected.
type PcapError struct {
	Packet int   // number of the packet that could not be read
	Offset int64 // byte offset in the (decompressed) file of the unit at fault
	What   string
	Kind   error // ErrPcapTruncated or ErrPcapCorrupt
	Err    error // underlying error, if any
}

// Error implements error.
func (e *PcapError) Error() string {
	s := fmt.Sprintf("packet %d (byte offset %d): %s", e.Packet, e.Offset, e.What)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches the error's kind.
func (e *PcapError) Is(target error) bool { return target == e.Kind }

// Unwrap returns the underlying error.
func (e *PcapError) Unwrap() error { return e.Err }

// packetReader is what pcapgo's Reader and NgReader have in common.
type packetReader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// PcapReader reads frames from a pcap (microsecond or nanosecond, either byte
// order) or pcapng file, optionally gzip-compressed, with gopacket's pcapgo.
// A validating layer under pcapgo checks every record header as it streams
// by, so that a corrupt or truncated file gives a PcapError naming the
// packet and byte offset instead of a huge allocation or a vague EOF.
// Reading allocates nothing per packet.
type PcapReader struct {
	v  *recordValidator
	pr packetReader
	// direct reads classic pcap records straight from the validator's
	// buffer: the validator has parsed and checked each record header
	// already, and going on through pcapgo (which reads the header again
	// and copies the record into its own buffer, through two io.Reader
	// calls) cost more than half of reading a packet. pcapng files, and
	// classic ones in the tests that compare both, go through pcapgo.
	direct bool
	ng     *pcapgo.NgReader
	link   LinkType
	num    int
	closer io.Closer
	err    error
}

// OpenPcapFile opens a capture file by path. Close it when done.
func OpenPcapFile(path string) (*PcapReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := OpenPcap(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.closer = f
	return r, nil
}

// OpenPcap reads the file header of a pcap or pcapng stream.
func OpenPcap(r io.Reader) (*PcapReader, error) { return openPcap(r, true) }

// openPcap is OpenPcap; direct false reads classic pcap records through
// pcapgo too (tests compare both paths).
func openPcap(r io.Reader, direct bool) (*PcapReader, error) {
	br := bufio.NewReaderSize(r, 64*1024)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, &PcapError{Packet: 1, What: "expected a 24-byte pcap or a pcapng file header", Kind: ErrPcapTruncated, Err: err}
	}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, &PcapError{Packet: 1, What: "gzip header", Kind: ErrPcapCorrupt, Err: err}
		}
		br = bufio.NewReaderSize(zr, 64*1024)
		if magic, err = br.Peek(4); err != nil {
			return nil, &PcapError{Packet: 1, What: "expected a pcap or pcapng file header inside gzip", Kind: ErrPcapTruncated, Err: err}
		}
	}
	pr := &PcapReader{}
	m := binary.LittleEndian.Uint32(magic)
	switch m {
	case 0x0a0d0d0a:
		pr.v = &recordValidator{src: br, ng: true}
		ng, err := pcapgo.NewNgReader(pr.v, pcapgo.NgReaderOptions{WantMixedLinkType: true, SkipUnknownVersion: false})
		if err != nil {
			return nil, pr.wrap(err)
		}
		pr.ng, pr.pr = ng, ng
		pr.link = LinkType(ng.LinkType())
		if len(pr.v.ngLinks) > 0 {
			pr.link = pr.v.ngLinks[0]
		}
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		pr.v = &recordValidator{src: br}
		if direct {
			// pcapgo is not used at all: its reader would pull a few KiB
			// of records through the validator into a buffer of its own.
			if err := pr.v.fileHeader(); err != nil {
				return nil, pr.wrap(err)
			}
			pr.link = pr.v.pcapLink
			pr.direct = true
			break
		}
		rd, err := pcapgo.NewReader(pr.v)
		if err != nil {
			return nil, pr.wrap(err)
		}
		// Records are bounded by the validator; pcapgo must not reject a
		// record over the header's snaplen (tcpdump accepts those too).
		rd.SetSnaplen(MaxSnaplen)
		pr.pr = rd
		pr.link = pr.v.pcapLink
	default:
		return nil, &PcapError{Packet: 1, What: fmt.Sprintf("unknown file magic %#08x: expected pcap (a1b2c3d4, a1b23c4d) or pcapng (0a0d0d0a)", m), Kind: ErrPcapCorrupt}
	}
	return pr, nil
}

// LinkType is the link type of the file (of its first interface for pcapng).
func (r *PcapReader) LinkType() LinkType { return r.link }

// Close closes the file if the reader opened it.
func (r *PcapReader) Close() error {
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}

// wrap turns an error from pcapgo into a PcapError with position. A
// validator error is returned as it is.
func (r *PcapReader) wrap(err error) error {
	var pe *PcapError
	if errors.As(err, &pe) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &PcapError{Packet: r.num + 1, Offset: r.v.unitStart, What: "file ends inside a record", Kind: ErrPcapTruncated, Err: err}
	}
	return &PcapError{Packet: r.num + 1, Offset: r.v.unitStart, What: "record rejected by pcapgo", Kind: ErrPcapCorrupt, Err: err}
}

// Next reads the next frame into f. It returns io.EOF at the clean end of
// the file and a *PcapError for a truncated or corrupt one (after every
// packet before the fault was delivered); the error is sticky. Frames that
// carry no IP packet come back with f.Skip set, not as errors.
func (r *PcapReader) Next(f *Frame) error {
	if r.err != nil {
		return r.err
	}
	var data []byte
	var ci gopacket.CaptureInfo
	var err error
	if r.direct {
		data, ci, err = r.v.record()
	} else {
		data, ci, err = r.pr.ZeroCopyReadPacketData()
	}
	if err != nil {
		if err == io.EOF && r.v.atBoundary() {
			r.err = io.EOF
		} else {
			r.err = r.wrap(err)
		}
		return r.err
	}
	r.num++
	f.Num = r.num
	f.Time = ci.Timestamp
	f.CapLen = ci.CaptureLength
	f.OrigLen = ci.Length
	f.Data = data
	f.LinkType = r.link
	if r.ng != nil {
		f.LinkType = r.v.fullLink(ci.InterfaceIndex, LinkType(r.ifaceLink(ci)))
	}
	if r.num == 1 && r.ng != nil {
		r.link = f.LinkType // the first interface may not have been read at open
	}
	parseLink(f.LinkType, data, f)
	return nil
}

func (r *PcapReader) ifaceLink(ci gopacket.CaptureInfo) uint8 {
	if len(ci.AncillaryData) > 0 {
		if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			return uint8(lt)
		}
	}
	return uint8(r.link)
}

// recordValidator sits between the file and pcapgo. It reads every file
// header, record header and pcapng block header itself, checks it, and only
// then passes it on, so pcapgo never sees an impossible length. It knows
// the byte offset and packet count of the stream for error messages, and the
// full 32-bit link types (gopacket's LinkType is 8 bits wide).
type recordValidator struct {
	// src is read in large pieces into buf (data in buf[r:w]), from which
	// headers are parsed and record bodies handed to pcapgo: a packet costs
	// two small copies instead of layers of io.ReadFull and bufio calls.
	src    io.Reader
	buf    []byte
	r, w   int
	srcErr error // the error that ended src (io.EOF at its end)
	ng     bool
	be     bool // byte order of the current file / section
	nanos  bool // classic pcap with nanosecond timestamps

	off       int64 // bytes consumed from r
	unitStart int64 // offset of the header or record being passed
	started   bool  // file header seen
	pkts      int   // packet records whose header was validated
	hdr       [32]byte
	pending   []byte // validated header bytes not yet passed on
	body      int64  // bytes of the current record left to pass
	bodyCap   uint32 // captured length of the current packet record
	blockType uint32 // type of the current pcapng block
	inPacket  bool   // the current unit is a packet record or block
	err       error

	pcapLink LinkType
	ngLinks  []LinkType // link type per interface of the current section
	ngSnap0  uint32     // snaplen of interface 0 (simple packet blocks)
}

func (v *recordValidator) u32(b []byte) uint32 {
	if v.be {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (v *recordValidator) u16(b []byte) uint16 {
	if v.be {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

// atBoundary reports whether the stream ended cleanly between records.
func (v *recordValidator) atBoundary() bool {
	return v.err == io.EOF && v.body == 0 && len(v.pending) == 0
}

// fullLink returns the 32-bit link type of a pcapng interface whose low 8
// bits pcapgo reported.
func (v *recordValidator) fullLink(iface int, low LinkType) LinkType {
	if iface >= 0 && iface < len(v.ngLinks) && v.ngLinks[iface]&0xff == low {
		return v.ngLinks[iface]
	}
	return low
}

func (v *recordValidator) fail(kind error, what string, err error) error {
	pkt := v.pkts + 1
	if v.body > 0 && v.inPacket {
		pkt = v.pkts // the record being passed is that packet's
	}
	v.err = &PcapError{Packet: pkt, Offset: v.unitStart, What: what, Kind: kind, Err: err}
	return v.err
}

// validatorBuf is the size of the validator's read buffer.
const validatorBuf = 128 << 10

// more reads from src into the buffer (moving what is left to its start)
// and reports whether it got anything.
func (v *recordValidator) more() bool {
	if v.srcErr != nil {
		return false
	}
	if v.buf == nil {
		v.buf = make([]byte, validatorBuf)
	}
	if v.r > 0 {
		v.w = copy(v.buf, v.buf[v.r:v.w])
		v.r = 0
	}
	for {
		m, err := v.src.Read(v.buf[v.w:])
		v.w += m
		if err != nil {
			v.srcErr = err
		}
		if m > 0 || err != nil {
			return m > 0
		}
	}
}

// Read implements io.Reader for pcapgo.
func (v *recordValidator) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(v.pending) > 0 {
			c := copy(p[n:], v.pending)
			v.pending = v.pending[c:]
			n += c
			continue
		}
		if v.body > 0 {
			if v.r == v.w && !v.more() {
				err := v.srcErr
				if err == io.EOF {
					err = nil
				}
				v.fail(ErrPcapTruncated, v.bodyWhat(), err)
				break
			}
			want := min(int64(len(p)-n), v.body, int64(v.w-v.r))
			c := copy(p[n:n+int(want)], v.buf[v.r:])
			v.r += c
			n += c
			v.off += int64(c)
			v.body -= int64(c)
			continue
		}
		if v.err != nil {
			break
		}
		if n > 0 && v.r == v.w {
			break // do not block on the next header while holding data
		}
		v.nextHeader()
	}
	if n > 0 {
		return n, nil
	}
	return 0, v.err
}

// readFull reads exactly len(b) bytes of a header.
func (v *recordValidator) readFull(b []byte, what string) bool {
	for v.w-v.r < len(b) && v.more() {
	}
	if v.w-v.r >= len(b) {
		copy(b, v.buf[v.r:])
		v.r += len(b)
		v.off += int64(len(b))
		return true
	}
	// The file ends inside the header (or, with nothing read, between
	// records).
	c := v.w - v.r
	v.r = v.w
	v.off += int64(c)
	err := v.srcErr
	if err == io.EOF && c == 0 && v.started {
		v.err = io.EOF
		return false
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	v.fail(ErrPcapTruncated, fmt.Sprintf("file ends inside %s: expected %d bytes, got %d", what, len(b), c), err)
	return false
}

// nextHeader reads, checks and queues the next header.
func (v *recordValidator) nextHeader() {
	v.unitStart = v.off
	v.inPacket = false
	if !v.ng {
		v.pcapHeader()
		return
	}
	v.ngHeader()
}

func (v *recordValidator) pcapHeader() {
	if !v.started {
		h := v.hdr[:24]
		if !v.readFull(h, "the pcap file header") {
			return
		}
		switch binary.LittleEndian.Uint32(h) {
		case 0xa1b2c3d4, 0xa1b23c4d:
			v.be = false
		default:
			v.be = true
		}
		v.nanos = v.u32(h) == 0xa1b23c4d
		if maj := v.u16(h[4:6]); maj != 2 {
			v.fail(ErrPcapCorrupt, fmt.Sprintf("pcap file header: version %d.%d, expected 2.4", maj, v.u16(h[6:8])), nil)
			return
		}
		v.pcapLink = LinkType(v.u32(h[20:24]) & 0x0fffffff) // upper bits: FCS info
		v.started = true
		v.pending = h
		return
	}
	h, ok := v.recordHeader()
	if !ok {
		return
	}
	v.pending = h
	v.body = int64(v.bodyCap)
}

// fileHeader reads and checks a classic pcap file header for the direct
// path, with pcapgo's checks too (version 2.4).
func (v *recordValidator) fileHeader() error {
	v.pcapHeader()
	if v.err != nil {
		return v.err
	}
	h := v.pending
	v.pending = nil
	if minor := v.u16(h[6:8]); minor != 4 {
		return fmt.Errorf("Unknown minor version %d", minor) // pcapgo's words
	}
	return nil
}

// recordHeader reads and checks a classic pcap record header; on success
// the validator is inside that packet's record, with bodyCap its length.
func (v *recordValidator) recordHeader() ([]byte, bool) {
	h := v.hdr[:16]
	if !v.readFull(h, "a 16-byte packet record header") {
		return nil, false
	}
	capLen, origLen := v.u32(h[8:12]), v.u32(h[12:16])
	if capLen > MaxSnaplen {
		v.fail(ErrPcapCorrupt, fmt.Sprintf("record header: captured length %d exceeds the maximum snaplen %d", capLen, MaxSnaplen), nil)
		return nil, false
	}
	if capLen > origLen {
		v.fail(ErrPcapCorrupt, fmt.Sprintf("record header: captured length %d exceeds the original length %d", capLen, origLen), nil)
		return nil, false
	}
	v.pkts++
	v.inPacket = true
	v.bodyCap = capLen
	return h, true
}

// record is the direct path for classic pcap (PcapReader.direct): the next
// record, checked as for pcapgo, with its bytes in place in the buffer
// (valid until the next call) and its capture info computed exactly as
// pcapgo computes it. At the clean end of the file it returns io.EOF; for
// a truncated or corrupt one the validator's *PcapError.
func (v *recordValidator) record() ([]byte, gopacket.CaptureInfo, error) {
	var ci gopacket.CaptureInfo
	if v.err != nil {
		return nil, ci, v.err
	}
	v.unitStart = v.off
	v.inPacket = false
	h, ok := v.recordHeader()
	if !ok {
		return nil, ci, v.err
	}
	n := int(v.bodyCap)
	if n > len(v.buf) {
		// A record larger than the buffer (up to MaxSnaplen): grow it once.
		nb := make([]byte, n)
		v.w = copy(nb, v.buf[v.r:v.w])
		v.r = 0
		v.buf = nb
	}
	for v.w-v.r < n && v.more() {
	}
	if v.w-v.r < n {
		c := v.w - v.r
		v.r, v.off, v.body = v.w, v.off+int64(c), int64(n-c)
		err := v.srcErr
		if err == io.EOF {
			err = nil
		}
		return nil, ci, v.fail(ErrPcapTruncated, v.bodyWhat(), err)
	}
	data := v.buf[v.r : v.r+n : v.r+n]
	v.r += n
	v.off += int64(n)
	factor := uint32(1000)
	if v.nanos {
		factor = 1
	}
	// As pcapgo: the fraction times the factor in 32 bits.
	ci.Timestamp = time.Unix(int64(v.u32(h[0:4])), int64(v.u32(h[4:8])*factor)).UTC()
	ci.CaptureLength = n
	ci.Length = int(v.u32(h[12:16]))
	return data, ci, nil
}

const (
	ngSHB = 0x0a0d0d0a
	ngIDB = 0x00000001
	ngPB  = 0x00000002 // obsolete Packet Block
	ngSPB = 0x00000003
	ngEPB = 0x00000006
)

func (v *recordValidator) ngHeader() {
	h := v.hdr[:12]
	if !v.readFull(h, "a pcapng block header") {
		return
	}
	typ := binary.LittleEndian.Uint32(h[0:4])
	if typ == ngSHB {
		switch {
		case binary.LittleEndian.Uint32(h[8:12]) == 0x1a2b3c4d:
			v.be = false
		case binary.BigEndian.Uint32(h[8:12]) == 0x1a2b3c4d:
			v.be = true
		default:
			v.fail(ErrPcapCorrupt, "pcapng section header: bad byte-order magic", nil)
			return
		}
		v.ngLinks = v.ngLinks[:0]
		v.started = true
	} else {
		if !v.started {
			v.fail(ErrPcapCorrupt, "pcapng: expected a section header block first", nil)
			return
		}
		typ = v.u32(h[0:4])
	}
	blen := v.u32(h[4:8])
	minLen := uint32(12)
	need := 12
	v.blockType = typ
	switch typ {
	case ngSHB:
		minLen = 28
	case ngIDB:
		minLen, need = 20, 16
	case ngEPB:
		minLen, need = 32, 28
	case ngPB:
		minLen, need = 32, 28
	case ngSPB:
		minLen, need = 16, 16
	}
	if blen < minLen || blen%4 != 0 || blen > maxBlock {
		v.fail(ErrPcapCorrupt, fmt.Sprintf("pcapng block type %#x: block length %d (want a multiple of 4 in [%d, %d])", typ, blen, minLen, maxBlock), nil)
		return
	}
	if need > 12 && !v.readFull(v.hdr[12:need], "a pcapng block header") {
		return
	}
	h = v.hdr[:need]
	switch typ {
	case ngIDB:
		v.ngLinks = append(v.ngLinks, LinkType(v.u16(h[8:10])))
		snap := v.u32(h[12:16])
		if len(v.ngLinks) == 1 {
			v.ngSnap0 = snap
		}
		if snap > MaxSnaplen {
			v.ngSnap0 = 0
			// pcapgo would allocate a buffer of this size: clamp it, as
			// libpcap does (0 means "no limit").
			v.putU32(h[12:16], 0)
		}
	case ngEPB, ngPB:
		iface := v.u32(h[8:12])
		if typ == ngPB {
			iface = uint32(v.u16(h[8:10]))
		}
		if int(iface) >= len(v.ngLinks) {
			v.fail(ErrPcapCorrupt, fmt.Sprintf("packet block: interface %d not described (have %d)", iface, len(v.ngLinks)), nil)
			return
		}
		capLen := v.u32(h[20:24])
		if capLen > MaxSnaplen || capLen > blen-32 {
			v.fail(ErrPcapCorrupt, fmt.Sprintf("packet block: captured length %d does not fit a %d-byte block", capLen, blen), nil)
			return
		}
		v.pkts++
		v.inPacket = true
	case ngSPB:
		if len(v.ngLinks) == 0 {
			v.fail(ErrPcapCorrupt, "simple packet block before any interface description", nil)
			return
		}
		data := v.u32(h[12:16])
		if v.ngSnap0 != 0 && data > v.ngSnap0 {
			data = v.ngSnap0
		}
		if data > blen-16 {
			v.fail(ErrPcapCorrupt, fmt.Sprintf("simple packet block: packet length %d does not fit a %d-byte block", data, blen), nil)
			return
		}
		v.pkts++
		v.inPacket = true
	}
	v.pending = h
	v.body = int64(blen) - int64(need)
}

// bodyWhat says what the stream was inside when it ended early.
func (v *recordValidator) bodyWhat() string {
	if !v.ng {
		return fmt.Sprintf("file ends inside the packet data of a %d-byte record: %d bytes missing", v.bodyCap, v.body)
	}
	return fmt.Sprintf("file ends inside pcapng block type %#x: %d bytes missing", v.blockType, v.body)
}

func (v *recordValidator) putU32(b []byte, x uint32) {
	if v.be {
		binary.BigEndian.PutUint32(b, x)
	} else {
		binary.LittleEndian.PutUint32(b, x)
	}
}
