package packet

import "testing"

func TestCTStateString(t *testing.T) {
	tests := []struct {
		s    CTState
		want string
	}{
		{0, "NONE"},
		{CTNew, "NEW"},
		{CTEstablished | CTRelated, "RELATED,ESTABLISHED"},
		{CTInvalid | CTNew | CTUntracked, "INVALID,NEW,UNTRACKED"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("CTState(%#x).String() = %q, want %q", uint8(tt.s), got, tt.want)
		}
	}
}

func TestHookNames(t *testing.T) {
	for h := Hook(0); h < NumHooks; h++ {
		got, ok := ParseHook(h.String())
		if !ok || got != h {
			t.Errorf("ParseHook(%q) = %v, %v; want %v", h.String(), got, ok, h)
		}
	}
	if _, ok := ParseHook("input"); ok {
		t.Error(`ParseHook("input") accepted a lower-case name; the kernel's names are upper case`)
	}
}

func TestReset(t *testing.T) {
	var p Packet
	p.ExtHeaders = append(p.ExtHeaders, 0, 43)
	p.SrcPort = 80
	p.Reset()
	if p.SrcPort != 0 || len(p.ExtHeaders) != 0 || cap(p.ExtHeaders) < 2 {
		t.Errorf("Reset left %+v", p)
	}
	if p.TCPOpt.WScale != -1 || p.RoutingType != -1 {
		t.Errorf("Reset: WScale=%d RoutingType=%d, want -1 (absent)", p.TCPOpt.WScale, p.RoutingType)
	}
}
