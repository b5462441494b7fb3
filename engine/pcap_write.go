package engine

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// PcapWriter writes a classic pcap file with nanosecond timestamps
// (magic a1b23c4d), for --write-accepted / --write-dropped. It keeps the
// link type it was created with: frames read from a capture of that link
// type are written byte for byte; with LinkTypeRaw only the IP packet is
// written (for packets that have no link layer, e.g. from NFQUEUE, or from a
// source of another link type). Writing allocates nothing per packet.
type PcapWriter struct {
	w    *bufio.Writer
	link LinkType
	hdr  [16]byte
	n    int
}

// NewPcapWriter writes the file header to w. Call Flush when done.
func NewPcapWriter(w io.Writer, link LinkType) (*PcapWriter, error) {
	pw := &PcapWriter{w: bufio.NewWriterSize(w, 64*1024), link: link}
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:4], 0xa1b23c4d)
	binary.LittleEndian.PutUint16(h[4:6], 2)
	binary.LittleEndian.PutUint16(h[6:8], 4)
	binary.LittleEndian.PutUint32(h[16:20], MaxSnaplen)
	binary.LittleEndian.PutUint32(h[20:24], uint32(link))
	if _, err := pw.w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("pcap writer: file header: %w", err)
	}
	return pw, nil
}

// LinkType is the link type of the file being written.
func (pw *PcapWriter) LinkType() LinkType { return pw.link }

// Count is the number of packets written.
func (pw *PcapWriter) Count() int { return pw.n }

// WritePacket writes one record: data as captured (at most MaxSnaplen bytes
// are kept) and the packet's length on the wire (origLen < len(data) means
// len(data)).
func (pw *PcapWriter) WritePacket(t time.Time, data []byte, origLen int) error {
	if len(data) > MaxSnaplen {
		data = data[:MaxSnaplen]
	}
	if origLen < len(data) {
		origLen = len(data)
	}
	ns := t.UnixNano()
	binary.LittleEndian.PutUint32(pw.hdr[0:4], uint32(ns/1e9))
	binary.LittleEndian.PutUint32(pw.hdr[4:8], uint32(ns%1e9))
	binary.LittleEndian.PutUint32(pw.hdr[8:12], uint32(len(data)))
	binary.LittleEndian.PutUint32(pw.hdr[12:16], uint32(origLen))
	if _, err := pw.w.Write(pw.hdr[:]); err != nil {
		return fmt.Errorf("pcap writer: packet %d: %w", pw.n+1, err)
	}
	if _, err := pw.w.Write(data); err != nil {
		return fmt.Errorf("pcap writer: packet %d: %w", pw.n+1, err)
	}
	pw.n++
	return nil
}

// WriteFrame writes a frame read from a packet source: the whole frame when
// the link types agree, the IP packet alone when the writer is raw.
func (pw *PcapWriter) WriteFrame(f *Frame) error {
	switch {
	case f.LinkType == pw.link:
		return pw.WritePacket(f.Time, f.Data, f.OrigLen)
	case pw.link == LinkTypeRaw && f.L3 != nil:
		return pw.WritePacket(f.Time, f.L3, f.OrigLen-(len(f.Data)-len(f.L3)))
	}
	return fmt.Errorf("pcap writer: cannot write a %v frame into a %v file", f.LinkType, pw.link)
}

// Flush writes buffered records to the underlying writer.
func (pw *PcapWriter) Flush() error { return pw.w.Flush() }
