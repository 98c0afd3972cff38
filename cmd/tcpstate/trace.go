package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

type traceOptions struct {
	ports, lports, rports []string
	pids                  []string
	ipv4, ipv6            bool
	states                []string
	output                string
	count                 uint64
	duration              time.Duration
	maxSockets            int
	ringSize              int
	summaryJSON           string
	verbose               bool
	noHeader              bool
}

func newTraceCmd() *cobra.Command {
	o := &traceOptions{}
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
values of one filter with OR. Port and pid filters are sticky: once a socket
matches, all its later transitions pass, and transitions it made before its
port or owner was known (CLOSE->SYN_SENT, a new child's LISTEN->SYN_RECV) are
held in the kernel and delivered when it matches (marked "held" in JSON).
--state selects single transitions.

Lost events are never silent: the summary on stderr counts them by cause.`,
		Example: `  sudo tcpstate trace
  sudo tcpstate trace --port 443 --port 8443 -o wide
  sudo tcpstate trace --pid 1234 -o json --duration 60s > transitions.jsonl
  sudo tcpstate trace --state CLOSE_WAIT --state LAST_ACK -4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrace(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.ports, "port", nil, "only sockets with this local or remote port (repeat or comma-separate for several)")
	f.StringSliceVar(&o.lports, "lport", nil, "only sockets with this local port")
	f.StringSliceVar(&o.rports, "rport", nil, "only sockets with this remote port")
	f.StringSliceVar(&o.pids, "pid", nil, "only sockets owned by this process id")
	f.BoolVarP(&o.ipv4, "ipv4", "4", false, "only IPv4 sockets")
	f.BoolVarP(&o.ipv6, "ipv6", "6", false, "only IPv6 sockets (IPv4-mapped addresses included)")
	f.StringSliceVar(&o.states, "state", nil, "only transitions into or out of this state (ESTABLISHED, SYN_SENT, CLOSE_WAIT, ...)")
	f.StringVarP(&o.output, "output", "o", outTable, "output: table, wide (adds skaddr, on-CPU task, family, owner source) or json (one object per line)")
	f.Uint64Var(&o.count, "count", 0, "stop after this many events (0: no limit)")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, e.g. 30s or 5m (0: until interrupted)")
	f.BoolVar(&o.noHeader, "no-header", false, "omit the table header")
	f.IntVar(&o.maxSockets, "max-sockets", tracer.DefaultMaxSockets, "sockets the kernel remembers owners for; least recently used are evicted (and counted)")
	f.IntVar(&o.ringSize, "ring-size", tracer.DefaultRingSize, "ring buffer size in bytes (a power of two)")
	f.StringVar(&o.summaryJSON, "summary-json", "", "also write the end-of-run summary as JSON to this file")
	f.BoolVar(&o.verbose, "verbose", false, "print the verifier's full log if the kernel rejects the program")
	return cmd
}

// parsePorts validates port flags: numbers from 1 to 65535.
func parsePorts(flag string, vals []string) ([]uint16, error) {
	var out []uint16
	for _, v := range vals {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 || n > 65535 {
			return nil, usagef("--%s %q: a port is a number from 1 to 65535", flag, v)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

func parsePids(vals []string) ([]uint32, error) {
	var out []uint32
	for _, v := range vals {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 || n > 1<<22 {
			return nil, usagef("--pid %q: a process id is a number from 1 to %d", v, 1<<22)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

func (o *traceOptions) tracerOptions() (tracer.Options, error) {
	var (
		t   tracer.Options
		err error
	)
	if t.Ports, err = parsePorts("port", o.ports); err != nil {
		return t, err
	}
	if t.LPorts, err = parsePorts("lport", o.lports); err != nil {
		return t, err
	}
	if t.RPorts, err = parsePorts("rport", o.rports); err != nil {
		return t, err
	}
	if t.Pids, err = parsePids(o.pids); err != nil {
		return t, err
	}
	switch {
	case o.ipv4 && o.ipv6:
		return t, usagef("-4 and -6 exclude each other; give neither for both families")
	case o.ipv4:
		t.Family = model.AFInet
	case o.ipv6:
		t.Family = model.AFInet6
	}
	for _, s := range o.states {
		st, err := model.ParseState(s)
		if err != nil {
			return t, usagef("--state: %v", err)
		}
		t.States = append(t.States, st)
	}
	if o.duration < 0 {
		return t, usagef("--duration %v: must not be negative", o.duration)
	}
	if o.maxSockets < 16 || o.maxSockets > 1<<24 {
		return t, usagef("--max-sockets %d: must be from 16 to %d", o.maxSockets, 1<<24)
	}
	if o.ringSize < os.Getpagesize() || o.ringSize > 1<<30 || o.ringSize&(o.ringSize-1) != 0 {
		return t, usagef("--ring-size %d: must be a power of two from %d to %d", o.ringSize, os.Getpagesize(), 1<<30)
	}
	t.MaxSockets, t.RingSize, t.Verbose = o.maxSockets, o.ringSize, o.verbose
	return t, nil
}

// traceHandler formats each event and writes it out; Flush pushes the
// buffered lines to the output, so output is never more than one poll
// interval (10 ms) behind the kernel.
type traceHandler struct {
	out     *bufio.Writer
	p       printer
	buf     []byte
	limit   uint64
	events  uint64
	printed uint64
}

func (h *traceHandler) Event(e *model.Event) error {
	h.events++
	h.buf = h.p.appendEvent(h.buf[:0], e, nil)
	if _, err := h.out.Write(h.buf); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	h.printed++
	if h.limit > 0 && h.printed >= h.limit {
		return tracer.ErrStop
	}
	return nil
}

func (h *traceHandler) Flush(lost uint64) error {
	if err := h.out.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

func runTrace(ctx context.Context, o *traceOptions, stdout, stderr io.Writer) error {
	topts, err := o.tracerOptions()
	if err != nil {
		return err
	}
	p, err := newPrinter(o.output)
	if err != nil {
		return err
	}
	topts.Warn = func(msg string) { fmt.Fprintf(stderr, "tcpstate: warning: %s\n", msg) }

	t, err := tracer.Open(topts)
	if err != nil {
		return err
	}
	defer t.Close()

	h := &traceHandler{out: bufio.NewWriterSize(stdout, 64<<10), p: p, buf: make([]byte, 0, 512), limit: o.count}
	if o.output != outJSON && !o.noHeader {
		if err := writeAll(h.out, p.header(nil)); err != nil {
			return err
		}
	}
	if err := h.out.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
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
	if err := h.out.Flush(); err != nil && runErr == nil {
		runErr = fmt.Errorf("writing output: %w", err)
	}
	c, sumErr := t.Summary()
	if sumErr != nil {
		fmt.Fprintf(stderr, "tcpstate: warning: %v\n", sumErr)
	}
	s := traceSummary{Events: h.events, Printed: h.printed, Lost: c.Lost(), Kernel: c, AcceptAttached: t.AcceptAttached()}
	s.write(stderr)
	if o.summaryJSON != "" {
		if err := s.writeJSON(o.summaryJSON); err != nil && runErr == nil {
			runErr = err
		}
	}
	if runErr != nil {
		return runErr
	}
	return detachErr
}

// traceSummary is what trace prints on stderr at the end, and writes with
// --summary-json.
type traceSummary struct {
	Events         uint64           `json:"events"`
	Printed        uint64           `json:"printed"`
	Lost           uint64           `json:"lost"`
	Kernel         tracer.Counters  `json:"kernel"`
	AcceptAttached bool             `json:"accept_attached"`
	Anomalies      map[string]int64 `json:"anomalies,omitempty"`
}

func (s *traceSummary) write(w io.Writer) {
	c := s.Kernel
	fmt.Fprintf(w, "\ntcpstate summary\n")
	fmt.Fprintf(w, "  events:          %d (%d printed)\n", s.Events, s.Printed)
	fmt.Fprintf(w, "  lost:            %d (ring buffer full %d, recursion misses %d, held-back queue full %d, held-back evicted %d)\n",
		s.Lost, c.RingbufFull, c.RecursionMisses, c.HeldOverflow, c.HeldEvictions)
	fmt.Fprintf(w, "  sockets tracked: %d (owners named by accept %d, owner entries evicted %d)\n",
		c.SocketsTracked, c.Accepts, c.SocketEvictions)
}

func (s *traceSummary) writeJSON(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding summary: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing summary: %w", err)
	}
	return nil
}
