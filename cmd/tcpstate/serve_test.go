package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// Bad input: one line on stderr, exit status 2, before anything is loaded
// (so these need no privileges).
func TestServeBadInput(t *testing.T) {
	bin := buildBinary(t, t.TempDir())
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", busy.Addr().String()}, "the address is in use"},
		{[]string{"--listen", "nonsense"}, "want HOST:PORT"},
		{[]string{"--listen", "127.0.0.1:99999"}, "the port must be a number from 1 to 65535"},
		{[]string{"--listen", "127.0.0.1:0"}, "the port must be a number from 1 to 65535"},
		{[]string{"--listen", "192.0.2.1:9464"}, "not an address of this host"},
		{[]string{"--port-label", "0"}, `--port-label "0": a port is a number from 1 to 65535`},
		{[]string{"--port-label", "443,http"}, `--port-label "http": a port is a number`},
		{[]string{"--port-label", "443,8080,443"}, "--port-label 443: given twice"},
		{[]string{"--snapshot-interval", "10ms"}, "--snapshot-interval 10ms: must be at least 1s"},
		{[]string{"--label-container", "--label-container-max", "0"}, "--label-container-max 0: must be from 1 to 1024"},
		{[]string{"--label-container", "--label-container-max", "1025"}, "--label-container-max 1025: must be from 1 to 1024"},
		{[]string{"--label-container-max", "10"}, "--label-container-max needs --label-container"},
	} {
		cmd := exec.Command(bin, append([]string{"serve"}, c.args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := testnet.RunCmd(cmd)
		code := cmd.ProcessState.ExitCode()
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != exitUsage || len(lines) != 1 || !strings.HasPrefix(lines[0], "tcpstate: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("serve %v: exit %d (%v), stderr %q; want exit 2 and one line with %q", c.args, code, err, stderr.String(), c.want)
		}
	}
}

// fakeSource is a serveSource with fixed counts.
type fakeSource struct {
	tt    tracer.Totals
	c     tracer.Counters
	socks []model.SocketInfo
	snap  tracer.Snapshot
	snaps int
}

func (f *fakeSource) ReadTotals(tt *tracer.Totals) error {
	tt.Agg, tt.HistSumNs, tt.Ports, tt.LabelPorts = f.tt.Agg, f.tt.HistSumNs, f.tt.Ports, f.tt.LabelPorts
	return nil
}
func (f *fakeSource) Counters() (tracer.Counters, error) { return f.c, nil }
func (f *fakeSource) Programs() ([]tracer.ProgramStat, error) {
	return []tracer.ProgramStat{
		{Name: "handle_set_state", Attached: true, ProgramStats: tracer.ProgramStats{Runs: 10, RunNs: 2500}},
		{Name: "snap_tcp"},
	}, nil
}
func (f *fakeSource) Snapshot(o tracer.SnapshotOptions) (*tracer.Snapshot, error) {
	f.snaps++
	s := f.snap
	if o.Visit != nil {
		// As the tracer does: each socket to Visit, none kept.
		for i := range s.Sockets {
			so := s.Sockets[i]
			o.Visit(&so)
		}
		s.Sockets = nil
	}
	return &s, nil
}
func (f *fakeSource) VisitSockets(visit func(*model.SocketInfo)) error {
	for i := range f.socks {
		so := f.socks[i]
		visit(&so)
	}
	return nil
}
func (f *fakeSource) Attached() bool { return true }

func newFakeSource() *fakeSource {
	f := &fakeSource{}
	a := &f.tt.Agg
	a.Matrix[model.Close][model.SynSent] = 7
	a.Matrix[model.Listen][model.FinWait2] = 2 // not in linux: illegal
	// Time in ESTABLISHED: 3 values in kernel bucket 0 (0-1 us), 4 in
	// bucket 3 (8-15 us), 1 in bucket 40.
	a.Hists[model.Established][0] = 3
	a.Hists[model.Established][3] = 4
	a.Hists[model.Established][40] = 1
	f.tt.HistSumNs[model.Established] = 123456789
	a.SetCloses(make([]uint64, model.FactValues))
	closes := make([]uint64, model.FactValues)
	closes[uint16(model.FinWait2)] = 5 // FIN_WAIT2 -> CLOSE, no error: fin/active
	a.SetCloses(closes)
	f.tt.LabelPorts = []uint16{443}
	f.tt.Ports = make([][model.NumStates][model.NumStates]uint64, 2)
	f.tt.Ports[0][model.Close][model.SynSent] = 4
	f.tt.Ports[1][model.Close][model.SynSent] = 3
	f.c = tracer.Counters{RecursionMisses: 2, Gaps: 6, GapsAfterLoss: 2, GapMissing: 5}
	f.snap = tracer.Snapshot{
		Sockets: []model.SocketInfo{
			{State: model.Established}, {State: model.Established}, {State: model.TimeWait, Kind: model.KindTimeWait},
			{State: model.Close}, // held by a process, in no table: not counted
			{State: model.CloseWait},
		},
		// The first namespace's sockstat counts 3 timewait sockets, the
		// snapshot found 1: TIME_WAIT is 3.
		Namespaces: []tracer.NetnsScan{{Netns: tracer.Netns{Path: "/proc/42/ns/net"}, Sockets: 4}, {Err: "setns: operation not permitted"}},
		OutOfStep: []tracer.OutOfStep{
			{Tracked: model.Established, Actual: model.CloseWait, Reconciled: true},
			{Tracked: model.Established, Actual: model.LastAck, Reconciled: true, LossSince: true},
		},
	}
	f.socks = []model.SocketInfo{{State: model.CloseWait, Since: 2 * time.Minute}, {State: model.CloseWait, Since: time.Second}}
	return f
}

// The exposition: what each metric says for known counts, accepted by
// promtool check metrics.
func TestServeExposition(t *testing.T) {
	src := newFakeSource()
	m, _ := model.ModelByName("linux")
	col := newServeCollector(src, m, model.DefaultStuckThresholds(), time.Hour, true)
	col.sockstatTW = func(path string) (int, bool) { return 3, path == "/proc/42/net/sockstat" }
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	text := gatherText(t, reg)
	for _, want := range []string{
		`tcpstate_transitions_total{new_state="SYN_SENT",old_state="CLOSE",port="443"} 3`,
		`tcpstate_transitions_total{new_state="SYN_SENT",old_state="CLOSE",port="other"} 4`,
		// Every edge of the linux model exists from the start, at 0.
		`tcpstate_transitions_total{new_state="CLOSE",old_state="LAST_ACK",port="443"} 0`,
		`tcpstate_anomalies_total{kind="illegal",model="linux"} 2`,
		`tcpstate_anomalies_total{kind="gap",model="linux"} 6`,
		`tcpstate_events_lost_total{cause="recursion_miss"} 2`,
		`tcpstate_events_missing_total{found_by="gap"} 5`,
		// Reconciled, no loss since: ESTABLISHED -> CLOSE_WAIT is 1; the
		// one with a loss since is counted lost, not missing.
		`tcpstate_events_missing_total{found_by="snapshot"} 1`,
		`tcpstate_sockets{state="ESTABLISHED"} 2`,
		`tcpstate_sockets{state="TIME_WAIT"} 3`,
		`tcpstate_sockets{state="CLOSE_WAIT"} 1`,
		`tcpstate_sockets{state="SYN_SENT"} 0`,
		`tcpstate_stuck_sockets{state="CLOSE_WAIT"} 1`,
		`tcpstate_snapshot_namespaces{result="not_entered"} 1`,
		`tcpstate_closes_total{cause="fin",detail="active"} 5`,
		`tcpstate_closes_total{cause="reset_received",detail=""} 0`,
		// Cumulative at the kernel's boundaries: le 2 us holds bucket 0, le
		// 8 us buckets 0-2, le 32 us buckets 0-4; bucket 40 only in +Inf.
		`tcpstate_state_duration_seconds_bucket{state="ESTABLISHED",le="2e-06"} 3`,
		`tcpstate_state_duration_seconds_bucket{state="ESTABLISHED",le="8e-06"} 3`,
		`tcpstate_state_duration_seconds_bucket{state="ESTABLISHED",le="3.2e-05"} 7`,
		`tcpstate_state_duration_seconds_bucket{state="ESTABLISHED",le="34359.738368"} 7`,
		`tcpstate_state_duration_seconds_bucket{state="ESTABLISHED",le="+Inf"} 8`,
		`tcpstate_state_duration_seconds_sum{state="ESTABLISHED"} 0.123456789`,
		`tcpstate_state_duration_seconds_count{state="ESTABLISHED"} 8`,
		`tcpstate_bpf_program_runs_total{program="handle_set_state"} 10`,
		`tcpstate_bpf_program_run_seconds_total{program="handle_set_state"} 2.5e-06`,
		`tcpstate_bpf_programs_attached 1`,
		`tcpstate_build_info{`,
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	// Without --label-container: no container series at all.
	if strings.Contains(text, "tcpstate_container_") {
		t.Errorf("container series without --label-container:\n%s", grepLines(text, "tcpstate_container_"))
	}
	if strings.Contains(text, `program="snap_tcp"`) {
		t.Errorf("an iterator that never ran has series:\n%s", grepLines(text, "snap_tcp"))
	}
	// Cardinality: no label but these, whatever the counts.
	allowed := []string{"old_state", "new_state", "port", "model", "kind", "state", "side", "cause", "detail", "found_by", "program", "result", "le",
		"version", "commit", "goversion", "cilium_ebpf"}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			series++
			for _, l := range m.GetLabel() {
				if !slices.Contains(allowed, l.GetName()) {
					t.Errorf("%s has label %q", mf.GetName(), l.GetName())
				}
			}
		}
	}
	if v, ok := sockstatTW("/proc/self/net/sockstat"); !ok || v < 0 {
		t.Errorf("sockstat of this namespace: tw %d, %v", v, ok)
	}
	t.Logf("%d metric families, %d series (histograms counted once) with one labelled port", len(mfs), series)
	// The snapshot is cached: a second scrape within snapshot-interval
	// takes none.
	gatherText(t, reg)
	if src.snaps != 1 {
		t.Errorf("two scrapes within --snapshot-interval took %d snapshots, want 1", src.snaps)
	}
	promtoolCheckMetrics(t, text)
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// promtoolCheckMetrics runs promtool check metrics on an exposition. In CI
// (CI=true) a missing promtool is a failure: .ci/run installs prometheus.
func promtoolCheckMetrics(t *testing.T, text string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found (Debian's prometheus package has it; .ci/run installs it)")
		}
		t.Skip("promtool not found: apt-get install prometheus")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// needPrometheus returns Debian's prometheus binary, installing the package
// where it is missing (as root). Its packaged service is never used: the
// test runs the binary itself on loopback.
func needPrometheus(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	if os.Geteuid() == 0 {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err == nil {
			// Where systemd runs, the package starts its own service:
			// stop it, the test needs only the binary.
			_ = exec.Command("systemctl", "disable", "--now", "prometheus").Run()
			if p, err := exec.LookPath("prometheus"); err == nil {
				return p
			}
		}
		t.Logf("apt-get install prometheus: %v\n%s", err, out)
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("prometheus is not installed and could not be (apt-get install prometheus)")
	}
	t.Skip("prometheus is not installed (apt-get install prometheus)")
	return ""
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serveProc is a running tcpstate serve.
type serveProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan struct{}
}

func startServe(t *testing.T, bin string, args ...string) *serveProc {
	t.Helper()
	addr := freeAddr(t)
	p := &serveProc{addr: addr, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"serve", "--listen", addr}, args...)...)
	p.cmd.Stderr = p.stderr
	if err := testnet.StartCmd(p.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := httpGet("http://" + addr + "/healthz"); code == 200 {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("tcpstate serve exited: %s", p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcpstate serve not healthy within 20s: %s", p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 10 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// ssCounts sums ss -tan over every network namespace of the host, by state.
func ssCounts(t *testing.T) map[model.State]int {
	t.Helper()
	nss, err := tracer.ListNetns()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[model.State]int{}
	for _, ns := range nss {
		out, err := exec.Command("nsenter", "--net="+ns.Path, "ss", "-tanH").Output()
		if err != nil {
			continue // the namespace went away meanwhile
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			st, err := model.ParseState(f[0])
			if err != nil {
				t.Fatalf("ss state %q: %v", f[0], err)
			}
			counts[st]++
		}
	}
	return counts
}

// metricValue finds one series' value in an exposition.
func metricValue(text, series string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func fmtPort(p uint16) string { return fmt.Sprint(p) }
