package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// statsRoot is the root command with stats registered (once).
func statsRoot() *cobra.Command {
	root := newRootCmd()
	for _, c := range root.Commands() {
		if c.Name() == "stats" {
			return root
		}
	}
	root.AddCommand(newStatsCmd())
	return root
}

func TestLog2HistDrawing(t *testing.T) {
	var vals [model.HistBuckets]uint64
	vals[0], vals[2], vals[3] = 1, 4, 2
	var b strings.Builder
	writeLog2Hist(&b, vals[:], "usecs")
	// bcc's print_log2_hist, byte for byte.
	want := "" +
		"     usecs               : count     distribution\n" +
		"         0 -> 1          : 1        |**********                              |\n" +
		"         2 -> 3          : 0        |                                        |\n" +
		"         4 -> 7          : 4        |****************************************|\n" +
		"         8 -> 15         : 2        |********************                    |\n"
	if b.String() != want {
		t.Errorf("histogram:\n%s\nwant:\n%s", b.String(), want)
	}

	// Nothing at all when empty.
	b.Reset()
	writeLog2Hist(&b, make([]uint64, model.HistBuckets), "usecs")
	if b.Len() != 0 {
		t.Errorf("empty histogram drew %q", b.String())
	}

	// Past bucket 32 the columns widen and the bar halves, as in bcc.
	vals = [model.HistBuckets]uint64{}
	vals[1], vals[34] = 3, 6
	b.Reset()
	writeLog2Hist(&b, vals[:], "usecs")
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 36 {
		t.Fatalf("wide histogram has %d lines, want header + 35 rows:\n%s", len(lines), b.String())
	}
	if want := "               usecs                         : count     distribution"; lines[0] != want {
		t.Errorf("wide header %q, want %q", lines[0], want)
	}
	if want := "                   2 -> 3                    : 3        |**********          |"; lines[2] != want {
		t.Errorf("wide row 1 %q, want %q", lines[2], want)
	}
	if want := "         17179869184 -> 34359738367          : 6        |********************|"; lines[35] != want {
		t.Errorf("wide row 34 %q, want %q", lines[35], want)
	}
}

// cell finds the cell at (row label, column header) in the first table of
// out (rendered ASCII tables, one after another) that has both.
func cell(t *testing.T, out, row, col string) (string, bool) {
	t.Helper()
	var header []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "|") {
			if !strings.HasPrefix(line, "+") {
				header = nil // not a table line: the next table starts afresh
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		if i := slices.Index(header, col); i >= 0 && cells[0] == row {
			return cells[i], true
		}
	}
	return "", false
}

// rowCells returns the cells of the first table row that contains s.
func rowCells(table, s string) []string {
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") || !strings.Contains(line, s) {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		return cells
	}
	return nil
}

func sampleAggregate() *model.Aggregate {
	a := &model.Aggregate{
		Ports:  map[model.PortKey]model.Count{},
		Owners: map[uint32]model.Count{},
	}
	a.Matrix[model.Close][model.SynSent] = 5
	a.Matrix[model.SynSent][model.Established] = 5
	a.Matrix[model.Listen][model.SynRecv] = 5 // a child's birth: not an RFC edge
	a.Matrix[model.FinWait1][model.FinWait1] = 2
	a.Matrix[model.FinWait2][model.Close] = 3  // Linux's TIME_WAIT hand-off: not an RFC edge
	a.Matrix[model.Listen][model.FinWait2] = 1 // in neither model
	return a
}

func TestMatrixMarking(t *testing.T) {
	a := sampleAggregate()
	for _, c := range []struct {
		model   string
		illegal map[[2]string]bool // the marked cells
		legend  string
	}{
		{"linux", map[[2]string]bool{{"LISTEN", "FIN_WAIT2"}: true}, "! = not a transition of model linux (1 transitions)"},
		{"rfc793", map[[2]string]bool{
			{"LISTEN", "FIN_WAIT2"}: true, {"LISTEN", "SYN_RECV"}: true,
			{"FIN_WAIT1", "FIN_WAIT1"}: true, {"FIN_WAIT2", "CLOSE"}: true,
		}, "! = not a transition of model rfc793 (11 transitions)"},
	} {
		m, err := model.ModelByName(c.model)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := writeMatrix(&b, a, m); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for old := range model.State(model.NumStates) {
			for nw := range model.State(model.NumStates) {
				v := a.Matrix[old][nw]
				got, ok := cell(t, out, old.String(), nw.String())
				if v == 0 {
					if ok && got != "" {
						t.Errorf("%s: empty cell %s -> %s shows %q", c.model, old, nw, got)
					}
					continue
				}
				want := fmtU(v)
				if c.illegal[[2]string{old.String(), nw.String()}] {
					want += "!"
				}
				if !ok || got != want {
					t.Errorf("%s: cell %s -> %s = %q (found %v), want %q\n%s", c.model, old, nw, got, ok, want, out)
				}
			}
		}
		if !strings.Contains(out, c.legend) {
			t.Errorf("%s: no legend %q in\n%s", c.model, c.legend, out)
		}
		if got, _ := cell(t, out, "LISTEN", "TOTAL"); got != "6" {
			t.Errorf("%s: LISTEN's TOTAL = %q, want 6", c.model, got)
		}
		if got, _ := cell(t, out, "TOTAL", "TOTAL"); got != "21" {
			t.Errorf("%s: grand TOTAL = %q, want 21", c.model, got)
		}
		if got := a.Illegal(m); got != map[string]uint64{"linux": 1, "rfc793": 11}[c.model] {
			t.Errorf("%s: Illegal = %d", c.model, got)
		}
	}
	// A matrix without illegal cells says so.
	linux, _ := model.ModelByName("linux")
	a.Matrix[model.Listen][model.FinWait2] = 0
	var b strings.Builder
	if err := writeMatrix(&b, a, linux); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "!") && !strings.Contains(b.String(), "would end in !") {
		t.Errorf("linux marks a legal matrix:\n%s", b.String())
	}
}

func sampleReport(final bool) *statsReport {
	a := sampleAggregate()
	closes := make([]uint64, model.FactValues)
	closes[model.CloseFacts(model.FinWait2)] = 3
	closes[model.CloseFacts(model.SynSent)|model.CloseFacts(model.ErrRefused)<<model.FactErrShift] = 1
	a.SetCloses(closes)
	a.Hists[model.SynSent][5] = 5
	a.Hists[model.HistActiveOpen][5] = 5
	a.Hists[model.HistLifetime][10] = 2
	a.Hists[model.HistLifetime][12] = 1
	a.Ports = map[model.PortKey]model.Count{{Port: 443, Remote: true}: {Transitions: 5, Opened: 5}, {Port: 8080}: {Transitions: 12, Opened: 5}, {Port: 9090}: {Transitions: 2}}
	a.PortOther = 2
	a.Owners = map[uint32]model.Count{10: {Transitions: 12, Opened: 5, Comm: "nginx"}, 20: {Transitions: 5, Opened: 5, Comm: "curl"}}
	a.OwnerOther = 1
	linux, _ := model.ModelByName("linux")
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	r := &statsReport{
		Seq: 2, Final: final, Start: start, End: start.Add(5 * time.Second), Agg: a, Transitions: 30, LostHostWide: 7,
		Thresholds: map[model.State]time.Duration{model.CloseWait: time.Minute, model.SynSent: 10 * time.Second},
		Model:      linux,
		Stuck: []model.SocketInfo{{
			Skaddr: 0xffff888012345678, State: model.CloseWait, Since: 90 * time.Second, Age: 95 * time.Second,
			Pid: 10, Comm: "nginx", OwnerKnown: true, Family: model.AFInet,
			Saddr: netip.MustParseAddr("10.0.0.1"), Sport: 8080, Daddr: netip.MustParseAddr("10.0.0.2"), Dport: 40000,
		}, {
			// Born before the start: no age, and its time in state a lower bound.
			Skaddr: 0xffff888087654321, State: model.SynSent, Since: 11 * time.Second, SinceAtLeast: true,
			Family: model.AFInet6, Saddr: netip.MustParseAddr("::1"), Daddr: netip.MustParseAddr("::1"), Dport: 443,
		}},
	}
	if final {
		r.Kernel = &tracer.Counters{RecursionMisses: 7, Sockets: 9}
		r.Reconciliation = &reconcileDoc{Done: true, Sockets: 1, Missing: 2, MissingUncounted: 2, OutOfStep: []outOfStepDoc{{
			Skaddr: "0xffff888012340000", Believed: "ESTABLISHED", Actual: "LAST_ACK", KernelSaw: "ESTABLISHED", Missing: 2,
		}}}
		r.SnapshotSockets = 40
	}
	return r
}

func TestStatsJSONShape(t *testing.T) {
	var b bytes.Buffer
	if err := writeStatsJSON(&b, sampleReport(false)); err != nil {
		t.Fatal(err)
	}
	if err := writeStatsJSON(&b, sampleReport(true)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one document per line, got %d lines:\n%s", len(lines), b.String())
	}
	keys := []string{"final", "seq", "start", "end", "seconds", "model", "transitions", "counted", "illegal", "lost", "lost_filtered", "lost_host_wide",
		"matrix", "outcomes", "causes", "ports", "port_other", "owners", "owner_other", "owner_unknown",
		"cgroups", "cgroup_other",
		"histograms", "stuck", "stuck_thresholds_s"}
	for i, line := range lines {
		var doc map[string]any
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		want := slices.Clone(keys)
		if i == 1 {
			want = append(want, "kernel", "missing", "missing_estimate", "reconciliation")
		}
		var got []string
		for k := range doc {
			got = append(got, k)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("document %d keys %v, want %v", i, got, want)
		}
		// transitions: the kernel's, host-wide, as in every document;
		// counted: what passed the filters (the matrix); the recursion
		// misses are the host's, apart from the filtered loss.
		if doc["final"] != (i == 1) || doc["model"] != "linux" || doc["seconds"] != 5.0 ||
			doc["transitions"] != 30.0 || doc["counted"] != 21.0 || doc["illegal"] != 1.0 || doc["lost"] != 7.0 ||
			doc["lost_filtered"] != 0.0 || doc["lost_host_wide"] != 7.0 || doc["seq"] != 2.0 {
			t.Errorf("document %d header fields: %v", i, line)
		}
		if doc["start"] != "2025-01-02T03:04:05Z" || doc["end"] != "2025-01-02T03:04:10Z" {
			t.Errorf("document %d times %v %v", i, doc["start"], doc["end"])
		}
	}

	var doc statsDoc
	if err := json.Unmarshal([]byte(lines[0]), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Outcomes) != int(model.NumOutcomes) || doc.Outcomes["active_close"] != 3 || doc.Outcomes["connect_refused"] != 1 || doc.Outcomes["reset"] != 0 {
		t.Errorf("outcomes %v: want every class", doc.Outcomes)
	}
	if want := []causeDoc{{"fin", "active", 3}, {"refused", "", 1}}; !reflect.DeepEqual(doc.Causes, want) {
		t.Errorf("causes %+v, want %+v", doc.Causes, want)
	}
	wantMatrix := []matrixDoc{
		{"CLOSE", "SYN_SENT", 5, false}, {"LISTEN", "SYN_RECV", 5, false}, {"LISTEN", "FIN_WAIT2", 1, true},
		{"SYN_SENT", "ESTABLISHED", 5, false}, {"FIN_WAIT1", "FIN_WAIT1", 2, false}, {"FIN_WAIT2", "CLOSE", 3, false},
	}
	if !reflect.DeepEqual(doc.Matrix, wantMatrix) {
		t.Errorf("matrix %+v, want %+v", doc.Matrix, wantMatrix)
	}
	wantPorts := []model.PortRow{{Port: 8080, Side: "local", Transitions: 12, Opened: 5}, {Port: 443, Side: "remote", Transitions: 5, Opened: 5}, {Port: 9090, Side: "local", Transitions: 2}}
	if !reflect.DeepEqual(doc.Ports, wantPorts) || doc.PortOther != 2 {
		t.Errorf("ports %+v other %d, want %+v other 2", doc.Ports, doc.PortOther, wantPorts)
	}
	wantOwners := []model.OwnerRow{{Pid: 10, Comm: "nginx", Transitions: 12, Opened: 5}, {Pid: 20, Comm: "curl", Transitions: 5, Opened: 5}}
	// 21 transitions: 17 with a known owner, 1 not counted, 3 unknown.
	if !reflect.DeepEqual(doc.Owners, wantOwners) || doc.OwnerOther != 1 || doc.OwnerUnkn != 3 {
		t.Errorf("owners %+v other %d unknown %d, want %+v 1 3", doc.Owners, doc.OwnerOther, doc.OwnerUnkn, wantOwners)
	}
	wantHists := []histDoc{
		{Kind: "SYN_SENT", Title: "time in SYN_SENT", Unit: "usecs", Count: 5, Buckets: []bucketDoc{{32, 63, 5}}},
		{Kind: "active_open", Title: "active open (SYN_SENT -> ESTABLISHED)", Unit: "usecs", Count: 5, Buckets: []bucketDoc{{32, 63, 5}}},
		{Kind: "lifetime", Title: "connection lifetime", Unit: "usecs", Count: 3, Buckets: []bucketDoc{{1024, 2047, 2}, {4096, 8191, 1}}},
	}
	if !reflect.DeepEqual(doc.Histograms, wantHists) {
		t.Errorf("histograms %+v, want %+v", doc.Histograms, wantHists)
	}
	wantStuck := []socketDoc{{
		Skaddr: "0xffff888012345678", State: "CLOSE_WAIT", InStateS: 90, AgeS: 95, Pid: 10, Comm: "nginx",
		OwnerKnown: true, Family: "ipv4", Saddr: "10.0.0.1", Sport: 8080, Daddr: "10.0.0.2", Dport: 40000,
	}, {
		Skaddr: "0xffff888087654321", State: "SYN_SENT", InStateS: 11, InStateAtLeast: true, Family: "ipv6", Saddr: "::1", Daddr: "::1", Dport: 443,
	}}
	if !reflect.DeepEqual(doc.Stuck, wantStuck) {
		t.Errorf("stuck %+v, want %+v", doc.Stuck, wantStuck)
	}
	if !strings.Contains(lines[0], `"stuck_thresholds_s":{"CLOSE_WAIT":60,"SYN_SENT":10}`) {
		t.Errorf("thresholds not as documented: %s", lines[0])
	}
	// The stuck list's form is the one every document uses: the owner as
	// in the event record (0 and "" when unknown), the lower bound marked.
	for _, k := range []string{`"pid":0,"comm":"","owner_known":false`, `"in_state_s":11,"in_state_at_least":true`, `"in_state_s":90,"in_state_at_least":false`} {
		if !strings.Contains(lines[0], k) {
			t.Errorf("stuck list lacks %s: %s", k, lines[0])
		}
	}
	// Two stuck sockets, one born before the start: one age_s.
	if n := strings.Count(lines[1], `"age_s"`); n != 1 {
		t.Errorf("%d age_s keys, want 1 (absent for a socket born before the start): %s", n, lines[1])
	}
	if !strings.Contains(lines[1], `"kernel":{"transitions":0,"sockets":9,`) || !strings.Contains(lines[1], `"recursion_misses":7`) {
		t.Errorf("final document's kernel counters: %s", lines[1])
	}
	if !strings.Contains(lines[1], `"missing":2,"missing_estimate":false,"reconciliation":{"done":true,"tracker_side":false,"sockets":1,"missing":2,"missing_uncounted":2,"out_of_step":[{"skaddr":"0xffff888012340000","believed":"ESTABLISHED","actual":"LAST_ACK","kernel_saw":"ESTABLISHED","missing":2,"loss_counted":false}]}`) {
		t.Errorf("final document's reconciliation: %s", lines[1])
	}

	// Empty lists are [], not null.
	empty := &statsReport{Agg: &model.Aggregate{}, Model: statsLinux(t), Start: time.Unix(0, 0), End: time.Unix(1, 0)}
	b.Reset()
	if err := writeStatsJSON(&b, empty); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"matrix":[]`, `"ports":[]`, `"owners":[]`, `"histograms":[]`, `"stuck":[]`} {
		if !strings.Contains(b.String(), k) {
			t.Errorf("empty report lacks %s: %s", k, b.String())
		}
	}
}

func statsLinux(t *testing.T) *model.Model {
	m, err := model.ModelByName("linux")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestStatsTables(t *testing.T) {
	var b strings.Builder
	if err := writeStatsTable(&b, sampleReport(false), 1); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"--- interval 2 03:04:05 -> 03:04:10 (5.00s): 21 transitions counted, 1 illegal under model linux; lost 0 of them; recursion misses 7 host-wide ---",
		"transitions (row: old state, column: new state):",
		"causes (why sockets ended, at -> CLOSE):",
		"time in SYN_SENT, count 5:",
		"active open (SYN_SENT -> ESTABLISHED), count 5:",
		"connection lifetime, count 3:",
		"stuck sockets (in a state longer than SYN_SENT 10s, CLOSE_WAIT 1m0s): 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	// --top 1: one port, the rest summed, and what the kernel could not
	// count; never dropped.
	for _, c := range []struct{ row, col, want string }{
		{"8080", "TRANSITIONS", "12"},
		{"other (2 ports)", "TRANSITIONS", "7"},
		{"other (2 ports)", "OPENED", "5"},
		{"not counted (map full)", "TRANSITIONS", "2"},
		{"fin/active", "SOCKETS", "3"},
		{"fin/active", "MEANING", "closed by FINs; this socket sent the first"},
		{"refused", "SOCKETS", "1"},
		{"CLOSE_WAIT", "PID", "10"},
		{"CLOSE_WAIT", "IN STATE", "1m30s"},
		{"CLOSE_WAIT", "AGE", "1m35s"},
		{"CLOSE_WAIT", "LOCAL", "10.0.0.1:8080"},
		{"CLOSE_WAIT", "REMOTE", "10.0.0.2:40000"},
		{"SYN_SENT", "PID", "-"},
		{"SYN_SENT", "AGE", "-"},
		{"SYN_SENT", "REMOTE", "[::1]:443"},
		{"SYN_SENT", "IN STATE", ">=11.0s"},
	} {
		if got, ok := cell(t, out, c.row, c.col); !ok || got != c.want {
			t.Errorf("row %q column %q = %q (found %v), want %q", c.row, c.col, got, ok, c.want)
		}
	}
	owners := out[strings.Index(out, "by owner:"):]
	for _, c := range []struct{ row, col, want string }{
		{"10", "COMM", "nginx"},
		{"other", "COMM", "(1 owners)"},
		{"other", "TRANSITIONS", "5"},
	} {
		if got, ok := cell(t, owners, c.row, c.col); !ok || got != c.want {
			t.Errorf("owners: row %q column %q = %q, want %q", c.row, c.col, got, c.want)
		}
	}
	for label, want := range map[string][]string{
		"not counted (map full)": {"-", "not counted (map full)", "1", "-"},
		"owner unknown":          {"-", "owner unknown", "3", "-"},
	} {
		if got := rowCells(owners, label); !reflect.DeepEqual(got, want) {
			t.Errorf("owners row %q = %q, want %q", label, got, want)
		}
	}
	b.Reset()
	if err := writeStatsTable(&b, sampleReport(true), 0); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	for _, want := range []string{
		"=== totals 03:04:05 -> 03:04:10 (5.00s): 21 transitions counted, 1 illegal under model linux ===\n",
		"lost, counted:  0 of the transitions that passed the filters (held-back queue full 0, no held-back queue 0, owner never learnt 0)\n" +
			"                recursion misses 7 host-wide, filters or not: the kernel does not say whose (no rescue program: --rescue-nested)\n",
		"missing:        2 transitions without any kernel count, found by the reconciliation",
		"reconciliation: 1 socket out of step at the end, in a snapshot of 40 sockets (2 transitions never delivered, 2 of them with no loss counted since the socket's last event)\n",
		"0xffff888012340000: believed ESTABLISHED, is LAST_ACK: 2 transitions missing; no loss counted since its last event\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("final report lacks %q:\n%s", want, out)
		}
	}
	if got, ok := cell(t, out[strings.Index(out, "by service port"):], "443", "SIDE"); !ok || got != "remote" {
		t.Errorf("port 443 row: side %q %v\n%s", got, ok, out)
	}
	if got, ok := cell(t, out[strings.Index(out, "by service port"):], "443", "OPENED"); !ok || got != "5" {
		t.Errorf("port 443 row: opened %q %v\n%s", got, ok, out)
	}
	if strings.Contains(out, "other (") {
		t.Errorf("--top 0 must print every row:\n%s", out)
	}

	// An empty interval is one line, plus the stuck list.
	b.Reset()
	empty := &statsReport{Seq: 1, Agg: &model.Aggregate{}, Model: statsLinux(t), Start: time.Unix(0, 0), End: time.Unix(1, 0),
		Thresholds: model.DefaultStuckThresholds()}
	if err := writeStatsTable(&b, empty, 10); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\nno transitions\n") || !strings.Contains(b.String(), "): none\n") {
		t.Errorf("empty report:\n%s", b.String())
	}
}

func TestWriteStuck(t *testing.T) {
	var b strings.Builder
	if err := writeStuck(&b, nil, model.DefaultStuckThresholds()); err != nil {
		t.Fatal(err)
	}
	want := "stuck sockets (in a state longer than SYN_SENT 10s, SYN_RECV 10s, FIN_WAIT2 1m30s, CLOSE_WAIT 1m0s, LAST_ACK 30s): none\n"
	if b.String() != want {
		t.Errorf("writeStuck(none) = %q, want %q", b.String(), want)
	}
	b.Reset()
	r := sampleReport(false)
	if err := writeStuck(&b, r.Stuck, r.Thresholds); err != nil {
		t.Fatal(err)
	}
	wantTable := `stuck sockets (in a state longer than SYN_SENT 10s, CLOSE_WAIT 1m0s): 2
+------------+----------+-------+-----+-------+---------------+----------------+
| STATE      | IN STATE |   AGE | PID | COMM  | LOCAL         | REMOTE         |
+------------+----------+-------+-----+-------+---------------+----------------+
| CLOSE_WAIT |    1m30s | 1m35s |  10 | nginx | 10.0.0.1:8080 | 10.0.0.2:40000 |
| SYN_SENT   |  >=11.0s |     - |   - | -     | [::1]:0       | [::1]:443      |
+------------+----------+-------+-----+-------+---------------+----------------+
`
	if b.String() != wantTable {
		t.Errorf("writeStuck:\n%s\nwant:\n%s", b.String(), wantTable)
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0.00ms", 210 * time.Microsecond: "0.21ms", 850 * time.Millisecond: "850ms", 12300 * time.Millisecond: "12.3s",
		5*time.Minute + 3*time.Second: "5m03s", 2*time.Hour + 5*time.Minute: "2h05m",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
	if got := fmtAddrPort(netip.IPv4Unspecified(), 0); got != "-" {
		t.Errorf("unknown peer = %q, want -", got)
	}
}

func TestFilterSockets(t *testing.T) {
	socks := []model.SocketInfo{
		{Skaddr: 1, Sport: 80, Dport: 5000, Pid: 10, OwnerKnown: true},
		{Skaddr: 2, Sport: 5001, Dport: 80, Pid: 20, OwnerKnown: true},
		{Skaddr: 3, Sport: 443, Dport: 5002, Pid: 10, OwnerKnown: true},
		{Skaddr: 4, Sport: 80, Dport: 5003, Pid: 10},
	}
	for _, c := range []struct {
		name string
		o    tracer.Options
		want []uint64
	}{
		{"none", tracer.Options{}, []uint64{1, 2, 3, 4}},
		{"port", tracer.Options{Filter: model.Filter{Ports: []uint16{80}}}, []uint64{1, 2, 4}},
		{"lport", tracer.Options{Filter: model.Filter{LPorts: []uint16{80, 443}}}, []uint64{1, 3, 4}},
		{"rport", tracer.Options{Filter: model.Filter{RPorts: []uint16{80}}}, []uint64{2}},
		{"pid", tracer.Options{Filter: model.Filter{Pids: []uint32{10}}}, []uint64{1, 3}},
		{"port and pid", tracer.Options{Filter: model.Filter{Ports: []uint16{80}, Pids: []uint32{20}}}, []uint64{2}},
	} {
		var got []uint64
		for _, s := range c.o.FilterSockets(socks) {
			got = append(got, s.Skaddr)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestStuckFlag(t *testing.T) {
	f := newStuckFlag()
	if got, want := f.String(), "SYN_SENT=10s,SYN_RECV=10s,FIN_WAIT2=1m30s,CLOSE_WAIT=1m0s,LAST_ACK=30s"; got != want {
		t.Errorf("default %q, want %q", got, want)
	}
	for _, v := range []string{"close-wait=5s", "SYN_SENT=off,ESTABLISHED=1h", "LAST_ACK=0"} {
		if err := f.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	want := map[model.State]time.Duration{
		model.CloseWait: 5 * time.Second, model.SynRecv: 10 * time.Second, model.FinWait2: 90 * time.Second,
		model.Established: time.Hour,
	}
	if !reflect.DeepEqual(f.th, want) {
		t.Errorf("thresholds %v, want %v", f.th, want)
	}
	// The defaults are not shared between flags.
	if newStuckFlag().th[model.CloseWait] != time.Minute {
		t.Error("a flag changed the defaults")
	}
}

// TestStatsFlagValidation: bad flags fail before anything is loaded, with
// exit status 2, and so need no root.
func TestStatsFlagValidation(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--interval", "-1s"}, "--interval -1s: must not be negative"},
		{[]string{"--interval", "10ms"}, "--interval 10ms: must be 0 or at least 100ms"},
		{[]string{"--interval", "soon"}, `--interval "soon": want a duration`},
		{[]string{"--duration", "-5s"}, "--duration -5s: must not be negative"},
		{[]string{"--count", "3", "--interval", "0"}, "it needs an --interval"},
		{[]string{"--count", "-1"}, "--count -1: must not be negative"},
		{[]string{"--top", "-2"}, "--top -2: must not be negative"},
		{[]string{"--model", "bsd"}, `--model "bsd": want linux or rfc793`},
		{[]string{"-o", "yaml"}, `--output "yaml": want table or json`},
		{[]string{"-o", "wide"}, `--output "wide": want table or json`},
		{[]string{"--stuck", "CLOSE_WAIT"}, "want STATE=DURATION"},
		{[]string{"--stuck", "CLOSE_WAIT=soon"}, `"soon" is not a duration`},
		{[]string{"--stuck", "CLOSE_WAIT=-5s"}, "must not be negative"},
		{[]string{"--stuck", "LISTEN=5s"}, "no socket is listed as stuck in LISTEN"},
		{[]string{"--stuck", "TIME_WAIT=5s"}, "no socket is listed as stuck in TIME_WAIT"},
		{[]string{"--stuck", "WAITING=5s"}, `unknown TCP state "WAITING"`},
		{[]string{"--port", "0"}, `--port "0": a port is a number from 1 to 65535`},
		{[]string{"--lport", "70000"}, "--lport"},
		{[]string{"--pid", "x"}, `--pid "x"`},
		{[]string{"-4", "-6"}, "-4 and -6 exclude each other"},
		{[]string{"--state", "NOPE"}, "--state: unknown TCP state"},
		{[]string{"--max-sockets", "3"}, "--max-sockets 3"},
		{[]string{"extra"}, `stats takes no arguments`},
	} {
		root := statsRoot()
		var out, errb bytes.Buffer
		root.SetArgs(append([]string{"stats"}, c.args...))
		root.SetOut(&out)
		root.SetErr(&errb)
		err := root.ExecuteContext(context.Background())
		if err == nil {
			t.Errorf("stats %v: no error", c.args)
			continue
		}
		if code := exitCode(err); code != exitUsage {
			t.Errorf("stats %v: exit status %d (%v), want %d", c.args, code, err, exitUsage)
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("stats %v: error %q, want it to contain %q", c.args, err, c.msg)
		}
		if out.Len() != 0 {
			t.Errorf("stats %v printed %q", c.args, out.String())
		}
	}
}

// statsSignal is stats' stderr: it closes ready when the "counting" line,
// written right after the tracer is attached, has arrived.
type statsSignal struct {
	mu    sync.Mutex
	b     bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

// Write closes ready once stderr has the attached line. Not at the first
// write: on a kernel that lacks a feature, stats warns before it attaches
// (a 6.1 guest: the test's connection was made before the attach, and
// stats saw none of it).
func (s *statsSignal) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if strings.Contains(s.b.String(), statsAttachedLine) {
		s.once.Do(func() { close(s.ready) })
	}
	return n, err
}

func (s *statsSignal) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runStatsCLI starts `tcpstate stats args...` in this process and returns
// once the tracer is attached; wait returns its stdout, stderr and error.
func runStatsCLI(t *testing.T, args ...string) (wait func() (string, string, error)) {
	t.Helper()
	root := statsRoot()
	var out bytes.Buffer
	errw := &statsSignal{ready: make(chan struct{})}
	root.SetArgs(append([]string{"stats"}, args...))
	root.SetOut(&out)
	root.SetErr(errw)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(context.Background()) }()
	select {
	case <-errw.ready:
	case err := <-done:
		t.Fatalf("stats %v ended before attaching: %v\n%s", args, err, errw.String())
	case <-time.After(testnet.Scaled(30 * time.Second)):
		t.Fatalf("stats %v did not attach in %v", args, testnet.Scaled(30*time.Second))
	}
	return func() (string, string, error) {
		select {
		case err := <-done:
			return out.String(), errw.String(), err
		case <-time.After(testnet.Scaled(30 * time.Second)):
			t.Fatalf("stats %v did not end", args)
			return "", "", nil
		}
	}
}

// TestStatsCommand runs the command against real connections in a network
// namespace: intervals add up to the totals, the totals are exact, and a
// socket held in CLOSE_WAIT is listed as stuck with its owner.
func TestStatsCommand(t *testing.T) {
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		port := ns.Port(0)
		server := testnet.Addr(4, port)
		must := func(fd int, err error) int {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			return fd
		}
		ok := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		const conns = 10
		summaryPath := filepath.Join(t.TempDir(), "summary.json")
		wait := runStatsCLI(t, "--port", fmtU(uint64(port)), "--interval", "300ms", "--duration", "1500ms",
			"-o", "json", "--stuck", "CLOSE_WAIT=500ms", "--summary-json", summaryPath)

		lfd := must(ns.Listen(server))
		for i := range conns {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 0)
			c := must(ns.ConnectFrom(src, server))
			s := must(ns.Accept(lfd))
			ok(ns.Close(c))
			ok(ns.ReadEOF(s))
			ok(ns.Close(s))
		}
		// One more whose server side never closes: CLOSE_WAIT from now on.
		c := must(ns.Connect(server))
		held := must(ns.Accept(lfd))
		peer, err := ns.LocalAddr(c)
		ok(err)
		ok(ns.Close(c))
		closed := time.Now()

		stdout, stderr, err := wait()
		sinceClose := time.Since(closed)
		if err != nil {
			t.Fatalf("stats: %v\n%s", err, stderr)
		}
		var docs []statsDoc
		sc := bufio.NewScanner(strings.NewReader(stdout))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var d statsDoc
			if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			docs = append(docs, d)
		}
		if len(docs) < 2 {
			p.Fatalf("want interval documents and a final one, got %d:\n%s", len(docs), stdout)
		}
		final := docs[len(docs)-1]
		intervals := docs[:len(docs)-1]
		if !final.Final || final.Seq != len(intervals) {
			p.Errorf("last document: final %v seq %d, want true %d", final.Final, final.Seq, len(intervals))
		}
		if final.Seconds < 1.45 || final.Seconds > 2.5 {
			p.Errorf("final document covers %.2fs, want about 1.5s", final.Seconds)
		}
		if final.Kernel == nil {
			t.Error("final document has no kernel counters")
		}
		// The intervals add up to the totals, and follow each other.
		sum := map[string]uint64{}
		outSum := map[string]uint64{}
		for i, d := range intervals {
			if d.Final || d.Seq != i+1 {
				p.Errorf("interval %d: final %v seq %d", i+1, d.Final, d.Seq)
			}
			if i > 0 && !d.Start.Equal(intervals[i-1].End) {
				p.Errorf("interval %d starts at %v, the previous ended at %v", i+1, d.Start, intervals[i-1].End)
			}
			for _, m := range d.Matrix {
				sum[m.Old+">"+m.New] += m.Count
			}
			for k, v := range d.Outcomes {
				outSum[k] += v
			}
		}
		total := map[string]uint64{}
		for _, m := range final.Matrix {
			total[m.Old+">"+m.New] = m.Count
			if m.Illegal {
				p.Errorf("illegal edge %s -> %s under linux", m.Old, m.New)
			}
		}
		if !reflect.DeepEqual(sum, total) {
			p.Errorf("intervals add up to %v, totals %v", sum, total)
		}
		if !reflect.DeepEqual(outSum, final.Outcomes) {
			p.Errorf("intervals' outcomes add up to %v, totals %v", outSum, final.Outcomes)
		}
		n := uint64(conns)
		want := map[string]uint64{
			"CLOSE>LISTEN": 1, "CLOSE>SYN_SENT": n + 1, "SYN_SENT>ESTABLISHED": n + 1,
			"LISTEN>SYN_RECV": n + 1, "SYN_RECV>ESTABLISHED": n + 1,
			"ESTABLISHED>FIN_WAIT1": n + 1, "FIN_WAIT1>FIN_WAIT2": n + 1, "ESTABLISHED>CLOSE_WAIT": n + 1,
			"CLOSE_WAIT>LAST_ACK": n, "LAST_ACK>CLOSE": n,
			// The held connection's client too: an orphan (closed) socket in
			// FIN_WAIT2 is handed to a timewait socket at once (tcp_close(),
			// tcp_rcv_state_process()), whether or not the peer ever closes.
			"FIN_WAIT2>CLOSE": n + 1,
		}
		if !reflect.DeepEqual(total, want) {
			p.Errorf("totals %v, want %v (lost %d)", total, want, final.Lost)
		}
		// --summary-json: what was counted is the tables' total; the
		// kernel handled at least that (host-wide, before filters).
		var runSum statsSummary
		if b, err := os.ReadFile(summaryPath); err != nil {
			p.Errorf("--summary-json: %v", err)
		} else if err := json.Unmarshal(b, &runSum); err != nil {
			p.Errorf("--summary-json: %v\n%s", err, b)
		} else {
			var counted uint64
			for _, v := range total {
				counted += v
			}
			if runSum.Counted != counted || runSum.Transitions < counted || runSum.Kernel.Transitions != runSum.Transitions || runSum.Model != "linux" {
				p.Errorf("--summary-json %+v: want counted %d, transitions >= that", runSum, counted)
			}
		}
		if final.Outcomes["active_close"] != n+1 || final.Outcomes["passive_close"] != n {
			p.Errorf("outcomes %v, want %d active and %d passive closes", final.Outcomes, n+1, n)
		}
		// The held socket, in the final document and in the last intervals.
		if len(final.Stuck) != 1 {
			p.Fatalf("stuck %+v, want the socket in CLOSE_WAIT", final.Stuck)
		}
		st := final.Stuck[0]
		if st.State != "CLOSE_WAIT" || st.Pid != uint32(os.Getpid()) || !st.OwnerKnown || st.Sport != port || st.Dport != peer.Port() ||
			st.Saddr != "127.0.0.1" || st.Daddr != peer.Addr().String() {
			p.Errorf("stuck socket %+v: want CLOSE_WAIT %v -> %v owned by %d", st, server, peer, os.Getpid())
		}
		if d := st.InStateS - sinceClose.Seconds(); d > 1 || d < -1 {
			p.Errorf("in CLOSE_WAIT for %.2fs, the peer closed %.2fs ago", st.InStateS, sinceClose.Seconds())
		}
		if last := intervals[len(intervals)-1]; len(last.Stuck) != 1 {
			p.Errorf("last interval lists %d stuck sockets, want 1", len(last.Stuck))
		}

		// A new run knows the held socket from the snapshot it takes at
		// start, though it made no transition since: stuck, with its owner,
		// its time in CLOSE_WAIT a lower bound.
		wait = runStatsCLI(t, "--port", fmtU(uint64(port)), "--interval", "0", "--duration", "500ms", "--stuck", "CLOSE_WAIT=100ms")
		stdout, stderr, err = wait()
		if err != nil {
			t.Fatalf("stats: %v\n%s", err, stderr)
		}
		for _, want := range []string{"=== totals ", ": 0 transitions counted, 0 illegal under model linux", "\nno transitions\n",
			"stuck sockets (in a state longer than SYN_SENT 10s, SYN_RECV 10s, FIN_WAIT2 1m30s, CLOSE_WAIT 100ms, LAST_ACK 30s): 1",
			"CLOSE_WAIT", strconv.Itoa(os.Getpid()), fmt.Sprintf("127.0.0.1:%d", port)} {
			if !strings.Contains(stdout, want) {
				p.Errorf("table run lacks %q:\n%s", want, stdout)
			}
		}
		ok(ns.Close(held))
		ok(ns.Close(lfd))
	})
}

// assertTablesAligned checks the ASCII tables tablewriter drew in out: on
// every line of a table, the column separators ('+' on borders, '|' on
// rows) stand at the same terminal columns as on its first border,
// counted by display width (displayWidth), not bytes. No
// cell of the tests holds a '|' or a '+'.
func assertTablesAligned(t *testing.T, what, out string) {
	t.Helper()
	seps := func(line string, sep rune) []int {
		var at []int
		for i, r := range line {
			if r == sep {
				at = append(at, displayWidth(line[:i]))
			}
		}
		return at
	}
	var want []int
	tables := 0
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "+"):
			got := seps(line, '+')
			if want == nil {
				want = got
				tables++
			} else if !slices.Equal(got, want) {
				t.Errorf("%s: border's '+' at columns %v, the table's first border at %v:\n%s", what, got, want, out)
			}
		case strings.HasPrefix(line, "|"):
			if got := seps(line, '|'); !slices.Equal(got, want) {
				t.Errorf("%s: row's '|' at columns %v, its border's '+' at %v:\n%s\n%s", what, got, want, line, out)
			}
		default:
			want = nil
		}
	}
	if tables == 0 {
		t.Errorf("%s: no table in\n%s", what, out)
	}
}

// wideNames are task names with characters two columns wide, or none.
var wideNames = []string{"数据库", "café-ü", "e\u0301e\u0301", "日本語テスト"}

// stats' per-owner table and the stuck-socket list (trace's summary prints
// it too) show every name escaped, and their borders line up with escaped
// and wide names in the cells.
func TestStatsTablesEscapeNames(t *testing.T) {
	r := sampleReport(false)
	r.Agg.Owners = map[uint32]model.Count{}
	r.Stuck = nil
	var names []string
	for _, n := range hostileNames {
		names = append(names, n.comm)
	}
	names = append(names, wideNames...)
	for i, name := range names {
		pid := uint32(100 + i)
		r.Agg.Owners[pid] = model.Count{Transitions: uint64(50 - i), Opened: 1, Comm: name}
		addr := netip.MustParseAddr("2001:db8:1234:5678:9abc:def0:1234:5678")
		if i%2 == 1 {
			addr = netip.MustParseAddr("::ffff:10.0.0.1")
		}
		r.Stuck = append(r.Stuck, model.SocketInfo{
			Skaddr: 0xffff888012340000 + uint64(i), State: model.CloseWait, Since: 90 * time.Second,
			Pid: pid, Comm: name, OwnerKnown: true, Family: model.AFInet6,
			Saddr: addr, Sport: 8080, Daddr: netip.MustParseAddr("::1"), Dport: uint16(40000 + i),
		})
	}
	var b strings.Builder
	if err := writeStatsTable(&b, r, 0); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	assertTerminalSafe(t, "stats table", out)
	assertTablesAligned(t, "stats table", out)
	owners := out[strings.Index(out, "by owner:"):strings.Index(out, "stuck sockets")]
	stuck := out[strings.Index(out, "stuck sockets"):]
	for _, n := range hostileNames {
		if !strings.Contains(owners, "| "+n.shown+" ") || !strings.Contains(stuck, "| "+n.shown+" ") {
			t.Errorf("name %q not shown as %s in the owner table and the stuck list:\n%s", n.comm, n.shown, out)
		}
	}
	for _, n := range wideNames {
		if !strings.Contains(owners, "| "+n+" ") || !strings.Contains(stuck, "| "+n+" ") {
			t.Errorf("name %q not shown as it is:\n%s", n, out)
		}
	}
	// JSON keeps the names exact.
	d := newStatsDoc(r)
	for i, name := range names {
		if d.Stuck[i].Comm != name {
			t.Errorf("JSON stuck[%d].comm = %q, want %q", i, d.Stuck[i].Comm, name)
		}
	}
	for _, o := range d.Owners {
		if o.Comm != names[o.Pid-100] {
			t.Errorf("JSON owner %d comm = %q, want %q", o.Pid, o.Comm, names[o.Pid-100])
		}
	}
}

// The attack of the per-owner table and the stuck list, for real: a
// process named with an OSC title sequence, a clear screen, a UTF-8 C1 CSI
// and a byte that is not UTF-8 (15 bytes, all prctl keeps) owns a
// connection and a socket held in CLOSE_WAIT. stats' tables print no
// control byte, show the name escaped, and line up.
func TestStatsCommandEscapesNames(t *testing.T) {
	ns := testnet.New(t)
	port := ns.Port(0)
	const name = "\x1b]0;PWN\x07\x1b[2J\u009b\xff"
	const shown = `\x1b]0;PWN\x07\x1b[2J\u009b\xff`
	// The namespace thread makes the test process's sockets: its name is
	// their owner's comm.
	if err := ns.Do(func() error {
		p, err := unix.BytePtrFromString(name)
		if err != nil {
			return err
		}
		return unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(p)), 0, 0, 0)
	}); err != nil {
		t.Fatalf("prctl(PR_SET_NAME): %v", err)
	}
	must := func(fd int, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	// The connection is made after the attach and must sit in CLOSE_WAIT
	// past the threshold before the run ends: on an emulated CPU making it
	// takes longer (testnet.Scaled).
	wait := runStatsCLI(t, "--port", fmtU(uint64(port)), "--interval", "0", "--duration", testnet.Scaled(1500*time.Millisecond).String(), "--stuck", "CLOSE_WAIT=200ms")
	server := testnet.Addr(4, port)
	lfd := must(ns.Listen(server))
	c := must(ns.Connect(server))
	held := must(ns.Accept(lfd))
	if err := ns.Close(c); err != nil { // the peer closes: held is in CLOSE_WAIT
		t.Fatal(err)
	}
	stdout, stderr, err := wait()
	if err != nil {
		t.Fatalf("stats: %v\n%s", err, stderr)
	}
	for _, fd := range []int{held, lfd} {
		if err := ns.Close(fd); err != nil {
			t.Fatal(err)
		}
	}
	assertTerminalSafe(t, "stats stdout", stdout)
	assertTerminalSafe(t, "stats stderr", stderr)
	assertTablesAligned(t, "stats", stdout)
	_, owners, _ := strings.Cut(stdout, "by owner:")
	owners, _, _ = strings.Cut(owners, "\n\n")
	if !strings.Contains(owners, "| "+shown+" ") {
		t.Errorf("the owner table does not show %s:\n%s", shown, stdout)
	}
	_, stuck, _ := strings.Cut(stdout, "stuck sockets")
	if !strings.Contains(stuck, "| CLOSE_WAIT ") || !strings.Contains(stuck, "| "+shown+" ") {
		t.Errorf("the stuck list does not show the CLOSE_WAIT socket of %s:\n%s", shown, stdout)
	}
}

// The counts by cgroup: most first, paths and containers named, ids of
// cgroups not resolved, --top's rest summed, the map-full count; names
// escaped. JSON has every row with its names.
func TestStatsByCgroup(t *testing.T) {
	const id = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"
	const uid = "3a9f5c2e-7d41-4b8e-9c06-51f2e8a7d3b4"
	infos := map[uint64]*model.CgroupInfo{
		1:  {Path: "/"},
		40: {Path: "/system.slice/docker-" + id + ".scope", Container: model.Container{ID: id, Runtime: model.RuntimeDocker}},
		41: {Path: "/kubepods/burstable/pod" + uid + "/" + id, Container: model.Container{ID: id, Runtime: model.RuntimeCRI, PodUID: uid}},
		42: {Path: "/user.slice/\x1b]0;PWN\x07"},
		43: {Path: "/system.slice/nginx.service", Container: model.Container{ID: "nginx.service", Runtime: model.RuntimeSystemd}},
	}
	r := sampleReport(true)
	r.Agg.Cgroups = map[uint64]model.Count{1: {Transitions: 2}, 40: {Transitions: 9, Opened: 2}, 41: {Transitions: 7, Opened: 1},
		42: {Transitions: 1}, 43: {Transitions: 3, Opened: 1}, 77: {Transitions: 4, Opened: 1}}
	r.Agg.CgroupOther = 5
	r.Cgroups = func(id uint64) *model.CgroupInfo { return infos[id] }
	var b bytes.Buffer
	if err := writeStatsTable(&b, r, 4); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	i := strings.Index(out, "by cgroup")
	if i < 0 {
		t.Fatalf("no by-cgroup table:\n%s", out)
	}
	table := out[i:]
	table = table[:strings.Index(table, "\n\n")]
	for _, s := range []string{
		"| /system.slice/docker-" + id + ".scope", "docker:4f797c539e6c ",
		"cri:4f797c539e6c (pod " + uid + ")",
		"| id:77 ", // removed before it was resolved
		"systemd:nginx.service",
		"other (2 cgroups)", "not counted (map full)",
	} {
		if !strings.Contains(table, s) {
			t.Errorf("by-cgroup table lacks %q:\n%s", s, table)
		}
	}
	// --top 4: the fifth and sixth rows (/ with 2, the hostile one with 1) summed.
	if strings.Contains(table, "PWN") || strings.Contains(table, "| /  ") {
		t.Errorf("rows past --top printed:\n%s", table)
	}
	assertTerminalSafe(t, "stats", out)
	lines := strings.Split(table, "\n")
	for _, l := range lines[2:] {
		if strings.HasPrefix(l, "|") && displayWidth(l) != displayWidth(lines[1]) {
			t.Errorf("row not as wide as the border:\n%s\n%s", lines[1], l)
		}
	}
	// All rows: the hostile path escaped.
	b.Reset()
	if err := writeStatsTable(&b, r, 0); err != nil {
		t.Fatal(err)
	}
	assertTerminalSafe(t, "stats --top 0", b.String())
	if !strings.Contains(b.String(), `/user.slice/\x1b]0;PWN\x07`) {
		t.Errorf("the hostile cgroup name is not shown escaped:\n%s", b.String())
	}

	// JSON: every row, with the names the id resolved to.
	b.Reset()
	if err := writeStatsJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cgroups     []map[string]any `json:"cgroups"`
		CgroupOther uint64           `json:"cgroup_other"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cgroups) != 6 || doc.CgroupOther != 5 {
		t.Fatalf("JSON cgroups %v, other %d: want 6 rows and 5", doc.Cgroups, doc.CgroupOther)
	}
	first, k8s := doc.Cgroups[0], doc.Cgroups[1]
	if first["cgroup_id"] != 40.0 || first["container"] != id || first["container_runtime"] != "docker" || first["transitions"] != 9.0 || first["opened"] != 2.0 {
		t.Errorf("first row %v", first)
	}
	if k8s["pod_uid"] != uid || k8s["container_runtime"] != "cri" {
		t.Errorf("kubernetes row %v", k8s)
	}
	for _, row := range doc.Cgroups {
		if row["cgroup_id"] == 77.0 {
			if _, ok := row["cgroup"]; ok {
				t.Errorf("an unresolved cgroup has a path: %v", row)
			}
		}
	}
}
