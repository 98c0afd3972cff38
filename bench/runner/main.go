// Command runner is tcpstate's load benchmark (`make bench`): it runs the
// same bounded loopback TCP load (bench/loadgen) with no tracer, under every
// tcpstate mode it finds, and under peer tracers that are present (bpftrace
// running bench/bpftrace/tcpstates.bt; bcc's libbpf-tools tcpstates when given
// its path), interleaved over several rounds, and reports the medians in one
// table and as JSON.
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
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

type options struct {
	connections  int
	clients      int
	rounds       int
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
}

func main() {
	var o options
	f := pflag.NewFlagSet("runner", pflag.ContinueOnError)
	f.SortFlags = false
	f.IntVar(&o.connections, "connections", 20000, "connections per run (10 TCP state transitions each)")
	f.IntVar(&o.clients, "clients", 4, "concurrent clients of the load generator")
	f.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every configuration once, in a rotated order")
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
	f.DurationVar(&o.budget, "budget", 8*time.Minute, "after this long, stop waiting for quiet and stop retrying")
	f.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up on one load run after this long")
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
	case o.clients < 1 || o.clients > 256:
		return fmt.Errorf("--clients %d: must be from 1 to 256", o.clients)
	case o.rounds < 1 || o.rounds > 50:
		return fmt.Errorf("--rounds %d: must be from 1 to 50", o.rounds)
	case os.Geteuid() != 0:
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

	e := &env{loadgen: loadgen, connections: o.connections, clients: o.clients, timeout: o.timeout,
		drain: o.drain, quietWait: o.quietWait, quietPct: o.quietPct, noisyPct: o.noisyPct, retries: o.retries,
		deadline: time.Now().Add(o.budget), tmp: tmp, statsOn: statsOn}
	doc := newDocument(o, configs, notes)
	logf("%d configurations x %d rounds, %d connections each (%d transitions), %d clients; each run in a fresh network namespace",
		len(configs), o.rounds, o.connections, 10*o.connections+2, o.clients)
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
		n := len(configs)
		for i := range n {
			c := configs[(i+round-1)%n]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, discarded := runOne(ctx, e, c, round, i+1)
			for _, d := range discarded {
				logRun(c, d, o.rounds)
			}
			logRun(c, r, o.rounds)
			doc.Runs = append(doc.Runs, r)
			doc.Discarded = append(doc.Discarded, discarded...)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	doc.summarize(configs)

	fmt.Println()
	doc.printTable(os.Stdout, false)
	doc.printNotes(os.Stdout)
	if o.markdown {
		fmt.Println()
		doc.printTable(os.Stdout, true)
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

func logRun(c config, r *runResult, rounds int) {
	if r.Error != "" {
		logf("round %d/%d %-26s FAILED: %s", r.Round, rounds, c.Label, r.Error)
		return
	}
	quiet := ""
	if !r.Quiet {
		quiet = fmt.Sprintf("  (machine %.0f%% busy before the run)", r.BusyBeforePct)
	}
	if r.Discarded != "" {
		quiet += "  DISCARDED: " + r.Discarded
	}
	if c.Kind == kindNone {
		logf("round %d/%d %-26s %7.0f conn/s  others %.0f%% CPU%s", r.Round, rounds, c.Label, r.Load.ConnPerSec, r.OthersCPUPct, quiet)
		return
	}
	recv := "received ?"
	if r.ReceivedKnown {
		recv = fmt.Sprintf("received %d/%d (ring %d, recursion %d, other %d)", r.Received, r.Expected, r.LostRingbuf, r.LostRecursion, r.LostOther)
	}
	logf("round %d/%d %-26s %7.0f conn/s  %s  cpu %.2f s  others %.0f%% CPU%s",
		r.Round, rounds, c.Label, r.Load.ConnPerSec, recv, r.TracerCPUTotal-r.TracerCPUStartup, r.OthersCPUPct, quiet)
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
