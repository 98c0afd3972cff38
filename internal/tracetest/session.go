// Package tracetest is the harness of tcpstate's privileged tests (tier 3):
// a tracer opened on the real kernel and read into memory (Session,
// Collector), the events grouped into socket incarnations (Life), the
// kernel's own record compared with them (OracleDiff), and the exact checks
// of one socket's transitions (CheckSocket, the edge lists).
//
// Tests in tracer and internal/scenario use it; the network namespaces, the
// sockets and the tracefs oracle come from internal/testnet.
package tracetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// Collector is a tracer.Handler that keeps the events it is given: every
// namespace's, or one network namespace's.
type Collector struct {
	netns   uint32
	also    map[uint32]bool // more namespaces kept (Config.AlsoNetns)
	mu      sync.Mutex
	evs     []model.Event
	closes  map[uint32]int // ->CLOSE events per namespace
	flushed chan struct{}  // pinged at every Flush
}

// NewCollector keeps the events of the network namespace netns (its
// inode, model.Event.Netns), or of every namespace if netns is 0.
func NewCollector(netns uint32) *Collector {
	return &Collector{netns: netns, closes: map[uint32]int{}, flushed: make(chan struct{}, 1)}
}

// Event keeps e.
func (c *Collector) Event(e *model.Event) error {
	if c.netns != 0 && e.Netns != c.netns && !c.also[e.Netns] {
		return nil
	}
	c.mu.Lock()
	c.evs = append(c.evs, *e)
	if e.New == model.Close {
		c.closes[e.Netns]++
	}
	c.mu.Unlock()
	return nil
}

// Flush tells the waits that a batch arrived.
func (c *Collector) Flush() error {
	select {
	case c.flushed <- struct{}{}:
	default:
	}
	return nil
}

// Events returns a copy of the events kept so far, in ring order.
func (c *Collector) Events() []model.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

// Count is the number of events kept so far.
func (c *Collector) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

// Closes is the number of ->CLOSE events of the namespace netns kept so far.
func (c *Collector) Closes(netns uint32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closes[netns]
}

// WaitCount returns the events once there are n, or what there is after
// timeout.
func (c *Collector) WaitCount(n int, timeout time.Duration) []model.Event {
	deadline := time.Now().Add(timeout)
	for c.Count() < n && time.Now().Before(deadline) {
		c.wait(deadline)
	}
	return c.Events()
}

// wait sleeps until the next Flush, 20 ms or the deadline, the earliest.
func (c *Collector) wait(deadline time.Time) {
	d := min(20*time.Millisecond, max(0, time.Until(deadline)))
	select {
	case <-c.flushed:
	case <-time.After(d):
	}
}

// Config says what a session keeps and who judges the loss it reports.
type Config struct {
	// Netns keeps only the events of this network namespace (0: every
	// namespace's).
	Netns uint32
	// AlsoNetns are more network namespaces whose events are kept with
	// Netns's (a scenario whose peers sit in namespaces of their own).
	AlsoNetns []uint32
	// JudgeLoss leaves the loss the tracer reports to the caller (Counters).
	// Otherwise the end of the test logs it, or, if the test failed, adds
	// it to the failure as a note.
	JudgeLoss bool
}

// Session is one open tracer with Run in a goroutine, as the trace command
// runs it.
type Session struct {
	t         testing.TB
	tr        *tracer.Tracer
	col       *Collector
	cancel    context.CancelFunc
	done      chan error
	once      sync.Once
	judgeLoss bool

	evs []model.Event
	// Counters is what the tracer reported at Stop (machine-wide: the
	// programs serve every namespace).
	Counters tracer.Counters
}

// Start opens a tracer with opts, keeping every namespace's events.
func Start(t testing.TB, opts tracer.Options) *Session {
	t.Helper()
	return StartConfig(t, Config{}, opts)[0]
}

// StartAll opens one tracer per Options, keeping every namespace's events.
func StartAll(t testing.TB, opts ...tracer.Options) []*Session {
	t.Helper()
	return StartConfig(t, Config{}, opts...)
}

// StartConfig opens one tracer per Options, concurrently (loading takes
// ~150 ms each), and runs each. A tracer warning fails the test (but not one
// that the kernel lacks an optional part's needs: it is logged), and so does
// a tracer without accept programs (accepted sockets would keep their
// listener's owner). Every session stops when the test ends, if not before.
func StartConfig(t testing.TB, cfg Config, opts ...tracer.Options) []*Session {
	t.Helper()
	testnet.RequireRoot(t)
	ss := make([]*Session, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		wg.Go(func() {
			o.Warn = func(msg string) { t.Errorf("tracer warning: %s", msg) }
			// A part this kernel lacks what it needs for (an older
			// kernel in make test-kernels) is logged, not a failure: the
			// tests that need the part check the feature themselves.
			o.Lacks = func(msg string) { t.Logf("tracer: this kernel lacks a feature: %s", msg) }
			tr, err := tracer.Open(o)
			if err != nil {
				errs[i] = fmt.Errorf("opening the tracer (%+v): %w", o, err)
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			col := NewCollector(cfg.Netns)
			for _, n := range cfg.AlsoNetns {
				if col.also == nil {
					col.also = map[uint32]bool{}
				}
				col.also[n] = true
			}
			s := &Session{t: t, tr: tr, col: col, cancel: cancel,
				done: make(chan error, 1), judgeLoss: cfg.JudgeLoss}
			go func() { s.done <- tr.Run(ctx, s.col) }()
			ss[i] = s
		})
	}
	wg.Wait()
	for _, s := range ss {
		if s != nil {
			t.Cleanup(func() { s.Stop() })
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range ss {
		if s.tr.AcceptHook() == tracer.AcceptOff {
			t.Fatal("the accept programs are not attached: accepted sockets would keep their listener's owner")
		}
	}
	return ss
}

// Tracer is the session's tracer, for the calls a test makes while it runs
// (Sockets, Counters). Stop closes it.
func (s *Session) Tracer() *tracer.Tracer { return s.tr }

// Collector is what the session keeps the events in.
func (s *Session) Collector() *Collector { return s.col }

// StopAll stops sessions concurrently.
func StopAll(ss []*Session) {
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { s.Stop() })
	}
	wg.Wait()
}

// Stop ends Run (it must return within 5 s), detaches, drains the ring,
// reads the summary into Counters and closes the tracer, as the trace
// command does; it returns every event kept. Later calls return the same.
//
// The loss counters are machine-wide: the program runs for every TCP
// transition of the host, and a shared machine may be loaded by others. A
// test's own events are checked exactly (and against the kernel's record),
// so loss by itself does not fail a test; unless the caller judges it
// (Config.JudgeLoss), it is reported with any failure, and logged
// otherwise.
func (s *Session) Stop() []model.Event {
	s.once.Do(func() {
		t := s.t
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("tracer Run: %v", err)
			}
		case <-time.After(testnet.Scaled(5 * time.Second)):
			t.Errorf("tracer Run did not return within %v of its context's end", testnet.Scaled(5*time.Second))
		}
		if err := s.tr.Detach(); err != nil {
			t.Errorf("tracer Detach: %v", err)
		}
		quiesce()
		if err := s.tr.Drain(s.col); err != nil {
			t.Errorf("tracer Drain: %v", err)
		}
		c, err := s.tr.Summary()
		if err != nil {
			t.Errorf("tracer Summary: %v", err)
		}
		s.Counters = c
		if err := s.tr.Close(); err != nil {
			t.Errorf("tracer Close: %v", err)
		}
		s.evs = s.col.Events()
		if c.Lost() != 0 && !s.judgeLoss {
			t.Cleanup(func() {
				if t.Failed() {
					t.Errorf("NOTE: the kernel reported %d lost events while this test ran: counters %+v",
						c.Lost(), c)
				} else {
					t.Logf("the kernel reported %d lost events machine-wide (counters %+v); this test's own events were complete", c.Lost(), c)
				}
			})
		}
	})
	return s.evs
}

// quiesce waits until no BPF program runs any more for an event that fired
// before Detach returned: closing a link unregisters its probe, but a run
// that had begun on another CPU may still be writing into the ring, and
// would be counted in Summary without having been drained.
// membarrier(MEMBARRIER_CMD_GLOBAL) waits for an RCU grace period
// (synchronize_rcu), and tracepoint probes run with preemption disabled.
func quiesce() {
	const membarrierCmdGlobal = 1
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		time.Sleep(50 * time.Millisecond) // no membarrier: a grace period is far shorter than this
	}
}

// WaitCloses waits (at most 5s, testnet.Scaled) until the events of netns
// contain n transitions into CLOSE: every socket of a scenario ends with one.
func (s *Session) WaitCloses(netns uint32, n int) {
	s.t.Helper()
	d := testnet.Scaled(5 * time.Second)
	if got, ok := s.col.WaitCloses(netns, n, d); !ok {
		s.t.Errorf("waited %v for %d ->CLOSE events in netns %d, saw %d", d, n, netns, got)
	}
}

// WaitCloses waits (at most timeout) until the namespace netns has n
// ->CLOSE events, and returns how many it has and whether that is enough.
func (c *Collector) WaitCloses(netns uint32, n int, timeout time.Duration) (int, bool) {
	deadline := time.Now().Add(timeout)
	for {
		got := c.Closes(netns)
		if got >= n {
			return got, true
		}
		if !time.Now().Before(deadline) {
			return got, false
		}
		c.wait(deadline)
	}
}
