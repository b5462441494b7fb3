// Package netns builds throwaway Linux network namespaces for tests and the
// kernel replay: create a namespace with a unique name, run a command or Go
// code inside it, connect namespaces with veth pairs, and delete everything
// in a cleanup that runs even when the caller fails or panics.
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the `ip`
// command from iproute2.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// RunDir is where iproute2 keeps the bind mounts of named namespaces.
const RunDir = "/var/run/netns"

// cmdTimeout bounds every command run by this package when the caller's
// context has no earlier deadline.
const cmdTimeout = 30 * time.Second

// NS is one named network namespace.
type NS struct {
	Name string
}

// Path is the namespace's bind mount, usable with setns(2).
func (n *NS) Path() string { return filepath.Join(RunDir, n.Name) }

// UniqueName returns prefix-PID-RANDOM, short enough for any iproute2 use.
func UniqueName(prefix string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(b[:]))
}

// Exists reports whether a namespace of that name exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(RunDir, name))
	return err == nil
}

// List returns the names of all named namespaces (as `ip netns list` does).
func List() ([]string, error) {
	ents, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list %s: %w", RunDir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// Group owns a set of namespaces and deletes them all in Close. Use it as
//
//	g := netns.NewGroup()
//	defer g.Close() // runs on error returns and on panic
//
// Close is safe to call more than once and from several goroutines.
type Group struct {
	mu  sync.Mutex
	nss []*NS
}

// NewGroup returns an empty group.
func NewGroup() *Group { return &Group{} }

// New creates a namespace named UniqueName(prefix) with its loopback up and
// records it in the group.
func (g *Group) New(ctx context.Context, prefix string) (*NS, error) {
	n := &NS{Name: UniqueName(prefix)}
	if _, err := run(ctx, nil, "ip", "netns", "add", n.Name); err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.nss = append(g.nss, n)
	g.mu.Unlock()
	if _, err := n.Run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// Names returns the names of the namespaces the group created and has not yet deleted.
func (g *Group) Names() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, len(g.nss))
	for i, n := range g.nss {
		out[i] = n.Name
	}
	return out
}

// Close deletes every namespace of the group (in reverse order of creation)
// with a fresh bounded context, so it works after the caller's context is
// cancelled. It returns the joined errors.
func (g *Group) Close() error {
	g.mu.Lock()
	nss := g.nss
	g.nss = nil
	g.mu.Unlock()
	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		if err := nss[i].Delete(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

// Delete removes the namespace (its veth ends go with it).
func (n *NS) Delete(ctx context.Context) error {
	if !Exists(n.Name) {
		return nil
	}
	_, err := run(ctx, nil, "ip", "netns", "del", n.Name)
	return err
}

// Run runs a command inside the namespace (`ip netns exec NAME cmd args...`)
// and returns its standard output. The error holds the command line, exit
// status and standard error.
func (n *NS) Run(ctx context.Context, cmd string, args ...string) ([]byte, error) {
	return run(ctx, nil, "ip", append([]string{"netns", "exec", n.Name, cmd}, args...)...)
}

// RunInput is Run with stdin fed from in.
func (n *NS) RunInput(ctx context.Context, in []byte, cmd string, args ...string) ([]byte, error) {
	return run(ctx, in, "ip", append([]string{"netns", "exec", n.Name, cmd}, args...)...)
}

// Sysctl sets key=value inside the namespace by writing /proc/sys directly
// (from a thread moved into the namespace).
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error { return WriteSysctl(key, value) })
}

// ReadSysctl reads a sysctl inside the namespace.
func (n *NS) ReadSysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		var err error
		v, err = ReadSysctl(key)
		return err
	})
	return v, err
}

// WriteSysctl writes a sysctl of the calling thread's network namespace.
func WriteSysctl(key, value string) error {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("netns: sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// ReadSysctl reads a sysctl of the calling thread's network namespace.
func ReadSysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		return "", fmt.Errorf("netns: sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Do runs fn on an OS thread that has joined the namespace, then moves the
// thread back. Sockets opened inside fn stay in the namespace for their whole
// life, so this is how Go code opens raw and packet sockets there. If the
// thread cannot be moved back it stays locked and is discarded by the Go
// runtime when this call returns.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(n.Path())
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open %s: %w", n.Path(), err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: setns %s: %w", n.Name, err)
			return
		}
		var ferr error
		func() {
			defer func() {
				if r := recover(); r != nil {
					ferr = fmt.Errorf("netns: panic in %s: %v", n.Name, r)
				}
			}()
			ferr = fn()
		}()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else: leave the thread locked; it exits with this goroutine.
		errc <- ferr
	}()
	return <-errc
}

// Veth creates a veth pair with one end aName in a and the other end bName in
// b (created directly inside the namespaces, so the names cannot clash with
// the host's), optionally sets MAC addresses (empty: kernel's choice) and
// brings both ends up.
func Veth(ctx context.Context, a *NS, aName, aMAC string, b *NS, bName, bMAC string) error {
	if _, err := run(ctx, nil, "ip", "link", "add", aName, "netns", a.Name, "type", "veth",
		"peer", "name", bName, "netns", b.Name); err != nil {
		return err
	}
	for _, e := range []struct {
		ns        *NS
		name, mac string
	}{{a, aName, aMAC}, {b, bName, bMAC}} {
		if e.mac != "" {
			if _, err := e.ns.Run(ctx, "ip", "link", "set", e.name, "address", e.mac); err != nil {
				return err
			}
		}
		if _, err := e.ns.Run(ctx, "ip", "link", "set", e.name, "up"); err != nil {
			return err
		}
	}
	return nil
}

func run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// RequireRoot returns nil when the process is root. Otherwise it returns an
// error that callers turn into a skip (CI unset) or a failure (CI=true).
func RequireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: needs root (namespaces, veth, iptables)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("netns: iproute2 `ip` not found: %w", err)
	}
	return nil
}

// RemoveStale deletes namespaces named by UniqueName(prefix) whose creating
// process no longer exists (left behind by a process that was killed before
// its cleanup ran). Namespaces of live processes are left alone; no process
// is signalled. It returns the names it deleted.
func RemoveStale(ctx context.Context, prefix string) ([]string, error) {
	names, err := List()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix+"-")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // owner alive
		}
		if err := (&NS{Name: n}).Delete(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, n)
	}
	return removed, errors.Join(errs...)
}
