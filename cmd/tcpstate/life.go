package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

type lifeOptions struct {
	filterFlags
	kernel      kernelFlags
	output      string
	count       uint64
	duration    time.Duration
	listeners   bool
	noHeader    bool
	summaryJSON string
}

func newLifeCmd() *cobra.Command {
	o := &lifeOptions{}
	cmd := &cobra.Command{
		Use:   "life",
		Short: "One line per connection when it closes: owner, addresses, duration, bytes, retransmits, RTT and why it ended",
		Long: `Print one line per TCP connection when it closes, like bcc's tcplife: the
process that owned it (not whoever was on the CPU when it closed: that is
usually softirq), its local and remote address and port, how long it lived,
the data bytes it sent (and the peer acknowledged) and received (SYN and
FIN not counted: they are sequence numbers, not data), the segments it
retransmitted, its smoothed round-trip time, and why it ended:

  fin               closed by a FIN exchange; side: who sent the first FIN
                    (active: this socket, passive: the peer, simultaneous)
  reset_received    the peer sent a reset (socket error ECONNRESET or EPIPE)
  reset_sent        we aborted: SO_LINGER 0, close() with unread data,
                    tcp_abort (ss -K), a child dropped with its listener
  refused           connect() was answered by a reset (ECONNREFUSED)
  timeout           a timer gave up: connect, retransmission, keepalive or
                    zero-window probe, where the socket tells them apart
  cancelled         the application closed a socket still connecting (a
                    client's timeout)
  listener_closed   a listening socket closed (with --listeners)

The counts are read in the kernel at the socket's -> CLOSE (tcp_sock's
bytes_acked, bytes_received, total_retrans, srtt_us), on every kernel
tcpstate runs on (plain loads from Linux 6.2, probe reads before): no
event per packet, and only the close crosses to user space. A listener
has none: with --listeners its line shows "-" and its JSON null. A
connection that existed before life started is known from the snapshot
taken at start: its duration counts from then (">=" in the table,
"duration_at_least" in JSON).

The filters are trace's and run in the kernel; --state keeps the
connections that closed from that state. Listeners are left out unless
--listeners. -o wide adds each connection's network namespace (NETNS)
and cgroup (CGROUP: the container its path names, as docker:ID,
podman:ID, systemd:UNIT, ..., else the path; 'tcpstate trace --help'
says whose cgroup a socket has); JSON names them too.

The summary on stderr (and --summary-json) separates what was
delivered (closes, and the lines printed), what the kernel counted lost
by cause (the closes that passed the filters apart from the recursion
misses, which are the whole host's: the kernel does not say whose), and
what is missing without any count. Only closes reach user space, but
the programs follow every transition: each close is checked against the
state they last saw the socket in, and a gap is transitions they never
ran for. At the end a snapshot of every socket is compared with what
the kernel last saw (trace's reconciliation), and the connections open
at the start are looked for (not with --state or --pid): one gone
without its close delivered lost its line. A connection opened during
the run whose close the kernel skipped leaves nothing to find: life
cannot know of it, and says so.

Stopping, as trace: --count, --duration, SIGINT (Ctrl-C), SIGTERM,
SIGHUP (under nohup it stays ignored), or standard output closed by its
reader (| head) end the run cleanly: the summary on stderr,
--summary-json written; after a signal within 2 s, even when standard
output is blocked (what it could not write is counted, not waited for).
Exit status: 0 success, a signal, or standard output closed or blocked;
1 the run failed; 2 bad flags.

JSON (-o json): one object per connection: time (its close, RFC 3339),
pid, comm (its owner), family, saddr, sport, daddr, dport, netns,
cgroup_id, cgroup, container, container_runtime, pod_uid (as in trace's
record: each omitted when not known), duration_ns (null when unknown),
duration_at_least, bytes_acked, bytes_received, retransmits, srtt_us
(the four null for a listener), cause, cause_detail (fin's side or
timeout's timer, "" when none), error (the socket error's name, "" when
none), reset_reason (the kernel's reason for a reset it sent, Linux
6.10+, "" when none).`,
		Example: `  sudo tcpstate life
  sudo tcpstate life --port 443 -o json
  sudo tcpstate life --pid 1234 --duration 1m --summary-json life.json
  sudo tcpstate life --container 4f797c539e6c -o wide
  sudo tcpstate life --cgroup /system.slice --netns /run/netns/blue`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLife(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.filterFlags.closing = true // --state and --pid worded for closes
	o.filterFlags.register(f)
	o.kernel.register(f)
	choiceVarP(f, &o.output, "output", "o", outTable, []string{outTable, outWide, outJSON}, "output: table, wide (adds the network namespace and the cgroup or container) or json (one object per connection)")
	f.Uint64Var(&o.count, "count", 0, "stop after this many connections (0: no limit)")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, e.g. 30s or 5m (0: until interrupted)")
	f.BoolVar(&o.listeners, "listeners", false, "also print listening sockets when they close")
	f.BoolVar(&o.noHeader, "no-header", false, "omit the table header")
	f.StringVar(&o.summaryJSON, "summary-json", "", "also write the end-of-run summary as JSON to this file")
	return cmd
}

func runLife(ctx context.Context, o *lifeOptions, stdout, stderr io.Writer) error {
	var topts tracer.Options
	if err := o.filterFlags.apply(&topts); err != nil {
		return err
	}
	if o.duration < 0 {
		return usagef("--duration %v: must not be negative", o.duration)
	}
	topts.OnlyCloses = true
	topts.RingSize = 1 << 20 // one event per connection
	// Last: it weighs the map sizes, with the filters, against the host.
	if err := o.kernel.apply(&topts); err != nil {
		return err
	}
	topts.Warn = func(msg string) { fmt.Fprintf(stderr, "tcpstate: warning: %s\n", termsafe.String(msg)) }
	topts.Info = infoTo(stderr)
	// Checked before anything is loaded, as trace's.
	var summaryOut *outFile
	if o.summaryJSON != "" {
		var err error
		if summaryOut, err = openOutFile("--summary-json", o.summaryJSON); err != nil {
			return err
		}
		defer summaryOut.Close()
	}
	m, err := model.ModelByName(model.DefaultModelName)
	if err != nil {
		return err
	}
	t, err := tracer.Open(topts)
	if err != nil {
		return err
	}
	defer t.Close()
	if o.kernel.verbose {
		printFeatures(stderr, t)
	}
	cgroupNotes(stderr, t, o.output != outTable, false)

	// As trace: ctx is done at SIGINT, SIGTERM or SIGHUP; the run also
	// ends at --count, --duration and when standard output ends. After a
	// signal, output gets stopGrace more.
	giveUp := afterDone(ctx, stopGrace)
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	// The kernel sends only closes, with the state its programs last saw
	// each socket in: the tracker checks each against it (sparse).
	tracker := model.NewTracker(m, 0)
	tracker.SetSparse(true)
	h := &lifeHandler{
		out: newAsyncOut(stdout, 64<<10, endRun), buf: outBuf{b: make([]byte, 0, 64<<10)}, giveUp: giveUp,
		mode: o.output, tracker: tracker, listeners: o.listeners, limit: o.count,
	}
	if o.output != outTable {
		h.cgroups = t.Cgroups() // -o wide and JSON name each connection's cgroup
	}
	// The connections open at the start, that life will look for at the
	// end (not with --state or --pid: see lifeReconcileNote).
	note := lifeReconcileNote(len(topts.States) > 0, len(topts.Pids) > 0, t.StartSnapshot() != nil)
	if note == "" {
		h.open = openConnections(t.StartSnapshot(), o.listeners, t.ExactLoss(),
			func(so *model.SocketInfo) bool { return topts.MatchSocket(so.Facts()) })
		h.openAtStart = len(h.open)
	}
	if o.output != outJSON && !o.noHeader {
		h.buf.b = appendLifeHeader(h.buf.b, o.output == outWide)
	}
	h.Flush()
	fmt.Fprintln(stderr, "tcpstate: printing one line per connection as it closes; Ctrl-C to stop")
	if o.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, o.duration)
		defer cancel()
	}
	// As trace ends: every close that arrived is known to the
	// reconciliation.
	r := finishRun(runCtx, t, h, &h.draining, h.out, &h.buf, giveUp)
	runErr, detachErr, snap, snapErr, end := r.runErr, r.detachErr, r.snap, r.snapErr, r.end

	var sum bytes.Buffer
	c, cErr := t.Counters()
	if cErr != nil {
		fmt.Fprintf(&sum, "tcpstate: warning: %v\n", cErr)
	}
	st := tracker.Stats()
	written := h.out.Written()
	s := lifeSummary{
		Transitions: c.Transitions, Events: h.events, ListenersLeftOut: h.leftOut, PastCount: h.events - h.leftOut - h.printed,
		Printed: written, NotWritten: h.printed - written, Output: end,
		Lost: c.Lost(), LostFiltered: c.LostFiltered(), LostHostWide: c.LostHostWide(),
		MissingGaps: st.MissingUncounted, MissingEstimate: !t.ExactLoss(),
		OpenAtStart: h.openAtStart, Kernel: c, RescueNested: t.Rescuing(), Model: m.Name(), Check: st,
		reconcileNote: note, listeners: o.listeners,
	}
	s.Reconciliation = reconcileDoc{Error: "no snapshot", OutOfStep: []outOfStepDoc{}}
	if snapErr != nil {
		s.Reconciliation.Error = snapErr.Error()
	} else {
		in := reconcileInput{
			snap: snap, model: m,
			keep:    func(so *model.SocketInfo) bool { return topts.MatchSocket(so.Facts()) },
			lossSeq: c.LossSeq, lost: c.Lost(),
		}
		if h.open != nil {
			in.tracker, in.trackerSide, in.aliveOnly = h.open, true, true
		}
		s.Reconciliation = reconcile(in)
		s.snapshotSockets = len(snap.Sockets)
		for _, o := range s.Reconciliation.OutOfStep {
			if o.Socket == nil && in.aliveOnly { // gone without its close
				s.ClosesMissing++
				if !o.LossCounted {
					s.ClosesMissingUncounted++
				}
			}
		}
	}
	s.Missing = s.MissingGaps + s.Reconciliation.MissingUncounted
	s.write(&sum)
	if summaryOut != nil {
		if err := summaryOut.WriteJSON(s); err != nil && runErr == nil {
			runErr = err
		}
	}
	writeBounded(stderr, sum.Bytes(), giveUp, stderrGrace)
	if runErr != nil {
		return runErr
	}
	return detachErr
}

func isAre(n uint64) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// lifeReconcileNote says why the reconciliation does not look for the
// connections open at the start ("" when it does): only the kernel's own
// record is compared then.
func lifeReconcileNote(states, pids, startSnap bool) string {
	switch {
	case states:
		return "--state: a close from another state is not delivered"
	case pids:
		return "--pid: the kernel selects by the owner it knows at the close, which the start snapshot cannot foresee"
	case !startSnap:
		return "no snapshot at the start: the connections open then are not known"
	}
	return ""
}

// openConns is what life believes of the connections open at its start
// (the start snapshot's full sockets that the filters select, and with
// --listeners the listeners): alive until their close arrives. The
// reconciliation looks for the ones left at the end (reconcileInput's
// aliveOnly). Their loss sequence is 0, from before the run: with exact
// loss, any loss counted in the run may be theirs.
type openConns map[uint64]model.TrackedSocket

func openConnections(snap *tracer.Snapshot, listeners, exactLoss bool, keep func(*model.SocketInfo) bool) openConns {
	o := openConns{}
	for i := range snap.Sockets {
		so := &snap.Sockets[i]
		if so.Kind != model.KindFull || so.State == model.Close || so.State == model.Listen && !listeners || !keep(so) {
			continue
		}
		o[so.Skaddr] = model.TrackedSocket{Skaddr: so.Skaddr, State: so.State, TsNs: snap.StartNs, LossKnown: exactLoss, Netns: so.Netns}
	}
	return o
}

func (o openConns) Lookup(skaddr uint64) (model.TrackedSocket, bool) {
	s, ok := o[skaddr]
	return s, ok
}

func (o openConns) Sockets() iter.Seq[model.TrackedSocket] {
	return func(yield func(model.TrackedSocket) bool) {
		for _, s := range o {
			if !yield(s) {
				return
			}
		}
	}
}

// lifeHandler formats each ->CLOSE as one connection into its output
// buffer and hands it to the output's writer (asyncOut, as trace's
// handler does: a reader that stopped reading holds up the end of the
// run only until giveUp).
type lifeHandler struct {
	out     *asyncOut
	buf     outBuf
	giveUp  <-chan struct{}
	mode    string
	cgroups *tracer.CgroupResolver // resolves each connection's cgroup, where the output shows it
	tracker *model.Tracker         // checks each close against the kernel's record (sparse)
	// open: the connections open at the start not closed yet (nil: not
	// followed); openAtStart how many there were.
	open        openConns
	openAtStart int
	listeners   bool
	limit       uint64
	// events counts the closes delivered; leftOut those of listeners,
	// not printed without --listeners; printed the lines formatted
	// (--count counts them); the writer counts those it wrote.
	events, leftOut, printed uint64
	// draining: the run is over (the final Drain); past --count, closes
	// are still taken (checked, and the open connections' struck off),
	// not printed.
	draining bool
}

func (h *lifeHandler) Event(e *model.Event) error {
	if e.New != model.Close {
		return nil // the kernel sends only closes
	}
	h.events++
	h.tracker.Check(e)
	if h.open != nil {
		delete(h.open, e.Skaddr)
	}
	if !h.listeners && e.Old == model.Listen {
		h.leftOut++
		return nil
	}
	if h.limit > 0 && h.printed >= h.limit {
		return nil // past --count: taken, not printed
	}
	if h.cgroups != nil {
		e.Cgroup = h.cgroups.Lookup(e.CgroupID)
	}
	if h.mode == outJSON {
		h.buf.b = appendLifeJSON(h.buf.b, e)
	} else {
		h.buf.b = appendLifeLine(h.buf.b, e, h.mode == outWide)
	}
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

// Flush hands what is formatted to the writer; a write error ends the run
// through the writer's onFail.
func (h *lifeHandler) Flush() error {
	if len(h.buf.b) > 0 {
		h.hand()
	}
	return nil
}

// hand gives the buffer to the writer, or drops its lines when the run
// must end and the writer is still stuck (counted as not written).
func (h *lifeHandler) hand() {
	if !h.out.swap(&h.buf, h.giveUp) {
		h.buf.b, h.buf.lines = h.buf.b[:0], 0
	}
}

// lifeSummary is what life prints on stderr at the end, and writes with
// --summary-json: trace's figures, for closes. Its keys are documented in
// the README.
type lifeSummary struct {
	// Transitions the programs handled, host-wide, before the filters.
	Transitions uint64 `json:"transitions"`
	// Events: the closes delivered (they passed the filters);
	// ListenersLeftOut of them listeners', not printed without
	// --listeners; PastCount those that came after --count was reached.
	// Printed: the lines written whole; NotWritten formatted but never
	// written, because standard output ended (Output says how).
	Events           uint64    `json:"events"`
	ListenersLeftOut uint64    `json:"listeners_left_out"`
	PastCount        uint64    `json:"past_count"`
	Printed          uint64    `json:"printed"`
	NotWritten       uint64    `json:"not_written"`
	Output           outputEnd `json:"output"`
	// Lost counted by the kernel, as in trace's summary: LostFiltered of
	// closes that had passed the filters, LostHostWide the recursion
	// misses, anyone's.
	Lost         uint64 `json:"lost"`
	LostFiltered uint64 `json:"lost_filtered"`
	LostHostWide uint64 `json:"lost_host_wide"`
	// Missing: transitions known missing without any kernel count:
	// MissingGaps those the closes' gaps prove the programs never ran for
	// (beyond the counted loss), plus the reconciliation's
	// missing_uncounted. ClosesMissing: connections open at the start,
	// gone at the end, whose close never came (their lines are missing);
	// ClosesMissingUncounted of them with no loss counted in the run.
	Missing                uint64          `json:"missing"`
	MissingGaps            uint64          `json:"missing_gaps"`
	MissingEstimate        bool            `json:"missing_estimate"`
	OpenAtStart            int             `json:"open_at_start"`
	ClosesMissing          uint64          `json:"closes_missing"`
	ClosesMissingUncounted uint64          `json:"closes_missing_uncounted"`
	Reconciliation         reconcileDoc    `json:"reconciliation"`
	Kernel                 tracer.Counters `json:"kernel"`
	RescueNested           bool            `json:"rescue_nested"`
	Model                  string          `json:"model"`
	// Check: the closes checked against the state the programs last saw
	// each socket in.
	Check model.TrackerStats `json:"check"`

	reconcileNote   string
	snapshotSockets int
	listeners       bool // --listeners: the listeners open at the start are followed too
}

func (s *lifeSummary) write(w io.Writer) {
	c := s.Kernel
	fmt.Fprintf(w, "\ntcpstate life summary\n")
	var not []string
	if s.ListenersLeftOut > 0 {
		not = append(not, plural(s.ListenersLeftOut, "listener's", "listeners'")+", not printed without --listeners")
	}
	if s.PastCount > 0 {
		not = append(not, fmt.Sprintf("%d past --count", s.PastCount))
	}
	extra := ""
	if len(not) > 0 {
		extra = "; " + strings.Join(not, "; ")
	}
	fmt.Fprintf(w, "  delivered:       %s (%d printed%s%s)\n", plural(s.Events, "close", "closes"), s.Printed,
		fmtOutputEnd(s.Output, s.NotWritten, "line", "lines"), extra)
	fmt.Fprintf(w, "  lost, counted:   %s\n", fmtLost(&c, s.RescueNested, "                   "))
	fmt.Fprintf(w, "  missing:         %s\n", fmtMissing(s.Missing, s.MissingGaps, &s.Reconciliation, s.MissingEstimate))
	fmt.Fprintf(w, "  closes missing:  %s\n", s.fmtClosesMissing())
	fmt.Fprintf(w, "  reconciliation:  %s\n", fmtReconciliation(&s.Reconciliation, s.snapshotSockets, ""))
	writeOutOfStep(w, &s.Reconciliation)
	k := s.Check
	fmt.Fprintf(w, "  checks:          each close against the state the kernel last saw the socket in: ok %d, unknown %d (no state seen), gap %d (%d after counted loss), illegal %d (model %s)\n",
		k.OK, k.Unknown, k.Gaps(), k.GapAfterLoss, k.Illegal, s.Model)
}

// fmtClosesMissing says which connections' closes are known missing, and
// which cannot be known.
func (s *lifeSummary) fmtClosesMissing() string {
	const unknowable = "a connection opened during the run whose close the kernel skipped leaves nothing to find: not known"
	switch {
	case !s.Reconciliation.Done:
		return "not looked for: the reconciliation could not run; " + unknowable
	case s.reconcileNote != "":
		return "not looked for (" + s.reconcileNote + "); " + unknowable
	case s.OpenAtStart == 0:
		return "none known: no connection the filters select was open at the start; " + unknowable
	}
	open := plural(uint64(s.OpenAtStart), "connection", "connections")
	if s.listeners {
		open = plural(uint64(s.OpenAtStart), "connection or listener", "connections and listeners")
	}
	return fmt.Sprintf("%d of the %s open at the start %s gone without their close delivered (their lines are missing; %d of them with no loss counted in the run); %s",
		s.ClosesMissing, open, isAre(s.ClosesMissing), s.ClosesMissingUncounted, unknowable)
}

// The table: fixed columns wide enough for IPv4; IPv6 lines are longer
// (each line is whole and readable on its own; life prints no running
// header), and so are -o wide's whose cgroup is a path longer than a
// container's name.
const (
	lifeTimeW   = 15 // 15:04:05.000000
	lifePidW    = 7
	lifeAddrW   = 21
	lifeCommW   = 16
	lifeCgroupW = 24 // docker:4f797c539e6c, systemd:nginx.service (cgSteps[0])
)

func appendLifeHeader(buf []byte, wide bool) []byte {
	buf = pad(buf, "TIME", lifeTimeW)
	buf = padLeft(buf, "PID", lifePidW)
	buf = append(buf, ' ')
	buf = pad(buf, "COMM", lifeCommW)
	buf = pad(buf, "LOCAL", lifeAddrW)
	buf = pad(buf, "REMOTE", lifeAddrW)
	buf = padLeft(buf, "DURATION", 10)
	buf = padLeft(buf, "TX_BYTES", 12)
	buf = padLeft(buf, "RX_BYTES", 12)
	buf = padLeft(buf, "RETRANS", 8)
	buf = padLeft(buf, "RTT_MS", 9)
	buf = append(buf, "  "...)
	if wide {
		buf = pad(buf, "NETNS", netnsW)
		buf = pad(buf, "CGROUP", lifeCgroupW)
	}
	buf = append(buf, "CAUSE\n"...)
	return buf
}

func appendLifeLine(buf []byte, e *model.Event, wide bool) []byte {
	buf = e.Time.AppendFormat(buf, "15:04:05.000000")
	buf = append(buf, ' ')
	if e.OwnerKnown() {
		buf = padLeft(buf, strconv.FormatUint(uint64(e.Pid), 10), lifePidW)
		buf = append(buf, ' ')
		var w int
		buf, w = termsafe.Append(buf, e.Comm.Bytes())
		buf = fill(buf, lifeCommW-w+1)
	} else {
		buf = padLeft(buf, "-", lifePidW)
		buf = append(buf, ' ')
		buf = pad(buf, "-", lifeCommW)
	}
	start := len(buf)
	buf = appendAddrPort(buf, e.Saddr, e.Sport)
	buf = fill(buf, lifeAddrW-(len(buf)-start)+1)
	start = len(buf)
	buf = appendAddrPort(buf, e.Daddr, e.Dport)
	buf = fill(buf, lifeAddrW-(len(buf)-start)+1)
	dur := "-"
	if e.AgeNs != 0 {
		dur = fmtDuration(time.Duration(e.AgeNs))
		if e.Flags&model.FlagAgeAtLeast != 0 {
			dur = ">=" + dur
		}
	}
	buf = padLeft(buf, dur, 10)
	if e.Flags&model.FlagCounts != 0 {
		buf = padLeft(buf, strconv.FormatUint(e.BytesAcked, 10), 12)
		buf = padLeft(buf, strconv.FormatUint(e.BytesReceived, 10), 12)
		buf = padLeft(buf, strconv.FormatUint(uint64(e.TotalRetrans), 10), 8)
		buf = padLeft(buf, strconv.FormatFloat(float64(e.SrttUs)/1000, 'f', 3, 64), 9)
	} else {
		buf = padLeft(buf, "-", 12)
		buf = padLeft(buf, "-", 12)
		buf = padLeft(buf, "-", 8)
		buf = padLeft(buf, "-", 9)
	}
	buf = append(buf, "  "...)
	if wide {
		if e.Netns != 0 {
			start := len(buf)
			buf = strconv.AppendUint(buf, uint64(e.Netns), 10)
			buf = fill(buf, netnsW-(len(buf)-start)+1)
		} else {
			buf = pad(buf, "-", netnsW)
		}
		var n int
		buf, n = appendCgroupLabel(buf, e.Cgroup, e.CgroupID)
		buf = fill(buf, lifeCgroupW-n+1)
	}
	buf = append(buf, e.CloseFacts.Cause().String()...)
	if e.CloseErr != 0 {
		buf = append(buf, ' ', '(')
		buf = append(buf, model.ErrnoName(e.CloseErr)...)
		buf = append(buf, ')')
	}
	if e.ResetReason != "" {
		buf = append(buf, " reason "...)
		buf, _ = termsafe.Append(buf, e.ResetReason)
	}
	return append(buf, '\n')
}

func appendLifeJSON(buf []byte, e *model.Event) []byte {
	cause := e.CloseFacts.Cause()
	buf = append(buf, `{"time":"`...)
	buf = e.Time.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","pid":`...)
	buf = strconv.AppendUint(buf, uint64(e.Pid), 10)
	buf = append(buf, `,"comm":`...)
	buf = model.AppendJSONString(buf, e.Comm.Bytes())
	buf = append(buf, `,"family":"`...)
	buf = append(buf, e.Family.String()...)
	buf = append(buf, `","saddr":"`...)
	buf = e.Saddr.AppendTo(buf)
	buf = append(buf, `","sport":`...)
	buf = strconv.AppendUint(buf, uint64(e.Sport), 10)
	buf = append(buf, `,"daddr":"`...)
	buf = e.Daddr.AppendTo(buf)
	buf = append(buf, `","dport":`...)
	buf = strconv.AppendUint(buf, uint64(e.Dport), 10)
	buf = append(buf, `,"netns":`...)
	buf = strconv.AppendUint(buf, uint64(e.Netns), 10)
	buf = model.AppendCgroupKeys(buf, e)
	buf = append(buf, `,"duration_ns":`...)
	if e.AgeNs != 0 {
		buf = strconv.AppendUint(buf, e.AgeNs, 10)
	} else {
		buf = append(buf, "null"...)
	}
	buf = append(buf, `,"duration_at_least":`...)
	buf = strconv.AppendBool(buf, e.Flags&model.FlagAgeAtLeast != 0)
	buf = model.AppendCounts(buf, e)
	buf = append(buf, `,"cause":"`...)
	buf = append(buf, cause.Cause.String()...)
	buf = append(buf, `","cause_detail":"`...)
	buf = append(buf, cause.Detail...)
	buf = append(buf, `","error":"`...)
	if e.CloseErr != 0 {
		buf = append(buf, model.ErrnoName(e.CloseErr)...)
	}
	buf = append(buf, `","reset_reason":`...)
	buf = model.AppendJSONString(buf, []byte(e.ResetReason))
	return append(buf, "}\n"...)
}
