package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

type lifeOptions struct {
	filterFlags
	kernel    kernelFlags
	output    string
	count     uint64
	duration  time.Duration
	listeners bool
	noHeader  bool
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
--listeners. The summary on stderr counts what was lost, by cause.

JSON (-o json): one object per connection: time (its close, RFC 3339),
pid, comm (its owner), family, saddr, sport, daddr, dport, netns,
duration_ns (null when unknown), duration_at_least, bytes_acked,
bytes_received, retransmits, srtt_us (the four null for a listener),
cause, cause_detail (fin's side or timeout's timer, "" when none), error
(the socket error's name, "" when none), reset_reason (the kernel's
reason for a reset it sent, Linux 6.10+, "" when none).`,
		Example: `  sudo tcpstate life
  sudo tcpstate life --port 443 -o json
  sudo tcpstate life --pid 1234 --duration 1m`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLife(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.filterFlags.closing = true // --state and --pid worded for closes
	o.filterFlags.register(f)
	o.kernel.register(f)
	choiceVarP(f, &o.output, "output", "o", outTable, []string{outTable, outJSON}, "output: table or json (one object per connection)")
	f.Uint64Var(&o.count, "count", 0, "stop after this many connections (0: no limit)")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, e.g. 30s or 5m (0: until interrupted)")
	f.BoolVar(&o.listeners, "listeners", false, "also print listening sockets when they close")
	f.BoolVar(&o.noHeader, "no-header", false, "omit the table header")
	return cmd
}

func runLife(ctx context.Context, o *lifeOptions, stdout, stderr io.Writer) error {
	var topts tracer.Options
	if err := o.filterFlags.apply(&topts); err != nil {
		return err
	}
	if err := o.kernel.apply(&topts); err != nil {
		return err
	}
	if o.duration < 0 {
		return usagef("--duration %v: must not be negative", o.duration)
	}
	topts.OnlyCloses = true
	topts.RingSize = 1 << 20 // one event per connection
	topts.Warn = func(msg string) { fmt.Fprintf(stderr, "tcpstate: warning: %s\n", termsafe.String(msg)) }
	t, err := tracer.Open(topts)
	if err != nil {
		return err
	}
	defer t.Close()
	if o.kernel.verbose {
		printFeatures(stderr, t)
	}
	h := &lifeHandler{out: stdout, json: o.output == outJSON, listeners: o.listeners, limit: o.count, buf: make([]byte, 0, 64<<10)}
	if !h.json && !o.noHeader {
		h.buf = appendLifeHeader(h.buf)
	}
	if err := h.write(); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "tcpstate: printing one line per connection as it closes; Ctrl-C to stop")
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	runErr := t.Run(ctx, h)
	detachErr := t.Detach()
	if runErr == nil && (h.limit == 0 || h.printed < h.limit) {
		runErr = t.Drain(h)
	}
	if err := h.write(); err != nil && runErr == nil {
		runErr = err
	}
	if c, err := t.Counters(); err == nil {
		fmt.Fprintf(stderr, "\ntcpstate life: %s printed; lost %d (ring buffer full %d, recursion misses %d host-wide, held back and dropped %d)\n",
			plural(h.printed, "connection", "connections"), c.Lost(), c.RingbufFull, c.RecursionMisses, c.HeldOverflow+c.HeldNoSpace+c.UndecidedClosed)
	}
	if runErr != nil {
		return runErr
	}
	return detachErr
}

// lifeHandler prints each ->CLOSE as one connection.
type lifeHandler struct {
	out       io.Writer
	buf       []byte
	json      bool
	listeners bool
	limit     uint64
	printed   uint64
}

func (h *lifeHandler) Event(e *model.Event) error {
	if e.New != model.Close || (!h.listeners && e.Old == model.Listen) {
		return nil
	}
	if h.json {
		h.buf = appendLifeJSON(h.buf, e)
	} else {
		h.buf = appendLifeLine(h.buf, e)
	}
	h.printed++
	if len(h.buf) >= outBufferSize {
		if err := h.write(); err != nil {
			return err
		}
	}
	if h.limit > 0 && h.printed >= h.limit {
		return tracer.ErrStop
	}
	return nil
}

func (h *lifeHandler) Flush() error { return h.write() }

func (h *lifeHandler) write() error {
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

// The table: fixed columns wide enough for IPv4; IPv6 lines are longer
// (each line is whole and readable on its own; life prints no running
// header).
const (
	lifeTimeW = 15 // 15:04:05.000000
	lifePidW  = 7
	lifeAddrW = 21
	lifeCommW = 16
)

func appendLifeHeader(buf []byte) []byte {
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
	buf = append(buf, "  CAUSE\n"...)
	return buf
}

func appendLifeLine(buf []byte, e *model.Event) []byte {
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
