package netns

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestForTest: the namespace exists during the test, runs commands, and is
// gone after the test's cleanup, also when the test fails.
func TestForTest(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		ns := ForTest(t, "fdtest")
		name = ns.Name
		if !strings.HasPrefix(name, "fdtest-") || !Exists(name) {
			t.Fatalf("namespace %q missing", name)
		}
		out, err := ns.Run(context.Background(), "ip", "-o", "link", "show", "lo")
		if err != nil || !strings.Contains(string(out), "lo") {
			t.Fatalf("run in namespace: %v %s", err, out)
		}
	})
	if name != "" && !waitGone(name, 5*time.Second) {
		t.Errorf("namespace %s still exists after cleanup", name)
	}
}
