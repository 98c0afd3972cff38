package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// loadResult is what bench/loadgen prints (its Result type).
type loadResult struct {
	Connections         int     `json:"connections"`
	Clients             int     `json:"clients"`
	Errors              int     `json:"errors"`
	Seconds             float64 `json:"seconds"`
	ConnPerSec          float64 `json:"conn_per_s"`
	ExpectedTransitions int     `json:"expected_transitions"`
	Netns               uint64  `json:"netns"`
	Addr                string  `json:"addr"`
}

// runResult is one configuration in one round.
type runResult struct {
	Config  string `json:"config"`
	Clients int    `json:"clients"` // the load's concurrent clients
	Round   int    `json:"round"`
	Order   int    `json:"order"` // position within the round
	Error   string `json:"error,omitempty"`
	// Discarded says why this run was replaced by another (not in medians).
	Discarded string `json:"discarded,omitempty"`
	// Started and WallSeconds: when the run began (waiting for quiet
	// included) and how long it took in all.
	Started     time.Time `json:"started"`
	WallSeconds float64   `json:"wall_s"`

	// Before the run: how busy the machine was, and whether it got quiet.
	BusyBeforePct float64 `json:"busy_before_pct"`
	Quiet         bool    `json:"quiet"`

	// GetppidNs: ns per getppid(2) call from the runner itself, the best
	// of the samples, with the tracer attached and before the load (no
	// tracer: the baseline); GetppidOthersPct: percent of all CPUs that
	// anything but the runner (the tracer included) used meanwhile.
	GetppidNs        float64 `json:"getppid_ns,omitempty"`
	GetppidOthersPct float64 `json:"getppid_others_cpu_pct,omitempty"`
	// Syscall tracepoints attached around the getppid samples and after the
	// load: the tracer's own (BPF links), and other processes' (they slow
	// every system call: the run counts as disturbed).
	OwnSyscallTracepoints     int      `json:"own_syscall_tracepoints"`
	ForeignSyscallTracepoints []string `json:"foreign_syscall_tracepoints,omitempty"`
	// LoadgenPid: the process a pid-filtered tracer was given.
	LoadgenPid int `json:"loadgen_pid,omitempty"`

	Load loadResult `json:"load"`
	// Percent of all CPUs used during the load by anything but the load
	// generator and the tracer (other people's jobs; kernel workers).
	OthersCPUPct float64 `json:"others_cpu_pct"`
	LoadgenCPU   float64 `json:"loadgen_cpu_s"`
	// BPF programs other than the tracer's that ran during the load (another
	// tracer on the machine: it slows the load too).
	ForeignBPFRuns uint64 `json:"foreign_bpf_runs"`
	ForeignBPFNs   uint64 `json:"foreign_bpf_ns"`

	Expected      uint64 `json:"expected"`
	Received      uint64 `json:"received"`
	ReceivedKnown bool   `json:"received_known"`
	// ReceivedFrom says what Received counts: "events" (delivered to user
	// space), "kernel" (transitions the tracer's BPF program ran for: modes
	// that check or count in the kernel) or "lines" (a peer's output lines).
	ReceivedFrom string `json:"received_from,omitempty"`
	// Lost by cause: the tracer's own counters; LostOther is whatever is
	// missing beyond them (for tcpstate also its held-back losses, and what
	// the kernel skips without counting). ExtraEvents: received more than
	// expected (tcpstate counts every namespace's transitions).
	LostRingbuf   uint64 `json:"lost_ringbuf"`
	LostRecursion uint64 `json:"lost_recursion"`
	LostOther     uint64 `json:"lost_other"`
	ExtraEvents   uint64 `json:"extra_events"`
	// What tcpstate's summary says itself: "lost" (all causes), and
	// "missing" when it reports one (transitions it knows it missed).
	LostReported uint64 `json:"lost_reported,omitempty"`
	Missing      uint64 `json:"missing,omitempty"`
	MissingKnown bool   `json:"missing_known,omitempty"`

	TracerCPUTotal   float64 `json:"tracer_cpu_total_s"`   // from wait4 rusage
	TracerCPUStartup float64 `json:"tracer_cpu_startup_s"` // until attached
	TracerCPULoad    float64 `json:"tracer_cpu_load_s"`    // during the load itself
	CPUPerM          float64 `json:"tracer_cpu_s_per_m"`   // (total - startup) per million expected transitions
	MaxRSSMiB        float64 `json:"max_rss_mib"`

	// BPF programs of the tracer, between attach and stop.
	BPF          progDelta `json:"bpf"`
	BPFNsPerEv   float64   `json:"bpf_ns_per_event"`       // the set_state program
	BPFAllNsPerT float64   `json:"bpf_all_ns_per_transit"` // all programs / expected transitions

	// DrainSeconds: from the end of the load until the tracer was idle.
	DrainSeconds float64 `json:"drain_s"`

	ExitCode int               `json:"exit_code"`
	Summary  map[string]any    `json:"summary,omitempty"` // tcpstate's --summary-json
	Tail     string            `json:"stderr_tail,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

type env struct {
	loadgen     string
	connections int
	clients     int
	timeout     time.Duration
	drain       time.Duration
	quietWait   time.Duration
	quietPct    float64
	noisyPct    float64
	retries     int
	deadline    time.Time // after it: no more waiting for quiet, no retries
	tmp         string
	statsOn     bool
	// The getppid(2) loop: samples of calls each (0 samples: not measured).
	sysSamples, sysCalls int
	// pidDelay: how long a load generator traced by pid waits after
	// listening before it dials.
	pidDelay time.Duration
	// abort: the load's clients close with a reset (loadgen --abort).
	abort bool
}

// runOne runs the load once under c. A run that other work on the machine
// disturbed (others used more than e.noisyPct of the CPUs during the load)
// is run again, e.retries times at most; the discarded runs are returned too.
// After e.deadline it neither waits for quiet nor retries.
func runOne(ctx context.Context, e *env, c config, round, order int) (kept *runResult, discarded []*runResult) {
	for attempt := 0; ; attempt++ {
		r := &runResult{Config: c.ID, Clients: e.clients, Round: round, Order: order, Started: time.Now()}
		wait := e.quietWait
		if time.Now().After(e.deadline) {
			wait = 0
		}
		r.BusyBeforePct, r.Quiet = waitQuiet(ctx, wait, e.quietPct)
		var err error
		if c.Kind == kindNone {
			measureGetppid(e, r, 0)
			err = runLoad(ctx, e, r, 0, nil, nil)
			noteForeignSyscallTracepoints(r, 0)
		} else {
			err = runTraced(ctx, e, c, r)
		}
		r.WallSeconds = time.Since(r.Started).Seconds()
		if err != nil {
			r.Error = err.Error()
			return r, discarded
		}
		why := disturbance(r, e.noisyPct)
		if why == "" || attempt >= e.retries || time.Now().After(e.deadline) || ctx.Err() != nil {
			return r, discarded
		}
		r.Discarded = why + "; run again"
		discarded = append(discarded, r)
	}
}

// loadProc is one bench/loadgen process, started in a fresh network
// namespace. Its stdout and stderr may be read once done is closed.
type loadProc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error // cmd.Wait's, once done is closed
}

// startLoad starts bench/loadgen with e's connections and clients, and
// extra arguments.
func startLoad(ctx context.Context, e *env, extra ...string) (*loadProc, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout+30*time.Second)
	args := append([]string{"--new-netns",
		"--connections", strconv.Itoa(e.connections), "--clients", strconv.Itoa(e.clients),
		"--timeout", e.timeout.String()}, extra...)
	if e.abort {
		args = append(args, "--abort")
	}
	lp := &loadProc{done: make(chan struct{})}
	lp.cmd = exec.CommandContext(ctx, e.loadgen, args...)
	lp.cmd.Stdout, lp.cmd.Stderr = &lp.stdout, &lp.stderr
	lp.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	lp.cmd.Cancel = func() error { return syscall.Kill(-lp.cmd.Process.Pid, syscall.SIGKILL) }
	if err := lp.cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("starting the load generator: %w", err)
	}
	go func() {
		lp.err = lp.cmd.Wait()
		cancel()
		close(lp.done)
	}()
	return lp, nil
}

// wait waits for the load generator to exit.
func (lp *loadProc) wait() error {
	<-lp.done
	return lp.err
}

// kill ends the load generator if it still runs (its namespace child too:
// they share its process group) and waits for it.
func (lp *loadProc) kill() {
	select {
	case <-lp.done:
	default:
		_ = syscall.Kill(-lp.cmd.Process.Pid, syscall.SIGKILL)
		<-lp.done
	}
}

// runLoad runs bench/loadgen in a fresh network namespace and fills r.Load:
// started, if not nil, is a load generator already running (it has not
// dialled yet); else runLoad starts one. tracerPid, if not 0, is sampled for
// the CPU it uses during the load.
func runLoad(ctx context.Context, e *env, r *runResult, tracerPid int, own map[uint64]progStat, started *loadProc) error {
	var t0 float64
	if tracerPid != 0 {
		t0, _ = processCPU(tracerPid)
	}
	progs0 := systemProgStats()
	sys0, _ := readCPUTimes()
	lp := started
	var err error
	if lp == nil {
		if lp, err = startLoad(ctx, e); err != nil {
			return err
		}
	}
	err = lp.wait()
	sys1, _ := readCPUTimes()
	r.ForeignBPFRuns, r.ForeignBPFNs = foreignRuns(progs0, systemProgStats(), own)
	var t1 float64
	if tracerPid != 0 {
		t1, _ = processCPU(tracerPid)
		r.TracerCPULoad = t1 - t0
	}
	if err != nil {
		return fmt.Errorf("load generator: %w: %s", err, lastLines(lp.stderr.String(), 5))
	}
	if err := json.Unmarshal(lp.stdout.Bytes(), &r.Load); err != nil {
		return fmt.Errorf("load generator printed %q: %w", lp.stdout.String(), err)
	}
	if ru, ok := lp.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.LoadgenCPU = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	// Others' share: all busy CPU time (including softirq, which the kernel
	// books apart from tasks) less what the load generator and the tracer
	// were charged. Softirq work done for the load is booked to neither, so
	// on an idle machine this is a few percent, not zero.
	if dt := float64(sys1.total - sys0.total); dt > 0 {
		busy := float64((sys1.busy+sys1.irq)-(sys0.busy+sys0.irq)) / userHZ
		capacity := dt / userHZ
		r.OthersCPUPct = max(0, 100*(busy-r.LoadgenCPU-r.TracerCPULoad)/capacity)
	}
	r.Expected = uint64(r.Load.ExpectedTransitions)
	return nil
}

// waitPidFile waits until the load generator has written its pid file (it
// does once it listens) and returns the pid and when it was seen. On an error
// the load generator is ended.
func waitPidFile(ctx context.Context, path string, lp *loadProc, limit time.Duration) (int, time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid, time.Now(), nil
			}
		}
		select {
		case <-lp.done:
			return 0, time.Time{}, fmt.Errorf("the load generator exited before writing its pid file (%v): %s", lp.err, lastLines(lp.stderr.String(), 5))
		case <-ctx.Done():
			lp.kill()
			return 0, time.Time{}, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			lp.kill()
			return 0, time.Time{}, fmt.Errorf("the load generator wrote no pid file within %v: %s", limit, lastLines(lp.stderr.String(), 5))
		}
	}
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// stderrWatch keeps the tail of a tracer's stderr and reports the first line
// containing a substring.
type stderrWatch struct {
	mu    sync.Mutex
	lines []string
	ready chan struct{}
	once  sync.Once
	done  chan struct{}
}

func watchStderr(rd io.Reader, readyLine string) *stderrWatch {
	w := &stderrWatch{ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			w.mu.Lock()
			w.lines = append(w.lines, line)
			if len(w.lines) > 400 {
				w.lines = w.lines[len(w.lines)-200:]
			}
			w.mu.Unlock()
			if readyLine != "" && strings.Contains(line, readyLine) {
				w.once.Do(func() { close(w.ready) })
			}
		}
		// Drain whatever is left if a line was too long.
		io.Copy(io.Discard, rd)
	}()
	return w
}

func (w *stderrWatch) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// runTraced starts the tracer, waits until it is attached, measures the
// getppid(2) loop, runs the load, lets the tracer drain, stops it with
// SIGINT, and collects its figures.
//
// A configuration that traces the load generator's pid (c.PidFilter) starts
// the load generator first, with a start delay: it writes its pid once it
// listens, the tracer is started with that pid, and must be attached (and the
// getppid loop done) before the delay ends and the first dial happens.
func runTraced(ctx context.Context, e *env, c config, r *runResult) error {
	dir, err := os.MkdirTemp(e.tmp, c.ID+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	argv := slices.Clone(c.Argv)
	var (
		lp      *loadProc
		pidSeen time.Time
	)
	if c.PidFilter {
		pidPath := filepath.Join(dir, "loadgen.pid")
		if lp, err = startLoad(ctx, e, "--pid-file", pidPath, "--start-delay", e.pidDelay.String()); err != nil {
			return err
		}
		defer lp.kill()
		if r.LoadgenPid, pidSeen, err = waitPidFile(ctx, pidPath, lp, 30*time.Second); err != nil {
			return err
		}
		argv = append(argv, "--pid", strconv.Itoa(r.LoadgenPid))
	}
	var scrapeAddr string
	if c.Scrape {
		if scrapeAddr, err = freeLoopbackAddr(); err != nil {
			return err
		}
		argv = append(argv, "--listen", scrapeAddr)
	}
	summaryPath := filepath.Join(dir, "summary.json")
	if c.Summary {
		argv = append(argv, "--summary-json", summaryPath)
	}
	// tcpstate's output goes to /dev/null, as `> /dev/null` would send it;
	// a peer's goes to a file (on tmpfs when there is one), to be counted.
	outPath := os.DevNull
	if c.Kind != kindTcpstate {
		outPath = filepath.Join(dir, "out.txt")
	}
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = out
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	// Its own process group: a Ctrl-C on the terminal reaches the runner,
	// which stops the tracer itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.Label, err)
	}
	pid := cmd.Process.Pid
	watch := watchStderr(errPipe, c.ReadyLine)
	exited := make(chan error, 1)
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
			r.Extra = addExtra(r.Extra, "killed", "did not exit within 30 s of SIGINT")
		}
	}
	go func() {
		<-watch.done
		exited <- cmd.Wait()
	}()
	defer stop()

	before, err := waitAttached(ctx, c, pid, watch, exited)
	if err != nil {
		stopped = true
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return fmt.Errorf("%s did not attach: %w: %s", c.Label, err, lastLines(watch.text(), 8))
	}
	r.TracerCPUStartup, _ = processCPU(pid)
	var sc *scraper
	if c.Scrape {
		// Scrapes cost the tracer CPU and are part of what is measured.
		sc = startScraper(scrapeAddr)
		defer func() { r.Extra = sc.finish(r.Extra) }()
	}
	measureGetppid(e, r, pid)
	if c.PidFilter {
		// The load generator dials pidDelay after it listened, which was
		// at most one poll before pidSeen.
		late := time.Since(pidSeen)
		if late > e.pidDelay-50*time.Millisecond {
			return fmt.Errorf("%s attached %v after the load generator listened, too close to --pid-start-delay %v (the first transitions may have come before it): raise --pid-start-delay",
				c.Label, late.Round(time.Millisecond), e.pidDelay)
		}
		// Sample the CPU times from just before the first dial.
		time.Sleep(e.pidDelay - late - 20*time.Millisecond)
	}

	loadErr := runLoad(ctx, e, r, pid, before, lp)
	noteForeignSyscallTracepoints(r, pid)
	if loadErr == nil && c.PidFilter {
		// The listener's CLOSE->LISTEN came before the tracer knew the pid.
		r.Expected--
	}
	if loadErr == nil {
		r.DrainSeconds = waitCaughtUp(ctx, pid, outPath, e.drain).Seconds()
	}
	after, _ := progStats(pid)
	r.BPF = diffProgs(before, after)
	if sc != nil {
		r.Extra = sc.finish(r.Extra) // before SIGINT: a refused scrape is not a failure
	}
	stop()
	if loadErr != nil {
		return loadErr
	}
	st := cmd.ProcessState
	r.ExitCode = st.ExitCode()
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		r.TracerCPUTotal = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
		r.MaxRSSMiB = float64(ru.Maxrss) / 1024
	}
	if r.Expected > 0 {
		r.CPUPerM = (r.TracerCPUTotal - r.TracerCPUStartup) / (float64(r.Expected) / 1e6)
		r.BPFAllNsPerT = float64(r.BPF.RunTimeNs) / float64(r.Expected)
	}
	if r.BPF.BusiestRunCnt > 0 {
		r.BPFNsPerEv = float64(r.BPF.BusiestRunTimeNs) / float64(r.BPF.BusiestRunCnt)
	}
	r.Tail = lastLines(watch.text(), 12)
	if r.ExitCode != 0 {
		// Keep the whole story (a Go panic starts with "panic:").
		r.Tail = lastLines(watch.text(), 150)
		return fmt.Errorf("%s exited with status %d after SIGINT: %s", c.Label, r.ExitCode, panicOrTail(watch.text()))
	}

	switch c.Kind {
	case kindTcpstate:
		if c.Summary {
			if err := readTcpstateSummary(summaryPath, c.Aggregates, r); err != nil {
				return err
			}
		}
		if !r.ReceivedKnown && e.statsOn {
			// No summary: the main program's runs are the transitions
			// it saw; the kernel counts what it skipped.
			r.Received, r.ReceivedKnown, r.ReceivedFrom = r.BPF.BusiestRunCnt, true, "kernel"
			r.LostRecursion = r.BPF.RecursionMisses
		}
	case kindBpftrace:
		n, lost, err := countBpftrace(outPath, r.Load.Netns)
		if err != nil {
			return err
		}
		r.Received, r.ReceivedKnown, r.ReceivedFrom = n, true, "lines"
		r.LostRingbuf = lost + bpftraceLost(watch.text())
		r.LostRecursion = r.BPF.RecursionMisses
	case kindLibbpf:
		port := 0
		if _, p, err := net.SplitHostPort(r.Load.Addr); err == nil {
			port, _ = strconv.Atoi(p)
		}
		n, err := countLibbpf(outPath, port)
		if err != nil {
			return err
		}
		r.Received, r.ReceivedKnown, r.ReceivedFrom = n, true, "lines"
		r.LostRingbuf = perfLost(watch.text())
		r.LostRecursion = r.BPF.RecursionMisses
	}
	if r.ReceivedKnown {
		accounted := r.Received + r.LostRingbuf + r.LostRecursion
		if r.ReceivedFrom == "kernel" {
			// The program's runs include those whose ring reservation failed.
			accounted = r.Received + r.LostRecursion
		}
		if accounted < r.Expected {
			r.LostOther = r.Expected - accounted
		}
		if r.Received > r.Expected {
			r.ExtraEvents = r.Received - r.Expected
		}
	}
	return nil
}

// panicOrTail picks the lines that explain a failure: a Go panic's message
// and the first frames, or else the last lines.
func panicOrTail(stderr string) string {
	if i := strings.Index(stderr, "panic:"); i >= 0 {
		return lastLines(firstLines(stderr[i:], 8), 8)
	}
	return lastLines(stderr, 6)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// waitCaughtUp lets the tracer work through what is still in its buffers
// before it is stopped (bpftrace, for one, drops what is left in its perf
// buffers on SIGINT without counting it): it waits at least min, then until
// the tracer used no CPU and its output file did not grow for 300 ms, at most
// 15 s in all.
func waitCaughtUp(ctx context.Context, pid int, outPath string, min time.Duration) time.Duration {
	start := time.Now()
	select {
	case <-ctx.Done():
		return time.Since(start)
	case <-time.After(min):
	}
	size := func() int64 {
		if st, err := os.Stat(outPath); err == nil && st.Mode().IsRegular() {
			return st.Size()
		}
		return 0
	}
	cpu0, _ := processCPU(pid)
	sz0 := size()
	for time.Since(start) < 15*time.Second && ctx.Err() == nil {
		time.Sleep(300 * time.Millisecond)
		cpu1, err := processCPU(pid)
		sz1 := size()
		if err != nil || (cpu1 == cpu0 && sz1 == sz0) {
			break
		}
		cpu0, sz0 = cpu1, sz1
	}
	return time.Since(start)
}

// waitAttached returns once the tracer is attached, with a snapshot of its
// BPF programs' statistics taken then.
func waitAttached(ctx context.Context, c config, pid int, w *stderrWatch, exited chan error) (map[uint64]progStat, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if c.ReadyLine != "" {
		select {
		case <-w.ready:
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("exited before attaching (%v)", err)
		case <-ctx.Done():
			return nil, fmt.Errorf("no %q line on stderr within 60 s", c.ReadyLine)
		}
	}
	if c.Canary {
		// A refused connection in the runner's own namespace fires the
		// tracepoint (CLOSE->SYN_SENT->CLOSE); once one of the tracer's
		// programs has run, it is attached.
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		d.SetMultipathTCP(false)
		for {
			before, _ := progStats(pid)
			if c, err := d.DialContext(ctx, "tcp4", "127.0.0.1:9"); err == nil {
				c.Close()
			}
			time.Sleep(50 * time.Millisecond)
			after, _ := progStats(pid)
			if len(after) > 0 && totalRuns(after) > totalRuns(before) {
				break
			}
			select {
			case err := <-exited:
				exited <- err
				return nil, fmt.Errorf("exited before attaching (%v)", err)
			case <-ctx.Done():
				return nil, errors.New("none of its BPF programs ran for a probe connection within 60 s (are BPF stats enabled?)")
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if c.Grace > 0 {
		time.Sleep(c.Grace)
	}
	return progStats(pid)
}

// readTcpstateSummary takes received and lost events from tcpstate's
// --summary-json ("events", "lost", "missing" when present, "kernel"'s
// counters; keys it does not know are kept in r.Summary and otherwise
// ignored), and the main program's run time. Received is, for a mode
// that checks or counts in the kernel, the summary's "transitions" (or the
// main program's runs); else the events delivered.
func readTcpstateSummary(path string, aggregates bool, r *runResult) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading tcpstate's summary: %w", err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decoding tcpstate's summary: %w", err)
	}
	r.Summary = s
	num := func(m map[string]any, k string) (uint64, bool) {
		v, ok := m[k].(float64)
		return uint64(v), ok
	}
	k, _ := s["kernel"].(map[string]any)
	r.LostReported, _ = num(s, "lost")
	// "missing": what tcpstate knows it missed, when it says so itself.
	if m, ok := num(s, "missing"); ok {
		r.Missing, r.MissingKnown = m, true
	} else if m, ok := num(k, "missing"); ok {
		r.Missing, r.MissingKnown = m, true
	}
	r.LostRingbuf, _ = num(k, "ringbuf_full")
	r.LostRecursion, _ = num(k, "recursion_misses")
	runs, okRuns := num(k, "prog_runs")
	ns, okNs := num(k, "prog_run_ns")
	if okRuns && okNs && runs > 0 && ns > 0 {
		r.BPFNsPerEv = float64(ns) / float64(runs)
	}
	if aggregates {
		// Transitions the kernel handled (the main program's runs plus
		// what the rescue program caught), or the main program's runs
		// from a tcpstate that does not report it.
		if t, ok := num(s, "transitions"); ok {
			r.Received, r.ReceivedKnown, r.ReceivedFrom = t, true, "kernel"
		} else if okRuns && runs > 0 {
			r.Received, r.ReceivedKnown, r.ReceivedFrom = runs, true, "kernel"
		}
		return nil
	}
	if ev, ok := num(s, "events"); ok {
		r.Received, r.ReceivedKnown, r.ReceivedFrom = ev, true, "events"
	}
	return nil
}

// countBpftrace counts the lines of tcpstates.bt's output that belong to the
// load's namespace (the last field is the netns inode), and the events
// bpftrace reported lost ("Lost N events").
func countBpftrace(path string, netns uint64) (n, lost uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	want := strconv.FormatUint(netns, 10)
	lostRe := regexp.MustCompile(`^Lost (\d+) events`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if m := lostRe.FindSubmatch(line); m != nil {
			v, _ := strconv.ParseUint(string(m[1]), 10, 64)
			lost += v
			continue
		}
		if i := bytes.LastIndexByte(line, ' '); i >= 0 && string(line[i+1:]) == want {
			n++
		}
	}
	return n, lost, sc.Err()
}

// bpftraceLost sums "Lost N events" lines bpftrace printed on stderr.
func bpftraceLost(stderr string) uint64 {
	var n uint64
	for _, m := range regexp.MustCompile(`(?m)^Lost (\d+) events`).FindAllStringSubmatch(stderr, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		n += v
	}
	return n
}

// countLibbpf counts the lines of libbpf-tools tcpstates' output whose local
// or remote port is the load's server port. Fields, from the end: MS, NEWSTATE,
// "->", OLDSTATE, RPORT, RADDR, LPORT (COMM may hold spaces).
func countLibbpf(path string, port int) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	want := strconv.Itoa(port)
	var n uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 || fl[len(fl)-3] != "->" {
			continue
		}
		if fl[len(fl)-5] == want || fl[len(fl)-7] == want {
			n++
		}
	}
	return n, sc.Err()
}

// perfLost sums libbpf's "lost N events on CPU #C" lines.
func perfLost(stderr string) uint64 {
	var n uint64
	for _, m := range regexp.MustCompile(`lost (\d+) events on CPU`).FindAllStringSubmatch(stderr, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		n += v
	}
	return n
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func addExtra(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}
