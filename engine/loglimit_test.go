package engine

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestRateLimitedWriter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0
	var buf bytes.Buffer
	l := NewRateLimitedWriter(&buf, 2, 3, func() time.Time { return now })
	write := func(s string) { l.Write([]byte(s + "\n")) }
	for i := 0; i < 10; i++ { // burst 3 passes, 7 suppressed
		write("a")
	}
	if got := strings.Count(buf.String(), "a\n"); got != 3 {
		t.Fatalf("burst: %d lines written, want 3", got)
	}
	if l.Suppressed() != 7 {
		t.Fatalf("suppressed %d, want 7", l.Suppressed())
	}
	now = t0.Add(500 * time.Millisecond) // 2/s: one token back
	write("b")
	write("c")
	want := "a\na\na\nfilterd: LOG rate limit: 7 lines suppressed\nb\n"
	if buf.String() != want {
		t.Fatalf("got %q, want %q", buf.String(), want)
	}
	if l.Suppressed() != 8 {
		t.Fatalf("suppressed %d, want 8", l.Suppressed())
	}
	now = t0.Add(time.Hour) // refills only up to the burst
	buf.Reset()
	for i := 0; i < 5; i++ {
		write("z")
	}
	if got := strings.Count(buf.String(), "z\n"); got != 3 {
		t.Fatalf("after an hour: %d lines, want 3 (burst)", got)
	}
}

func TestICMPLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := NewICMPLimiter()
	a := mustAddr("198.18.1.2")
	got := 0
	for i := 0; i < 20; i++ {
		if l.Allow(a, t0) {
			got++
		}
	}
	if got != 6 {
		t.Fatalf("burst to one peer: %d allowed, want 6 (XRLIM_BURST_FACTOR)", got)
	}
	if l.Allow(a, t0.Add(999*time.Millisecond)) {
		t.Fatal("allowed before a second passed")
	}
	if !l.Allow(a, t0.Add(1000*time.Millisecond)) {
		t.Fatal("refused after a second")
	}
	if !l.Allow(mustAddr("198.18.1.3"), t0) {
		t.Fatal("another peer has its own bucket")
	}
	if !l.Allow(mustAddr("127.0.0.1"), t0) {
		t.Fatal("loopback is not limited")
	}
	// The global bucket: 50 at once over many peers.
	l = NewICMPLimiter()
	got = 0
	for i := 0; i < 100; i++ {
		if l.Allow(mustAddr("198.18.2."+itoa(i)), t0) {
			got++
		}
	}
	if got != 50 {
		t.Fatalf("global burst: %d allowed, want 50", got)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestRateLimitedWriterAllow: a line allowed by Allow (checked before it is
// formatted) is written without taking a second token.
func TestRateLimitedWriterAllow(t *testing.T) {
	now := time.Unix(1000, 0)
	var buf bytes.Buffer
	l := NewRateLimitedWriter(&buf, 1, 2, func() time.Time { return now })
	written := 0
	for i := 0; i < 5; i++ {
		if l.Allow() {
			l.Write([]byte("x\n"))
			written++
		}
	}
	if written != 2 || strings.Count(buf.String(), "x\n") != 2 || l.Suppressed() != 3 {
		t.Fatalf("written %d, buffer %q, suppressed %d; want 2, 2 lines, 3", written, buf.String(), l.Suppressed())
	}
	now = now.Add(time.Second)
	if !l.Allow() {
		t.Fatal("no token after a second")
	}
	l.Write([]byte("y\n"))
	if !strings.HasSuffix(buf.String(), "filterd: LOG rate limit: 3 lines suppressed\ny\n") {
		t.Fatalf("buffer %q", buf.String())
	}
}
