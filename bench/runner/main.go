// Command runner is tcpstate's load benchmark (`make bench`): it runs the
// same bounded loopback TCP load (bench/loadgen) with no tracer, under every
// tcpstate mode it finds (trace -o json --pid with the load generator's pid
// among them), and under peer tracers that are present (bpftrace running
// bench/bpftrace/tcpstates.bt; bcc's libbpf-tools tcpstates when given its
// path), each under every load (--clients: 4 and 16 concurrent clients, each
// load against its own baseline), interleaved over several rounds, and
// reports the medians in one table and as JSON.
//
// Before each load, with the tracer attached, it also times a getppid(2)
// loop of its own: the tax a tracer puts on every system call of the host
// (syscall tracepoints), against the baseline's. After the rounds, one long
// run of trace -o json (--long connections) gives its memory and CPU after
// millions of transitions.
//
// It needs root and Go only. Each run happens in a fresh network namespace,
// so the ~20k TIME_WAIT sockets a run leaves die with it instead of slowing
// the next one.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

type options struct {
	connections  int
	clients      []int
	rounds       int
	long         int
	pidDelay     time.Duration
	sysSamples   int
	sysCalls     int
	tcpstate     string
	bpftrace     string
	libbpf       string
	jsonPath     string
	only         []string
	installPeers bool
	markdown     bool
	list         bool
	drain        time.Duration
	quietWait    time.Duration
	quietPct     float64
	noisyPct     float64
	retries      int
	budget       time.Duration
	timeout      time.Duration
	warmup       bool
	abort        bool
}

func main() {
	var o options
	f := pflag.NewFlagSet("runner", pflag.ContinueOnError)
	f.SortFlags = false
	f.IntVar(&o.connections, "connections", 20000, "connections per run (10 TCP state transitions each)")
	f.IntSliceVar(&o.clients, "clients", []int{4, 16}, "concurrent clients of the load generator: each count is a load of its own, every configuration runs under each against that load's own baseline")
	f.IntVar(&o.rounds, "rounds", 5, "rounds; each runs every configuration under every load once, in a rotated order")
	f.IntVar(&o.long, "long", 1_000_000, "after the rounds, one run of trace -o json with this many connections (10 transitions each), for its peak memory and CPU per million transitions (0: none)")
	f.DurationVar(&o.pidDelay, "pid-start-delay", 2*time.Second, "for trace --pid: the load generator waits this long after listening, so the tracer started with its pid attaches before the first dial")
	f.IntVar(&o.sysSamples, "syscall-samples", 3, "samples of the getppid(2) loop per run (the best one counts)")
	f.IntVar(&o.sysCalls, "syscall-calls", 200_000, "getppid(2) calls per sample")
	f.StringVar(&o.tcpstate, "tcpstate", "", "tcpstate binary to test (default: build ./cmd/tcpstate into a temporary directory)")
	f.StringVar(&o.bpftrace, "bpftrace", "", "bpftrace binary (default: bpftrace from PATH; skipped with a note when absent)")
	f.StringVar(&o.libbpf, "libbpf-tcpstates", "", "a build of bcc's libbpf-tools tcpstates to compare with")
	f.StringVar(&o.jsonPath, "json", "", "write the results as JSON to this file (default bench-results/bench-DATE.json)")
	f.StringSliceVar(&o.only, "only", nil, "run only these configurations (comma-separated ids; see --list); the baseline 'none' always runs")
	f.BoolVar(&o.installPeers, "install-peers", false, "apt-get install -y bpftrace first, if it is missing")
	f.BoolVar(&o.markdown, "markdown", false, "also print the table as Markdown")
	f.BoolVar(&o.list, "list", false, "list the configurations found and exit")
	f.DurationVar(&o.drain, "drain", 500*time.Millisecond, "after the load, wait at least this long, then until the tracer is idle, before stopping it")
	f.DurationVar(&o.quietWait, "quiet-wait", 20*time.Second, "before each run, wait at most this long for the machine to be idle")
	f.Float64Var(&o.quietPct, "quiet-threshold", 20, "idle means less than this percent of all CPUs busy")
	f.Float64Var(&o.noisyPct, "noisy-threshold", 20, "run again a run during which other work used more than this percent of all CPUs")
	f.IntVar(&o.retries, "retries", 2, "how often a disturbed run is run again")
	f.DurationVar(&o.budget, "budget", 20*time.Minute, "after this long, stop waiting for quiet and stop retrying")
	f.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up on one load run after this long")
	f.BoolVar(&o.abort, "abort", false, "the load's clients close with SO_LINGER 0: every connection ends with a reset (6 transitions, the reset programs run on both sides), to measure what resets cost")
	f.BoolVar(&o.warmup, "warmup", true, "run the load once, unmeasured, before the first round")
	f.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: go run ./bench/runner [flags]   (as root)\n\n%s", f.FlagUsages())
	}
	if err := f.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, &o)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	switch {
	case o.connections < 1 || o.connections > 200_000:
		return fmt.Errorf("--connections %d: must be from 1 to 200000", o.connections)
	case o.rounds < 1 || o.rounds > 50:
		return fmt.Errorf("--rounds %d: must be from 1 to 50", o.rounds)
	case o.long < 0 || o.long > 1_000_000:
		return fmt.Errorf("--long %d: must be from 0 (none) to 1000000", o.long)
	case o.sysSamples < 1 || o.sysCalls < 1000:
		return fmt.Errorf("--syscall-samples %d, --syscall-calls %d: need at least 1 sample of 1000 calls", o.sysSamples, o.sysCalls)
	case o.pidDelay < 0:
		return fmt.Errorf("--pid-start-delay %v: must not be negative", o.pidDelay)
	}
	if err := checkClients(o.clients); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the benchmark loads BPF programs and creates network namespaces: run it as root")
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(tmpBase(), "tcpstate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	logf("building the load generator")
	loadgen := filepath.Join(tmp, "loadgen")
	if err := goBuild(ctx, root, loadgen, "./bench/loadgen"); err != nil {
		return err
	}
	if o.tcpstate == "" {
		logf("building tcpstate")
		o.tcpstate = filepath.Join(tmp, "tcpstate")
		if err := goBuild(ctx, root, o.tcpstate, "./cmd/tcpstate"); err != nil {
			return err
		}
	}

	var notes []string
	if o.installPeers {
		if _, err := exec.LookPath("bpftrace"); err != nil && o.bpftrace == "" {
			if err := installBpftrace(ctx); err != nil {
				return err
			}
		}
	}
	for _, p := range []*string{&o.bpftrace, &o.libbpf} {
		if *p != "" {
			abs, err := exec.LookPath(*p)
			if err != nil {
				return fmt.Errorf("peer tracer %s: %w", *p, err)
			}
			*p = abs
		}
	}
	if o.bpftrace == "" {
		if p, err := exec.LookPath("bpftrace"); err == nil {
			o.bpftrace = p
		} else {
			notes = append(notes, "bpftrace not found: skipped (--install-peers installs Debian's)")
		}
	}
	if o.libbpf == "" {
		notes = append(notes, "libbpf-tools tcpstates: not compared (give a build with --libbpf-tcpstates PATH)")
	}
	if o.bpftrace != "" || o.libbpf != "" {
		if err := ensureTracefs(); err != nil {
			notes = append(notes, fmt.Sprintf("peers skipped: %v", err))
			o.bpftrace, o.libbpf = "", ""
		}
	}

	configs := []config{{ID: "none", Label: "no tracer", Kind: kindNone}}
	tc, tnotes, err := discoverTcpstate(ctx, o.tcpstate)
	if err != nil {
		return err
	}
	notes = append(notes, tnotes...)
	configs = append(configs, tc...)
	configs = append(configs, peerConfigs(o.bpftrace, filepath.Join(root, "bench", "bpftrace", "tcpstates.bt"), o.libbpf)...)
	if len(o.only) > 0 {
		if configs, err = selectConfigs(configs, o.only); err != nil {
			return err
		}
	}
	if o.list {
		for _, c := range configs {
			fmt.Printf("%-20s %s\n", c.ID, c.Label)
		}
		return nil
	}

	// Kernel BPF statistics (run_time_ns, run_cnt) count only while enabled.
	// BPF_ENABLE_STATS holds them on for as long as its fd is open, and the
	// kernel restores the previous state when it closes, even if the runner
	// dies; kernel.bpf_stats_enabled is the fallback.
	statsOn := true
	if closer, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer closer.Close()
	} else if restore, err2 := sysctlStats(); err2 == nil {
		defer restore()
	} else {
		statsOn = false
		notes = append(notes, fmt.Sprintf("BPF statistics unavailable (%v; %v): no BPF run times, and peers cannot be checked for attachment", err, err2))
	}

	e := &env{loadgen: loadgen, connections: o.connections, clients: o.clients[0], timeout: o.timeout,
		drain: o.drain, quietWait: o.quietWait, quietPct: o.quietPct, noisyPct: o.noisyPct, retries: o.retries,
		deadline: time.Now().Add(o.budget), tmp: tmp, statsOn: statsOn,
		sysSamples: o.sysSamples, sysCalls: o.sysCalls, pidDelay: o.pidDelay, abort: o.abort}
	doc := newDocument(o, configs, notes)
	jobs := makeJobs(configs, o.clients)
	logf("%d configurations x %d loads (%s clients) x %d rounds, %d connections each (%d transitions); each run in a fresh network namespace",
		len(configs), len(o.clients), joinInts(o.clients), o.rounds, o.connections, 10*o.connections+2)
	if o.warmup {
		logf("warm-up run (not measured)")
		w := *e
		w.connections = max(1, o.connections/4)
		w.retries = 0
		if r, _ := runOne(ctx, &w, configs[0], 0, 0); r.Error != "" {
			return fmt.Errorf("warm-up: %s", r.Error)
		}
	}
	for round := 1; round <= o.rounds; round++ {
		// Rotate the order each round, so no configuration always runs
		// first or right after the same one.
		n := len(jobs)
		for i := range n {
			j := jobs[(i+round-1)%n]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			je := *e
			je.clients = j.clients
			r, discarded := runOne(ctx, &je, j.c, round, i+1)
			label := j.label(o.clients)
			for _, d := range discarded {
				logRun(j.c, label, d, o.rounds)
			}
			logRun(j.c, label, r, o.rounds)
			doc.Runs = append(doc.Runs, r)
			doc.Discarded = append(doc.Discarded, discarded...)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	doc.summarize(configs, o.clients)
	if o.long > 0 {
		if i := slices.IndexFunc(tc, func(c config) bool { return c.ID == "trace-json" }); i < 0 {
			doc.Notes = append(doc.Notes, "long run skipped: this tcpstate has no trace -o json")
		} else {
			doc.Long, doc.LongLabel = runLong(ctx, e, tc[i], o.long), tc[i].Label
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}

	fmt.Println()
	doc.printTable(os.Stdout, false)
	doc.printLong(os.Stdout)
	doc.printNotes(os.Stdout)
	if o.markdown {
		fmt.Println()
		doc.printTable(os.Stdout, true)
		doc.printLong(os.Stdout)
	}
	path := o.jsonPath
	if path == "" {
		path = filepath.Join("bench-results", "bench-"+doc.Date.Format("20060102-150405")+".json")
	}
	if err := doc.write(path); err != nil {
		return err
	}
	fmt.Printf("\nresults: %s\n", path)
	if doc.failed() {
		return errors.New("some runs failed (see the table and the JSON)")
	}
	return nil
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
}

func logRun(c config, label string, r *runResult, rounds int) {
	round := fmt.Sprintf("round %d/%d", r.Round, rounds)
	if r.Round == 0 {
		round = "long run"
	}
	if r.Error != "" {
		logf("%s %-40s FAILED: %s", round, label, r.Error)
		return
	}
	quiet := ""
	if !r.Quiet {
		quiet = fmt.Sprintf("  (machine %.0f%% busy before the run)", r.BusyBeforePct)
	}
	if r.Discarded != "" {
		quiet += "  DISCARDED: " + r.Discarded
	}
	getppid := ""
	if r.GetppidNs > 0 {
		getppid = fmt.Sprintf("  getppid %.1f ns", r.GetppidNs)
	}
	if c.Kind == kindNone {
		logf("%s %-40s %7.0f conn/s%s  others %.0f%% CPU%s", round, label, r.Load.ConnPerSec, getppid, r.OthersCPUPct, quiet)
		return
	}
	recv := "received ?"
	if r.ReceivedKnown {
		recv = fmt.Sprintf("received %d/%d (ring %d, recursion %d, other %d)", r.Received, r.Expected, r.LostRingbuf, r.LostRecursion, r.LostOther)
	}
	logf("%s %-40s %7.0f conn/s  %s  cpu %.2f s%s  others %.0f%% CPU%s",
		round, label, r.Load.ConnPerSec, recv, r.TracerCPUTotal-r.TracerCPUStartup, getppid, r.OthersCPUPct, quiet)
}

// job is one configuration under one load (a count of concurrent clients).
type job struct {
	c       config
	clients int
}

// makeJobs lists every configuration under every load, load by load.
func makeJobs(configs []config, clients []int) []job {
	var out []job
	for _, n := range clients {
		for _, c := range configs {
			out = append(out, job{c, n})
		}
	}
	return out
}

// label is the configuration's label, with the client count when it is not
// the first load's.
func (j job) label(clients []int) string { return rowLabel(j.c.Label, j.clients, clients) }

func rowLabel(label string, n int, clients []int) string {
	if len(clients) > 0 && n != clients[0] {
		return fmt.Sprintf("%s (%d clients)", label, n)
	}
	return label
}

// checkClients validates --clients: at least one count, each from 1 to 256,
// none twice.
func checkClients(clients []int) error {
	if len(clients) == 0 {
		return errors.New("--clients: give at least one count")
	}
	for i, n := range clients {
		if n < 1 || n > 256 {
			return fmt.Errorf("--clients %d: must be from 1 to 256", n)
		}
		if slices.Contains(clients[:i], n) {
			return fmt.Errorf("--clients %d: given twice", n)
		}
	}
	return nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// runLong runs trace -o json once under a long load (connections
// connections, the first load's clients), for the tracer's peak memory and
// CPU per million transitions after millions of them. It waits for quiet
// like every run, is not retried, and has a timeout that grows with it.
func runLong(ctx context.Context, e *env, c config, connections int) *runResult {
	l := *e
	l.connections = connections
	l.retries = 0
	l.sysSamples = 0
	// At least 2,000 connections a second: 500 s for a million.
	l.timeout = max(e.timeout, time.Duration(connections/2000)*time.Second)
	l.deadline = time.Now().Add(l.quietWait + time.Second)
	logf("long run: %s, %d connections (%d transitions), %d clients", c.Label, connections, 10*connections+2, l.clients)
	r, _ := runOne(ctx, &l, c, 0, 0)
	logRun(c, c.Label, r, 0)
	return r
}

func selectConfigs(all []config, only []string) ([]config, error) {
	var ids []string
	for _, c := range all {
		ids = append(ids, c.ID)
	}
	out := []config{all[0]} // the baseline
	for _, id := range only {
		id = strings.TrimSpace(id)
		i := slices.Index(ids, id)
		if i < 0 {
			return nil, fmt.Errorf("--only %q: no such configuration here (have: %s)", id, strings.Join(ids, ", "))
		}
		if i > 0 && !slices.ContainsFunc(out, func(c config) bool { return c.ID == id }) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, goCmd(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root (go env GOMOD): %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the benchmark from the tcpstate repository (go run ./bench/runner)")
	}
	return filepath.Dir(mod), nil
}

func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func goBuild(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, goCmd(), "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s: %w", pkg, err)
	}
	return nil
}

// tmpBase puts peer outputs (tens of MB per run) on tmpfs when there is one.
func tmpBase() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err == nil && st.Type == unix.TMPFS_MAGIC && unix.Access("/dev/shm", unix.W_OK) == nil {
		return "/dev/shm"
	}
	return os.TempDir()
}

func installBpftrace(ctx context.Context) error {
	logf("installing bpftrace (apt-get install -y bpftrace)")
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "bpftrace")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.Run()
	}
	if err := install(); err == nil {
		return nil
	}
	logf("apt-get install failed; running apt-get update and trying again")
	up := exec.CommandContext(ctx, "apt-get", "update")
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	if err := up.Run(); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	if err := install(); err != nil {
		return fmt.Errorf("apt-get install -y bpftrace: %w", err)
	}
	return nil
}

// ensureTracefs mounts tracefs if nothing has: bpftrace and libbpf-tools
// attach to the classic tracepoint through it.
func ensureTracefs() error {
	const mnt = "/sys/kernel/tracing"
	if _, err := os.Stat(mnt + "/events"); err == nil {
		return nil
	}
	if err := unix.Mount("nodev", mnt, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted at %s and mounting it failed: %w", mnt, err)
	}
	return nil
}

// sysctlStats sets kernel.bpf_stats_enabled=1 and returns a function that
// restores the old value.
func sysctlStats() (func(), error) {
	const p = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return nil, err
	}
	return func() { _ = os.WriteFile(p, old, 0o644) }, nil
}
