// Package tracer owns every kernel resource tcpstate uses: it checks the
// environment, loads the BPF objects, fills the filter maps, attaches the
// programs, reads the ring buffer and closes it all again, in reverse order.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
)

// Defaults for Options.
const (
	DefaultRingSize     = 2 << 20 // bytes; ~18k events
	DefaultMaxSockets   = 65536   // sockets whose owner and state time the kernel remembers
	DefaultPollInterval = 10 * time.Millisecond
	lossCheckInterval   = 100 * time.Millisecond
)

// Values of port_filter and of the filter_ports setting (PORT_* in the C file).
const (
	portEither = 0x1
	portLocal  = 0x2
	portRemote = 0x4
)

// Indexes of the counters map (enum counter in the C file).
const (
	cntRingbufFull = iota
	cntSockInsert
	cntSockDelete
	cntHeldOverflow
	cntHeldInsert
	cntHeldDelete
	cntAccept
	cntPortOther
	cntPidOther
	cntRescued
	cntSeen
	cntMax
)

// Options selects what the kernel lets through and how big its maps are.
// Different filters AND; the values of one filter OR.
type Options struct {
	Ports  []uint16 // local or remote port
	LPorts []uint16 // local port
	RPorts []uint16 // remote port
	Pids   []uint32 // owner process (tgid)
	Family model.Family
	States []model.State // transitions into or out of these states

	// Mode is what the kernel does with events that pass (default ModeStream).
	Mode Mode
	// Model is the transition model the kernel checks against in
	// ModeAnomalies (default: linux).
	Model *model.Model

	RingSize     int           // ring buffer bytes, a power of two >= page size
	MaxSockets   int           // entries of the per-socket map
	PollInterval time.Duration // longest an event waits in the ring buffer

	// Warn receives non-fatal problems (for example: no tracefs, so accepted
	// sockets keep their listener's owner). Nil discards them.
	Warn func(string)
	// Verbose puts the verifier's whole log into a load error.
	Verbose bool
}

func (o *Options) filtered() bool {
	return len(o.Ports) > 0 || len(o.LPorts) > 0 || len(o.RPorts) > 0 || len(o.Pids) > 0
}

// Tracer is a loaded, attached tcpstate. Close releases everything.
type Tracer struct {
	opts   Options
	objs   tcpstateObjects
	links  []link.Link
	reader *ringbuf.Reader
	clock  Clock
	accept bool // the accept programs are attached
}

// Open checks the environment, loads and attaches the programs. The events
// flow into the ring buffer from then on; call Run to read them.
func Open(opts Options) (t *Tracer, err error) {
	if opts.RingSize == 0 {
		opts.RingSize = DefaultRingSize
	}
	if opts.MaxSockets == 0 {
		opts.MaxSockets = DefaultMaxSockets
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Warn == nil {
		opts.Warn = func(string) {}
	}
	if opts.Mode == 0 {
		opts.Mode = ModeStream
	}
	if opts.Model == nil {
		if opts.Model, err = model.ModelByName(model.DefaultModelName); err != nil {
			return nil, err
		}
	}
	if err := checkEnvironment(); err != nil {
		return nil, err
	}

	spec, err := loadTcpstate()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	if err := configure(spec, &opts); err != nil {
		return nil, err
	}

	tr := &Tracer{opts: opts}
	defer func() {
		if err != nil {
			tr.Close()
		}
	}()
	if err := spec.LoadAndAssign(&tr.objs, nil); err != nil {
		return nil, loadError(err, opts.Verbose)
	}
	if err := tr.fillFilters(); err != nil {
		return nil, err
	}

	// The reader first, so nothing attached writes into a ring nobody maps.
	if tr.reader, err = ringbuf.NewReader(tr.objs.Events); err != nil {
		return nil, fmt.Errorf("opening the ring buffer reader: %w", err)
	}
	tr.clock = NewClock()

	// The rescue program must come second: probes run in attach order.
	for _, p := range []*ebpf.Program{tr.objs.HandleSetState, tr.objs.RescueSetState} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return nil, privilegeHint(fmt.Errorf("attaching tp_btf/inet_sock_set_state: %w", err))
		}
		tr.links = append(tr.links, l)
	}
	tr.attachAccept()
	return tr, nil
}

// configure writes the settings and map sizes into the spec before loading.
func configure(spec *ebpf.CollectionSpec, o *Options) error {
	if o.RingSize < os.Getpagesize() || o.RingSize&(o.RingSize-1) != 0 {
		return fmt.Errorf("ring buffer size %d is not a power of two of at least %d bytes", o.RingSize, os.Getpagesize())
	}
	if o.MaxSockets < 16 {
		return fmt.Errorf("max sockets %d is too small (at least 16)", o.MaxSockets)
	}
	var states uint16
	var kinds uint8
	if len(o.Ports) > 0 {
		kinds |= portEither
	}
	if len(o.LPorts) > 0 {
		kinds |= portLocal
	}
	if len(o.RPorts) > 0 {
		kinds |= portRemote
	}
	for _, s := range o.States {
		if !s.Valid() {
			return fmt.Errorf("invalid state %d", s)
		}
		states |= 1 << s
	}
	var pids uint8
	if len(o.Pids) > 0 {
		pids = 1
	}
	set := map[string]any{
		"filter_family": uint16(o.Family),
		"filter_ports":  kinds,
		"filter_pids":   pids,
		"filter_states": states,
		// Wake the reader early only when half the ring is pending; the
		// poll interval bounds the latency otherwise.
		"wakeup_bytes":   uint64(o.RingSize / 2),
		"mode_stream":    b2u(o.Mode&ModeStream != 0),
		"mode_anomalies": b2u(o.Mode&ModeAnomalies != 0),
		"mode_aggregate": b2u(o.Mode&ModeAggregate != 0),
		"edge_mask":      o.Model.Mask(),
	}
	for name, v := range set {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("BPF object has no setting %q", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}

	if o.Mode == ModeAggregate {
		o.RingSize = os.Getpagesize() // nothing is sent
	}
	spec.Maps["events"].MaxEntries = uint32(o.RingSize)
	spec.Maps["socks"].MaxEntries = uint32(o.MaxSockets)
	if !o.filtered() {
		// Nothing is ever held back without port or pid filters.
		spec.Maps["held"].MaxEntries = 1
	}
	spec.Maps["port_filter"].MaxEntries = uint32(max(1, len(o.Ports)+len(o.LPorts)+len(o.RPorts)))
	spec.Maps["pid_filter"].MaxEntries = uint32(max(1, len(o.Pids)))
	return nil
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func (t *Tracer) fillFilters() error {
	kinds := map[uint16]uint8{}
	for _, p := range t.opts.Ports {
		kinds[p] |= portEither
	}
	for _, p := range t.opts.LPorts {
		kinds[p] |= portLocal
	}
	for _, p := range t.opts.RPorts {
		kinds[p] |= portRemote
	}
	for p, k := range kinds {
		if err := t.objs.PortFilter.Put(p, k); err != nil {
			return fmt.Errorf("filling the port filter: %w", err)
		}
	}
	for _, pid := range t.opts.Pids {
		if err := t.objs.PidFilter.Put(pid, uint8(1)); err != nil {
			return fmt.Errorf("filling the pid filter: %w", err)
		}
	}
	return nil
}

// attachAccept attaches the accept()/accept4() exit programs. They are
// classic tracepoints and need tracefs; without them an accepted socket
// keeps its listener's owner until its owner closes or shuts it down.
func (t *Tracer) attachAccept() {
	if err := ensureTracefs(); err != nil {
		t.opts.Warn(fmt.Sprintf("accepted sockets keep their listener's owner until closed: %v", err))
		return
	}
	for name, prog := range map[string]*ebpf.Program{
		"sys_exit_accept4": t.objs.HandleAccept4Exit,
		"sys_exit_accept":  t.objs.HandleAcceptExit,
	} {
		l, err := link.Tracepoint("syscalls", name, prog, nil)
		if err != nil {
			t.opts.Warn(fmt.Sprintf("accepted sockets keep their listener's owner until closed: attaching tracepoint syscalls/%s: %v", name, err))
			continue
		}
		t.links = append(t.links, l)
		t.accept = true
	}
}

// Close detaches and releases everything, in reverse order of acquisition.
func (t *Tracer) Close() error {
	errs := []error{t.Detach()}
	if t.reader != nil {
		errs = append(errs, t.reader.Close())
		t.reader = nil
	}
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}

// Handler receives what Run reads.
type Handler interface {
	// Event is called for every event, in ring buffer order. e is reused
	// after Event returns.
	Event(e *model.Event) error
	// Flush is called whenever the ring buffer has been drained, at least
	// every poll interval while events flow: the place to flush output.
	// lost is the number of events the kernel newly reports lost.
	Flush(lost uint64) error
}

// Run reads events until ctx is done or the handler returns an error. A
// handler error ErrStop ends Run without error.
func (t *Tracer) Run(ctx context.Context, h Handler) error {
	lost := func() (uint64, error) {
		c, err := t.Counters()
		return c.Lost(), err
	}
	return readLoop(ctx, t.reader, t.clock, t.opts.PollInterval, lost, h)
}

// recordReader is what the read loop needs of the ring buffer: a
// *ringbuf.Reader, or a fake that tests feed with Encode'd samples.
type recordReader interface {
	ReadInto(*ringbuf.Record) error
	SetDeadline(time.Time)
}

// readLoop is Run apart from the kernel. The reader's deadline is the poll
// interval: the BPF program does not wake the reader per event, so a
// deadline error is how the loop learns that the ring is drained (it comes
// after the records that were pending). Then the handler flushes, told how
// many events the kernel newly reports lost (checked at most every
// lossCheckInterval).
func readLoop(ctx context.Context, r recordReader, clock Clock, poll time.Duration, lost func() (uint64, error), h Handler) error {
	var (
		rec      ringbuf.Record
		ev       model.Event
		lostSeen uint64
		nextLoss time.Time
	)
	r.SetDeadline(time.Now().Add(poll))
	for {
		err := r.ReadInto(&rec)
		switch {
		case err == nil:
			if err := deliver(&rec, clock, &ev, h); err != nil {
				return stopOK(err)
			}
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		var newly uint64
		if now := time.Now(); now.After(nextLoss) {
			nextLoss = now.Add(lossCheckInterval)
			total, err := lost()
			if err != nil {
				return err
			}
			if total > lostSeen {
				newly, lostSeen = total-lostSeen, total
			}
		}
		if err := h.Flush(newly); err != nil {
			return stopOK(err)
		}
		if ctx.Err() != nil {
			return nil
		}
		r.SetDeadline(time.Now().Add(poll))
	}
}

// ErrStop, returned by a Handler, ends Run cleanly (for example after --count events).
var ErrStop = errors.New("stop")

func stopOK(err error) error {
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// Counters is what the kernel side counted.
type Counters struct {
	// Events lost, by cause.
	RingbufFull     uint64 `json:"ringbuf_full"`     // ring buffer reservation failed
	RecursionMisses uint64 `json:"recursion_misses"` // the kernel skipped the program (nested run) and the rescue program did not catch it
	HeldOverflow    uint64 `json:"held_overflow"`    // a socket's held-back queue was full

	// Rescued counts nested transitions the first program missed and the
	// rescue program handled (not lost).
	Rescued uint64 `json:"rescued"`

	// Owners forgotten: entries of the per-socket map evicted before the
	// socket's ->CLOSE (inserts - deletes - live).
	SocketEvictions uint64 `json:"socket_evictions"`
	// Held-back events forgotten with their LRU entry (also lost events).
	HeldEvictions uint64 `json:"held_evictions"`

	SocketsTracked uint64 `json:"sockets_tracked"` // per-socket entries created
	SocketsLive    uint64 `json:"sockets_live"`    // entries still in the map
	Accepts        uint64 `json:"accepts"`         // owners named by accept()

	// TCP transitions the programs handled, host-wide, before any filter
	// (the rescued ones included, the lost ones not).
	Transitions uint64 `json:"transitions"`

	// Kernel run-time statistics of the main program; RunNs is 0 unless
	// kernel.bpf_stats_enabled is set.
	ProgRuns  uint64 `json:"prog_runs"`
	ProgRunNs uint64 `json:"prog_run_ns"`
}

// Lost sums the events lost by every cause.
func (c Counters) Lost() uint64 {
	return c.RingbufFull + c.RecursionMisses + c.HeldOverflow + c.HeldEvictions
}

// Counters reads the kernel's counters. It is cheap (two syscalls) except
// for the live entry counts, which Summary adds.
func (t *Tracer) Counters() (Counters, error) {
	var c Counters
	per, err := t.allCounters()
	if err != nil {
		return c, err
	}
	st, err := t.objs.HandleSetState.Stats()
	if err != nil {
		return c, fmt.Errorf("reading program stats: %w", err)
	}
	c.RingbufFull = per[cntRingbufFull]
	c.Rescued = per[cntRescued]
	if st.RecursionMisses > c.Rescued {
		c.RecursionMisses = st.RecursionMisses - c.Rescued
	}
	c.HeldOverflow = per[cntHeldOverflow]
	c.SocketsTracked = per[cntSockInsert]
	c.Accepts = per[cntAccept]
	c.ProgRuns = st.RunCount
	c.Transitions = per[cntSeen]
	c.ProgRunNs = uint64(st.Runtime)
	return c, nil
}

// Summary reads the counters and counts the live map entries, to tell
// evictions apart. Call it after detaching (Detach) for exact figures.
func (t *Tracer) Summary() (Counters, error) {
	c, err := t.Counters()
	if err != nil {
		return c, err
	}
	per, err := t.allCounters()
	if err != nil {
		return c, err
	}
	live, err := countEntries(t.objs.Socks)
	if err != nil {
		return c, err
	}
	heldLive, err := countEntries(t.objs.Held)
	if err != nil {
		return c, err
	}
	c.SocketsLive = live
	if ins, del := c.SocketsTracked, per[cntSockDelete]; ins > del+live {
		c.SocketEvictions = ins - del - live
	}
	if ins, del := per[cntHeldInsert], per[cntHeldDelete]; ins > del+heldLive {
		c.HeldEvictions = ins - del - heldLive
	}
	return c, nil
}

func (t *Tracer) allCounters() ([cntMax]uint64, error) {
	var per [cntMax]uint64
	for i := range cntMax {
		v, err := t.sum(i)
		if err != nil {
			return per, err
		}
		per[i] = v
	}
	return per, nil
}

func countEntries(m *ebpf.Map) (uint64, error) {
	var (
		n   uint64
		key uint64 // socks and held are keyed by skaddr
		err error
	)
	for err = m.NextKey(nil, &key); err == nil; err = m.NextKey(key, &key) {
		n++
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, fmt.Errorf("counting entries of map %s: %w", m, err)
	}
	return n, nil
}

// Detach stops new events: it closes the links but keeps maps and the
// reader, so the ring can be drained and the counters read.
func (t *Tracer) Detach() error {
	var errs []error
	for _, l := range slices.Backward(t.links) {
		errs = append(errs, l.Close())
	}
	t.links = nil
	return errors.Join(errs...)
}

// AcceptAttached reports whether accepted sockets get their owner from accept().
func (t *Tracer) AcceptAttached() bool { return t.accept }

// Drain reads what is left in the ring buffer after Detach.
func (t *Tracer) Drain(h Handler) error { return drain(t.reader, t.clock, h) }

func drain(r recordReader, clock Clock, h Handler) error {
	r.SetDeadline(time.Now())
	var rec ringbuf.Record
	var ev model.Event
	for {
		err := r.ReadInto(&rec)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("draining the ring buffer: %w", err)
		}
		if err := deliver(&rec, clock, &ev, h); err != nil {
			return stopOK(err)
		}
	}
}

func deliver(rec *ringbuf.Record, clock Clock, ev *model.Event, h Handler) error {
	if err := Decode(rec.RawSample, clock, ev); err != nil {
		return err
	}
	return h.Event(ev)
}

func monotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
