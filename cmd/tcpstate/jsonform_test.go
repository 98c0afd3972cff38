package main

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/model"
)

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// jsonForm walks a decoded document: every key snake_case, no null list.
func jsonForm(t *testing.T, what, path string, v any) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			// Maps keyed by data (outcomes, thresholds by state name) are
			// checked by their own tests.
			if !snakeCase.MatchString(k) && path != ".outcomes" && path != ".stuck_thresholds_s" {
				t.Errorf("%s: key %q at %s is not snake_case", what, k, path)
			}
			if vv == nil {
				t.Errorf("%s: %s.%s is null", what, path, k)
			}
			jsonForm(t, what, path+"."+k, vv)
		}
	case []any:
		for _, vv := range x {
			jsonForm(t, what, path+"[]", vv)
		}
	}
}

// TestOneJSONForm: every document tcpstate writes has snake_case keys, []
// rather than null for an empty list, the one socket form (skaddr
// "0x..."), and "transitions" meaning the transitions the kernel handled,
// host-wide, before the filters. Before, trace's --summary-json wrote its
// stuck sockets and check counts with Go's field names
// ({"Skaddr":1048561,"State":8,...}, "MaxSockets").
func TestOneJSONForm(t *testing.T) {
	stuck := []model.SocketInfo{{Skaddr: 0xffff888012345678, State: model.CloseWait, Since: 90 * time.Second, SinceAtLeast: true,
		Family: model.AFInet, Saddr: netip.MustParseAddr("10.0.0.1"), Sport: 8080, Daddr: netip.MustParseAddr("10.0.0.2"), Dport: 40000}}
	rec := reconcileDoc{Done: true, OutOfStep: []outOfStepDoc{{Skaddr: "0x1", Believed: "ESTABLISHED", Actual: "CLOSE", Missing: 1}}}
	tr := model.NewTracker(statsLinux(t), 0)
	docs := map[string]any{
		"trace --summary-json": traceSummary{Transitions: 9, Check: tr.Stats(), Stuck: socketDocs(stuck), Reconciliation: rec},
		"stats --summary-json": statsSummary{Transitions: 9, Reconciliation: rec},
		"life --summary-json":  lifeSummary{Transitions: 9, Check: tr.Stats(), Reconciliation: rec},
		"stats -o json":        newStatsDoc(sampleReport(true)),
	}
	for what, d := range docs {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		jsonForm(t, what, "", v)
		if v["transitions"] != 9.0 && what != "stats -o json" {
			t.Errorf("%s: transitions %v, want the kernel's 9", what, v["transitions"])
		}
		if st, ok := v["stuck"].([]any); ok && len(st) > 0 {
			s := st[0].(map[string]any)
			if _, ok := s["in_state_at_least"]; !ok || s["skaddr"] != "0xffff888012345678" || s["in_state_s"] != 90.0 || s["state"] != "CLOSE_WAIT" {
				t.Errorf("%s: stuck socket %v, not the one socket form", what, s)
			}
		}
	}
	b, _ := json.Marshal(tr.Stats())
	if !strings.Contains(string(b), `"max_sockets":`) || !strings.Contains(string(b), `"gap_after_loss":`) || !strings.Contains(string(b), `"missing_uncounted":`) {
		t.Errorf("check counts %s: want snake_case keys", b)
	}
}
