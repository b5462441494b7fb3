package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/filterd/filterd/conntrack"
	"github.com/filterd/filterd/ruleset"
)

// The control API: plain HTTP on a unix socket (mode 0600).
//
//	GET /conntrack        the daemon's flows, one per line, as conntrack -L prints them
//	GET /list?v=1&x=1&n=1 the live rule tables with counters, as iptables -L [-v] [-x] [-n]

// serveControl serves the control API on the unix socket path; the returned
// function stops it and removes the socket.
func (d *daemon) serveControl(path string) (func(), error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// A socket left by a killed daemon: nobody answers on it.
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another daemon is serving this socket", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /conntrack", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		n := 0
		d.ct.Range(func(e conntrack.Entry) bool {
			b.WriteString(e.String())
			b.WriteByte('\n')
			n++
			return true
		})
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Filterd-Entries", strconv.Itoa(n))
		io.WriteString(w, b.String())
	})
	mux.HandleFunc("GET /list", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		lo := ruleset.ListOptions{Verbose: q.Get("v") != "", Exact: q.Get("x") != "", Numeric: q.Get("n") != ""}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rules := d.eng.Rules()
		first := true
		for _, x := range []struct {
			name string
			c    *ruleset.Compiled
		}{{"iptables", rules.V4}, {"ip6tables", rules.V6}} {
			if x.c == nil {
				continue
			}
			if !first {
				io.WriteString(w, "\n")
			}
			first = false
			if rules.V6 != nil {
				fmt.Fprintf(w, "# %s\n", x.name)
			}
			ruleset.List(w, x.c.Snapshot(), lo)
		}
	})
	mux.HandleFunc("GET /shadow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		s := d.shadow()
		if s.Runs == 0 {
			io.WriteString(w, "no comparison yet (filterd run --shadow compares every --shadow-interval)\n")
			return
		}
		fmt.Fprintf(w, "comparison %d at %s\n", s.Runs, s.At.UTC().Format(time.RFC3339Nano))
		if s.Err != nil {
			fmt.Fprintf(w, "error: %v\n", s.Err)
			return
		}
		fmt.Fprintf(w, "kernel %d filterd %d same %d differ %d\n", s.Cmp.Kernel, s.Cmp.Filterd, s.Cmp.Same, len(s.Cmp.Diffs))
		for _, df := range s.Cmp.Diffs {
			fmt.Fprintf(w, "differs: proto=%d src=%s dst=%s sport=%d dport=%d kernel=%q filterd=%q\n",
				df.Key.Proto, df.Key.Src, df.Key.Dst, df.Key.SrcPort, df.Key.DstPort, df.Kernel, df.Filterd)
		}
	})
	stop := serveHTTP(d, ln, mux)
	return func() {
		stop()
		os.Remove(path)
	}, nil
}

// controlGet fetches path from the daemon's control socket.
func controlGet(ctx context.Context, sock, path string, w io.Writer) error {
	_, err := controlGetHeader(ctx, sock, path, w)
	return err
}

// controlGetHeader is controlGet returning the response headers too.
func controlGetHeader(ctx context.Context, sock, path string, w io.Writer) (http.Header, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://filterd"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w (is filterd run --control %s running?)", sock, err, sock)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("control socket %s: %s: %s", sock, resp.Status, b)
	}
	_, err = io.Copy(w, resp.Body)
	return resp.Header, err
}

// defaultControl is the control socket the systemd unit uses.
const defaultControl = "/run/filterd.sock"

// runConntrack is `filterd conntrack`: the running daemon's flows.
func runConntrack(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("conntrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("control", defaultControl, "the daemon's control socket `path`")
	list := fs.Bool("L", true, "list the flows (conntrack -L), the only action")
	usageFor(fs, "conntrack [-L] [--control SOCK]", "List a running filterd's connection tracking table as conntrack -L does.")
	if done, code := parseFlags(fs, args, stdout); done {
		return code
	}
	if !*list {
		fmt.Fprintln(stderr, "filterd conntrack: only -L (list) is supported")
		return exitBadInput
	}
	h, err := controlGetHeader(ctx, *sock, "/conntrack", stdout)
	if err != nil {
		fmt.Fprintf(stderr, "filterd conntrack: %v\n", err)
		return exitFailure
	}
	// As conntrack -L, the count goes to stderr.
	fmt.Fprintf(stderr, "filterd conntrack: %s flow entries have been shown.\n", h.Get("X-Filterd-Entries"))
	return exitOK
}

// listLive is `filterd list --control SOCK`.
func listLive(ctx context.Context, sock string, lo ruleset.ListOptions, stdout, stderr io.Writer) int {
	v := url.Values{}
	if lo.Verbose {
		v.Set("v", "1")
	}
	if lo.Exact {
		v.Set("x", "1")
	}
	if lo.Numeric {
		v.Set("n", "1")
	}
	if err := controlGet(ctx, sock, "/list?"+v.Encode(), stdout); err != nil {
		fmt.Fprintf(stderr, "filterd list: %v\n", err)
		return exitFailure
	}
	return exitOK
}
