package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// serveSource is what the collector reads: the tracer, or a fake in tests.
type serveSource interface {
	ReadTotals(*tracer.Totals) error
	Counters() (tracer.Counters, error)
	Programs() ([]tracer.ProgramStat, error)
	Snapshot(tracer.SnapshotOptions) (*tracer.Snapshot, error)
	VisitSockets(func(*model.SocketInfo)) error
	Attached() bool
}

// histBounds are the histograms' upper bounds in microseconds: every other
// boundary of the kernel's log2 buckets, 2 us to 2^35 us (9.5 hours), so
// that each le is a boundary the kernel counts at (bucket i holds
// [2^i, 2^(i+1)) us, bucket 0 also 0 and 1 us) and nothing is interpolated.
// A value of exactly 2^k us falls in the bucket above le = 2^k us.
var histBounds = func() []int {
	var out []int // kernel bucket index i: the bound is 2^(i+1) us
	for i := 0; i+1 <= 35; i += 2 {
		out = append(out, i)
	}
	return out
}()

// durationStates are the states whose time is measured: those a socket
// leaves by a transition with a known duration (a birth has none, and
// TIME_WAIT and NEW_SYN_RECV are never reported).
var durationStates = []model.State{
	model.Listen, model.SynSent, model.SynRecv, model.Established, model.FinWait1,
	model.FinWait2, model.Closing, model.CloseWait, model.LastAck,
}

// socketStates are the states tcpstate_sockets reports, as ss -tan shows
// them: no CLOSE (in no table) and no NEW_SYN_RECV (a request socket shows
// SYN_RECV).
var socketStates = []model.State{
	model.Established, model.SynSent, model.SynRecv, model.FinWait1, model.FinWait2,
	model.TimeWait, model.CloseWait, model.LastAck, model.Listen, model.Closing,
}

// lostCauses name tracer.Counters' loss counters in tcpstate_events_lost_total.
var lostCauses = []struct {
	name string
	get  func(c *tracer.Counters) uint64
}{
	{"recursion_miss", func(c *tracer.Counters) uint64 { return c.RecursionMisses }},
	{"ring_buffer_full", func(c *tracer.Counters) uint64 { return c.RingbufFull }},
	{"held_queue_full", func(c *tracer.Counters) uint64 { return c.HeldOverflow }},
	{"held_no_space", func(c *tracer.Counters) uint64 { return c.HeldNoSpace }},
	{"owner_never_learnt", func(c *tracer.Counters) uint64 { return c.UndecidedClosed }},
}

// closeCauses is every cause and detail model.CloseFacts.Cause can give, so
// that each series exists from the start (at 0) and increase() sees its
// first close.
var closeCauses = func() []model.CloseCause {
	seen := map[model.CloseCause]bool{}
	var out []model.CloseCause
	for _, c := range model.Causes() {
		for f := range model.CloseFacts(model.FactValues) {
			if cc := f.Cause(); cc.Cause == c && !seen[cc] {
				seen[cc] = true
				out = append(out, cc)
			}
		}
	}
	return out
}()

// serveCollector is serve's prometheus.Collector: every scrape reads the
// kernel's maps at that moment (a few batch lookups); the snapshot and the
// socket list, which walk every socket, are cached for snapEvery.
type serveCollector struct {
	src        serveSource
	model      *model.Model
	linux      *model.Model
	thresholds map[model.State]time.Duration
	snapEvery  time.Duration
	start      time.Time
	build      [4]string // version, commit, go, cilium/ebpf
	statsFile  string    // kernel.bpf_stats_enabled
	sockstatTW func(path string) (int, bool)

	mu sync.Mutex // one reading at a time: tt's buffers are reused
	tt tracer.Totals
	// containers: --label-container (nil without it).
	containers *containerLabels

	snapMu      sync.Mutex
	snapAt      time.Time
	snapTook    time.Duration
	sockets     map[model.State]int
	stuck       map[model.State]int
	namespaces  [2]int // read, not entered
	snapErrors  uint64
	snapMissing uint64 // transitions reconciliation proved missing, uncounted

	d struct {
		transitions, anomalies, sockets, stateDur, handshake, lifetime, closes, stuck,
		lost, missing, resetsNoSocket, progRunSec, progRuns, progMisses, progsAttached, statsEnabled,
		build, start, snapTime, snapDur, snapErrors, snapNetns *prometheus.Desc
	}
}

func newServeCollector(src serveSource, m *model.Model, thresholds map[model.State]time.Duration, snapEvery time.Duration, labelPorts bool) *serveCollector {
	linux, _ := model.ModelByName("linux")
	c := &serveCollector{src: src, model: m, linux: linux, thresholds: thresholds, snapEvery: snapEvery,
		start: time.Now(), build: buildInfo(), statsFile: "/proc/sys/kernel/bpf_stats_enabled", sockstatTW: sockstatTW}
	d := &c.d
	edge := []string{"old_state", "new_state"}
	if labelPorts {
		edge = append(edge, "port")
	}
	d.transitions = prometheus.NewDesc("tcpstate_transitions_total",
		"TCP state transitions the kernel made, by old and new state (the kernel's names, as in trace's JSON records)"+
			map[bool]string{true: ", and service port (--port-label; \"other\" for the rest): a listener's or accepted socket's local port, a connecting socket's remote port", false: ""}[labelPorts]+".",
		edge, nil)
	d.anomalies = prometheus.NewDesc("tcpstate_anomalies_total",
		"Transitions flagged by the model check: kind illegal (an edge the model does not have) or gap (a socket whose old state is not the state it was last seen in: transitions were missed).",
		[]string{"model", "kind"}, nil)
	d.sockets = prometheus.NewDesc("tcpstate_sockets",
		"TCP sockets in each state now, host-wide (every network namespace), TIME_WAIT included, as ss -tan counts them; from a snapshot at most --snapshot-interval old.",
		[]string{"state"}, nil)
	d.stateDur = prometheus.NewDesc("tcpstate_state_duration_seconds",
		"Time sockets spent in a state, one observation per transition out of it (sockets seen entering it only); from the kernel's log2 microsecond buckets.",
		[]string{"state"}, nil)
	d.handshake = prometheus.NewDesc("tcpstate_handshake_duration_seconds",
		"Handshake time: side active is SYN_SENT -> ESTABLISHED (connect), passive a child's SYN_RECV -> ESTABLISHED; from the kernel's log2 microsecond buckets.",
		[]string{"side"}, nil)
	d.lifetime = prometheus.NewDesc("tcpstate_connection_duration_seconds",
		"Socket lifetime from birth (connect, or a child's creation) to -> CLOSE, listeners excluded; from the kernel's log2 microsecond buckets.",
		nil, nil)
	d.closes = prometheus.NewDesc("tcpstate_closes_total",
		"Sockets closed, by cause (fin, reset_received, reset_sent, refused, timeout, cancelled, listener_closed) and detail (fin: active, passive or simultaneous, the side that sent the first FIN; timeout: connect, retransmission, keepalive or zero_window_probe).",
		[]string{"cause", "detail"}, nil)
	d.stuck = prometheus.NewDesc("tcpstate_stuck_sockets",
		"Live sockets in a state longer than its --stuck threshold (sockets older than tcpstate count from its start); from the socket list, at most --snapshot-interval old.",
		[]string{"state"}, nil)
	d.lost = prometheus.NewDesc("tcpstate_events_lost_total",
		"Transitions the kernel side counted as lost, by cause (recursion_miss: the kernel skipped the program while it ran on the same CPU).",
		[]string{"cause"}, nil)
	d.missing = prometheus.NewDesc("tcpstate_events_missing_total",
		"Transitions known missing that no loss counter explains (the fewest the model needs), found_by gap (a socket's next transition) or snapshot (reconciliation: a socket whose state is not the one last seen).",
		[]string{"found_by"}, nil)
	d.resetsNoSocket = prometheus.NewDesc("tcpstate_resets_no_socket_total",
		"Resets the kernel sent for packets that matched no socket (a SYN to a port nothing listens on, a segment of a connection long gone), host-wide: no socket's close cause. Absent on kernels before 6.10, which do not show them to BPF programs.",
		nil, nil)
	d.progRunSec = prometheus.NewDesc("tcpstate_bpf_program_run_seconds_total",
		"Time the kernel spent running each BPF program (counted only while kernel.bpf_stats_enabled is 1).", []string{"program"}, nil)
	d.progRuns = prometheus.NewDesc("tcpstate_bpf_program_runs_total",
		"Runs of each BPF program (counted only while kernel.bpf_stats_enabled is 1).", []string{"program"}, nil)
	d.progMisses = prometheus.NewDesc("tcpstate_bpf_program_recursion_misses_total",
		"Runs of each BPF program the kernel skipped because it was already running on that CPU.", []string{"program"}, nil)
	d.progsAttached = prometheus.NewDesc("tcpstate_bpf_programs_attached", "BPF programs attached now.", nil, nil)
	d.statsEnabled = prometheus.NewDesc("tcpstate_bpf_stats_enabled", "Whether the kernel counts BPF run time now (kernel.bpf_stats_enabled).", nil, nil)
	d.build = prometheus.NewDesc("tcpstate_build_info", "The build of tcpstate serving these metrics (see tcpstate --version).",
		[]string{"version", "commit", "goversion", "cilium_ebpf"}, nil)
	d.start = prometheus.NewDesc("tcpstate_start_time_seconds", "When tcpstate serve attached its programs, in seconds since the epoch.", nil, nil)
	d.snapTime = prometheus.NewDesc("tcpstate_snapshot_timestamp_seconds", "When the last snapshot of the host's sockets was taken, in seconds since the epoch.", nil, nil)
	d.snapDur = prometheus.NewDesc("tcpstate_snapshot_duration_seconds", "How long the last snapshot of the host's sockets took.", nil, nil)
	d.snapErrors = prometheus.NewDesc("tcpstate_snapshot_errors_total", "Snapshots or socket lists that failed.", nil, nil)
	d.snapNetns = prometheus.NewDesc("tcpstate_snapshot_namespaces",
		"Network namespaces in the last snapshot: result read, or not_entered (their sockets that processes hold are still counted).", []string{"result"}, nil)
	return c
}

func (c *serveCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *serveCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := &c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	b := c.build
	gauge(d.build, 1, b[0], b[1], b[2], b[3])
	gauge(d.start, float64(c.start.UnixNano())/1e9)

	if err := c.src.ReadTotals(&c.tt); err != nil {
		ch <- prometheus.NewInvalidMetric(d.transitions, err)
	} else {
		c.collectTotals(ch, counter)
	}
	if c.containers != nil {
		c.containers.collect(ch)
	}
	kc, err := c.src.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(d.lost, err)
	} else {
		for _, l := range lostCauses {
			counter(d.lost, float64(l.get(&kc)), l.name)
		}
		counter(d.anomalies, float64(kc.Gaps), c.model.Name(), "gap")
		counter(d.missing, float64(kc.GapMissing), "gap")
		if n := kc.ResetsNoSocket; n != nil {
			counter(d.resetsNoSocket, float64(*n))
		}
	}
	progs, err := c.src.Programs()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(d.progRuns, err)
	} else {
		enabled := c.bpfStatsEnabled()
		attached := 0
		for _, p := range progs {
			if p.Attached {
				attached++
			}
			// Iterators run on demand; only attached programs and those
			// the kernel has counted runs for are worth a series.
			if !p.Attached && p.Runs == 0 {
				continue
			}
			if enabled || p.Runs > 0 {
				counter(d.progRuns, float64(p.Runs), p.Name)
				counter(d.progRunSec, float64(p.RunNs)/1e9, p.Name)
			}
			counter(d.progMisses, float64(p.RecursionMisses), p.Name)
		}
		gauge(d.progsAttached, float64(attached))
		gauge(d.statsEnabled, b2f(enabled))
	}
	c.collectSockets(ch, gauge, counter)
}

func (c *serveCollector) collectTotals(ch chan<- prometheus.Metric, counter func(*prometheus.Desc, float64, ...string)) {
	d := &c.d
	a := &c.tt.Agg
	edges := func(m *[model.NumStates][model.NumStates]uint64, extra ...string) {
		for o := range model.NumStates {
			for n := range model.NumStates {
				old, nw := model.State(o), model.State(n)
				v := m[o][n]
				if v == 0 && !c.linux.Allowed(old, nw) {
					continue
				}
				counter(d.transitions, float64(v), append([]string{old.String(), nw.String()}, extra...)...)
			}
		}
	}
	if len(c.tt.Ports) == 0 {
		edges(&a.Matrix)
	} else {
		edges(&c.tt.Ports[0], "other")
		for i, p := range c.tt.LabelPorts {
			edges(&c.tt.Ports[i+1], strconv.Itoa(int(p)))
		}
	}
	counter(d.anomalies, float64(a.Illegal(c.model)), c.model.Name(), "illegal")

	for _, s := range durationStates {
		ch <- c.histogram(d.stateDur, model.HistKind(s), s.String())
	}
	ch <- c.histogram(d.handshake, model.HistActiveOpen, "active")
	ch <- c.histogram(d.handshake, model.HistPassiveOpen, "passive")
	ch <- c.histogram(d.lifetime, model.HistLifetime)

	byCause := map[model.CloseCause]uint64{}
	for _, cc := range a.Causes() {
		byCause[cc.Cause] = cc.Count
	}
	for _, cc := range closeCauses {
		counter(d.closes, float64(byCause[cc]), cc.Cause.String(), cc.Detail)
	}
}

// histogram converts one kernel histogram: cumulative counts at the
// kernel's own bucket boundaries (histBounds), the exact sum the kernel
// keeps, in seconds.
func (c *serveCollector) histogram(desc *prometheus.Desc, k model.HistKind, labels ...string) prometheus.Metric {
	h := c.tt.Agg.Hists[k][:]
	buckets := make(map[float64]uint64, len(histBounds))
	var cum uint64
	next := 0
	for _, i := range histBounds {
		for ; next <= i; next++ {
			cum += h[next]
		}
		buckets[float64(uint64(1)<<(i+1))/1e6] = cum
	}
	return prometheus.MustNewConstHistogram(desc, model.HistCount(h), float64(c.tt.HistSumNs[k])/1e9, buckets, labels...)
}

// collectSockets reports the snapshot's counts, refreshed when older than
// snapEvery: a scrape storm shares one snapshot, and at most one runs at a
// time.
func (c *serveCollector) collectSockets(ch chan<- prometheus.Metric, gauge, counter func(*prometheus.Desc, float64, ...string)) {
	d := &c.d
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	if c.sockets == nil || time.Since(c.snapAt) >= c.snapEvery {
		c.refreshSnapshot()
	}
	if c.sockets != nil {
		for _, s := range socketStates {
			gauge(d.sockets, float64(c.sockets[s]), s.String())
		}
		gauge(d.snapTime, float64(c.snapAt.UnixNano())/1e9)
		gauge(d.snapDur, c.snapTook.Seconds())
		gauge(d.snapNetns, float64(c.namespaces[0]), "read")
		gauge(d.snapNetns, float64(c.namespaces[1]), "not_entered")
	}
	if c.stuck != nil {
		for _, s := range model.LifeOrder {
			if _, ok := c.thresholds[s]; ok {
				gauge(d.stuck, float64(c.stuck[s]), s.String())
			}
		}
	}
	counter(d.missing, float64(c.snapMissing), "snapshot")
	counter(d.snapErrors, float64(c.snapErrors))
}

// missingFound is what the snapshots' reconciliation proved missing so far.
func (c *serveCollector) missingFound() uint64 {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	return c.snapMissing
}

// refreshSnapshot takes a reconciling snapshot (the host's sockets by
// state; the sockets out of step, corrected and counted once) and lists the
// followed sockets for the stuck ones. Called with snapMu held.
func (c *serveCollector) refreshSnapshot() {
	start := time.Now()
	c.snapAt = start
	// The sockets are counted as the walk yields them, never kept: the
	// exporter's memory does not follow the host's socket count.
	counts := map[model.State]int{}
	tw := map[uint32]*timewaits{}
	s, err := c.src.Snapshot(tracer.SnapshotOptions{Reconcile: true, Visit: func(so *model.SocketInfo) {
		if so.State != model.Close {
			counts[so.State]++
		}
		if so.Kind == model.KindTimeWait {
			n := tw[so.Netns]
			if n == nil {
				n = &timewaits{}
				tw[so.Netns] = n
			}
			if so.State == model.FinWait2 {
				n.fw2++
			} else {
				n.tw++
			}
		}
	}})
	if err != nil {
		c.snapErrors++
	} else {
		c.snapTook = s.End.Sub(s.Start)
		c.addTimeWaitFromSockstat(s, tw, counts)
		c.sockets = counts
		c.namespaces = [2]int{}
		for _, n := range s.Namespaces {
			if n.Err != "" {
				c.namespaces[1]++
			} else {
				c.namespaces[0]++
			}
		}
		for _, o := range s.OutOfStep {
			if o.Reconciled && !o.LossSince {
				c.snapMissing += c.model.Missing(o.Tracked, o.Actual)
			}
		}
	}
	stuck := map[model.State]int{}
	err = c.src.VisitSockets(func(so *model.SocketInfo) {
		if th, ok := c.thresholds[so.State]; ok && so.Since >= th {
			stuck[so.State]++
		}
	})
	if err != nil {
		c.snapErrors++
		return
	}
	c.stuck = stuck
}

// addTimeWaitFromSockstat corrects the TIME_WAIT count: iter/tcp skips
// some timewait sockets (measured on 6.18: 2 of 5 in one namespace, both
// pairs sharing a local port), while each namespace's /proc/net/sockstat
// counts them all ("tw", timewait sockets of both families, FIN_WAIT2
// substate included). Per namespace that a process is in, TIME_WAIT is
// tw less the FIN_WAIT2 timewait sockets the snapshot saw, when that is
// more than the snapshot found.
func (c *serveCollector) addTimeWaitFromSockstat(s *tracer.Snapshot, seen map[uint32]*timewaits, counts map[model.State]int) {
	for _, ns := range s.Namespaces {
		dir, ok := strings.CutSuffix(ns.Path, "/ns/net")
		if !ok || !strings.HasPrefix(dir, "/proc/") || ns.Err != "" {
			continue
		}
		tw, ok := c.sockstatTW(dir + "/net/sockstat")
		if !ok {
			continue
		}
		n := seen[ns.Inode]
		if n == nil {
			n = &timewaits{}
		}
		if more := tw - n.fw2 - n.tw; more > 0 {
			counts[model.TimeWait] += more
		}
	}
}

// timewaits counts one namespace's timewait sockets the snapshot saw: in
// TIME_WAIT, and in the FIN_WAIT2 substate.
type timewaits struct{ tw, fw2 int }

// sockstatTW reads "tw N" from a sockstat file's TCP line.
func sockstatTW(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == "tw" {
				n, err := strconv.Atoi(f[i+1])
				return n, err == nil
			}
		}
	}
	return 0, false
}

func (c *serveCollector) bpfStatsEnabled() bool {
	b, err := os.ReadFile(c.statsFile)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// buildInfo is what --version says, as labels: the version, the commit,
// the Go version and cilium/ebpf's.
func buildInfo() [4]string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	v, c := version, commit
	if v == "devel" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	ebpf := "unknown"
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			c = s.Value
		}
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/cilium/ebpf" {
			ebpf = d.Version
		}
	}
	if c == "" {
		c = "unknown"
	}
	return [4]string{v, c, bi.GoVersion, ebpf}
}
