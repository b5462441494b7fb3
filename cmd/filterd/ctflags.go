package main

import (
	"flag"
	"fmt"

	"github.com/filterd/filterd/conntrack"
)

// ctFlags are the conntrack settings shared by replay and run, named after
// the kernel's sysctls and with the kernel's defaults.
type ctFlags struct {
	max        int
	tcpLoose   bool
	tcpLiberal bool
	checksum   bool
	ftpHelper  bool
	ftpPorts   string
	prealloc   bool
}

func (o *ctFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&o.max, "ct-max", conntrack.DefaultMax, "conntrack table capacity (nf_conntrack_max)")
	fs.BoolVar(&o.tcpLoose, "tcp-loose", true, "nf_conntrack_tcp_loose: pick up established TCP flows mid-stream")
	fs.BoolVar(&o.tcpLiberal, "tcp-be-liberal", false, "nf_conntrack_tcp_be_liberal: only out-of-window RSTs are INVALID")
	fs.BoolVar(&o.checksum, "checksum", true, "nf_conntrack_checksum: packets with bad L4 checksums are INVALID")
	fs.BoolVar(&o.ftpHelper, "ftp-helper", false, "attach the FTP helper to FTP control connections (like -j CT --helper ftp): RELATED data connections")
	fs.StringVar(&o.ftpPorts, "ftp-ports", "21", "FTP control `ports`, comma-separated")
	fs.BoolVar(&o.prealloc, "ct-prealloc", false, "allocate the conntrack entries for --ct-max flows (about 200 bytes each) at start instead of as the table fills")
}

// config returns the conntrack configuration the flags describe.
func (o *ctFlags) config() (conntrack.Config, error) {
	ports, err := parsePorts(o.ftpPorts)
	if err != nil {
		return conntrack.Config{}, fmt.Errorf("--ftp-ports: %w", err)
	}
	return conntrack.Config{
		Max:          o.max,
		TCPLoose:     switchOf(o.tcpLoose),
		TCPBeLiberal: switchOf(o.tcpLiberal),
		Checksum:     switchOf(o.checksum),
		FTPHelper:    o.ftpHelper,
		FTPPorts:     ports,
		Preallocate:  o.prealloc,
		// A filterd process makes its table once, from memory fresh from
		// the kernel: mapping each block of entries at once is cheaper.
		Prefault: true,
	}, nil
}

func switchOf(on bool) conntrack.Switch {
	if on {
		return conntrack.On
	}
	return conntrack.Off
}
