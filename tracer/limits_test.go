package tracer

import (
	"strings"
	"testing"
)

// What a snapshot could not read is said once per cause, naming the
// capability, and nothing is said when nothing was refused: a namespace
// that went away before it was entered is no loss.
func TestSnapshotLimits(t *testing.T) {
	for _, c := range []struct {
		name string
		snap Snapshot
		want []string
	}{
		{"everything read", Snapshot{Namespaces: []NetnsScan{{}, {}}}, nil},
		{"a namespace gone meanwhile", Snapshot{Namespaces: []NetnsScan{{}, {Err: "cannot enter the namespace /proc/9/ns/net: no such file or directory"}}}, nil},
		{"not entered", Snapshot{Namespaces: []NetnsScan{{}, {Err: "x", NeedsCap: "CAP_SYS_ADMIN"}, {Err: "y", NeedsCap: "CAP_SYS_ADMIN"}}},
			[]string{"without CAP_SYS_ADMIN, 2 of the 3 network namespaces found were not entered (setns(2) into another network namespace needs it): LOST"}},
		{"not found", Snapshot{Namespaces: []NetnsScan{{}}, ProcessesUnasked: 1},
			[]string{"without CAP_SYS_PTRACE, the network namespace of 1 process of other users is unknown (their /proc/PID/ns/net may not be read): a namespace only they are in is not walked, and LOST"}},
		{"refused despite CAP_SYS_PTRACE", Snapshot{Namespaces: []NetnsScan{{}}, ProcessesRefused: 1}, nil},
		{"both", Snapshot{Namespaces: []NetnsScan{{}, {NeedsCap: "CAP_SYS_ADMIN"}}, ProcessesUnasked: 40},
			[]string{"without CAP_SYS_ADMIN, 1 of the 2", "without CAP_SYS_PTRACE, the network namespace of 40 processes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := c.snap.Limits("LOST")
			if len(got) != len(c.want) {
				t.Fatalf("Limits = %q, want %d lines", got, len(c.want))
			}
			for i, w := range c.want {
				if !strings.HasPrefix(got[i], w) || strings.Contains(got[i], "\n") {
					t.Errorf("line %d: %q, want one line starting %q", i, got[i], w)
				}
			}
		})
	}
}
