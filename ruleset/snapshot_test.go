package ruleset

import (
	"bytes"
	"testing"

	"github.com/filterd/filterd/packet"
)

// TestSnapshotBuiltinChainsNotInFile: the kernel's filter table always has
// INPUT, FORWARD and OUTPUT. A rules file that names only some of them
// still gets the others (policy ACCEPT) in the snapshot, with the packets
// their policy passed counted, and Save prints their chain lines in hook
// order as iptables-save does after iptables-restore of such a file.
func TestSnapshotBuiltinChainsNotInFile(t *testing.T) {
	tests := []struct {
		name  string
		table *Table
		hooks []packet.Hook // one packet through each
		want  string
	}{
		{
			name:  "INPUT only",
			table: mkTable(mkBuiltin("INPUT", PolicyDrop, mkTCPRule(22, tgtAccept()))),
			hooks: []packet.Hook{packet.HookInput, packet.HookForward, packet.HookOutput, packet.HookOutput},
			want: "*filter\n:INPUT DROP [1:60]\n:FORWARD ACCEPT [1:60]\n:OUTPUT ACCEPT [2:120]\n" +
				"[0:0] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n",
		},
		{
			name:  "user chain and OUTPUT, no INPUT or FORWARD",
			table: mkTable(mkUser("ZED"), mkBuiltin("OUTPUT", PolicyDrop, &Rule{Proto: ProtoMatch{Any: true}, Target: tgtJump("ZED")})),
			hooks: []packet.Hook{packet.HookInput, packet.HookInput, packet.HookOutput},
			want: "*filter\n:INPUT ACCEPT [2:120]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [1:60]\n:ZED - [0:0]\n" +
				"[1:60] -A OUTPUT -j ZED\nCOMMIT\n",
		},
		{
			name:  "empty table",
			table: mkTable(),
			hooks: []packet.Hook{packet.HookForward},
			want:  "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [1:60]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCompile(t, tt.table, CompileOptions{})
			for _, h := range tt.hooks {
				p := mkPkt("198.18.0.1", "198.18.0.2", 80)
				p.Hook = h
				c.Evaluate(p)
			}
			s := c.Snapshot()
			var b bytes.Buffer
			if err := Save(&b, s, SaveOptions{Counters: true}); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("Save of the snapshot:\n%s\nwant:\n%s", b.String(), tt.want)
			}
			if len(tt.table.Chains) > 3 || len(s.Chains) < 3 {
				t.Errorf("snapshot has %d chains", len(s.Chains))
			}
			for i, ch := range tt.table.Chains {
				if s.Chains[i].Name != ch.Name {
					t.Errorf("snapshot chain %d is %s, want the table's %s first", i, s.Chains[i].Name, ch.Name)
				}
			}
		})
	}
}
