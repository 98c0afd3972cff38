package main

import (
	"context"
	"encoding/json"
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

Lost events are never silent: the summary on stderr counts them by cause.
It also lists the sockets still in a state longer than --stuck allows for
it (the thresholds of stats --stuck; see 'tcpstate stats --help').
Exit status: 0 success; 1 the run failed; 2 bad flags; 3 --fail-on was hit.`,
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
	choiceVarP(f, &o.output, "output", "o", outTable, []string{outTable, outWide, outJSON}, "output: table, wide (adds skaddr, on-CPU task, family, owner source, network namespace, cgroup or container) or json (one object per line)")
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

// traceHandler formats each event into its output buffer and writes the
// buffer out when it is full and at every Flush, so output is never more
// than one poll interval (10 ms) behind the kernel. Formatting appends
// straight into the buffer: no copy per event.
type traceHandler struct {
	out     io.Writer
	p       printer
	cgroups *tracer.CgroupResolver // resolves each event's cgroup, where the output shows it
	buf     []byte                 // formatted lines not written yet
	tracker *model.Tracker
	verdict model.Verdict // the current event's; a field, so it does not escape per event
	// anomalies: print only what the tracker confirms as an anomaly.
	anomalies bool
	limit     uint64
	events    uint64
	printed   uint64
}

func (h *traceHandler) Event(e *model.Event) error {
	h.events++
	h.verdict = h.tracker.Check(e)
	if h.anomalies && !h.verdict.Kind.Anomaly() {
		return nil
	}
	if h.cgroups != nil {
		e.Cgroup = h.cgroups.Lookup(e.CgroupID)
	}
	h.buf = h.p.appendEvent(h.buf, e, &h.verdict)
	if len(h.buf) >= outBufferSize {
		if err := h.write(); err != nil {
			return err
		}
	}
	h.printed++
	if h.limit > 0 && h.printed >= h.limit {
		return tracer.ErrStop
	}
	return nil
}

func (h *traceHandler) Flush() error { return h.write() }

// outBufferSize is when the output buffer is written: 64 KiB less room for
// one more line, so the buffer never grows.
const outBufferSize = 63 << 10

func (h *traceHandler) write() error {
	if len(h.buf) == 0 {
		return nil
	}
	_, err := h.out.Write(h.buf)
	h.buf = h.buf[:0]
	if err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

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
	topts.Info = infoTo(stderr)

	t, err := tracer.Open(topts)
	if err != nil {
		return err
	}
	defer t.Close()
	cgroupNotes(stderr, t, o.output != outTable, o.kernel.verbose)

	h := &traceHandler{
		out: stdout, p: p, buf: make([]byte, 0, 64<<10),
		tracker: tracker, anomalies: o.check.Anomalies, limit: o.count,
	}
	if o.output != outTable {
		h.cgroups = t.Cgroups() // -o wide and JSON show each socket's cgroup
	}
	if o.output != outJSON && !o.noHeader {
		h.buf = p.header(h.buf)
	}
	if err := h.write(); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "tcpstate: tracing TCP state transitions; Ctrl-C to stop")

	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	runErr := t.Run(ctx, h)
	// Stop new events, then deliver what is still in the ring (unless
	// --count is satisfied), so the summary counts agree with the output.
	detachErr := t.Detach()
	if runErr == nil && (h.limit == 0 || h.printed < h.limit) {
		runErr = t.Drain(h)
	}
	if err := h.write(); err != nil && runErr == nil {
		runErr = err
	}
	c, sumErr := t.Counters()
	if sumErr != nil {
		fmt.Fprintf(stderr, "tcpstate: warning: %v\n", sumErr)
	}
	s := traceSummary{
		Transitions: c.Transitions, Events: h.events, Printed: h.printed, Lost: c.Lost(), Kernel: c,
		AcceptHook: t.AcceptHook(), Model: m.Name(), Check: tracker.Stats(),
	}
	s.write(stderr)
	// Sockets that stayed too long in a state (--stuck), as stats lists them.
	thresholds := o.stuck.th
	if socks, err := t.Sockets(); err != nil {
		fmt.Fprintf(stderr, "tcpstate: warning: %v\n", err)
	} else {
		s.Stuck = model.Stuck(topts.FilterSockets(socks), thresholds)
		fmt.Fprint(stderr, "  ")
		if err := writeStuck(stderr, s.Stuck, thresholds); err != nil && runErr == nil {
			runErr = err
		}
	}
	if o.summaryJSON != "" {
		if err := writeJSONFile(o.summaryJSON, s); err != nil && runErr == nil {
			runErr = err
		}
	}
	if runErr != nil {
		return runErr
	}
	if detachErr != nil {
		return detachErr
	}
	return failOn.check(tracker.Stats())
}

// traceSummary is what trace prints on stderr at the end, and writes with
// --summary-json.
type traceSummary struct {
	Transitions uint64             `json:"transitions"` // handled by the kernel, host-wide, before filters
	Events      uint64             `json:"events"`
	Printed     uint64             `json:"printed"`
	Lost        uint64             `json:"lost"`
	Kernel      tracer.Counters    `json:"kernel"`
	AcceptHook  tracer.AcceptHook  `json:"accept_hook"`
	Model       string             `json:"model"`
	Check       model.TrackerStats `json:"check"`
	Stuck       []model.SocketInfo `json:"stuck"`
}

func (s *traceSummary) write(w io.Writer) {
	c := s.Kernel
	fmt.Fprintf(w, "\ntcpstate summary\n")
	fmt.Fprintf(w, "  events:          %d (%d printed)\n", s.Events, s.Printed)
	fmt.Fprintf(w, "  lost:            %d host-wide, filters or not (ring buffer full %d, recursion misses %d, held-back queue full %d, no held-back queue %d, owner never learnt %d; %d nested events rescued)\n",
		s.Lost, c.RingbufFull, c.RecursionMisses, c.HeldOverflow, c.HeldNoSpace, c.UndecidedClosed, c.Rescued)
	fmt.Fprintf(w, "  owners:          named by accept %d (hook %s), accept records not kept %d\n",
		c.Accepts, s.AcceptHook, c.AcceptNoSpace)
	k := s.Check
	fmt.Fprintf(w, "  checks:          model %s: ok %d, unknown %d (first seen mid-life), illegal %d, gap %d (%d after reported loss)\n",
		s.Model, k.OK, k.Unknown, k.Illegal, k.Gaps(), k.GapAfterLoss)
}

// writeJSONFile writes v, indented, to path (--summary-json).
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding summary: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing summary: %w", err)
	}
	return nil
}
