package tracetest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// TransitionKey is what tcpstate and the tracefs oracle both report of a
// transition.
func TransitionKey(old, nw model.State, fam model.Family, sa netip.Addr, sp uint16, da netip.Addr, dp uint16) string {
	return fmt.Sprintf("%s %s %v:%d>%v:%d", Edge(old, nw), fam, sa, sp, da, dp)
}

// OracleDiff compares tcpstate's sockets with the kernel's record (the
// tracefs oracle's events): they must be the same incarnations of the same
// skaddrs, each with the same transitions, ports and addresses in the same
// order, and the record must hold only TCP. It returns the problems it
// found ("" none).
//
// keep selects the kernel's events a filtered tracer should report, given
// the event and its socket incarnation's key among all of them, "skaddr/n"
// (nil: all); what is kept is then numbered again as a filtered tracer's
// lives are.
func OracleDiff(oevs []testnet.OracleEvent, ls []*Life, keep func(e testnet.OracleEvent, key string) bool) []string {
	var problems []string
	var kept []testnet.OracleEvent
	n := map[uint64]int{}
	for _, e := range oevs {
		if e.Protocol != 6 {
			problems = append(problems, fmt.Sprintf("oracle: non-TCP event %v", e))
		} else if keep == nil || keep(e, fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])) {
			kept = append(kept, e)
		}
		if e.New == model.Close {
			n[e.Skaddr]++
		}
	}
	want := map[string][]string{}
	n = map[uint64]int{}
	for _, e := range kept {
		k := fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])
		want[k] = append(want[k], TransitionKey(e.Old, e.New, e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport))
		if e.New == model.Close {
			n[e.Skaddr]++
		}
	}
	got := map[string][]string{}
	for _, l := range ls {
		for _, e := range l.Evs {
			got[l.Key()] = append(got[l.Key()], TransitionKey(e.Old, e.New, e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport))
		}
	}
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("socket %s: missing in tcpstate; kernel:\n      %s", k, strings.Join(w, "\n      ")))
		} else if !slices.Equal(g, w) {
			diffs = append(diffs, fmt.Sprintf("socket %s:\n    tcpstate:\n      %s\n    kernel:\n      %s", k, strings.Join(g, "\n      "), strings.Join(w, "\n      ")))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("socket %s: only in tcpstate:\n      %s", k, strings.Join(g, "\n      ")))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		problems = append(problems, fmt.Sprintf("tcpstate differs from the kernel's record (tracefs):\n%s", strings.Join(diffs, "\n")))
	}
	return problems
}

// CompareOracle reads the oracle (a failure to read it ends the test) and
// fails the test where tcpstate's lives differ from it (see OracleDiff).
func CompareOracle(t testing.TB, o *testnet.Oracle, ls []*Life, keep func(e testnet.OracleEvent, key string) bool) {
	t.Helper()
	oevs, err := o.Events()
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	for _, p := range OracleDiff(oevs, ls, keep) {
		t.Error(p)
	}
}
