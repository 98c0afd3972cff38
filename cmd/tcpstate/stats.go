package main

import (
	"bufio"
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
		Short: "Count TCP state transitions in the kernel: matrix, outcomes, histograms, stuck sockets",
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
  outcomes      how each socket's life ended, decided at its -> CLOSE from its
                last state, the states it went through and the socket error:
                  active_close        we sent FIN first: FIN_WAIT1/2 -> CLOSE
                  passive_close       the peer sent FIN first: LAST_ACK -> CLOSE
                  simultaneous_close  both at once: through CLOSING
                  reset               RST received (ECONNRESET, EPIPE)
                  timeout             retransmissions gave up (ETIMEDOUT)
                  abort               closed locally without FIN: SO_LINGER 0,
                                      unread data at close(), a child that
                                      was never accepted
                  connect_refused     connect() answered by RST (ECONNREFUSED)
                  connect_timeout     connect() got no answer (ETIMEDOUT)
                  connect_aborted     closed or failed while connecting, for
                                      another reason
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
"lost" counts transitions the kernel skipped (the program's recursion misses)
or held-back events dropped; they are missing from every table. Recursion
misses are counted for the whole host, filters or not: the kernel does not
say whose transition it skipped.

--state selects the transitions counted in the matrix, the histograms and the
per-port, per-owner and per-cgroup tables; outcomes and lifetimes count every
socket that passes the socket filters.

JSON (-o json): one document per line per report; the last one has
"final": true. Keys: final, seq (interval number; in the final document the
number of intervals), start, end (RFC 3339), seconds, model, transitions,
illegal (transitions on edges not in the model), lost, matrix (list of
{old, new, count, illegal}, non-zero cells), outcomes (every class: count),
ports (list of {port, side: local or remote, transitions, opened}, all of
them, most first),
port_other, owners (list of {pid, comm, transitions, opened}), owner_other,
owner_unknown, cgroups (list of {cgroup_id, cgroup, container,
container_runtime, pod_uid, transitions, opened}; the names where known),
cgroup_other, histograms (list of {kind: a state name, "active_open",
"passive_open" or "lifetime"; title; unit "usecs"; count; buckets: list of
{low, high, count}, non-empty buckets}), stuck (list of {skaddr, state,
in_state_s, age_s (absent when born before the start), pid, comm,
owner_known, family, saddr, sport, daddr, dport, netns, cgroup_id, cgroup,
container, pod_uid}), stuck_thresholds_s
({STATE: seconds}), and in the final document kernel (the counters of
trace --summary-json).`,
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
	f.StringVar(&o.summary, "summary-json", "", "also write the end-of-run counters (transitions, lost by cause, kernel counters) as JSON to this file")
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
	topts.Info = infoTo(stderr)
	t, err := tracer.Open(topts)
	if err != nil {
		return err
	}
	defer t.Close()
	cgroupNotes(stderr, t, true, o.kernel.verbose)
	start := time.Now()

	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	write := func(r *statsReport) error {
		var err error
		if o.output == outJSON {
			err = writeStatsJSON(out, r)
		} else {
			err = writeStatsTable(out, r, o.top)
		}
		if err != nil {
			return err
		}
		if err := out.Flush(); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		return nil
	}
	report := func(seq int, final bool, from time.Time, prev, cur *model.Aggregate, lost uint64) *statsReport {
		d := cur.Sub(prev)
		r := &statsReport{Seq: seq, Final: final, Start: from, End: time.Now(), Agg: &d, Lost: lost,
			Thresholds: o.stuck.th, Model: m, Cgroups: t.Cgroups().Lookup}
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
		prev     = &model.Aggregate{}
		prevLost uint64
		last     = start
		seq      int
	)
loop:
	for {
		select {
		case <-ctx.Done():
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
			r := report(seq, false, last, prev, cur, sat(c.Lost(), prevLost))
			if err := write(r); err != nil {
				return err
			}
			prev, prevLost, last = cur, c.Lost(), r.End
			if o.count > 0 && seq >= o.count {
				break loop
			}
		}
	}

	// Detach first: the final totals are then exact and stay still.
	end := time.Now()
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
			r := report(seq, false, last, prev, cur, sat(c.Lost(), prevLost))
			r.End = end
			if err := write(r); err != nil {
				return err
			}
		}
	}
	r := report(seq, true, start, &model.Aggregate{}, cur, c.Lost())
	r.End, r.Kernel = end, &c
	if err := write(r); err != nil {
		return err
	}
	if o.summary != "" {
		s := statsSummary{Transitions: c.Transitions, Counted: cur.Transitions(), Lost: c.Lost(), Kernel: c, Model: r.Model.Name()}
		if err := writeJSONFile(o.summary, s); err != nil {
			return err
		}
	}
	return detachErr
}

// statsSummary is what --summary-json writes: the counters trace's summary
// has, for the same tools.
type statsSummary struct {
	Transitions uint64          `json:"transitions"` // handled by the kernel, host-wide, before filters
	Counted     uint64          `json:"counted"`     // passed the filters and counted in the tables
	Lost        uint64          `json:"lost"`
	Model       string          `json:"model"`
	Kernel      tracer.Counters `json:"kernel"`
}

// sat is a - b, or 0 when b > a.
func sat(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}
