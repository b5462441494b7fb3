package netns

import (
	"context"
	"os"
	"testing"
	"time"
)

// ForTest creates a namespace named UniqueName(prefix) for a test and deletes
// it in t.Cleanup, even when the test fails. Without root or the ip command
// the test is skipped, or fails when CI=true (CI runs as root, so a missing
// capability there is a defect, not a reason to skip).
func ForTest(t testing.TB, prefix string) *NS {
	t.Helper()
	if err := RequireRoot(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: root-only tests must run)", err)
		}
		t.Skipf("%v", err)
	}
	g := NewGroup()
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("netns cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	n, err := g.New(ctx, prefix)
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return n
}

// waitGone is used by the test of ForTest: it reports whether the namespace
// disappears within d.
func waitGone(name string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !Exists(name) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return !Exists(name)
}
