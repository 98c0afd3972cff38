package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// TestResetsNoSocketReported: the resets the kernel sent for packets that
// matched no socket (issue 11) are in trace's summary, stats' final report,
// the JSON kernel object and serve's tcpstate_resets_no_socket_total, never
// as a loss; where the kernel cannot count them (before 6.10) every one of
// them says so rather than 0: a line that says "not counted", no JSON key,
// no series.
func TestResetsNoSocketReported(t *testing.T) {
	five := uint64(5)
	zero := uint64(0)
	for _, c := range []struct {
		name     string
		n        *uint64
		line     string // the summary's and the report's text after the label
		json     string // kernel's member, "" for none
		exported string // the exposition's line, "" for none
	}{
		{"counted", &five, "5 sent for packets that matched no socket, host-wide, filters or not (no socket: no close cause)",
			`"resets_no_socket":5`, "tcpstate_resets_no_socket_total 5"},
		{"counted, none", &zero, "0 sent for packets that matched no socket, host-wide, filters or not (no socket: no close cause)",
			`"resets_no_socket":0`, "tcpstate_resets_no_socket_total 0"},
		{"not counted", nil, "sent for packets that matched no socket: not counted on this kernel (Linux 6.10 and later show them)",
			"", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := tracer.Counters{RingbufFull: 1, ResetsNoSocket: c.n}

			rec := reconcileDoc{OutOfStep: []outOfStepDoc{}}
			s := traceSummary{Kernel: k, Model: "linux", Reconciliation: rec, Stuck: []socketDoc{}}
			var b strings.Builder
			s.write(&b)
			if want := "  resets:          " + c.line + "\n"; !strings.Contains(b.String(), want) {
				t.Errorf("trace's summary lacks %q:\n%s", want, b.String())
			}
			if !strings.Contains(b.String(), "lost, counted:   1 of") {
				t.Errorf("trace's summary: the loss is not the ring's alone:\n%s", b.String())
			}

			r := sampleReport(true)
			r.Kernel = &k
			var sb bytes.Buffer
			if err := writeStatsTable(&sb, r, 0); err != nil {
				t.Fatal(err)
			}
			if want := "\nresets:         " + c.line + "\n"; !strings.Contains(sb.String(), want) {
				t.Errorf("stats' final report lacks %q:\n%s", want, sb.String())
			}

			for what, doc := range map[string]any{"trace --summary-json": s, "stats --summary-json": statsSummary{Kernel: k, Reconciliation: rec}, "stats -o json": newStatsDoc(r)} {
				j, err := json.Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				var v map[string]any
				if err := json.Unmarshal(j, &v); err != nil {
					t.Fatal(err)
				}
				jsonForm(t, what, "", v)
				kern, _ := json.Marshal(v["kernel"])
				has := strings.Contains(string(kern), `"resets_no_socket":`)
				if c.json == "" && has || c.json != "" && !strings.Contains(string(kern), c.json) {
					t.Errorf("%s: kernel %s, want %s", what, kern, map[bool]string{true: "no resets_no_socket", false: c.json}[c.json == ""])
				}
			}

			src := newFakeSource()
			src.c = k
			m, _ := model.ModelByName("linux")
			reg := prometheus.NewRegistry()
			reg.MustRegister(newServeCollector(src, m, model.DefaultStuckThresholds(), time.Hour, true))
			text := gatherText(t, reg)
			if c.exported == "" && strings.Contains(text, "tcpstate_resets_no_socket_total") {
				t.Errorf("serve exports a count the kernel does not keep:\n%s", grepLines(text, "resets_no_socket"))
			}
			if c.exported != "" && !strings.Contains(text, "\n"+c.exported+"\n") {
				t.Errorf("serve's exposition lacks %q:\n%s", c.exported, grepLines(text, "resets_no_socket"))
			}
			if strings.Contains(grepLines(text, "tcpstate_events_lost_total"), "reset") {
				t.Errorf("resets are exported as a loss:\n%s", grepLines(text, "tcpstate_events_lost_total"))
			}
			promtoolCheckMetrics(t, text)
		})
	}
}
