// Command tcpflows is the TCP-session workload of bench/nfq/bench.sh: a
// request/response exchange over a bounded number of TCP connections, the
// traffic flow offload is for (every packet after the handshake belongs to
// an ESTABLISHED flow).
//
// Server (receiving namespace): accept connections on -listen and echo
// every byte back until the peer closes; with -sink, also accept
// connections there and discard what they carry.
//
//	tcpflows -listen 198.18.0.2:80 -sink 198.18.0.2:81
//
// Client (sending namespace): -conns connections at once, each sending
// -rounds requests of -size bytes (TCP_NODELAY) and reading each echo
// before the next request; it prints the transactions completed, the time
// and the rate. With -stream BYTES, each connection (to the sink) sends
// BYTES in 64 KiB writes instead, and the client prints the bytes, the
// time and the rate. Only addresses in 198.18.0.0/15 are accepted.
//
//	tcpflows -connect 198.18.0.2:80 -conns 32 -rounds 5000 -size 64
//	tcpflows -connect 198.18.0.2:81 -conns 4 -stream 268435456
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "", "server: address:port to accept connections on (echo)")
	sink := flag.String("sink", "", "server: address:port to accept connections on (discard)")
	stream := flag.Int64("stream", 0, "client: send this many bytes per connection (to a sink) instead of requests")
	connect := flag.String("connect", "", "client: address:port to connect to")
	conns := flag.Int("conns", 32, "client: connections at once")
	rounds := flag.Int("rounds", 5000, "client: requests per connection")
	size := flag.Int("size", 64, "client: request (and echo) size in bytes")
	timeout := flag.Duration("timeout", 60*time.Second, "client: give up after this long")
	flag.Parse()
	var err error
	switch {
	case *listen != "" && *connect == "":
		err = serve(*listen, *sink)
	case *connect != "" && *listen == "" && *sink == "" && *stream > 0:
		err = streamClient(*connect, *conns, *stream, *timeout)
	case *connect != "" && *listen == "" && *sink == "":
		err = client(*connect, *conns, *rounds, *size, *timeout)
	default:
		err = errors.New("want -listen ADDR:PORT [-sink ADDR:PORT] or -connect ADDR:PORT")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpflows:", err)
		os.Exit(1)
	}
}

// benchAddr checks that s is an address:port in 198.18.0.0/15.
func benchAddr(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return err
	}
	if !netip.MustParsePrefix("198.18.0.0/15").Contains(ap.Addr()) {
		return fmt.Errorf("%s: need an address in 198.18.0.0/15", s)
	}
	return nil
}

func serve(echo, sink string) error {
	errc := make(chan error, 2)
	for _, l := range []struct {
		addr string
		to   func(net.Conn) io.Writer
	}{
		{echo, func(c net.Conn) io.Writer { return c }},
		{sink, func(net.Conn) io.Writer { return io.Discard }},
	} {
		if l.addr == "" {
			continue
		}
		if err := benchAddr(l.addr); err != nil {
			return err
		}
		ln, err := net.Listen("tcp4", l.addr)
		if err != nil {
			return err
		}
		fmt.Println("tcpflows: listening on", l.addr)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				go func() {
					defer c.Close()
					_, _ = io.Copy(l.to(c), c)
				}()
			}
		}()
	}
	return <-errc
}

func streamClient(addr string, conns int, n int64, timeout time.Duration) error {
	if err := benchAddr(addr); err != nil {
		return err
	}
	if conns < 1 || conns > 1024 || n > 1<<40 {
		return fmt.Errorf("-conns %d -stream %d: want 1..1024 connections, at most 1 TiB each", conns, n)
	}
	deadline := time.Now().Add(timeout)
	total, el, err := fanOut(conns, func() (int64, error) { return send(addr, n, deadline) })
	fmt.Printf("bytes %d in %.3fs = %.1f MB/s (%d connections)\n", total, el.Seconds(), float64(total)/el.Seconds()/1e6, conns)
	return err
}

// fanOut runs conn on conns goroutines at once and returns the sum of what
// they counted, the time they took together and their errors joined.
func fanOut(conns int, conn func() (int64, error)) (int64, time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, conns)
	counts := make([]int64, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i], errs[i] = conn()
		}()
	}
	wg.Wait()
	var total int64
	for _, c := range counts {
		total += c
	}
	return total, time.Since(start), errors.Join(errs...)
}

// dial connects to addr with every operation bounded by deadline.
func dial(addr string, deadline time.Time) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp4", addr, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(deadline); err != nil {
		c.Close()
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// send writes n bytes on one connection, then waits for the peer to close.
func send(addr string, n int64, deadline time.Time) (int64, error) {
	c, err := dial(addr, deadline)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	var sent int64
	for sent < n {
		w, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
		sent += int64(w)
		if err != nil {
			return sent, err
		}
	}
	if err := c.CloseWrite(); err != nil {
		return sent, err
	}
	// The sink closes once it has read everything.
	_, err = io.Copy(io.Discard, c)
	return sent, err
}

func client(addr string, conns, rounds, size int, timeout time.Duration) error {
	if err := benchAddr(addr); err != nil {
		return err
	}
	if conns < 1 || conns > 1024 || rounds < 1 || rounds > 10_000_000 || size < 1 || size > 1400 {
		return fmt.Errorf("-conns %d -rounds %d -size %d: want 1..1024, 1..10000000, 1..1400", conns, rounds, size)
	}
	deadline := time.Now().Add(timeout)
	total, el, err := fanOut(conns, func() (int64, error) {
		n, err := session(addr, rounds, size, deadline)
		return int64(n), err
	})
	fmt.Printf("transactions %d in %.3fs = %.0f per second (%d connections, %d-byte requests)\n",
		total, el.Seconds(), float64(total)/el.Seconds(), conns, size)
	return err
}

// session runs one connection's requests; it returns how many completed.
func session(addr string, rounds, size int, deadline time.Time) (int, error) {
	c, err := dial(addr, deadline)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetNoDelay(true)
	req := make([]byte, size)
	resp := make([]byte, size)
	for i := 0; i < rounds; i++ {
		req[0] = byte(i)
		if _, err := c.Write(req); err != nil {
			return i, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return i, err
		}
	}
	return rounds, nil
}
