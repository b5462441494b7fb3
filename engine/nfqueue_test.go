package engine

import (
	"strings"
	"testing"

	"github.com/filterd/filterd/packet"
)

func TestParseQueueProc(t *testing.T) {
	in := "    0  27493     3 2 65531     7     9        2  1\n    1 4294960 0 2 65535 0 0 12345 1\n"
	got, err := ParseQueueProc(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []QueueProc{
		{Queue: 0, PortID: 27493, Waiting: 3, CopyMode: 2, CopyRange: 65531, Dropped: 7, UserDropped: 9, IDSequence: 2},
		{Queue: 1, PortID: 4294960, CopyMode: 2, CopyRange: 65535, IDSequence: 12345},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i+1, got[i], want[i])
		}
	}
	for _, bad := range []string{"0 1 2\n", "0 1 2 3 4 5 x 7 1\n"} {
		if _, err := ParseQueueProc(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: error %v, want one naming line 1", bad, err)
		}
	}
}

func TestKernelCTState(t *testing.T) {
	u := func(v uint32) *uint32 { return &v }
	cases := []struct {
		in   *uint32
		want packet.CTState
	}{
		{nil, packet.CTInvalid},
		{u(0), packet.CTEstablished}, {u(3), packet.CTEstablished},
		{u(1), packet.CTRelated}, {u(4), packet.CTRelated},
		{u(2), packet.CTNew},
		{u(7), packet.CTUntracked},
		{u(9), packet.CTInvalid},
	}
	for _, c := range cases {
		if got := KernelCTState(c.in); got != c.want {
			t.Errorf("KernelCTState(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
