package tracer

// Privileged tests (tier 3): load and attach the real programs, make TCP
// connections in a private network namespace, and assert the exact
// transitions, addresses, ports, owners and flags tcpstate reports for each
// socket, and that they match the kernel's own record (a tracefs instance
// on the same tracepoint). Every test selects its own events by the
// namespace's inode (the oracle's by the namespace's port block, which no
// other test uses: testnet.PortFilter). The machine may be busy with
// other work meanwhile: the loss the kernel reports is machine-wide, so it
// fails no test by itself (it is reported with any failure), except
// TestCounters, which requires none.

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

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// TestHelperProcess is the helper child of testnet.StartProc.
func TestHelperProcess(t *testing.T) { testnet.HelperProcess() }

// collector is a Handler that keeps every event.
type collector struct {
	mu     sync.Mutex
	evs    []model.Event
	events chan struct{} // pinged after each batch
}

func newCollector() *collector { return &collector{events: make(chan struct{}, 1)} }

func (c *collector) Event(e *model.Event) error {
	c.mu.Lock()
	c.evs = append(c.evs, *e)
	c.mu.Unlock()
	return nil
}

func (c *collector) Flush() error {
	select {
	case c.events <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) snapshot() []model.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

// session is one open tracer with Run in a goroutine.
type session struct {
	t        *testing.T
	tr       *Tracer
	c        *collector
	cancel   context.CancelFunc
	done     chan error
	once     sync.Once
	evs      []model.Event
	counters Counters
}

func start(t *testing.T, opts Options) *session {
	t.Helper()
	return startAll(t, opts)[0]
}

// startAll opens one tracer per Options, concurrently (loading takes
// ~150 ms each), and runs each.
func startAll(t *testing.T, opts ...Options) []*session {
	t.Helper()
	testnet.RequireRoot(t)
	ss := make([]*session, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		wg.Go(func() {
			o.Warn = func(msg string) { t.Errorf("tracer warning: %s", msg) }
			tr, err := Open(o)
			if err != nil {
				errs[i] = fmt.Errorf("Open(%+v): %w", o, err)
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			s := &session{t: t, tr: tr, c: newCollector(), cancel: cancel, done: make(chan error, 1)}
			go func() { s.done <- tr.Run(ctx, s.c) }()
			ss[i] = s
		})
	}
	wg.Wait()
	for _, s := range ss {
		if s != nil {
			t.Cleanup(func() { s.stop() })
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range ss {
		if s.tr.AcceptHook() == AcceptOff {
			t.Fatal("the accept programs are not attached: accepted sockets would keep their listener's owner")
		}
	}
	return ss
}

// stopAll stops sessions concurrently.
func stopAll(ss []*session) {
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { s.stop() })
	}
	wg.Wait()
}

// stop ends Run, detaches, drains the ring, reads the summary and closes
// the tracer, as the trace command does; it returns every event delivered.
//
// The loss counters are machine-wide: the program runs for every TCP
// transition of the host, and a shared machine may be loaded by others. A
// test's own events are checked exactly (and against the kernel's record),
// so loss by itself does not fail a test; it is reported with any failure,
// and logged otherwise.
func (s *session) stop() []model.Event {
	s.once.Do(func() {
		t := s.t
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of its context's end")
		}
		if err := s.tr.Detach(); err != nil {
			t.Errorf("Detach: %v", err)
		}
		if err := s.tr.Drain(s.c); err != nil {
			t.Errorf("Drain: %v", err)
		}
		c, err := s.tr.Summary()
		if err != nil {
			t.Errorf("Summary: %v", err)
		}
		s.counters = c
		if err := s.tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		s.evs = s.c.snapshot()
		if c.Lost() != 0 {
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

// waitCloses waits (at most 5s) until the events of netns contain n
// transitions into CLOSE: every socket of a scenario ends with one.
func (s *session) waitCloses(netns uint32, n int) {
	s.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		got := 0
		for _, e := range s.c.snapshot() {
			if e.Netns == netns && e.New == model.Close {
				got++
			}
		}
		if got >= n {
			return
		}
		select {
		case <-s.c.events:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			s.t.Errorf("waited 5s for %d ->CLOSE events in netns %d, saw %d", n, netns, got)
			return
		}
	}
}

// foreignLives groups the events of every namespace but netns by socket.
func foreignLives(evs []model.Event, netns uint32) []*life {
	var out []*life
	open := map[uint64]*life{}
	for _, e := range evs {
		if e.Netns == netns {
			continue
		}
		l := open[e.Skaddr]
		if l == nil {
			l = &life{skaddr: e.Skaddr}
			out = append(out, l)
			open[e.Skaddr] = l
		}
		l.evs = append(l.evs, e)
		if e.New == model.Close {
			delete(open, e.Skaddr)
		}
	}
	return out
}

// mismatch says why a socket's delivered events do not match the filters
// of o ("" if they do). Port and pid filters are per socket (sticky: one
// event with the port or owner suffices), family and state per event.
func mismatch(o Options, l *life) string {
	some := func(f func(e *model.Event) bool) bool {
		for i := range l.evs {
			if f(&l.evs[i]) {
				return true
			}
		}
		return false
	}
	switch {
	case len(o.Ports) > 0 && !some(func(e *model.Event) bool {
		return slices.Contains(o.Ports, e.Sport) || slices.Contains(o.Ports, e.Dport)
	}):
		return "no port in --port"
	case len(o.LPorts) > 0 && !some(func(e *model.Event) bool { return slices.Contains(o.LPorts, e.Sport) }):
		return "no local port in --lport"
	case len(o.RPorts) > 0 && !some(func(e *model.Event) bool { return slices.Contains(o.RPorts, e.Dport) }):
		return "no remote port in --rport"
	case len(o.Pids) > 0 && !some(func(e *model.Event) bool { return e.OwnerKnown() && slices.Contains(o.Pids, e.Pid) }):
		return "no owner in --pid"
	case o.Family != 0 && some(func(e *model.Event) bool { return e.Family != o.Family }):
		return "another family"
	case len(o.States) > 0 && some(func(e *model.Event) bool {
		return !slices.Contains(o.States, e.Old) && !slices.Contains(o.States, e.New)
	}):
		return "a transition outside --state"
	}
	return ""
}

// blockOpts filters on the namespace's port block: every socket of the
// test, and nothing else on the machine, whatever load others put on it.
// For the test's sockets the filter decides at their first event (a port is
// in the block), so nothing is held and the events are those of an
// unfiltered tracer; TestConnection and TestFilters check the unfiltered
// path.
func blockOpts(ns *testnet.NS) Options {
	var o Options
	lo, hi := ns.PortRange()
	for p := lo; p <= hi; p++ {
		o.Ports = append(o.Ports, p)
	}
	return o
}

// life is one socket incarnation: its events from its first until ->CLOSE.
type life struct {
	skaddr uint64
	evs    []model.Event
}

// lives groups events by socket incarnation, in the order of each one's
// first event (ring order across sockets is not time order; within a
// socket it is).
func lives(evs []model.Event, netns uint32) []*life {
	var out []*life
	open := map[uint64]*life{}
	for _, e := range evs {
		if e.Netns != netns {
			continue
		}
		l := open[e.Skaddr]
		if l == nil {
			l = &life{skaddr: e.Skaddr}
			out = append(out, l)
			open[e.Skaddr] = l
		}
		l.evs = append(l.evs, e)
		if e.New == model.Close {
			delete(open, e.Skaddr)
		}
	}
	return out
}

// edge is how the tests spell a transition: "CLOSE>SYN_SENT".
func edge(old, nw model.State) string { return old.String() + ">" + nw.String() }

func (l *life) edges() []string {
	var s []string
	for _, e := range l.evs {
		s = append(s, edge(e.Old, e.New))
	}
	return s
}

// first is the first transition of a life: its role.
func (l *life) first() string { return edge(l.evs[0].Old, l.evs[0].New) }

func fmtEvent(e *model.Event) string {
	return fmt.Sprintf("%#x %-22s %s %v:%d -> %v:%d pid=%d(%s) cpu_pid=%d(%s) flags=%#x netns=%d",
		e.Skaddr, edge(e.Old, e.New), e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport,
		e.Pid, e.Comm, e.CPUPid, e.CPUComm, e.Flags, e.Netns)
}

func dump(ls []*life) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "socket %#x:\n", l.skaddr)
		for i := range l.evs {
			fmt.Fprintf(&b, "    %s\n", fmtEvent(&l.evs[i]))
		}
	}
	return b.String()
}

// transitionKey is what tcpstate and the tracefs oracle both report.
func transitionKey(old, nw model.State, fam model.Family, sa netip.Addr, sp uint16, da netip.Addr, dp uint16) string {
	return fmt.Sprintf("%s %s %v:%d>%v:%d", edge(old, nw), fam, sa, sp, da, dp)
}

// oracleLives groups the oracle's events like lives, keyed by skaddr and
// incarnation number, as transition keys.
func oracleLives(evs []testnet.OracleEvent) map[string][]string {
	out := map[string][]string{}
	n := map[uint64]int{}
	for _, e := range evs {
		k := fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])
		out[k] = append(out[k], transitionKey(e.Old, e.New, e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport))
		if e.New == model.Close {
			n[e.Skaddr]++
		}
	}
	return out
}

func tcpstateLives(ls []*life) map[string][]string {
	out := map[string][]string{}
	n := map[uint64]int{}
	for _, l := range ls {
		k := fmt.Sprintf("%#x/%d", l.skaddr, n[l.skaddr])
		n[l.skaddr]++
		for _, e := range l.evs {
			out[k] = append(out[k], transitionKey(e.Old, e.New, e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport))
		}
	}
	return out
}

// compareOracle asserts that tcpstate's sockets are exactly the kernel's:
// the same skaddrs, each with the same transitions, ports and addresses.
// keep selects the kernel's events a filtered tracer should report, given
// the event and its socket incarnation's key, "skaddr/n" (nil: all).
func compareOracle(t *testing.T, o *testnet.Oracle, ls []*life, keep func(e testnet.OracleEvent, key string) bool) {
	t.Helper()
	oevs, err := o.Events()
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	// Keep events by the incarnation they belong to among all of them, then
	// group what is kept as tcpstate's events are grouped.
	var kept []testnet.OracleEvent
	n := map[uint64]int{}
	for _, e := range oevs {
		if keep == nil || keep(e, fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])) {
			kept = append(kept, e)
		}
		if e.New == model.Close {
			n[e.Skaddr]++
		}
	}
	want := oracleLives(kept)
	got := tcpstateLives(ls)
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
		t.Errorf("tcpstate differs from the kernel's record (tracefs):\n%s", strings.Join(diffs, "\n"))
	}
}

// Expected transitions per socket role (KERNEL-NOTES, "Transitions Linux
// really emits"). TIME_WAIT never appears: the full socket goes
// FIN_WAIT2->CLOSE when the timewait socket takes over.
var (
	listenerEdges     = []string{"CLOSE>LISTEN", "LISTEN>CLOSE"}
	activeOpen        = []string{"CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED"}
	passiveOpen       = []string{"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED"}
	activeCloseEdges  = []string{"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}
	passiveCloseEdges = []string{"ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"}
)

// roles finds the listener, client and accepted child of one connection to
// port among lives.
type roles struct{ listener, client, child *life }

func findRoles(t *testing.T, ls []*life, port uint16) roles {
	t.Helper()
	var r roles
	for _, l := range ls {
		e := l.evs[0]
		var slot **life
		switch {
		case l.first() == "CLOSE>LISTEN" && e.Sport == port:
			slot = &r.listener
		case l.first() == "CLOSE>SYN_SENT" && e.Dport == port:
			slot = &r.client
		case l.first() == "LISTEN>SYN_RECV" && e.Sport == port:
			slot = &r.child
		default:
			continue
		}
		if *slot != nil {
			t.Fatalf("two sockets in the same role for port %d:\n%s", port, dump(ls))
		}
		*slot = l
	}
	if r.listener == nil || r.client == nil || r.child == nil {
		t.Fatalf("port %d: listener, client or accepted socket missing:\n%s", port, dump(ls))
	}
	return r
}

// sockWant is what one socket's events must be.
type sockWant struct {
	name   string
	edges  []string
	family model.Family
	local  netip.Addr
	remote netip.Addr // the peer's address once known
	lport  uint16
	rport  uint16
	owner  uint32
	// inherited: the events before accept (the child's first two) name the
	// listener's owner with FlagOwnerInherited: inheritedOwner, or owner
	// if that is 0.
	inherited      int
	inheritedOwner uint32
	// held: indexes (in edges) of the events that must carry FlagHeld.
	held []int
	// bound: the client bound its port before connect(), so even
	// CLOSE->SYN_SENT has it.
	bound bool
	// only, if set, selects the transitions a States filter lets through.
	only func(old, new model.State) bool
}

// checkSocket asserts the exact transitions of one socket, with its ports,
// addresses, owner and flags. The kernel's own field quirks are expected:
// CLOSE->SYN_SENT fires before the source port is chosen (sport 0), a
// child's LISTEN->SYN_RECV before its peer is set, a listener has no peer.
func checkSocket(t *testing.T, l *life, w sockWant) {
	t.Helper()
	wantEdges, index := w.edges, []int(nil)
	if w.only != nil {
		wantEdges = nil
		for i, e := range w.edges {
			old, nw, _ := strings.Cut(e, ">")
			o, _ := model.ParseState(old)
			n, _ := model.ParseState(nw)
			if w.only(o, n) {
				wantEdges = append(wantEdges, e)
				index = append(index, i)
			}
		}
	}
	if got := l.edges(); !slices.Equal(got, wantEdges) {
		t.Errorf("%s: transitions\n    %s\nwant\n    %s\nevents:\n%s", w.name, strings.Join(got, " "), strings.Join(wantEdges, " "), dump([]*life{l}))
		return
	}
	unspec := netip.IPv4Unspecified()
	if w.family == model.AFInet6 {
		unspec = netip.IPv6Unspecified()
	}
	for j := range l.evs {
		e := &l.evs[j]
		i := j // the event's index in w.edges
		if index != nil {
			i = index[j]
		}
		var problems []string
		bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

		sport, dport, daddr := w.lport, w.rport, w.remote
		switch edge(e.Old, e.New) {
		case "CLOSE>SYN_SENT":
			if !w.bound {
				sport = 0 // the kernel's truth: connect() picks the port after the event
			}
		case "LISTEN>SYN_RECV":
			dport, daddr = e.Dport, e.Daddr // not set yet; the oracle checks the value
		}
		if w.edges[0] == "CLOSE>LISTEN" {
			dport, daddr = 0, unspec
		}
		if e.Family != w.family {
			bad("family %v, want %v", e.Family, w.family)
		}
		if e.Saddr != w.local || e.Sport != sport {
			bad("local %v:%d, want %v:%d", e.Saddr, e.Sport, w.local, sport)
		}
		if e.Daddr != daddr || e.Dport != dport {
			bad("remote %v:%d, want %v:%d", e.Daddr, e.Dport, daddr, dport)
		}
		// Held events carry the owner that made the socket match: in
		// these tests the socket's final owner (its acceptor, for a
		// child held until accept()).
		held := slices.Contains(w.held, i)
		owner, inherited := w.owner, i < w.inherited && !held
		if inherited && w.inheritedOwner != 0 {
			owner = w.inheritedOwner
		}
		if !e.OwnerKnown() || e.Pid != owner {
			bad("owner pid %d (known %v), want %d", e.Pid, e.OwnerKnown(), owner)
		}
		if inh := e.Flags&model.FlagOwnerInherited != 0; inh != inherited {
			bad("owner inherited %v, want %v", inh, inherited)
		}
		if e.OwnerKnown() && e.Comm.String() == "" {
			bad("owner comm empty")
		}
		birth := e.Old == model.Close || edge(e.Old, e.New) == "LISTEN>SYN_RECV"
		if e.DurationKnown() == birth {
			bad("duration known %v at a birth %v", e.DurationKnown(), birth)
		}
		if e.DurationKnown() && j > 0 && e.OldStateNs > e.TsNs-l.evs[j-1].TsNs {
			bad("old_state_ns %d exceeds the time since the previous event %d", e.OldStateNs, e.TsNs-l.evs[j-1].TsNs)
		}
		// The kernel's own model check: the previous new state it
		// remembers, and no illegal edge or gap on a normal connection.
		// One exception: a socket born at the address of an earlier one
		// whose ->CLOSE the program missed (recursion misses under load,
		// or the silent skips of KERNEL-NOTES) finds that one's entry: the
		// birth then reports its last state, flagged as a gap, which is
		// right.
		var last model.State
		if i > 0 {
			_, prev, _ := strings.Cut(w.edges[i-1], ">")
			last, _ = model.ParseState(prev)
		}
		stale := i == 0 && birth && e.LastState != 0 && e.Flags&model.FlagKernelGap != 0
		if stale {
			t.Logf("%s: born at the address of a socket whose ->CLOSE was missed (its last state %v): %s", w.name, e.LastState, fmtEvent(e))
		} else if e.LastState != last {
			bad("last_state %v, want %v", e.LastState, last)
		}
		if e.Flags&model.FlagKernelIllegal != 0 || e.Flags&model.FlagKernelGap != 0 && !stale {
			bad("the kernel's model check flagged it (flags %#x)", e.Flags)
		}
		if got := e.Flags&model.FlagHeld != 0; got != held {
			bad("held %v, want %v", got, held)
		}
		if j > 0 && e.TsNs < l.evs[j-1].TsNs {
			bad("timestamp before the previous event's")
		}
		if len(problems) > 0 {
			t.Errorf("%s: event %d %s: %s", w.name, i, fmtEvent(e), strings.Join(problems, "; "))
		}
	}
}

func loopback(fam int) (netip.Addr, model.Family) {
	if fam == 6 {
		return netip.IPv6Loopback(), model.AFInet6
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1}), model.AFInet
}

type step func() error

func run(t *testing.T, steps ...step) {
	t.Helper()
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("scenario step %d: %v", i, err)
		}
	}
}

// connection makes one full connection: server listens and accepts, client
// connects, then the client (or the server, if serverFirst) closes first
// and the other side closes when it has read the FIN. It returns the
// client's port.
func connection(t *testing.T, server, client testnet.Sockets, ap netip.AddrPort, serverFirst bool) uint16 {
	t.Helper()
	var lfd, cfd, afd int
	var cport uint16
	run(t,
		func() (err error) { lfd, err = server.Listen(ap); return },
		func() (err error) { cfd, err = client.Connect(ap); return },
		func() (err error) { afd, err = server.Accept(lfd); return },
		func() error {
			local, err := client.LocalAddr(cfd)
			cport = local.Port()
			return err
		},
	)
	first, firstFD, second, secondFD := client, cfd, server, afd
	if serverFirst {
		first, firstFD, second, secondFD = server, afd, client, cfd
	}
	run(t,
		func() error { return first.Close(firstFD) },
		func() error { return second.ReadEOF(secondFD) },
		func() error { return second.Close(secondFD) },
		func() error { return server.Close(lfd) },
	)
	return cport
}

// TestConnection: a full connection over IPv4 and IPv6, closed from either
// side, in one process: the exact transitions of the listener, the client
// and the accepted child, their addresses, ports, owner and flags, and the
// same transitions as the kernel's record.
func TestConnection(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, fam := range []int{4, 6} {
		for _, serverFirst := range []bool{false, true} {
			name := fmt.Sprintf("ipv%d/client-closes-first", fam)
			if serverFirst {
				name = fmt.Sprintf("ipv%d/server-closes-first", fam)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ns := testnet.New(t)
				s := start(t, Options{RingSize: 8 << 20})
				o := ns.Oracle(t)
				addr, family := loopback(fam)
				port := ns.Port(0)
				cport := connection(t, ns, ns, netip.AddrPortFrom(addr, port), serverFirst)
				s.waitCloses(ns.Inode(), 3)
				ls := lives(s.stop(), ns.Inode())
				if len(ls) != 3 {
					t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), dump(ls))
				}
				r := findRoles(t, ls, port)
				pid := uint32(os.Getpid())
				clientClose, childClose := activeCloseEdges, passiveCloseEdges
				if serverFirst {
					clientClose, childClose = passiveCloseEdges, activeCloseEdges
				}
				checkSocket(t, r.listener, sockWant{name: "listener", edges: listenerEdges,
					family: family, local: addr, lport: port, owner: pid})
				checkSocket(t, r.client, sockWant{name: "client", edges: slices.Concat(activeOpen, clientClose),
					family: family, local: addr, remote: addr, lport: cport, rport: port, owner: pid})
				checkSocket(t, r.child, sockWant{name: "accepted", edges: slices.Concat(passiveOpen, childClose),
					family: family, local: addr, remote: addr, lport: port, rport: cport, owner: pid, inherited: 2})
				compareOracle(t, o, ls, nil)
			})
		}
	}
}

// TestOwnerAcrossProcesses: the server runs in a helper child process,
// the client in the test process. Transitions that fire in softirq while
// the other process is on the CPU (on loopback the peer's system call
// delivers the packets) must still name the socket's owner.
func TestOwnerAcrossProcesses(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, serverFirst := range []bool{false, true} {
		name := "client-closes-first"
		if serverFirst {
			name = "server-closes-first"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			srv := ns.StartProc(t)
			s := start(t, blockOpts(ns))
			o := ns.Oracle(t)
			addr, family := loopback(4)
			port := ns.Port(0)
			cport := connection(t, srv, ns, netip.AddrPortFrom(addr, port), serverFirst)
			s.waitCloses(ns.Inode(), 3)
			ls := lives(s.stop(), ns.Inode())
			if len(ls) != 3 {
				t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), dump(ls))
			}
			r := findRoles(t, ls, port)
			me, them := uint32(os.Getpid()), uint32(srv.Pid())
			clientClose, childClose := activeCloseEdges, passiveCloseEdges
			if serverFirst {
				clientClose, childClose = passiveCloseEdges, activeCloseEdges
			}
			checkSocket(t, r.listener, sockWant{name: "server's listener", edges: listenerEdges,
				family: family, local: addr, lport: port, owner: them})
			checkSocket(t, r.client, sockWant{name: "client", edges: slices.Concat(activeOpen, clientClose),
				family: family, local: addr, remote: addr, lport: cport, rport: port, owner: me})
			checkSocket(t, r.child, sockWant{name: "server's accepted socket", edges: slices.Concat(passiveOpen, childClose),
				family: family, local: addr, remote: addr, lport: port, rport: cport, owner: them, inherited: 2})
			compareOracle(t, o, ls, nil)

			// The test is only meaningful if some of each process's
			// transitions ran while another task was on the CPU: on
			// loopback usually the other process (its system call sends
			// the packets), sometimes ksoftirqd.
			for _, c := range []struct {
				name  string
				l     []*life
				owner uint32
			}{{"server", []*life{r.listener, r.child}, them}, {"client", []*life{r.client}, me}} {
				n := 0
				for _, l := range c.l {
					for _, e := range l.evs {
						if e.CPUPid != c.owner {
							n++
						}
					}
				}
				if n == 0 {
					t.Errorf("no %s transition fired with another task than its owner (pid %d) on the CPU: owner attribution untested\n%s", c.name, c.owner, dump(ls))
				}
			}
			if t.Failed() {
				return
			}
			// The named case: the server's ESTABLISHED->CLOSE_WAIT (or,
			// server first, the client's) is caused by the other side's FIN.
			for _, e := range slices.Concat(r.child.evs, r.client.evs) {
				if e.New == model.CloseWait {
					t.Logf("%s (owner %d, on CPU %d %s)", edge(e.Old, e.New), e.Pid, e.CPUPid, e.CPUComm)
				}
			}
		})
	}
}

// TestRefused: connect to a port nothing listens on: CLOSE->SYN_SENT, then
// the RST: SYN_SENT->CLOSE. Blocking connect over IPv4, non-blocking over
// IPv6.
func TestRefused(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, c := range []struct {
		fam      int
		nonblock bool
	}{{4, false}, {6, true}} {
		fam, nonblock := c.fam, c.nonblock
		name := fmt.Sprintf("ipv%d/blocking", fam)
		if nonblock {
			name = fmt.Sprintf("ipv%d/nonblocking", fam)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			s := start(t, blockOpts(ns))
			o := ns.Oracle(t)
			addr, family := loopback(fam)
			ap := netip.AddrPortFrom(addr, ns.Port(0))
			if nonblock {
				fd, err := ns.ConnectNonblock(ap)
				if err != nil {
					t.Fatal(err)
				}
				if err := ns.WaitConnected(fd); !errorsIsRefused(err) {
					t.Fatalf("non-blocking connect to a closed port: %v, want ECONNREFUSED", err)
				}
				if err := ns.Close(fd); err != nil {
					t.Fatal(err)
				}
			} else if _, err := ns.Connect(ap); !errorsIsRefused(err) {
				t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
			}
			s.waitCloses(ns.Inode(), 1)
			ls := lives(s.stop(), ns.Inode())
			if len(ls) != 1 {
				t.Fatalf("want exactly 1 socket in the namespace, got %d:\n%s", len(ls), dump(ls))
			}
			// The port was chosen (SYN_SENT->CLOSE carries it) but the
			// test cannot learn it from a closed socket.
			ephemeral := ls[0].evs[len(ls[0].evs)-1].Sport
			if lo, hi := ns.EphemeralRange(); ephemeral < lo || ephemeral > hi {
				t.Errorf("client port %d outside the namespace's ephemeral range %d-%d", ephemeral, lo, hi)
			}
			checkSocket(t, ls[0], sockWant{name: "refused client", edges: []string{"CLOSE>SYN_SENT", "SYN_SENT>CLOSE"},
				family: family, local: addr, remote: addr, lport: ephemeral, rport: ap.Port(), owner: uint32(os.Getpid())})
			compareOracle(t, o, ls, nil)
		})
	}
}

func errorsIsRefused(err error) bool { return errors.Is(err, unix.ECONNREFUSED) }

// TestLinger0Reset: close() with SO_LINGER {1, 0} aborts the connection:
// ESTABLISHED->CLOSE on the closing side, and the RST takes the peer from
// ESTABLISHED to CLOSE. The client resets over IPv4, the server over IPv6.
func TestLinger0Reset(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, c := range []struct {
		fam          int
		serverResets bool
	}{{4, false}, {6, true}} {
		fam, serverResets := c.fam, c.serverResets
		name := fmt.Sprintf("ipv%d/client-resets", fam)
		if serverResets {
			name = fmt.Sprintf("ipv%d/server-resets", fam)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			srv := ns.StartProc(t)
			s := start(t, blockOpts(ns))
			o := ns.Oracle(t)
			addr, family := loopback(fam)
			port := ns.Port(0)
			ap := netip.AddrPortFrom(addr, port)
			var lfd, cfd, afd int
			var cport uint16
			run(t,
				func() (err error) { lfd, err = srv.Listen(ap); return },
				func() (err error) { cfd, err = ns.Connect(ap); return },
				func() (err error) { afd, err = srv.Accept(lfd); return },
				func() error { l, err := ns.LocalAddr(cfd); cport = l.Port(); return err },
			)
			if serverResets {
				run(t,
					func() error { return srv.SetLinger0(afd) },
					func() error { return srv.Close(afd) },
					// The RST arrived: read fails with ECONNRESET.
					func() error {
						if err := ns.ReadEOF(cfd); !errors.Is(err, unix.ECONNRESET) {
							return fmt.Errorf("read after the peer's reset: %v, want ECONNRESET", err)
						}
						return nil
					},
					func() error { return ns.Close(cfd) },
					func() error { return srv.Close(lfd) },
				)
			} else {
				run(t,
					func() error { return ns.SetLinger0(cfd) },
					func() error { return ns.Close(cfd) },
					func() error {
						if err := srv.ReadEOF(afd); !errors.Is(err, unix.ECONNRESET) {
							return fmt.Errorf("read after the peer's reset: %v, want ECONNRESET", err)
						}
						return nil
					},
					func() error { return srv.Close(afd) },
					func() error { return srv.Close(lfd) },
				)
			}
			s.waitCloses(ns.Inode(), 3)
			ls := lives(s.stop(), ns.Inode())
			if len(ls) != 3 {
				t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), dump(ls))
			}
			r := findRoles(t, ls, port)
			me, them := uint32(os.Getpid()), uint32(srv.Pid())
			reset := []string{"ESTABLISHED>CLOSE"}
			checkSocket(t, r.listener, sockWant{name: "listener", edges: listenerEdges,
				family: family, local: addr, lport: port, owner: them})
			checkSocket(t, r.client, sockWant{name: "client", edges: slices.Concat(activeOpen, reset),
				family: family, local: addr, remote: addr, lport: cport, rport: port, owner: me})
			checkSocket(t, r.child, sockWant{name: "accepted", edges: slices.Concat(passiveOpen, reset),
				family: family, local: addr, remote: addr, lport: port, rport: cport, owner: them, inherited: 2})
			compareOracle(t, o, ls, nil)
		})
	}
}

// TestCounters: after Detach, Summary's SocketsTracked is exactly the
// number of socket incarnations the tracer delivered events for, wherever
// they were (a ->CLOSE of a socket never seen before makes no entry),
// SocketsLive the ones not closed yet, and nothing is lost. The family
// filter drops other families' sockets before the program counts them, so
// the counts are exact while only this test's kind of traffic passes: IPv6
// (machine-wide, other tests' included).
func TestCounters(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	srv := ns.StartProc(t)
	s := start(t, Options{Filter: model.Filter{Family: model.AFInet6}})
	const conns = 5
	for i := range conns {
		connection(t, srv, ns, testnet.Addr(6, ns.Port(i)), i%2 == 1)
	}
	s.waitCloses(ns.Inode(), 3*conns)
	evs := s.stop()
	c := s.counters

	if n := len(lives(evs, ns.Inode())); n != 3*conns {
		t.Errorf("%d sockets in the namespace, want %d", n, 3*conns)
	}
	open := map[uint64]bool{}
	var tracked, live uint64
	for _, e := range evs {
		if !open[e.Skaddr] && e.New != model.Close {
			tracked++
			open[e.Skaddr] = true
			live++
		}
		if e.New == model.Close && open[e.Skaddr] {
			delete(open, e.Skaddr)
			live--
		}
	}
	if c.Sockets != tracked {
		t.Errorf("Sockets %d, want %d (socket incarnations in the event stream)", c.Sockets, tracked)
	}
	// The start snapshot seeded the sockets that already existed: those of
	// the family that made no event since are live too.
	seen := map[uint64]bool{}
	for _, e := range evs {
		seen[e.Skaddr] = true
	}
	for _, so := range s.tr.StartSnapshot().Sockets {
		if so.Family == model.AFInet6 && so.Kind == model.KindFull && so.State != model.Close && !seen[so.Skaddr] {
			live++
		}
	}
	if c.SocketsLive != live {
		t.Errorf("SocketsLive %d, want %d (incarnations not closed yet, and the older sockets the start snapshot seeded)", c.SocketsLive, live)
	}
	if c.Accepts < conns {
		t.Errorf("Accepts %d, want at least the test's %d", c.Accepts, conns)
	}
	if c.ProgRuns != 0 && c.ProgRuns < uint64(len(evs)) { // counted only with kernel.bpf_stats_enabled
		t.Errorf("ProgRuns %d, less than the %d events delivered", c.ProgRuns, len(evs))
	}
	if c.Lost() != 0 || c.HeldNoSpace != 0 || c.RingbufFull != 0 || c.HeldOverflow != 0 || c.AcceptNoSpace != 0 {
		t.Errorf("counters %+v: want no loss and no eviction on this light load", c)
	}
	for _, e := range evs {
		if e.Family != model.AFInet6 {
			t.Fatalf("the IPv6 filter let through %s", fmtEvent(&e))
		}
	}
}

// TestAcceptInAnotherProcess: the test process listens, a helper child
// accepts from the same listening socket (nginx's master and workers): the
// accepted socket is the listener's owner's (inherited) until accept()
// names the child, and the child's from then on. If the tracer starts after
// listen(), the snapshot it takes at start names the listener's owner (its
// first holder), and the child inherits it just the same.
func TestAcceptInAnotherProcess(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, late := range []bool{false, true} {
		name := "listener-traced"
		if late {
			name = "listener-older-than-tracer"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			// The oracle starts with the tracer.
			var s *session
			var o *testnet.Oracle
			if !late {
				s, o = start(t, blockOpts(ns)), ns.Oracle(t)
			}
			addr, family := loopback(6)
			port := ns.Port(0)
			ap := netip.AddrPortFrom(addr, port)
			lfd, err := ns.Listen(ap)
			if err != nil {
				t.Fatal(err)
			}
			lf, err := ns.SocketFile(lfd)
			if err != nil {
				t.Fatal(err)
			}
			worker := ns.StartProc(t, lf)
			lf.Close()
			if late {
				s, o = start(t, blockOpts(ns)), ns.Oracle(t)
			}
			var cfd, afd int
			var cport uint16
			run(t,
				func() (err error) { cfd, err = ns.Connect(ap); return },
				func() (err error) { afd, err = worker.Accept(testnet.FirstExtraFD); return },
				func() error { l, err := ns.LocalAddr(cfd); cport = l.Port(); return err },
				func() error { return ns.Close(cfd) },
				func() error { return worker.ReadEOF(afd) },
				func() error { return worker.Close(afd) },
				// The worker's copy first: the test's close() is the last
				// one, which closes the listener.
				func() error { return worker.Close(testnet.FirstExtraFD) },
				func() error { return ns.Close(lfd) },
			)
			s.waitCloses(ns.Inode(), 3)
			ls := lives(s.stop(), ns.Inode())
			if len(ls) != 3 {
				t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), dump(ls))
			}
			me, them := uint32(os.Getpid()), uint32(worker.Pid())
			var listener, client, child *life
			for _, l := range ls {
				switch l.first() {
				case "CLOSE>LISTEN", "LISTEN>CLOSE":
					listener = l
				case "CLOSE>SYN_SENT":
					client = l
				case "LISTEN>SYN_RECV":
					child = l
				}
			}
			if listener == nil || client == nil || child == nil {
				t.Fatalf("listener, client or accepted socket missing:\n%s", dump(ls))
			}
			checkSocket(t, client, sockWant{name: "client", edges: slices.Concat(activeOpen, activeCloseEdges),
				family: family, local: addr, remote: addr, lport: cport, rport: port, owner: me})
			childWant := sockWant{name: "accepted by the worker", edges: slices.Concat(passiveOpen, passiveCloseEdges),
				family: family, local: addr, remote: addr, lport: port, rport: cport, owner: them, inherited: 2, inheritedOwner: me}
			if !late {
				checkSocket(t, listener, sockWant{name: "listener", edges: listenerEdges,
					family: family, local: addr, lport: port, owner: me})
				checkSocket(t, child, childWant)
				compareOracle(t, o, ls, nil)
				return
			}
			// Born before the tracer: the listener's only event is its
			// close, by its owner, with no duration.
			if e := listener.evs[0]; len(listener.evs) != 1 || e.Pid != me || !e.OwnerKnown() || e.DurationKnown() || e.Sport != port {
				t.Errorf("listener born before the tracer: want one LISTEN>CLOSE owned by %d, without duration:\n%s", me, dump([]*life{listener}))
			}
			// The start snapshot named the listener's owner (its first
			// holder in pid order, the test process): the child inherits it
			// until accept() names the worker, as with a traced listener.
			checkSocket(t, child, childWant)
			compareOracle(t, o, ls, nil)
		})
	}
}

// TestFilters: one scenario, many tracers with different filters at once.
// Each filter lets through exactly its sockets, WHOLE (events made before
// the socket's port or owner was known are held in the kernel and
// delivered, flagged FlagHeld, when it matches), and nothing of the other
// sockets made at the same time in the same namespace.
//
// The sockets (X is a helper child process, "me" the test process):
//
//	L0 X listens 127.0.0.1:P0   A  me connects from 127.0.0.1:C (bound) to P0   A2 X accepts A
//	L1 me listens [::1]:P1      B  me connects to P1                            B2 me accepts B
//	L2 me listens 127.0.0.1:P2  D  me connects to P2                            D2 X accepts D from L2
//
// A and D close first; B2 (the server side) closes before B.
func TestFilters(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	me := uint32(os.Getpid())
	p0, p1, p2, c := ns.Port(0), ns.Port(1), ns.Port(2), ns.Port(5)
	v4, v6 := netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()

	// X accepts from L2, so it gets L2's socket when it starts; X must
	// start before the tracers (its pid is a filter value) and L2 must
	// listen after them: X gets the bare socket, which listens later.
	l2, err := ns.Socket(netip.AddrPortFrom(v4, p2))
	if err != nil {
		t.Fatal(err)
	}
	l2f, err := ns.SocketFile(l2)
	if err != nil {
		t.Fatal(err)
	}
	x := ns.StartProc(t, l2f)
	l2f.Close()
	them := uint32(x.Pid())

	cases := []struct {
		name  string
		opts  Options
		socks []string // roles let through
		// held: the events of a role flagged FlagHeld (by index).
		held map[string][]int
	}{
		// Unfiltered: it sees the whole machine; a large ring absorbs the
		// backlog while the other tracers load.
		{name: "none", opts: Options{RingSize: 16 << 20}, socks: []string{"L0", "A", "A2", "L1", "B", "B2", "L2", "D", "D2"}},
		{name: "port P0", opts: Options{Filter: model.Filter{Ports: []uint16{p0}}}, socks: []string{"L0", "A", "A2"}},
		// C is A's local port, chosen by bind(), but CLOSE->SYN_SENT fires
		// before connect() sets it: held until SYN_SENT->ESTABLISHED.
		{name: "lport C", opts: Options{Filter: model.Filter{LPorts: []uint16{c}}}, socks: []string{"A"},
			held: map[string][]int{"A": {0}}},
		// A2's peer is already set at LISTEN->SYN_RECV on 6.18 (the
		// program holds a child's event only while its remote port is 0),
		// so A2 matches at once.
		{name: "rport C", opts: Options{Filter: model.Filter{RPorts: []uint16{c}}}, socks: []string{"A2"}},
		{name: "port C", opts: Options{Filter: model.Filter{Ports: []uint16{c}}}, socks: []string{"A", "A2"},
			held: map[string][]int{"A": {0}}},
		{name: "lport P1 or P2", opts: Options{Filter: model.Filter{LPorts: []uint16{p1, p2}}}, socks: []string{"L1", "B2", "L2", "D2"}},
		// Accepted sockets wait for accept() to name their owner: their
		// LISTEN->SYN_RECV and SYN_RECV->ESTABLISHED are held, and name the
		// listener's owner (inherited): for D2 the test process, not X.
		{name: "pid X", opts: Options{Filter: model.Filter{Pids: []uint32{them}}}, socks: []string{"L0", "A2", "D2"},
			held: map[string][]int{"A2": {0, 1}, "D2": {0, 1}}},
		{name: "port P2 and pid X", opts: Options{Filter: model.Filter{Ports: []uint16{p2}, Pids: []uint32{them}}}, socks: []string{"D2"},
			held: map[string][]int{"D2": {0, 1}}},
		{name: "port P0 or P1 and pid X or me", opts: Options{Filter: model.Filter{Ports: []uint16{p0, p1}, Pids: []uint32{them, me}}},
			socks: []string{"L0", "A", "A2", "L1", "B", "B2"}, held: map[string][]int{"A2": {0, 1}, "B2": {0, 1}}},
		{name: "ipv6", opts: Options{Filter: model.Filter{Family: model.AFInet6}}, socks: []string{"L1", "B", "B2"}},
		// P1 is only IPv6: nothing passes both.
		{name: "ipv4 and port P1", opts: Options{Filter: model.Filter{Family: model.AFInet, Ports: []uint16{p1}}}},
		{name: "state CLOSE_WAIT", opts: Options{Filter: model.Filter{States: []model.State{model.CloseWait}}}, socks: []string{"A2", "B", "D2"}},
		{name: "state SYN_SENT or FIN_WAIT2, port P1", opts: Options{Filter: model.Filter{States: []model.State{model.SynSent, model.FinWait2}, Ports: []uint16{p1}}},
			socks: []string{"B", "B2"}},
	}
	opts := make([]Options, len(cases))
	for i, c := range cases {
		opts[i] = c.opts
	}
	sessions := startAll(t, opts...)
	o := ns.Oracle(t)

	var l0, l1, a, b, d, a2, b2, d2 int
	var bPort, dPort uint16
	port := func(fd *int, p *uint16) step {
		return func() error { l, err := ns.LocalAddr(*fd); *p = l.Port(); return err }
	}
	run(t,
		func() (err error) { l0, err = x.Listen(netip.AddrPortFrom(v4, p0)); return },
		func() error { return ns.BindListen(l2, netip.AddrPortFrom(v4, p2)) },
		func() (err error) { l1, err = ns.Listen(netip.AddrPortFrom(v6, p1)); return },
		func() (err error) {
			a, err = ns.ConnectFrom(netip.AddrPortFrom(v4, c), netip.AddrPortFrom(v4, p0))
			return
		},
		func() (err error) { b, err = ns.Connect(netip.AddrPortFrom(v6, p1)); return },
		func() (err error) { d, err = ns.Connect(netip.AddrPortFrom(v4, p2)); return },
		func() (err error) { a2, err = x.Accept(l0); return },
		func() (err error) { b2, err = ns.Accept(l1); return },
		func() (err error) { d2, err = x.Accept(testnet.FirstExtraFD); return },
		port(&b, &bPort),
		port(&d, &dPort),
		func() error { return ns.Close(a) },
		func() error { return x.ReadEOF(a2) },
		func() error { return x.Close(a2) },
		func() error { return ns.Close(b2) },
		func() error { return ns.ReadEOF(b) },
		func() error { return ns.Close(b) },
		func() error { return ns.Close(d) },
		func() error { return x.ReadEOF(d2) },
		func() error { return x.Close(d2) },
		func() error { return x.Close(l0) },
		func() error { return ns.Close(l1) },
		// X's copy of L2 first: the test's close() closes the listener.
		func() error { return x.Close(testnet.FirstExtraFD) },
		func() error { return ns.Close(l2) },
	)
	sessions[0].waitCloses(ns.Inode(), 9)
	stopAll(sessions)

	want := map[string]sockWant{
		"L0": {edges: listenerEdges, family: model.AFInet, local: v4, lport: p0, owner: them},
		"A": {edges: slices.Concat(activeOpen, activeCloseEdges), family: model.AFInet, local: v4, remote: v4,
			lport: c, rport: p0, owner: me, bound: true},
		"A2": {edges: slices.Concat(passiveOpen, passiveCloseEdges), family: model.AFInet, local: v4, remote: v4,
			lport: p0, rport: c, owner: them, inherited: 2},
		"L1": {edges: listenerEdges, family: model.AFInet6, local: v6, lport: p1, owner: me},
		"B": {edges: slices.Concat(activeOpen, passiveCloseEdges), family: model.AFInet6, local: v6, remote: v6,
			lport: bPort, rport: p1, owner: me},
		"B2": {edges: slices.Concat(passiveOpen, activeCloseEdges), family: model.AFInet6, local: v6, remote: v6,
			lport: p1, rport: bPort, owner: me, inherited: 2},
		"L2": {edges: listenerEdges, family: model.AFInet, local: v4, lport: p2, owner: me},
		"D": {edges: slices.Concat(activeOpen, activeCloseEdges), family: model.AFInet, local: v4, remote: v4,
			lport: dPort, rport: p2, owner: me},
		"D2": {edges: slices.Concat(passiveOpen, passiveCloseEdges), family: model.AFInet, local: v4, remote: v4,
			lport: p2, rport: dPort, owner: them, inherited: 2, inheritedOwner: me},
	}
	// roleOf names a socket by its ports (any of its events will do but a
	// child's first, whose peer may not be set yet).
	roleOf := func(ports [][2]uint16) string {
		for _, p := range []struct {
			port uint16
			n    string
		}{{p0, "0"}, {p1, "1"}, {p2, "2"}} {
			var local, remote, peer bool
			for _, sp := range ports {
				local = local || sp[0] == p.port
				remote = remote || sp[1] == p.port
				peer = peer || sp[0] == p.port && sp[1] != 0
			}
			switch {
			case remote:
				return map[string]string{"0": "A", "1": "B", "2": "D"}[p.n]
			case peer:
				return map[string]string{"0": "A2", "1": "B2", "2": "D2"}[p.n]
			case local:
				return "L" + p.n
			}
		}
		return "?"
	}
	lifeRole := func(l *life) string {
		var ports [][2]uint16
		for _, e := range l.evs {
			ports = append(ports, [2]uint16{e.Sport, e.Dport})
		}
		return roleOf(ports)
	}

	// The kernel's record, grouped by socket and named by role.
	oevs, err := o.Events()
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	oracleRole := map[string]string{} // skaddr/incarnation -> role
	{
		n := map[uint64]int{}
		ports := map[string][][2]uint16{}
		for _, e := range oevs {
			k := fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])
			ports[k] = append(ports[k], [2]uint16{e.Sport, e.Dport})
			if e.New == model.Close {
				n[e.Skaddr]++
			}
		}
		for k, p := range ports {
			oracleRole[k] = roleOf(p)
		}
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := sessions[i]
			only := func(old, nw model.State) bool {
				return len(tc.opts.States) == 0 || slices.Contains(tc.opts.States, old) || slices.Contains(tc.opts.States, nw)
			}
			// Sockets of other namespaces (other tests, other programs)
			// may pass too, but only if they match the filter.
			for _, l := range foreignLives(s.evs, ns.Inode()) {
				if why := mismatch(tc.opts, l); why != "" {
					t.Errorf("a socket that does not match the filter passed (%s):\n%s", why, dump([]*life{l}))
				}
			}
			ls := lives(s.evs, ns.Inode())
			got := map[string]*life{}
			for _, l := range ls {
				r := lifeRole(l)
				if got[r] != nil {
					t.Fatalf("two sockets as %s:\n%s", r, dump(ls))
				}
				got[r] = l
			}
			roles := slices.Sorted(func(yield func(string) bool) {
				for r := range got {
					if !yield(r) {
						return
					}
				}
			})
			if wantRoles := slices.Sorted(slices.Values(tc.socks)); !slices.Equal(roles, wantRoles) {
				t.Errorf("sockets let through: %v, want %v\n%s", roles, wantRoles, dump(ls))
			}
			for r, l := range got {
				w, ok := want[r]
				if !ok {
					continue
				}
				w.name, w.held, w.only = r, tc.held[r], only
				checkSocket(t, l, w)
			}
			compareOracle(t, o, ls, func(e testnet.OracleEvent, key string) bool {
				return slices.Contains(tc.socks, oracleRole[key]) && only(e.Old, e.New)
			})
		})
	}
}
