package scenario_test

// The harness of the scenarios: one network namespace, one tracer and one
// tracefs oracle per scenario, and the four checks every scenario makes.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// collector is the tracer's Handler: it keeps the events of one network
// namespace (Event.Netns), whatever else the machine does meanwhile.
type collector struct {
	netns uint32
	mu    sync.Mutex
	evs   []model.Event
}

func (c *collector) Event(e *model.Event) error {
	if e.Netns != c.netns {
		return nil
	}
	c.mu.Lock()
	c.evs = append(c.evs, *e)
	c.mu.Unlock()
	return nil
}

func (c *collector) Flush() error { return nil }

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

func (c *collector) events() []model.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

// env is one scenario's world: its namespace (lo up, a private port block
// and ephemeral range), the tracer reading every namespace's transitions
// and keeping this one's, and the kernel's own record of the port block.
type env struct {
	t      *testing.T
	ns     *testnet.NS
	oracle *testnet.Oracle
	tr     *tracer.Tracer
	col    *collector
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	evs    []model.Event
	// What the tracer reported at stop: its counters, and the events lost
	// by every cause. Both are machine-wide.
	counters tracer.Counters
	lost     uint64
}

// newEnv opens everything before the scenario makes its first socket, so
// every socket is born inside the trace.
func newEnv(t *testing.T) *env {
	t.Helper()
	ns := testnet.New(t) // skips (or fails under CI=true) without root
	e := &env{t: t, ns: ns, col: &collector{netns: ns.Inode()}, done: make(chan error, 1)}
	// Default ring and map sizes: the tracer sees the whole machine, and
	// other programs (load benchmarks) may be busy meanwhile.
	tr, err := tracer.Open(tracer.Options{
		Warn: func(msg string) { t.Errorf("tracer warning: %s", msg) },
	})
	if err != nil {
		t.Fatalf("opening the tracer: %+v", err)
	}
	e.tr = tr
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- tr.Run(ctx, e.col) }()
	t.Cleanup(func() { e.stop() })
	if tr.AcceptHook() == tracer.AcceptOff {
		t.Fatal("the accept programs are not attached: accepted sockets would keep their listener's owner")
	}
	e.oracle = testnet.NewOracle(t, oracleFilter(ns.PortRange()))
	return e
}

// oracleFilter selects the kernel's TCP transitions whose ports are both in
// the namespace's block, or 0 (a listener's peer; CLOSE>SYN_SENT's source
// port), one of them at least in it. Every transition of a scenario's
// sockets has that form. testnet.PortFilter (either port in the block) is
// not enough: a load generator in another namespace with a wide ephemeral
// range (bench/loadgen --new-netns) connects from ports in the block to
// its own server port.
func oracleFilter(lo, hi uint16) string {
	in := func(f string) string { return fmt.Sprintf("(%s>=%d && %s<=%d)", f, lo, f, hi) }
	return fmt.Sprintf("protocol==6 && (%s || %s) && (%s || sport==0) && (%s || dport==0)",
		in("sport"), in("dport"), in("sport"), in("dport"))
}

// stop ends Run, detaches, drains the ring and closes the tracer, as the
// trace command does, and keeps the loss the tracer reports. That count
// is machine-wide (the ring buffer and the programs serve every namespace),
// so finish judges it against this namespace's own events.
func (e *env) stop() []model.Event {
	e.once.Do(func() {
		t := e.t
		e.cancel()
		select {
		case err := <-e.done:
			if err != nil {
				t.Errorf("tracer Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("tracer Run did not return within 5s of its context's end")
		}
		if err := e.tr.Detach(); err != nil {
			t.Errorf("tracer Detach: %v", err)
		}
		if err := e.tr.Drain(e.col); err != nil {
			t.Errorf("tracer Drain: %v", err)
		}
		c, err := e.tr.Summary()
		if err != nil {
			t.Errorf("tracer Summary: %v", err)
		}
		if err := e.tr.Close(); err != nil {
			t.Errorf("tracer Close: %v", err)
		}
		e.evs = e.col.events()
		e.lost = c.Lost()
		e.counters = c
	})
	return e.evs
}

// edge is how the scenarios spell a transition: "CLOSE>SYN_SENT".
func edge(old, nw model.State) string { return old.String() + ">" + nw.String() }

// Phases of a socket's life, as Linux reports them (KERNEL-NOTES,
// "Transitions Linux really emits"): no TIME_WAIT (the full socket goes to
// CLOSE when a timewait socket takes over), and a passively opened socket
// is born LISTEN>SYN_RECV on its own skaddr.
var (
	listenerLife = []string{"CLOSE>LISTEN", "LISTEN>CLOSE"}
	activeOpen   = []string{"CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED"}
	passiveOpen  = []string{"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED"}
	activeClose  = []string{"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}
	passiveClose = []string{"ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"}
)

// sock is one expected socket incarnation (from its birth to its ->CLOSE).
type sock struct {
	name   string
	family model.Family
	// The ports of the socket's last transition, which identify it
	// (lport 0: any; its port was chosen by the kernel and never learnt).
	lport, rport uint16
	edges        []string
}

// want is what a scenario must produce.
type want struct {
	socks []sock
	// rfc793Illegal lists, as "name OLD>NEW", every event the rfc793 model
	// must call illegal: exactly the Linux-specific edges of the scenario.
	rfc793Illegal []string
}

// life is one socket incarnation as tcpstate reported it.
type life struct {
	name   string
	skaddr uint64
	n      int // incarnation number of skaddr in this scenario
	evs    []model.Event
}

func (l *life) edges() []string {
	s := make([]string, len(l.evs))
	for i, e := range l.evs {
		s[i] = edge(e.Old, e.New)
	}
	return s
}

func (l *life) key() string { return fmt.Sprintf("%#x/%d", l.skaddr, l.n) }

func fmtEvent(e *model.Event) string {
	return fmt.Sprintf("%#x %-24s %s %v:%d -> %v:%d pid=%d(%s) cpu_pid=%d(%s) flags=%#x",
		e.Skaddr, edge(e.Old, e.New), e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport,
		e.Pid, e.Comm, e.CPUPid, e.CPUComm, e.Flags)
}

func dump(ls []*life) string {
	var b strings.Builder
	for _, l := range ls {
		name := l.name
		if name == "" {
			name = "(unmatched)"
		}
		fmt.Fprintf(&b, "  socket %s %s:\n", l.key(), name)
		for i := range l.evs {
			fmt.Fprintf(&b, "      %s\n", fmtEvent(&l.evs[i]))
		}
	}
	return b.String()
}

// byTime sorts events by their kernel timestamp: ring order across CPUs is
// not time order (within one socket it is).
func byTime(evs []model.Event) []model.Event {
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b model.Event) int {
		switch {
		case a.TsNs < b.TsNs:
			return -1
		case a.TsNs > b.TsNs:
			return 1
		}
		return 0
	})
	return evs
}

// lives splits time-ordered events into socket incarnations: the kernel
// reuses a freed struct sock's address, so an incarnation ends at ->CLOSE.
func lives(evs []model.Event) []*life {
	var out []*life
	open := map[uint64]*life{}
	n := map[uint64]int{}
	for _, e := range evs {
		l := open[e.Skaddr]
		if l == nil {
			l = &life{skaddr: e.Skaddr, n: n[e.Skaddr]}
			out = append(out, l)
			open[e.Skaddr] = l
		}
		l.evs = append(l.evs, e)
		if e.New == model.Close {
			delete(open, e.Skaddr)
			n[e.Skaddr]++
		}
	}
	return out
}

// finish waits until tcpstate has delivered the scenario's transitions,
// stops the tracer and the oracle, and checks:
//
//	(a) the exact transitions of every socket, against w;
//	(b) that they are the kernel's own (tracefs), field by field;
//	(c) the linux model: no illegal edge, no gap, no unknown socket;
//	(d) the rfc793 model: illegal exactly at w.rfc793Illegal;
//
// and that every event names this process as the owner (the scenarios make
// all their sockets here; accepted sockets inherit the listener's owner).
// It returns the lives by name for the scenario's own checks.
//
// Loss: the tracer's loss counters cover the whole machine. When this
// namespace's events are exactly the kernel's, whatever was lost belonged
// to others, and finish only logs it. When they are not and the tracer did
// report loss (another program loading the machine), the run proves
// nothing either way: finish logs every problem and returns errRetry, so
// the scenario runs again in a fresh namespace. Without reported loss,
// every problem is a failure.
func (e *env) finish(w want) (map[string]*life, error) {
	t := e.t
	t.Helper()
	var problems []string
	fail := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

	total := 0
	for _, s := range w.socks {
		total += len(s.edges)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.col.count() < total && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// A few poll intervals more, so an unexpected extra event shows up.
	time.Sleep(3 * tracer.DefaultPollInterval)
	evs := byTime(e.stop())
	oevs, oerr := e.oracle.Events()
	if oerr != nil {
		t.Fatalf("oracle: %v", oerr)
	}

	ls := lives(evs)
	byName := match(ls, w, fail)

	// (a) exact transitions per socket.
	for _, s := range w.socks {
		l := byName[s.name]
		if l == nil {
			continue
		}
		t.Logf("%-12s %s", s.name, strings.Join(l.edges(), " "))
		if got := l.edges(); !slices.Equal(got, s.edges) {
			fail("%s: transitions\n      %s\n  want\n      %s", s.name, strings.Join(got, " "), strings.Join(s.edges, " "))
		}
	}

	// (b) the kernel's record.
	compareOracle(oevs, ls, fail)

	// (c) and (d) the models, fed in time order.
	checkModel := func(m string, illegalWant []string) {
		mod, err := model.ModelByName(m)
		if err != nil {
			t.Fatal(err)
		}
		tk := model.NewTracker(mod, 0)
		var illegal, other []string
		li := map[uint64]int{}
		for i := range evs {
			ev := &evs[i]
			name := socketName(ls, ev, li)
			v := tk.Check(ev)
			switch v.Kind {
			case model.VerdictOK:
			case model.VerdictIllegal:
				illegal = append(illegal, name+" "+edge(ev.Old, ev.New))
			default:
				other = append(other, fmt.Sprintf("%s %s: %v %s", name, edge(ev.Old, ev.New), v.Kind, v.Reason))
			}
		}
		st := tk.Stats()
		if len(other) > 0 || st.Gaps() != 0 || st.Unknown != 0 {
			fail("model %s: verdicts other than ok and illegal (stats %+v):\n  %s", m, st, strings.Join(other, "\n  "))
		}
		slices.Sort(illegal)
		wantSorted := slices.Sorted(slices.Values(illegalWant))
		if !slices.Equal(illegal, wantSorted) {
			fail("model %s: illegal verdicts\n      %s\n  want\n      %s", m, strings.Join(illegal, "\n      "), strings.Join(wantSorted, "\n      "))
		}
		if st.LiveSockets != 0 {
			fail("model %s: %d sockets never reached CLOSE", m, st.LiveSockets)
		}
	}
	checkModel("linux", nil)
	checkModel("rfc793", w.rfc793Illegal)

	// Owner attribution.
	pid := uint32(os.Getpid())
	for _, l := range ls {
		for i := range l.evs {
			ev := &l.evs[i]
			if !ev.OwnerKnown() || ev.Pid != pid {
				fail("%s: owner pid %d (known %v), want this process %d: %s", l.name, ev.Pid, ev.OwnerKnown(), pid, fmtEvent(ev))
			}
		}
	}

	if len(problems) == 0 {
		if e.lost > 0 {
			t.Logf("the tracer reported %d events lost machine-wide, none of this namespace's (its %d events are the kernel's); counters %+v",
				e.lost, len(evs), e.counters)
		}
		return byName, nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tcpstate's events:\n%s", dump(ls))
	b.WriteString("the kernel's record:\n")
	for _, o := range oevs {
		fmt.Fprintf(&b, "      %v\n", o)
	}
	if e.lost > 0 {
		for _, p := range problems {
			t.Logf("(tracer reported loss) %s", p)
		}
		t.Log(b.String())
		return byName, fmt.Errorf("the tracer reported %d events lost machine-wide (counters %+v) and this namespace's events are not the kernel's: %w",
			e.lost, e.counters, errRetry)
	}
	for _, p := range problems {
		t.Error(p)
	}
	t.Log(b.String())
	return byName, nil
}

// socketName names ev's socket incarnation; li counts the incarnations of
// each skaddr seen so far (events come in time order).
func socketName(ls []*life, ev *model.Event, li map[uint64]int) string {
	n := li[ev.Skaddr]
	if ev.New == model.Close {
		li[ev.Skaddr]++
	}
	for _, l := range ls {
		if l.skaddr == ev.Skaddr && l.n == n {
			if l.name == "" {
				return l.key()
			}
			return l.name
		}
	}
	return fmt.Sprintf("%#x/%d", ev.Skaddr, n)
}

// match names tcpstate's socket incarnations after the expected sockets:
// in order of birth, each takes the first expected socket not yet taken
// whose family and ports match its last transition.
func match(ls []*life, w want, fail func(string, ...any)) map[string]*life {
	byName := map[string]*life{}
	for _, l := range ls {
		last := l.evs[len(l.evs)-1]
		for _, s := range w.socks {
			if byName[s.name] != nil || s.family != last.Family || s.rport != last.Dport ||
				(s.lport != 0 && s.lport != last.Sport) {
				continue
			}
			byName[s.name] = l
			l.name = s.name
			break
		}
		if l.name == "" {
			fail("a socket no scenario step made: %s", l.key())
		}
	}
	for _, s := range w.socks {
		if byName[s.name] == nil {
			fail("%s (%v local port %d, remote port %d): no such socket in tcpstate's events", s.name, s.family, s.lport, s.rport)
		}
	}
	return byName
}

// transitionKey is what tcpstate and the tracefs oracle both report.
func transitionKey(old, nw model.State, fam model.Family, sa netip.Addr, sp uint16, da netip.Addr, dp uint16) string {
	return fmt.Sprintf("%s %s %v:%d>%v:%d", edge(old, nw), fam, sa, sp, da, dp)
}

// compareOracle asserts that tcpstate's sockets are exactly the kernel's:
// the same skaddrs and incarnations, each with the same transitions, ports
// and addresses in the same order.
func compareOracle(oevs []testnet.OracleEvent, ls []*life, fail func(string, ...any)) {
	want := map[string][]string{}
	n := map[uint64]int{}
	for _, e := range oevs {
		if e.Protocol != 6 {
			fail("oracle: non-TCP event %v", e)
			continue
		}
		k := fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])
		want[k] = append(want[k], transitionKey(e.Old, e.New, e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport))
		if e.New == model.Close {
			n[e.Skaddr]++
		}
	}
	got := map[string][]string{}
	for _, l := range ls {
		for _, e := range l.evs {
			got[l.key()] = append(got[l.key()], transitionKey(e.Old, e.New, e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport))
		}
	}
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("socket %s: missing in tcpstate; kernel:\n      %s", k, strings.Join(w, "\n      ")))
		} else if !slices.Equal(g, w) {
			diffs = append(diffs, fmt.Sprintf("socket %s:\n    tcpstate:\n      %s\n    kernel:\n      %s", k, strings.Join(g, "\n      "), strings.Join(w, "\n      ")))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("socket %s: only in tcpstate:\n      %s", k, strings.Join(g, "\n      ")))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		fail("tcpstate differs from the kernel's record (tracefs):\n%s", strings.Join(diffs, "\n"))
	}
}

// errRetry marks a run that proves nothing: a race in a scenario's setup
// the kernel's timing did not meet, or events missing while the tracer
// reported loss (see finish). The scenario then runs again in a fresh
// namespace.
var errRetry = errors.New("this run proves nothing")

// maxAttempts bounds the runs of one scenario (see errRetry).
const maxAttempts = 3

// scenario runs body in a fresh env, again (at most maxAttempts runs in
// all) while it returns errRetry. Each run has its own namespace, tracer
// and oracle; each body must stay bounded (every wait here has a deadline).
func scenario(t *testing.T, body func(e *env) error) {
	t.Helper()
	attempts(t, maxAttempts, body)
}

// attempts runs body up to n times, each in a fresh env, until it returns
// something other than errRetry.
func attempts(t *testing.T, n int, body func(e *env) error) {
	t.Helper()
	for i := 1; ; i++ {
		e := newEnv(t)
		err := body(e)
		if !errors.Is(err, errRetry) {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		e.stop()
		e.ns.Remove()
		if i == n {
			t.Fatalf("attempt %d of %d: %v", i, n, err)
		}
		t.Logf("attempt %d of %d: %v; again in a new namespace", i, n, err)
	}
}
