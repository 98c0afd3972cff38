package tracer

import (
	"fmt"
	"strings"
	"time"

	"github.com/tcpstate/tcpstate/model"
)

// Defaults for Options.
const (
	DefaultRingSize     = 2 << 20 // bytes; ~15k events
	DefaultMaxSockets   = 65536   // sockets that may wait at once (held events, accept records)
	DefaultPollInterval = 10 * time.Millisecond
	DefaultMaxCgroups   = 1024 // cgroups stats counts by
)

// Mode says what the kernel does with an event that passes the filters.
type Mode uint8

// The modes. They can be combined, but each command uses one.
const (
	// ModeStream sends every event to user space (trace).
	ModeStream Mode = 1 << iota
	// ModeAnomalies sends only the events the in-kernel model check flags
	// as illegal or a gap (trace --anomalies).
	ModeAnomalies
	// ModeAggregate counts events in kernel maps and sends nothing (stats).
	ModeAggregate
)

// AcceptHook says how the owner of an accepted socket is learnt.
type AcceptHook string

// The accept hooks. AcceptAuto picks the cheapest the kernel allows.
const (
	AcceptAuto = AcceptHook("auto")
	// AcceptFexit: fexit/inet_csk_accept, a BPF trampoline that runs only
	// on accept(). Needs a kernel whose trampolines load (Debian's 6.1 and
	// 6.12 do; some do not: EPERM or ENOTSUPP).
	AcceptFexit = AcceptHook("fexit")
	// AcceptSyscalls: the syscalls:sys_exit_accept{,4} tracepoints. Needs
	// tracefs. Attaching any syscall tracepoint makes every system call
	// of every process on the host slower (docs/kernel.md has the figure).
	AcceptSyscalls = AcceptHook("syscalls")
	// AcceptOff: no accept program. An accepted socket keeps its
	// listener's owner (marked inherited) until its owner shuts it down or
	// closes it.
	AcceptOff = AcceptHook("off")
)

// AcceptHooks lists the values ParseAcceptHook takes.
var AcceptHooks = []AcceptHook{AcceptAuto, AcceptFexit, AcceptSyscalls, AcceptOff}

// ParseAcceptHook parses --accept-hook, case-insensitively.
func ParseAcceptHook(s string) (AcceptHook, error) {
	for _, h := range AcceptHooks {
		if strings.EqualFold(s, string(h)) {
			return h, nil
		}
	}
	names := make([]string, len(AcceptHooks))
	for i, h := range AcceptHooks {
		names[i] = string(h)
	}
	return "", fmt.Errorf("unknown accept hook %q: want %s", s, strings.Join(names, ", "))
}

// Options selects what the kernel lets through, how it does it, and how big
// its maps are.
type Options struct {
	// Filter selects sockets and transitions (model.Filter says how).
	model.Filter

	// Mode is what the kernel does with events that pass (default ModeStream).
	Mode Mode
	// Model is the transition model the kernel checks against in
	// ModeAnomalies (default: linux).
	Model *model.Model

	RingSize int // ring buffer bytes, a power of two >= page size
	// MaxSockets bounds the sockets that may wait at once: for a filter
	// decision (their held events) and for their first event after
	// accept() (the acceptor's record). Memory is spent only on sockets
	// that wait. Per-socket state itself lives in each socket and is not
	// bounded by it.
	MaxSockets   int
	PollInterval time.Duration // longest an event waits in the ring buffer

	// Accept says how accepted sockets get their owner (default AcceptAuto).
	Accept AcceptHook
	// RescueNested attaches a second program that handles transitions the
	// kernel skips because they fired, nested, while the first ran on the
	// same CPU (recursion misses). It costs every transition.
	RescueNested bool
	// OnlyCloses sends only ->CLOSE transitions (tcpstate life): one event
	// per connection, with its cause and counts.
	OnlyCloses bool
	// CPUTask reads the task on the CPU (Event.CPUPid, CPUComm) for every
	// event, not only for the transitions that name an owner.
	CPUTask bool
	// Replay loads the test-only replay program (Tracer.Replay).
	Replay bool
	// ListOnly loads only what a snapshot needs (tcpstate ls): the
	// iterators, no tracepoint program; Attach is not called.
	ListOnly bool
	// Totals (serve) counts in ModeAggregate only what serve exports: no
	// per-port, per-owner or per-cgroup tables, whose maps are sized to 1
	// (a long run must not fill maps keyed by pids or cgroups that come
	// and go). LabelPorts are service ports counted per edge apart from
	// the rest (Tracer.PortMatrices); at most MaxLabelPorts.
	Totals     bool
	LabelPorts []uint16
	// CountCgroups, with Totals, counts per socket cgroup after all (serve
	// --label-container): the cgroup_counts map, MaxCgroups entries, read
	// with ReadCgroupCounts; the caller keeps it from filling with cgroups
	// that are gone (TakeCgroupCount). Costs a hash lookup per transition.
	CountCgroups bool

	// Clock is where wall-clock times come from (default SystemClock):
	// the read loop takes the offset between its two clocks again at
	// every poll. Tests inject one that steps.
	Clock ClockSource

	// MaxCgroups bounds the cgroups stats counts by (the kernel's
	// cgroup_counts map); transitions of more are counted as not counted
	// (default DefaultMaxCgroups).
	MaxCgroups int
	// CgroupResolver resolves cgroup ids (Tracer.Cgroups); nil: the
	// tracer makes one for the host's cgroup2 mount, and closes it.
	CgroupResolver *CgroupResolver
	// CgroupRescan is how often the cgroup tree is read again for the
	// cgroups of Filter.Containers while tracing runs (0: every
	// DefaultCgroupRetry; negative: never, the caller calls
	// ContainerWatch().Scan itself).
	CgroupRescan time.Duration
	// Info receives notes on what the tracer does meanwhile (a container's
	// new cgroup joined the filter). Nil discards them.
	Info func(string)

	// Warn receives non-fatal problems (for example: no tracefs, so accepted
	// sockets keep their listener's owner). Nil discards them.
	Warn func(string)
	// Lacks receives the warnings of optional parts that this kernel
	// lacks what they need (a *LacksError: the feature and the Linux
	// version that has it), which no setting of tcpstate's changes. Nil:
	// Warn receives them too.
	Lacks func(string)
	// Verbose puts the verifier's whole log into a load error.
	Verbose bool
}

func (o *Options) setDefaults() error {
	if o.RingSize == 0 {
		o.RingSize = DefaultRingSize
	}
	if o.MaxSockets == 0 {
		o.MaxSockets = DefaultMaxSockets
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Clock == nil {
		o.Clock = SystemClock()
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
	if o.Lacks == nil {
		o.Lacks = o.Warn
	}
	if o.Info == nil {
		o.Info = func(string) {}
	}
	if o.CgroupRescan == 0 {
		o.CgroupRescan = DefaultCgroupRetry
	}
	if o.Mode == 0 {
		o.Mode = ModeStream
	}
	if o.Accept == "" {
		o.Accept = AcceptAuto
	}
	if o.MaxCgroups == 0 {
		o.MaxCgroups = DefaultMaxCgroups
	}
	if o.Model == nil {
		m, err := model.ModelByName(model.DefaultModelName)
		if err != nil {
			return err
		}
		o.Model = m
	}
	return o.Filter.Validate()
}

// cgroupResolver is the resolver the options give, or one for the host.
func (o *Options) cgroupResolver() *CgroupResolver {
	if o.CgroupResolver != nil {
		return o.CgroupResolver
	}
	fs, _ := FindCgroupFS()
	return NewCgroupResolver(fs, 0, 0)
}
