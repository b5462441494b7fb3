package netns

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// needRoot skips without root unless CI=true, where it fails.
func needRoot(t *testing.T) {
	t.Helper()
	if err := RequireRoot(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skipf("skipping: %v (set CI=true to make this a failure)", err)
	}
}

func TestGroupVethDoAndCleanup(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := NewGroup()
	defer g.Close()
	a, err := g.New(ctx, "fdnt")
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.New(ctx, "fdnt")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name == b.Name || !strings.HasPrefix(a.Name, "fdnt-") {
		t.Fatalf("names not unique/prefixed: %q %q", a.Name, b.Name)
	}
	if err := Veth(ctx, a, "va", "02:00:c6:12:aa:01", b, "vb", ""); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run(ctx, "ip", "-o", "link", "show", "va")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "02:00:c6:12:aa:01") || !strings.Contains(string(out), "UP") {
		t.Fatalf("va: %s", out)
	}
	if _, err := b.Run(ctx, "ip", "link", "show", "va"); err == nil {
		t.Fatal("va visible in the other namespace")
	}
	// Do: a sysctl written from Go inside a is not seen in b.
	if err := a.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	va, _ := a.ReadSysctl("net.ipv4.ip_forward")
	vb, _ := b.ReadSysctl("net.ipv4.ip_forward")
	if va != "1" || vb != "0" {
		t.Fatalf("ip_forward a=%q b=%q, want 1 and 0", va, vb)
	}
	// A panic inside Do is an error, not a crash, and the group still cleans up.
	if err := a.Do(func() error { panic("boom") }); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Do(panic) = %v", err)
	}
	names := g.Names()
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if Exists(n) {
			t.Errorf("namespace %s left behind", n)
		}
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRemoveStale(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// PID 4194305 is above the kernel's PID_MAX_LIMIT: never alive.
	dead := &NS{Name: "fdst-4194305-abcdef"}
	if _, err := run(ctx, nil, "ip", "netns", "add", dead.Name); err != nil {
		t.Fatal(err)
	}
	defer dead.Delete(context.Background())
	g := NewGroup()
	defer g.Close()
	live, err := g.New(ctx, "fdst")
	if err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveStale(ctx, "fdst")
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != dead.Name || Exists(dead.Name) {
		t.Errorf("removed %v; %s exists: %v", removed, dead.Name, Exists(dead.Name))
	}
	if !Exists(live.Name) {
		t.Errorf("live namespace %s removed", live.Name)
	}
}
