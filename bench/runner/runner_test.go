package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const rootHelp = `tcpstate follows every TCP state change.

Usage:
  tcpstate [command]

Available Commands:
  check       Check recorded transitions (trace -o json) against a TCP state model
  completion  Generate the autocompletion script for the specified shell
  help        Help about any command
  stats       Count transitions per state pair
  trace       Print every TCP state transition as it happens

Flags:
  -h, --help   help for tcpstate
`

const traceHelp = `Usage:
  tcpstate trace [flags]

Flags:
      --anomalies             print only anomalies: illegal transitions and gaps
      --duration duration     stop after this long, e.g. 30s or 5m (0: until interrupted)
  -o, --output string         output: table, wide (adds skaddr, on-CPU task, family, owner source) or json (one object per line) (default "table")
      --summary-json string   also write the end-of-run summary as JSON to this file
`

func TestAvailableCommands(t *testing.T) {
	got := availableCommands(rootHelp)
	want := []string{"check", "completion", "help", "stats", "trace"}
	if !slices.Equal(got, want) {
		t.Fatalf("availableCommands = %v, want %v", got, want)
	}
}

func TestOutputModes(t *testing.T) {
	got := outputModes(traceHelp)
	want := []string{"table", "wide", "json"}
	if !slices.Equal(got, want) {
		t.Fatalf("outputModes = %v, want %v", got, want)
	}
}

func TestHasFlag(t *testing.T) {
	for flag, want := range map[string]bool{
		"anomalies": true, "summary-json": true, "duration": true,
		"summary": false, "check": false, "output": true,
	} {
		if got := hasFlag(traceHelp, flag); got != want {
			t.Errorf("hasFlag(%q) = %v, want %v", flag, got, want)
		}
	}
}

func TestLiveCommand(t *testing.T) {
	live := "Usage:\n  tcpstate stats [flags]\n\nFlags:\n      --duration duration   stop after this long\n"
	file := "Usage:\n  tcpstate check [flags] [FILE...]\n\nFlags:\n      --duration duration   x\n"
	noDur := "Usage:\n  tcpstate stats [flags]\n\nFlags:\n      --interval duration   x\n"
	if !liveCommand(live, "stats") {
		t.Error("stats with --duration and no arguments: want live")
	}
	if liveCommand(file, "check") {
		t.Error("check taking FILE: want not live")
	}
	if liveCommand(noDur, "stats") {
		t.Error("stats without --duration: want not live")
	}
}

func TestCountBpftrace(t *testing.T) {
	out := `Attaching 3 probes...
TIME            SKADDR             PID     COMM             AF   SADDR  SPORT DADDR  DPORT OLD         -> NEW                 MS NETNS
21:42:02.037520 0xffff888102cca500 7973    loadgen          ipv4 127.0.0.1 18080 0.0.0.0 0     CLOSE       -> LISTEN           0.000 4026532177
21:42:02.039789 0xffff888102cc8940 7973    loadgen          ipv4 127.0.0.1 0     127.0.0.1 18080 CLOSE       -> SYN_SENT         0.000 4026532177
Lost 34 events
21:42:02.039789 0xffff888102cc8940 7973    curl             ipv4 10.0.0.1 0     10.0.0.2 443 CLOSE       -> SYN_SENT         0.000 4026531833
Lost 6 events
`
	p := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	n, lost, err := countBpftrace(p, 4026532177)
	if err != nil || n != 2 || lost != 40 {
		t.Fatalf("countBpftrace = %d, %d, %v; want 2, 40, nil", n, lost, err)
	}
}

func TestCountLibbpf(t *testing.T) {
	out := `SKADDR           PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS
ffff888102cc8940 7973    loadgen    127.0.0.1       0     127.0.0.1       18080 CLOSE       -> SYN_SENT    0.000
ffff888102ccdc80 7973    load gen   127.0.0.1       18080 127.0.0.1       55266 LISTEN      -> SYN_RECV    0.000
ffff888102ccdc80 7973    sshd       10.0.0.1        22    10.0.0.2        55266 ESTABLISHED -> CLOSE_WAIT  0.000
`
	p := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := countLibbpf(p, 18080)
	if err != nil || n != 2 {
		t.Fatalf("countLibbpf = %d, %v; want 2, nil", n, err)
	}
	if got := perfLost("lost 3 events on CPU #0\nlost 4 events on CPU #1\n"); got != 7 {
		t.Fatalf("perfLost = %d, want 7", got)
	}
}

func TestDiffProgs(t *testing.T) {
	before := map[uint64]progStat{1: {ID: 1, RunTimeNs: 100, RunCnt: 10}, 2: {ID: 2, RunTimeNs: 5, RunCnt: 1}}
	after := map[uint64]progStat{
		1: {ID: 1, RunTimeNs: 1100, RunCnt: 1010, RecursionMisses: 3},
		2: {ID: 2, RunTimeNs: 25, RunCnt: 11},
	}
	d := diffProgs(before, after)
	if d.Programs != 2 || d.RunCnt != 1010 || d.RunTimeNs != 1020 || d.RecursionMisses != 3 ||
		d.BusiestRunCnt != 1000 || d.BusiestRunTimeNs != 1000 {
		t.Fatalf("diffProgs = %+v", d)
	}
}

func TestProgStatsSelf(t *testing.T) {
	// This process holds no BPF program: an empty map, no error.
	m, err := progStats(os.Getpid())
	if err != nil || len(m) != 0 {
		t.Fatalf("progStats(self) = %v, %v", m, err)
	}
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestSelectConfigs(t *testing.T) {
	all := []config{{ID: "none"}, {ID: "trace-json"}, {ID: "trace-table"}, {ID: "bpftrace"}}
	got, err := selectConfigs(all, []string{"bpftrace", "trace-json", "none"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range got {
		ids = append(ids, c.ID)
	}
	if want := []string{"none", "bpftrace", "trace-json"}; !slices.Equal(ids, want) {
		t.Fatalf("selectConfigs = %v, want %v", ids, want)
	}
	if _, err := selectConfigs(all, []string{"nope"}); err == nil {
		t.Fatal("unknown id: want an error")
	}
}

func TestSummarize(t *testing.T) {
	configs := []config{{ID: "none", Kind: kindNone}, {ID: "trace-json", Kind: kindTcpstate}}
	d := &document{}
	for i, rate := range []float64{10000, 9000, 11000} {
		d.Runs = append(d.Runs, &runResult{Config: "none", Round: i + 1, Expected: 200002, Load: loadResult{ConnPerSec: rate}})
	}
	for i, rate := range []float64{5000, 4000, 6000} {
		d.Runs = append(d.Runs, &runResult{Config: "trace-json", Round: i + 1, Expected: 200002,
			Load: loadResult{ConnPerSec: rate}, ReceivedKnown: true, ReceivedFrom: "events",
			Received: 199990 + uint64(i), LostRecursion: 12 - uint64(i)})
	}
	d.Runs = append(d.Runs, &runResult{Config: "trace-json", Round: 4, Error: "boom"})
	d.summarize(configs)
	if len(d.Summary) != 2 {
		t.Fatalf("%d rows", len(d.Summary))
	}
	base, tr := d.Summary[0], d.Summary[1]
	if base.ConnPerSec != 10000 || *base.Slowdown != 1 || base.Received != nil {
		t.Errorf("baseline row %+v", base)
	}
	if tr.ConnPerSec != 5000 || *tr.Slowdown != 2 || *tr.Received != 199991 || *tr.LostRecursion != 11 ||
		tr.Runs != 4 || tr.Failed != 1 {
		t.Errorf("trace row %+v", tr)
	}
}
