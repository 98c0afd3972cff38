package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
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
	configs := []config{{ID: "none", Label: "no tracer", Kind: kindNone}, {ID: "trace-json", Label: "tcpstate trace -o json", Kind: kindTcpstate}}
	d := &document{}
	for i, rate := range []float64{10000, 9000, 11000} {
		d.Runs = append(d.Runs, &runResult{Config: "none", Clients: 4, Round: i + 1, Expected: 200002,
			Load: loadResult{ConnPerSec: rate}, GetppidNs: 80 + float64(i)})
	}
	for i, rate := range []float64{5000, 4000, 6000} {
		d.Runs = append(d.Runs, &runResult{Config: "trace-json", Clients: 4, Round: i + 1, Expected: 200002,
			Load: loadResult{ConnPerSec: rate}, ReceivedKnown: true, ReceivedFrom: "events",
			Received: 199990 + uint64(i), LostRecursion: 12 - uint64(i), GetppidNs: 90 + float64(i)})
	}
	d.Runs = append(d.Runs, &runResult{Config: "trace-json", Clients: 4, Round: 4, Error: "boom"})
	// The 16-client load: its own baseline, and a tcpstate that reports
	// "missing".
	for i, rate := range []float64{20000, 18000} {
		d.Runs = append(d.Runs, &runResult{Config: "none", Clients: 16, Round: i + 1, Expected: 200002,
			Load: loadResult{ConnPerSec: rate}, GetppidNs: 70})
		d.Runs = append(d.Runs, &runResult{Config: "trace-json", Clients: 16, Round: i + 1, Expected: 200002,
			Load: loadResult{ConnPerSec: rate / 2}, ReceivedKnown: true, ReceivedFrom: "events", Received: 200002,
			MissingKnown: true, Missing: 3, GetppidNs: 77})
	}
	d.summarize(configs, []int{4, 16})
	if len(d.Summary) != 4 {
		t.Fatalf("%d rows", len(d.Summary))
	}
	base, tr, base16, tr16 := d.Summary[0], d.Summary[1], d.Summary[2], d.Summary[3]
	if base.ConnPerSec != 10000 || *base.Slowdown != 1 || base.Received != nil || *base.GetppidNs != 81 || *base.SyscallTax != 0 {
		t.Errorf("baseline row %+v", base)
	}
	if tr.ConnPerSec != 5000 || *tr.Slowdown != 2 || *tr.Received != 199991 || *tr.LostRecursion != 11 ||
		tr.Runs != 4 || tr.Failed != 1 || *tr.GetppidNs != 91 || *tr.SyscallTax != 10 || tr.Missing != nil {
		t.Errorf("trace row %+v", tr)
	}
	if base16.Label != "no tracer (16 clients)" || base16.Clients != 16 || base16.ConnPerSec != 19000 || base16.Runs != 2 {
		t.Errorf("16-client baseline row %+v", base16)
	}
	if tr16.Label != "tcpstate trace -o json (16 clients)" || *tr16.Slowdown != 2 || *tr16.SyscallTax != 7 || *tr16.Missing != 3 {
		t.Errorf("16-client trace row %+v", tr16)
	}

	var b strings.Builder
	d.printTable(&b, true)
	out := b.String()
	for _, want := range []string{"getppid ns", "syscall tax ns", "missing (tcpstate's)",
		"| no tracer (16 clients) ", "+10.0", "+7.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Without a tcpstate that reports it, no missing column.
	d.Summary[3].Missing = nil
	b.Reset()
	d.printTable(&b, false)
	if strings.Contains(b.String(), "missing") {
		t.Errorf("missing column with nothing reported:\n%s", b.String())
	}
}

func TestReadTcpstateSummary(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, json   string
		missing      uint64
		missingKnown bool
	}{
		{"today's", `{"transitions": 12, "events": 10, "printed": 10, "lost": 2,
			"kernel": {"ringbuf_full": 1, "recursion_misses": 1, "prog_runs": 11, "prog_run_ns": 5500, "loss_seq": 2},
			"accept_hook": "syscalls", "check": {"Missing": 2}}`, 0, false},
		{"with missing and new keys", `{"transitions": 12, "events": 10, "lost": 2, "missing": 4,
			"kernel": {"ringbuf_full": 1, "recursion_misses": 1, "something_new": {"a": [1, 2]}},
			"new_section": {"x": "y"}}`, 4, true},
		{"missing in kernel", `{"events": 10, "lost": 2, "kernel": {"ringbuf_full": 1, "recursion_misses": 1, "missing": 5}}`, 5, true},
	} {
		p := filepath.Join(dir, "s.json")
		if err := os.WriteFile(p, []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		var r runResult
		if err := readTcpstateSummary(p, false, &r); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !r.ReceivedKnown || r.Received != 10 || r.ReceivedFrom != "events" || r.LostReported != 2 ||
			r.LostRingbuf != 1 || r.LostRecursion != 1 || r.Missing != c.missing || r.MissingKnown != c.missingKnown {
			t.Errorf("%s: %+v", c.name, r)
		}
		var k runResult
		if err := readTcpstateSummary(p, true, &k); err != nil {
			t.Fatal(err)
		}
		if c.name != "missing in kernel" && (k.Received != 12 || k.ReceivedFrom != "kernel") {
			t.Errorf("%s, aggregates: received %d from %q, want 12 from kernel", c.name, k.Received, k.ReceivedFrom)
		}
	}
}

func TestClients(t *testing.T) {
	for _, c := range []struct {
		in []int
		ok bool
	}{
		{[]int{4, 16}, true}, {[]int{1}, true}, {nil, false}, {[]int{0}, false}, {[]int{4, 257}, false}, {[]int{4, 4}, false},
	} {
		if err := checkClients(c.in); (err == nil) != c.ok {
			t.Errorf("checkClients(%v) = %v, want ok %v", c.in, err, c.ok)
		}
	}
	jobs := makeJobs([]config{{ID: "none", Label: "no tracer"}, {ID: "x", Label: "x"}}, []int{4, 16})
	var got []string
	for _, j := range jobs {
		got = append(got, j.label([]int{4, 16}))
	}
	if want := []string{"no tracer", "x", "no tracer (16 clients)", "x (16 clients)"}; !slices.Equal(got, want) {
		t.Fatalf("job labels %v, want %v", got, want)
	}
}

// fakeTcpstate writes a script that answers --help as tcpstate does.
func fakeTcpstate(t *testing.T, trace string) string {
	dir := t.TempDir()
	for name, text := range map[string]string{"root": rootHelp, "trace": trace,
		"stats": "Usage:\n  tcpstate stats [flags]\n\nFlags:\n      --duration duration   x\n      --summary-json string   x\n",
		"check": "Usage:\n  tcpstate check [flags] [FILE...]\n"} {
		if err := os.WriteFile(filepath.Join(dir, name+".txt"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "tcpstate")
	script := "#!/bin/sh\nd=$(dirname \"$0\")\ncase \"$1\" in --help) cat \"$d/root.txt\";; *) cat \"$d/$1.txt\";; esac\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestDiscoverTcpstate(t *testing.T) {
	trace := traceHelp + "      --pid strings           only sockets owned by this process id\n" +
		"      --accept-hook string    how accepted sockets get their owner: auto, fexit, syscalls, off\n"
	bin := fakeTcpstate(t, trace)
	cs, _, err := discoverTcpstate(context.Background(), bin)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
		if c.ID == "trace-json-pid" && (!c.PidFilter || !slices.Equal(c.Argv, []string{bin, "trace", "-o", "json"}) || !c.Summary) {
			t.Errorf("pid config %+v", c)
		}
	}
	want := []string{"trace-json", "trace-table", "trace-wide", "trace-anomalies", "trace-json-accept-off", "trace-json-pid", "stats"}
	if !slices.Equal(ids, want) {
		t.Fatalf("configs %v, want %v", ids, want)
	}
	// An older tcpstate without --pid: no pid configuration.
	cs, _, err = discoverTcpstate(context.Background(), fakeTcpstate(t, traceHelp))
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(cs, func(c config) bool { return c.PidFilter }) {
		t.Fatal("a pid configuration for a tcpstate without --pid")
	}
}

func TestWaitPidFile(t *testing.T) {
	dir := t.TempDir()
	// A load generator that writes its pid file (the path after
	// --pid-file) late, then waits for its start delay.
	lg := filepath.Join(dir, "loadgen")
	script := "#!/bin/sh\nwhile [ \"$1\" != --pid-file ]; do shift; done\nsleep 0.1\necho 4242 > \"$2.tmp\" && mv \"$2.tmp\" \"$2\"\nsleep 0.2\necho '{}'\n"
	if err := os.WriteFile(lg, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{loadgen: lg, connections: 10, clients: 2, timeout: time.Minute}
	pidPath := filepath.Join(dir, "pid")
	lp, err := startLoad(context.Background(), e, "--pid-file", pidPath, "--start-delay", "1s")
	if err != nil {
		t.Fatal(err)
	}
	pid, seen, err := waitPidFile(context.Background(), pidPath, lp, 10*time.Second)
	if err != nil || pid != 4242 || seen.IsZero() {
		t.Fatalf("waitPidFile = %d, %v, %v", pid, seen, err)
	}
	if err := lp.wait(); err != nil {
		t.Fatal(err)
	}
	lp.kill() // after exit: a no-op

	// One that exits without writing it: an error, at once.
	lp, err = startLoad(context.Background(), &env{loadgen: "/bin/false", timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := waitPidFile(context.Background(), filepath.Join(dir, "none"), lp, 10*time.Second); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("load generator that exits: err %v after %v", err, time.Since(start))
	}
}

func TestGetppidNs(t *testing.T) {
	ns := getppidNs(2, 20000)
	if ns <= 0 || ns > 100000 {
		t.Fatalf("getppid: %v ns per call", ns)
	}
	e := &env{sysSamples: 1, sysCalls: 10000}
	var r runResult
	measureGetppid(e, &r, 0)
	if r.GetppidNs <= 0 || r.GetppidOthersPct < 0 {
		t.Fatalf("measureGetppid: %+v", r)
	}
	var none runResult
	measureGetppid(&env{}, &none, 0)
	if none.GetppidNs != 0 {
		t.Fatal("measured with no samples asked for")
	}
}

func TestPrintLong(t *testing.T) {
	d := &document{Settings: settings{Long: 1000000}, LongLabel: "tcpstate trace -o json",
		Long: &runResult{Config: "trace-json", Clients: 4, Expected: 10000002, Load: loadResult{Connections: 1000000, Seconds: 80, ConnPerSec: 12500},
			MaxRSSMiB: 23.5, CPUPerM: 1.2, TracerCPUTotal: 12.4, TracerCPUStartup: 0.2,
			ReceivedKnown: true, ReceivedFrom: "events", Received: 10000100, ExtraEvents: 98, LostRecursion: 2}}
	var b strings.Builder
	d.printLong(&b)
	for _, want := range []string{"Long run: tcpstate trace -o json, 1000000 connections (4 clients)", "10000002 transitions",
		"peak RSS 23.5 MiB", "1.20 s / M transitions", "received 10000100 (98 more than expected", "recursion 2"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("long run lacks %q:\n%s", want, b.String())
		}
	}
	d.Long.Error = "load generator: boom"
	b.Reset()
	d.printLong(&b)
	if !strings.Contains(b.String(), "FAILED: load generator: boom") || !d.failed() {
		t.Errorf("failed long run: %q, failed %v", b.String(), d.failed())
	}
}

func TestSyscallTracepoints(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads a BPF program")
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.TracePoint,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadImm(asm.R0, 0, asm.DWord),
			asm.Return(),
		},
	})
	if err != nil {
		t.Skipf("loading a tracepoint program: %v", err)
	}
	defer prog.Close()
	l, err := link.Tracepoint("syscalls", "sys_exit_getppid", prog, nil)
	if err != nil {
		t.Skipf("attaching syscalls:sys_exit_getppid: %v", err)
	}
	defer l.Close()
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	want := fmt.Sprintf("syscalls:sys_exit_getppid (prog %d)", id)
	// Only the link holds the program now: its fd still names it.
	prog.Close()
	if !heldProgIDs(os.Getpid())[uint64(id)] {
		t.Fatalf("heldProgIDs(self) = %v, lacks prog %d held by a link", heldProgIDs(os.Getpid()), id)
	}

	// As someone else's: named, and the run counts as disturbed.
	var r runResult
	noteForeignSyscallTracepoints(&r, 0)
	noteForeignSyscallTracepoints(&r, 0)
	if n := slices.Index(r.ForeignSyscallTracepoints, want); n < 0 || slices.Index(r.ForeignSyscallTracepoints[n+1:], want) >= 0 {
		t.Fatalf("foreign %v: want %q once", r.ForeignSyscallTracepoints, want)
	}
	if why := disturbance(&r, 20); !strings.Contains(why, "syscall tracepoints") {
		t.Fatalf("disturbance = %q", why)
	}
	// As the tracer's own: counted, not foreign.
	var own runResult
	noteForeignSyscallTracepoints(&own, os.Getpid())
	if own.OwnSyscallTracepoints != 1 || slices.Contains(own.ForeignSyscallTracepoints, want) {
		t.Fatalf("own: %d, foreign %v", own.OwnSyscallTracepoints, own.ForeignSyscallTracepoints)
	}
}
