package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// Defaults of stats' flags.
const (
	defaultStatsInterval = 5 * time.Second
	minStatsInterval     = 100 * time.Millisecond
	defaultStatsTop      = 10
)

type statsOptions struct {
	filterFlags
	output   string
	interval time.Duration
	duration time.Duration
	count    int
	top      int
	model    string
	stuck    *stuckFlag
	kernel   kernelFlags
	summary  string
}

func newStatsCmd() *cobra.Command {
	o := &statsOptions{stuck: newStuckFlag()}
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count TCP state transitions in the kernel: matrix, close causes, histograms, stuck sockets",
		Long: `Count TCP state transitions in the kernel and print, every --interval, what
happened in that interval, and at the end the totals of the whole run. No
event crosses to user space: the BPF program adds each transition to kernel
maps, and stats reads them. It is cheap enough to leave running on a busy host.

What is counted (each transition that passes the filters, which are trace's):
  transitions   a matrix of old state x new state. Cells with an edge that the
                --model does not have end in "!" (under the default model,
                linux, none should; under rfc793, Linux's own edges such as
                FIN_WAIT2 -> CLOSE do). TIME_WAIT never appears: Linux hands
                that phase to a separate timewait socket and reports
                FIN_WAIT2 -> CLOSE (or CLOSING -> CLOSE) instead.
  causes        why each socket ended, decided at its -> CLOSE from its last
                state, the states it went through, the resets sent and
                received and the socket error: the causes of trace's CAUSE
                column and of life (see 'tcpstate life --help'), with fin's
                side and timeout's timer:
                  fin/active          we sent the first FIN
                  fin/passive         the peer sent the first FIN
                  fin/simultaneous    both at once (through CLOSING)
                  reset_received      the peer reset it (ECONNRESET, EPIPE)
                  reset_sent          we aborted: SO_LINGER 0, unread data at
                                      close(), tcp_abort, a child that was
                                      never accepted
                  refused             connect() answered by RST
                  timeout/...         connect, retransmission, keepalive,
                                      zero_window_probe
                  cancelled           closed while connecting
                  listener_closed     a listening socket closed
  by service port
                transitions and sockets opened per service port: a socket
                that connect()ed is counted under its remote port (side
                "remote"), listeners and accepted sockets under their local
                port (side "local"), so ephemeral ports do not fill the map.
                A listener that autobound is counted under port 0 for its
                CLOSE -> LISTEN.
  by owner      transitions and sockets opened per owning process (pid, comm;
                the owner is the process that connected, listened, accepted or
                closed the socket, also for transitions that fire in softirq).
                "owner unknown" counts sockets whose owner was never seen.
  by cgroup     transitions and sockets opened per socket cgroup: the cgroup
                v2 the socket's creator was in (an accepted socket's is its
                listener's), with its path and the container the path names
                (docker, containerd, cri-o, podman, a systemd service, a
                Kubernetes pod). On a host with only cgroup v1 every socket
                is in the unified root: one row, unnamed.
                The kernel keeps at most 1024 ports, 1024 owners and 1024
                cgroups; what does not fit is counted as "not counted (map
                full)", never dropped. --top limits the rows printed; the
                rest are summed as "other".
  histograms    log2 histograms in microseconds, drawn as bcc's tools draw them
                (row "a -> b": values from a to b; 40 stars for the largest
                count): time spent in each state (one count per transition
                out of it, self transitions such as FIN_WAIT1 -> FIN_WAIT1
                included; only for sockets seen entering the state), active
                open (SYN_SENT -> ESTABLISHED), passive open (a child's
                SYN_RECV -> ESTABLISHED) and lifetime (birth to -> CLOSE;
                listeners excluded).
  stuck sockets live sockets that have stayed in a state longer than its
                threshold (--stuck), with owner, addresses, time in the state
                and age; listed in every report. Sockets that existed before
                stats started are known from the snapshot it takes at start:
                their time in state is a lower bound (">=", since the start).

Intervals: each interval report holds only what was counted between two
readings of the kernel maps (the difference of cumulative counters), so the
intervals add up to the final totals; a last, partial interval is printed
when the run ends between two ticks and something was counted (in a table,
not when it would be the only one: the totals say the same). --interval 0
prints only the totals at the end. The maps are read one after another, not
atomically, so within one interval a histogram may be one transition ahead of
the matrix; the final totals are read after detaching and agree exactly.
Each report's headline separates what was counted (the transitions that
passed the filters) from what the kernel counted lost: held-back events of
sockets the filters were waiting to decide on (theirs), and recursion misses
(transitions the kernel skipped the program for), which are the whole
host's, filters or not: the kernel does not say whose transition it
skipped. Lost transitions are missing from every table. At the end, a
snapshot of every socket is compared with the state the kernel last saw for
each (the reconciliation): a socket out of step lost transitions that no
counter saw, and the final report says how many ("missing").

Stopping: as trace (see 'tcpstate trace --help'): --count, --duration,
SIGINT, SIGTERM, SIGHUP or standard output closed by its reader end the run
with the final report and --summary-json; after a signal within 2 s, even
when standard output is blocked (the reports it could not write are
counted on stderr). Exit status as trace's.

--state selects the transitions counted in the matrix, the histograms and the
per-port, per-owner and per-cgroup tables; causes and lifetimes count every
socket that passes the socket filters.

JSON (-o json): one document per line per report; the last one has
"final": true. Keys: final, seq (interval number; in the final document the
number of intervals), start, end (RFC 3339), seconds, model, transitions
(handled by the kernel in the span, host-wide, before the filters, as in
every tcpstate document), counted (passed the filters: the matrix's total),
illegal (transitions on edges not in the model), lost (counted lost by the
kernel: lost_filtered, of transitions that passed the filters, plus
lost_host_wide, the recursion misses), matrix (list of
{old, new, count, illegal}, non-zero cells), outcomes (the coarser classes of
earlier versions, every class: count: active_close, passive_close,
simultaneous_close, reset, timeout, abort, connect_refused,
connect_timeout, connect_aborted, listener_closed), causes (list of {cause,
detail, count}, non-zero, in the table's order),
ports (list of {port, side: local or remote, transitions, opened}, all of
them, most first),
port_other, owners (list of {pid, comm, transitions, opened}), owner_other,
owner_unknown, cgroups (list of {cgroup_id, cgroup, container,
container_runtime, pod_uid, transitions, opened}; the names where known),
cgroup_other, histograms (list of {kind: a state name, "active_open",
"passive_open" or "lifetime"; title; unit "usecs"; count; buckets: list of
{low, high, count}, non-empty buckets}), stuck (list of sockets, in the
form every tcpstate document uses: {skaddr, state, in_state_s,
in_state_at_least (true: in the state since before the start, in_state_s is
a lower bound), age_s (absent when unknown), age_at_least (true: born before the start, age_s counts from then), pid and comm (0
and "" when the owner is unknown), owner_known, family, saddr, sport, daddr,
dport, netns, cgroup_id, cgroup, container, pod_uid}), stuck_thresholds_s ({STATE: seconds}), and in the final
document kernel (the counters of trace --summary-json), missing
(transitions missing without any kernel count) and reconciliation (the
sockets out of step; the README describes each key).`,
		Example: `  sudo tcpstate stats
  sudo tcpstate stats --port 443 --interval 10s --top 5
  sudo tcpstate stats --interval 0 --duration 1m --model rfc793
  sudo tcpstate stats --stuck CLOSE_WAIT=10s --stuck ESTABLISHED=1h -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStats(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.filterFlags.register(f)
	choiceVarP(f, &o.output, "output", "o", outTable, []string{outTable, outJSON}, "output: table or json (one document per report)")
	f.DurationVar(&o.interval, "interval", defaultStatsInterval, "print what happened in each interval this long (0: only the totals at the end)")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, e.g. 30s or 5m (0: until interrupted)")
	f.IntVar(&o.count, "count", 0, "stop after this many interval reports (0: no limit)")
	f.IntVar(&o.top, "top", defaultStatsTop, "rows of the per-port, per-owner and per-cgroup tables; the rest are summed as other (0: all)")
	choiceVarP(f, &o.model, "model", "", model.DefaultModelName, model.ModelNames(), "transition model whose missing edges are marked with ! ("+strings.Join(model.ModelNames(), ", ")+")")
	f.Var(o.stuck, "stuck", "list sockets in STATE longer than DURATION (repeat or comma-separate; overrides that state's default; DURATION 0 or off: never)")
	o.kernel.register(f)
	f.StringVar(&o.summary, "summary-json", "", "also write the end-of-run counters (transitions, counted, lost by cause, missing, the reconciliation, kernel counters) as JSON to this file")
	return cmd
}

// tracerOptions validates every flag (before anything is loaded) and returns
// the tracer's options.
func (o *statsOptions) tracerOptions() (tracer.Options, *model.Model, error) {
	var t tracer.Options
	if err := o.filterFlags.apply(&t); err != nil {
		return t, nil, err
	}
	if o.output != outTable && o.output != outJSON {
		return t, nil, usagef("unknown output mode %q: want table or json", o.output)
	}
	switch {
	case o.interval < 0:
		return t, nil, usagef("--interval %v: must not be negative (0: only the totals at the end)", o.interval)
	case o.interval > 0 && o.interval < minStatsInterval:
		return t, nil, usagef("--interval %v: must be 0 or at least %v", o.interval, minStatsInterval)
	case o.duration < 0:
		return t, nil, usagef("--duration %v: must not be negative", o.duration)
	case o.count < 0:
		return t, nil, usagef("--count %d: must not be negative", o.count)
	case o.count > 0 && o.interval == 0:
		return t, nil, usagef("--count %d counts interval reports: it needs an --interval", o.count)
	case o.top < 0:
		return t, nil, usagef("--top %d: must not be negative (0: all rows)", o.top)
	}
	m, err := model.ModelByName(o.model)
	if err != nil {
		return t, nil, usagef("--model: %v", err)
	}
	t.Mode = tracer.ModeAggregate
	t.Model = m
	if err := o.kernel.apply(&t); err != nil {
		return t, nil, err
	}
	return t, m, nil
}

func runStats(ctx context.Context, o *statsOptions, stdout, stderr io.Writer) error {
	topts, m, err := o.tracerOptions()
	if err != nil {
		return err
	}
	topts.Warn = func(msg string) { fmt.Fprintf(stderr, "tcpstate: warning: %s\n", msg) }
	// Checked before anything is loaded (see trace).
	var summaryOut *outFile
	if o.summary != "" {
		if summaryOut, err = openOutFile("--summary-json", o.summary); err != nil {
			return err
		}
		defer summaryOut.Close()
	}
	topts.Info = infoTo(stderr)
	t, err := tracer.Open(topts)
	if err != nil {
		return err
	}
	defer t.Close()
	if o.kernel.verbose {
		printFeatures(stderr, t)
	}
	cgroupNotes(stderr, t, true, false)
	start := time.Now()

	// As trace: ctx ends at a signal, runCtx also at --duration and when
	// standard output ends; reports are written from a goroutine that a
	// blocked reader holds up only until stopGrace after a signal.
	giveUp := afterDone(ctx, stopGrace)
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	if o.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, o.duration)
		defer cancel()
	}
	out := newAsyncOut(stdout, 64<<10, endRun)
	pending := outBuf{b: make([]byte, 0, 64<<10)}
	var reports uint64
	var formatted bytes.Buffer
	write := func(r *statsReport) error {
		formatted.Reset()
		var err error
		if o.output == outJSON {
			err = writeStatsJSON(&formatted, r)
		} else {
			err = writeStatsTable(&formatted, r, o.top)
		}
		if err != nil {
			return err
		}
		reports++
		pending.b, pending.lines = append(pending.b, formatted.Bytes()...), pending.lines+1
		if !out.swap(&pending, giveUp) {
			pending.b, pending.lines = pending.b[:0], 0 // the run must end: not written
		}
		return nil
	}
	// report is what was counted between two readings (prev and cur, the
	// kernel's counters prevC and c).
	report := func(seq int, final bool, from time.Time, prev, cur *model.Aggregate, prevC, c *tracer.Counters) *statsReport {
		d := cur.Sub(prev)
		r := &statsReport{Seq: seq, Final: final, Start: from, End: time.Now(), Agg: &d,
			Transitions:  sat(c.Transitions, prevC.Transitions),
			LostFiltered: sat(c.LostFiltered(), prevC.LostFiltered()),
			LostHostWide: sat(c.LostHostWide(), prevC.LostHostWide()),
			Thresholds:   o.stuck.th, Model: m, Cgroups: t.Cgroups().Lookup, Rescuing: t.Rescuing()}
		socks, err := t.Sockets()
		if err != nil {
			fmt.Fprintf(stderr, "tcpstate: warning: %v\n", err)
		}
		r.Stuck = model.Stuck(topts.FilterSockets(socks), o.stuck.th)
		return r
	}
	fmt.Fprintln(stderr, "tcpstate: counting TCP state transitions in the kernel; Ctrl-C to stop")

	var tick <-chan time.Time
	if o.interval > 0 {
		ticker := time.NewTicker(o.interval)
		defer ticker.Stop()
		tick = ticker.C
	}
	var (
		prev  = &model.Aggregate{}
		prevC = &tracer.Counters{}
		last  = start
		seq   int
	)
loop:
	for {
		select {
		case <-runCtx.Done():
			break loop
		case <-tick:
			cur, err := t.Aggregate()
			if err != nil {
				return err
			}
			c, err := t.Counters()
			if err != nil {
				return err
			}
			seq++
			r := report(seq, false, last, prev, cur, prevC, &c)
			if err := write(r); err != nil {
				return err
			}
			prev, prevC, last = cur, &c, r.End
			if o.count > 0 && seq >= o.count {
				break loop
			}
		}
	}

	// The reconciliation's snapshot, while the programs still run; then
	// detach: the final totals are exact and stay still.
	end := time.Now()
	snap, snapErr := t.Snapshot(tracer.SnapshotOptions{})
	detachErr := t.Detach()
	cur, err := t.Aggregate()
	if err != nil {
		return err
	}
	c, err := t.Counters()
	if err != nil {
		return err
	}
	// The last, partial interval, if anything was counted in it; in a
	// table, not when it would be the only one (the totals say the same).
	if o.interval > 0 && (seq > 0 || o.output == outJSON) {
		if d := cur.Sub(prev); d.Transitions() > 0 || d.Outcomes != ([model.NumOutcomes]uint64{}) {
			seq++
			r := report(seq, false, last, prev, cur, prevC, &c)
			r.End = end
			if err := write(r); err != nil {
				return err
			}
		}
	}
	r := report(seq, true, start, &model.Aggregate{}, cur, &tracer.Counters{}, &c)
	r.End, r.Kernel = end, &c
	rec := reconcileDoc{Error: "no snapshot", OutOfStep: []outOfStepDoc{}}
	if snapErr != nil {
		rec.Error = snapErr.Error()
	} else {
		rec = reconcile(reconcileInput{
			snap: snap, model: m,
			keep:    func(so *model.SocketInfo) bool { return topts.MatchSocket(so.Facts()) },
			lossSeq: c.LossSeq, lost: c.Lost(),
		})
		r.SnapshotSockets = len(snap.Sockets)
	}
	r.Reconciliation, r.MissingEstimate = &rec, !t.ExactLoss()
	if err := write(r); err != nil {
		return err
	}
	outEnd := out.end(out.finish(&pending, giveUp))
	var runErr error
	if outEnd == outputFailed {
		runErr = fmt.Errorf("writing output: %w", out.Err())
	}
	notWritten := reports - out.Written()
	if summaryOut != nil {
		s := statsSummary{Transitions: c.Transitions, Counted: cur.Transitions(),
			Lost: c.Lost(), LostFiltered: c.LostFiltered(), LostHostWide: c.LostHostWide(),
			Missing: rec.MissingUncounted, MissingEstimate: !t.ExactLoss(), Reconciliation: rec, Kernel: c, Model: r.Model.Name(),
			Output: outEnd, NotWritten: notWritten}
		if err := summaryOut.WriteJSON(s); err != nil && runErr == nil {
			runErr = err
		}
	}
	if note := fmtOutputEnd(outEnd, notWritten, "report", "reports"); note != "" {
		writeBounded(stderr, []byte("tcpstate: "+strings.TrimPrefix(note, "; ")+"\n"), giveUp, stderrGrace)
	}
	if runErr != nil {
		return runErr
	}
	return detachErr
}

// statsSummary is what --summary-json writes: the counters trace's summary
// has, for the same tools (the README documents each key).
type statsSummary struct {
	Transitions uint64 `json:"transitions"` // handled by the kernel, host-wide, before filters
	Counted     uint64 `json:"counted"`     // passed the filters and counted in the tables
	// Lost counted by the kernel: LostFiltered of transitions that had
	// passed the filters, LostHostWide the recursion misses, anyone's.
	Lost         uint64 `json:"lost"`
	LostFiltered uint64 `json:"lost_filtered"`
	LostHostWide uint64 `json:"lost_host_wide"`
	// Missing: transitions the reconciliation found missing without any
	// kernel count (stats checks no gaps: it counts in the kernel);
	// MissingEstimate as in trace's summary.
	Missing         uint64          `json:"missing"`
	MissingEstimate bool            `json:"missing_estimate"`
	Reconciliation  reconcileDoc    `json:"reconciliation"`
	Model           string          `json:"model"`
	Kernel          tracer.Counters `json:"kernel"`
	// Output says how standard output ended (as in trace's summary);
	// NotWritten counts the reports it did not take.
	Output     outputEnd `json:"output"`
	NotWritten uint64    `json:"not_written"`
}

// sat is a - b, or 0 when b > a.
func sat(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}
