package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

type traceOptions struct {
	filterFlags
	kernel      kernelFlags
	check       checkOptions
	output      string
	count       uint64
	duration    time.Duration
	ringSize    int
	summaryJSON string
	noHeader    bool
	stuck       *stuckFlag
}

func newTraceCmd() *cobra.Command {
	o := &traceOptions{stuck: newStuckFlag()}
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Print every TCP state transition as it happens",
		Long: `Print every TCP state transition of the host as it happens, one line each,
with the process that owns the socket.

The owner is the process that connected, listened, accepted, shut down or
closed the socket. Transitions that fire in softirq (packet receive, timers)
still name the owner; -o wide also shows the task that was on the CPU, which
in softirq is whoever the interrupt found there. A socket accepted from a
listener is owned by the listener's owner until accept() names the process
that took it.

Every ->CLOSE says why the socket ended, in the CAUSE column ("-" on other
lines) and JSON's "cause" and "cause_detail": fin (with the side that sent
the first FIN: active, passive, simultaneous), reset_received, reset_sent,
refused, timeout (connect, retransmission, keepalive, zero_window_probe,
where the socket tells), cancelled (closed while connecting) or
listener_closed; 'tcpstate life --help' explains each. -o wide adds the
socket error (ERROR, e.g. ECONNRESET) and the kernel's reason for a reset it
sent (RST_REASON, Linux 6.10+). JSON's ->CLOSE records also carry the data
bytes acked and received, retransmits, srtt_us and the socket's age.

Filters run in the kernel. Different filters combine with AND, repeated
values of one filter with OR. Port, pid, network namespace and cgroup
filters are sticky: once a socket matches, all its later transitions pass,
and transitions it made before its port or owner was known (CLOSE->SYN_SENT,
a new child's LISTEN->SYN_RECV) are held in the kernel and delivered when it
matches (marked "held" in JSON). --state selects single transitions.

A socket's cgroup is the cgroup v2 its creator was in when it made the
socket (an accepted socket's is its listener's), so softirq transitions and
sockets passed to other processes name the right container. -o wide shows
it, as the container its path names (docker:ID, cri-o:ID, podman:ID,
containerd:ID, systemd:UNIT) or the path, and the network namespace; JSON
adds cgroup_id, cgroup, container, container_runtime and pod_uid. Hosts
with only cgroup v1 have no cgroup2 mount to name them: nothing is shown,
and --cgroup and --container are refused.

Every transition is checked against a transition model (--model): an edge
the model does not have is "illegal", a socket whose old state is not the
state it was last seen in is a "gap" (the summary says whether the kernel
reported lost events meanwhile). Anomalies end the table line with "!!"; in
JSON every record has "verdict" and, for anomalies, "reason". With
--anomalies the kernel itself checks each transition and sends only the
anomalies, which user space confirms before printing: the cheap way to watch
a busy host. --fail-on makes the exit status 3 when an anomaly was seen, so
tcpstate can guard a test run:
  tcpstate trace --fail-on illegal,gap --duration 60s

Lost events are never silent: the summary on stderr separates what was
delivered, what the kernel counted lost by cause (the filtered events' own
apart from the recursion misses, which are the whole host's), and what is
missing without any count: transitions the gaps prove missing beyond the
counted loss, and those the end-of-run reconciliation finds (a snapshot of
every socket, taken before detaching, compared with what the kernel and
the tracker last saw: "N sockets out of step"). It also lists the sockets
still in a state longer than --stuck allows for it (the thresholds of
stats --stuck; see 'tcpstate stats --help').
Stopping: --count, --duration, SIGINT (Ctrl-C), SIGTERM, SIGHUP (a dropped
SSH session; under nohup it stays ignored), or standard output closed by
its reader (| head) end the run
cleanly: the summary on stderr, --summary-json written. After a signal the
run ends within 2 s, even when standard output is a pipe nobody reads any
more: what it could not write is counted in the summary, not waited for.

Exit status: 0 success, a signal, or standard output closed or blocked;
1 the run failed; 2 bad flags; 3 --fail-on was hit.`,
		Example: `  sudo tcpstate trace
  sudo tcpstate trace --port 443 --port 8443 -o wide
  sudo tcpstate trace --pid 1234 -o json --duration 60s > transitions.jsonl
  sudo tcpstate trace --state CLOSE_WAIT --state LAST_ACK -4
  sudo tcpstate trace --anomalies --model rfc793
  sudo tcpstate trace --container 4f797c539e6c -o wide
  sudo tcpstate trace --cgroup /kubepods.slice --netns /run/netns/blue -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrace(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.filterFlags.register(f)
	addCheckFlags(f, &o.check)
	choiceVarP(f, &o.output, "output", "o", outTable, []string{outTable, outWide, outJSON}, "output: table, wide (adds a close's socket error and reset reason, skaddr, on-CPU task, family, owner source, network namespace, cgroup or container) or json (one object per line)")
	f.Uint64Var(&o.count, "count", 0, "stop after this many events (0: no limit)")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, e.g. 30s or 5m (0: until interrupted)")
	f.BoolVar(&o.noHeader, "no-header", false, "omit the table header")
	f.IntVar(&o.ringSize, "ring-size", tracer.DefaultRingSize, fmt.Sprintf(
		"ring buffer size in bytes, a power of two: that much locked kernel memory, also mapped into tcpstate "+
			"(the default holds %d events of %d bytes; the summary counts events lost to a full ring)",
		tracer.DefaultRingSize/tracer.RingRecordBytes, tracer.RingRecordBytes))
	f.StringVar(&o.summaryJSON, "summary-json", "", "also write the end-of-run summary as JSON to this file")
	f.Var(o.stuck, "stuck", "at the end, list sockets in STATE longer than DURATION (repeat or comma-separate; overrides that state's default; DURATION 0 or off: never)")
	o.kernel.register(f)
	return cmd
}

func (o *traceOptions) tracerOptions() (tracer.Options, error) {
	var (
		t   tracer.Options
		err error
	)
	if err = o.filterFlags.apply(&t); err != nil {
		return t, err
	}
	if o.duration < 0 {
		return t, usagef("--duration %v: must not be negative", o.duration)
	}
	if o.ringSize < os.Getpagesize() || o.ringSize > 1<<30 || o.ringSize&(o.ringSize-1) != 0 {
		return t, usagef("--ring-size %d: must be a power of two from %d to %d", o.ringSize, os.Getpagesize(), 1<<30)
	}
	t.RingSize = o.ringSize
	// Last: it weighs the map sizes, with the filters, against the host.
	if err := o.kernel.apply(&t); err != nil {
		return t, err
	}
	return t, nil
}

// traceHandler formats each event into its output buffer and hands the
// buffer to the output's writer when it is full and at every Flush, so
// output is never more than one poll interval (10 ms) behind the kernel.
// Formatting appends straight into the buffer: no copy per event. The
// writer (asyncOut) writes from a goroutine of its own: a reader that
// stopped reading slows the run down (the ring fills, and the kernel
// counts what it cannot keep), but holds up its end only until giveUp.
type traceHandler struct {
	out     *asyncOut
	p       printer
	cgroups *tracer.CgroupResolver // resolves each event's cgroup, where the output shows it
	buf     outBuf                 // formatted lines not handed to the writer yet
	giveUp  <-chan struct{}
	tracker *model.Tracker
	verdict model.Verdict // the current event's; a field, so it does not escape per event
	// anomalies: print only what the tracker confirms as an anomaly.
	anomalies bool
	limit     uint64
	events    uint64
	// printed counts the lines formatted (--count counts them); the
	// writer counts those it wrote.
	printed uint64
	// draining: the run is over (the final Drain); past --count, events
	// are still checked, so that the tracker's beliefs are those of the
	// end, but not printed.
	draining bool
}

func (h *traceHandler) Event(e *model.Event) error {
	h.events++
	h.verdict = h.tracker.Check(e)
	if h.anomalies && !h.verdict.Kind.Anomaly() {
		return nil
	}
	if h.limit > 0 && h.printed >= h.limit {
		return nil // past --count: checked, not printed
	}
	if h.cgroups != nil {
		e.Cgroup = h.cgroups.Lookup(e.CgroupID)
	}
	h.buf.b = h.p.appendEvent(h.buf.b, e, &h.verdict)
	h.buf.lines++
	h.printed++
	if len(h.buf.b) >= outBufferSize {
		h.hand()
	}
	if h.limit > 0 && h.printed >= h.limit && !h.draining {
		return tracer.ErrStop
	}
	return nil
}

// Flush hands what is formatted to the writer. A write error ends the run
// through the writer's onFail, not here.
func (h *traceHandler) Flush() error {
	if len(h.buf.b) > 0 {
		h.hand()
	}
	return nil
}

// hand gives the buffer to the writer, or drops its lines when the run
// must end and the writer is still stuck on the previous buffer (they are
// counted as not written).
func (h *traceHandler) hand() {
	if !h.out.swap(&h.buf, h.giveUp) {
		h.buf.b, h.buf.lines = h.buf.b[:0], 0
	}
}

// outBufferSize is when the output buffer is handed over: 64 KiB less room
// for one more line, so the buffer never grows.
const outBufferSize = 63 << 10

func runTrace(ctx context.Context, o *traceOptions, stdout, stderr io.Writer) error {
	topts, err := o.tracerOptions()
	if err != nil {
		return err
	}
	p, err := newPrinter(o.output, !o.noHeader)
	if err != nil {
		return err
	}
	m, failOn, err := o.check.validate()
	if err != nil {
		return err
	}
	topts.Model = m
	// The task on the CPU is read for every event only where the output
	// shows it (-o wide, JSON's cpu_pid and cpu_comm).
	topts.CPUTask = o.output != outTable
	tracker := model.NewTracker(m, 0)
	if o.check.Anomalies {
		// The kernel checks every transition and sends only anomalies, so
		// the tracker sees no socket's history: it checks continuity
		// against the state the kernel remembered (Event.LastState).
		topts.Mode = tracer.ModeAnomalies
		tracker.SetSparse(true)
	}
	topts.Warn = func(msg string) { fmt.Fprintf(stderr, "tcpstate: warning: %s\n", msg) }
	// Checked before anything is loaded: a path that cannot be written
	// is a usage error now, not a failure after the whole --duration.
	var summaryOut *outFile
	if o.summaryJSON != "" {
		if summaryOut, err = openOutFile("--summary-json", o.summaryJSON); err != nil {
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
	cgroupNotes(stderr, t, o.output != outTable, false)

	// ctx is done at SIGINT, SIGTERM or SIGHUP (main); the run also ends
	// at --duration and when standard output ends (the writer fails).
	// After a signal, output gets stopGrace more, then the run ends
	// without it.
	giveUp := afterDone(ctx, stopGrace)
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	h := &traceHandler{
		out: newAsyncOut(stdout, 64<<10, endRun), p: p, buf: outBuf{b: make([]byte, 0, 64<<10)}, giveUp: giveUp,
		tracker: tracker, anomalies: o.check.Anomalies, limit: o.count,
	}
	if o.output != outTable {
		h.cgroups = t.Cgroups() // -o wide and JSON show each socket's cgroup
	}
	if o.output != outJSON && !o.noHeader {
		h.buf.b = p.header(h.buf.b)
	}
	h.Flush()
	fmt.Fprintln(stderr, "tcpstate: tracing TCP state transitions; Ctrl-C to stop")

	if o.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, o.duration)
		defer cancel()
	}
	r := finishRun(runCtx, t, h, &h.draining, h.out, &h.buf, giveUp)
	runErr, detachErr, snap, snapErr, end := r.runErr, r.detachErr, r.snap, r.snapErr, r.end
	// The summary goes to stderr in one write, after the file: neither
	// waits on a reader that stopped reading.
	var sum bytes.Buffer
	c, sumErr := t.Counters()
	if sumErr != nil {
		fmt.Fprintf(&sum, "tcpstate: warning: %v\n", sumErr)
	}
	st := tracker.Stats()
	written := h.out.Written()
	s := traceSummary{
		Transitions: c.Transitions, Events: h.events, Printed: written, NotWritten: h.printed - written, Output: end,
		Lost: c.Lost(), LostFiltered: c.LostFiltered(), LostHostWide: c.LostHostWide(),
		MissingGaps: st.MissingUncounted, MissingEstimate: !t.ExactLoss(),
		Kernel: c, AcceptHook: t.AcceptHook(), RescueNested: t.Rescuing(), Model: m.Name(), Check: st, Stuck: []socketDoc{},
	}
	s.Reconciliation = reconcileDoc{Error: "no snapshot", OutOfStep: []outOfStepDoc{}}
	switch {
	case snapErr != nil:
		s.Reconciliation.Error = snapErr.Error()
	default:
		s.Reconciliation = reconcile(reconcileInput{
			snap: snap, model: m, tracker: tracker,
			trackerSide: !o.check.Anomalies && len(topts.States) == 0,
			keep:        func(so *model.SocketInfo) bool { return topts.MatchSocket(so.Facts()) },
			lossSeq:     c.LossSeq, lost: c.Lost(),
		})
		s.reconcileNote = reconcileNote(o.check.Anomalies, len(topts.States) > 0)
		s.snapshotSockets = len(snap.Sockets)
	}
	s.Missing = s.MissingGaps + s.Reconciliation.MissingUncounted
	s.write(&sum)
	// Sockets that stayed too long in a state (--stuck), as stats lists them.
	thresholds := o.stuck.th
	if socks, err := t.Sockets(); err != nil {
		fmt.Fprintf(&sum, "tcpstate: warning: %v\n", err)
	} else {
		stuck := model.Stuck(topts.FilterSockets(socks), thresholds)
		s.Stuck = socketDocs(stuck)
		fmt.Fprint(&sum, "  ")
		writeStuck(&sum, stuck, thresholds)
	}
	if summaryOut != nil {
		if err := summaryOut.WriteJSON(s); err != nil && runErr == nil {
			runErr = err
		}
	}
	writeBounded(stderr, sum.Bytes(), giveUp, stderrGrace)
	if runErr != nil {
		return runErr
	}
	if detachErr != nil {
		return detachErr
	}
	return failOn.check(tracker.Stats())
}

// reconcileNote says why the reconciliation compared only the kernel's
// record ("" when it compared the tracker's beliefs too).
func reconcileNote(anomalies, states bool) string {
	switch {
	case anomalies:
		return "trace --anomalies: the tracker follows no socket, so only the kernel's own record is compared"
	case states:
		return "--state: the tracker sees only the selected transitions, so only the kernel's own record is compared"
	}
	return ""
}

// traceSummary is what trace prints on stderr at the end, and writes with
// --summary-json. Its keys are documented in the README.
type traceSummary struct {
	// Transitions the programs handled, host-wide, before the filters.
	Transitions uint64 `json:"transitions"`
	// Events delivered to tcpstate (they passed the filters); Printed of
	// them written out whole; NotWritten formatted but never written,
	// because standard output ended (Output says how: complete, closed by
	// its reader, blocked when the run had to end, or failed).
	Events     uint64    `json:"events"`
	Printed    uint64    `json:"printed"`
	NotWritten uint64    `json:"not_written"`
	Output     outputEnd `json:"output"`
	// Lost counted by the kernel: LostFiltered of events that had passed
	// the filters (ring buffer full, held-back events dropped),
	// LostHostWide the recursion misses, anyone's (the kernel does not
	// say whose).
	Lost         uint64 `json:"lost"`
	LostFiltered uint64 `json:"lost_filtered"`
	LostHostWide uint64 `json:"lost_host_wide"`
	// Missing: transitions known missing without any kernel count:
	// MissingGaps those the gaps between a socket's events prove missing
	// beyond what the kernel counted, plus the reconciliation's
	// missing_uncounted. MissingEstimate: the loss sequence lacks the
	// recursion misses on this kernel, so some of them may be counted.
	Missing         uint64            `json:"missing"`
	MissingGaps     uint64            `json:"missing_gaps"`
	MissingEstimate bool              `json:"missing_estimate"`
	Reconciliation  reconcileDoc      `json:"reconciliation"`
	Kernel          tracer.Counters   `json:"kernel"`
	AcceptHook      tracer.AcceptHook `json:"accept_hook"`
	// RescueNested: the rescue program ran (--rescue-nested); without
	// it kernel.rescued is 0 because nothing tried.
	RescueNested bool               `json:"rescue_nested"`
	Model        string             `json:"model"`
	Check        model.TrackerStats `json:"check"`
	Stuck        []socketDoc        `json:"stuck"`

	reconcileNote   string
	snapshotSockets int
}

func (s *traceSummary) write(w io.Writer) {
	c := s.Kernel
	fmt.Fprintf(w, "\ntcpstate summary\n")
	fmt.Fprintf(w, "  delivered:       %d events (%d printed%s)\n", s.Events, s.Printed, fmtOutputEnd(s.Output, s.NotWritten, "line", "lines"))
	fmt.Fprintf(w, "  lost, counted:   %s\n", fmtLost(&c, s.RescueNested, "                   "))
	fmt.Fprintf(w, "  missing:         %s\n", fmtMissing(s.Missing, s.MissingGaps, &s.Reconciliation, s.MissingEstimate))
	fmt.Fprintf(w, "  reconciliation:  %s\n", fmtReconciliation(&s.Reconciliation, s.snapshotSockets, s.reconcileNote))
	writeOutOfStep(w, &s.Reconciliation)
	noState := ""
	if c.NoState > 0 {
		// Their events were delivered, but with no owner, state or
		// time remembered: the kernel could not allocate their storage.
		noState = fmt.Sprintf("; %d sockets had no per-socket state (the kernel's socket option memory was exhausted: their owners, durations and checks are unknown)", c.NoState)
	}
	fmt.Fprintf(w, "  owners:          named by accept %d (hook %s), accept records not kept %d%s\n",
		c.Accepts, s.AcceptHook, c.AcceptNoSpace, noState)
	fmt.Fprintf(w, "  resets:          %s\n", fmtResetsNoSocket(&c))
	k := s.Check
	fmt.Fprintf(w, "  checks:          model %s: ok %d, unknown %d (first seen mid-life), illegal %d, gap %d (%d after counted loss)\n",
		s.Model, k.OK, k.Unknown, k.Illegal, k.Gaps(), k.GapAfterLoss)
}

// fmtOutputEnd says how standard output ended when it did not take
// everything: "; 12 lines not written: standard output was closed by its
// reader".
func fmtOutputEnd(end outputEnd, n uint64, one, many string) string {
	why := ""
	switch end {
	case outputComplete, "":
		return ""
	case outputClosed:
		why = "standard output was closed by its reader"
	case outputBlocked:
		why = "standard output was blocked (its reader stopped reading) when the run had to end"
	case outputFailed:
		why = "writing standard output failed"
	}
	return fmt.Sprintf("; %s not written: %s", plural(n, one, many), why)
}

// runEnd is what finishRun did: the run's error (or the output's), the
// detach's, the reconciliation's snapshot and how the output ended.
type runEnd struct {
	runErr, detachErr error
	snap              *tracer.Snapshot
	snapErr           error
	end               outputEnd
}

// finishRun runs h until runCtx ends, then ends the run as trace and life
// do: the reconciliation's snapshot while the programs still run (a
// transition meanwhile reaches h, its event is in the ring, so a socket
// it concerns is not judged); then no new events, and what is still in
// the ring delivered (with *draining set: past --count, checked but not
// printed), so the summary agrees with the output; then the output
// written, until giveUp.
func finishRun(runCtx context.Context, t *tracer.Tracer, h tracer.Handler, draining *bool, out *asyncOut, buf *outBuf, giveUp <-chan struct{}) runEnd {
	var r runEnd
	r.runErr = t.Run(runCtx, h)
	r.snap, r.snapErr = t.Snapshot(tracer.SnapshotOptions{})
	r.detachErr = t.Detach()
	*draining = true
	if r.runErr == nil {
		r.runErr = t.Drain(h)
	}
	r.end = out.end(out.finish(buf, giveUp))
	if r.end == outputFailed && r.runErr == nil {
		r.runErr = fmt.Errorf("writing output: %w", out.Err())
	}
	return r
}

// fmtLost says what the kernel counted lost: the events that had passed
// the filters, and on a line of its own (indent), the recursion misses,
// which are the host's, and what the rescue program saved of them where
// it ran.
func fmtLost(c *tracer.Counters, rescue bool, indent string) string {
	rescued := "no rescue program: --rescue-nested"
	if rescue {
		rescued = fmt.Sprintf("%d nested events rescued", c.Rescued)
	}
	return fmt.Sprintf("%d of the events that passed the filters (ring buffer full %d, held-back queue full %d, no held-back queue %d, owner never learnt %d)\n"+
		"%srecursion misses %d host-wide, filters or not: the kernel does not say whose (%s)",
		c.LostFiltered(), c.RingbufFull, c.HeldOverflow, c.HeldNoSpace, c.UndecidedClosed, indent, c.RecursionMisses, rescued)
}

// fmtResetsNoSocket says how many resets the kernel sent for packets that
// matched no socket: host-wide, never a loss, and no socket's close cause.
// Kernels before 6.10 do not show them to the programs: "not counted", not 0.
func fmtResetsNoSocket(c *tracer.Counters) string {
	if c.ResetsNoSocket == nil {
		return "sent for packets that matched no socket: not counted on this kernel (Linux 6.10 and later show them)"
	}
	return fmt.Sprintf("%d sent for packets that matched no socket, host-wide, filters or not (no socket: no close cause)", *c.ResetsNoSocket)
}

// fmtMissing says what is known missing without any count.
func fmtMissing(missing, gaps uint64, r *reconcileDoc, estimate bool) string {
	est := ""
	if estimate {
		est = " (an estimate: this kernel's loss sequence lacks the recursion misses, so some of these may be among them)"
	}
	rec := fmt.Sprintf("%d found by the reconciliation", r.MissingUncounted)
	if !r.Done {
		rec = "the reconciliation could not run"
	}
	return fmt.Sprintf("%s without any kernel count (%d in gaps between a socket's events, beyond the counted loss; %s)%s",
		plural(missing, "transition", "transitions"), gaps, rec, est)
}

// fmtReconciliation is the reconciliation's line: how many sockets the
// end-of-run snapshot found out of step.
func fmtReconciliation(r *reconcileDoc, snapSockets int, note string) string {
	if !r.Done {
		return "not done: " + r.Error
	}
	out := fmt.Sprintf("%s out of step at the end, in a snapshot of %d sockets (%s never delivered, %d of them with no loss counted since the socket's last event)",
		plural(uint64(r.Sockets), "socket", "sockets"), snapSockets, plural(r.Missing, "transition", "transitions"), r.MissingUncounted)
	if note != "" {
		out += "; " + note
	}
	return out
}
