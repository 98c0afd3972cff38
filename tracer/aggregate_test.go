package tracer_test

// Privileged tests of the aggregation mode (stats), the socket list (stuck
// sockets) and the anomalies-only mode with replayed transitions. Each test
// works in its own network namespace (internal/testnet) and filters the
// tracer on that namespace's ports, which nothing else on the machine uses,
// so the kernel's counts are exactly the test's own.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// aggOpen opens a tracer; the caller closes it.
func aggOpen(t *testing.T, opts tracer.Options) *tracer.Tracer {
	t.Helper()
	testnet.RequireRoot(t)
	opts.Warn = func(msg string) { t.Logf("tracer warning: %s", msg) }
	tr, err := tracer.Open(opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	return tr
}

func aggMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// aggFD checks the result of a call that makes a socket.
type aggFD struct{ t *testing.T }

func (c aggFD) fd(fd int, err error) int {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return fd
}

// aggWaitFor polls Aggregate until done says the counts are complete (the
// last transitions of a close fire in softirq, after the test's close()
// returned), for at most 5 s.
func aggWaitFor(t *testing.T, tr *tracer.Tracer, done func(a *model.Aggregate) bool) *model.Aggregate {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, err := tr.Aggregate()
		aggMust(t, err)
		if done(a) || time.Now().After(deadline) {
			return a
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type aggEdge struct{ old, new model.State }

// aggCheckMatrix compares the whole matrix with want (every other cell 0).
func aggCheckMatrix(p *testnet.Problems, a *model.Aggregate, want map[aggEdge]uint64, lost uint64) {
	var diffs []string
	for old := range model.State(model.NumStates) {
		for nw := range model.State(model.NumStates) {
			if got, w := a.Matrix[old][nw], want[aggEdge{old, nw}]; got != w {
				diffs = append(diffs, fmt.Sprintf("%s -> %s: %d, want %d", old, nw, got, w))
			}
		}
	}
	if len(diffs) > 0 {
		p.Errorf("matrix differs (the kernel reported %d events lost):\n  %s", lost, strings.Join(diffs, "\n  "))
	}
}

func aggHistCount(a *model.Aggregate, k model.HistKind) uint64 {
	var n uint64
	for _, v := range a.Hists[k] {
		n += v
	}
	return n
}

// TestAggregateCounts makes plain connections (client closes first),
// refused connects and SO_LINGER 0 resets in a namespace, and checks the
// kernel's matrix, outcomes, histograms and per-port and per-owner counts
// exactly.
func TestAggregateCounts(t *testing.T) {
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		must := aggFD{t}
		const (
			conns   = 50 // client closes first
			refused = 5  // connect() to a port without listener
			resets  = 5  // the client closes with SO_LINGER 0
		)
		port, closedPort := ns.Port(0), ns.Port(1)
		server := testnet.Addr(4, port)
		tr := aggOpen(t, tracer.Options{Mode: tracer.ModeAggregate, Filter: model.Filter{Ports: []uint16{port, closedPort}}})
		defer tr.Close()

		lfd := must.fd(ns.Listen(server))
		for i := range conns {
			// A source address per connection: the namespace's ephemeral
			// range has 8 ports and each client's port stays in TIME_WAIT.
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 0)
			c := must.fd(ns.ConnectFrom(src, server))
			s := must.fd(ns.Accept(lfd))
			aggMust(t, ns.Close(c))   // ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2
			aggMust(t, ns.ReadEOF(s)) // the server saw the FIN: CLOSE_WAIT
			aggMust(t, ns.Close(s))   // CLOSE_WAIT -> LAST_ACK -> CLOSE; client FIN_WAIT2 -> CLOSE
		}
		for range refused {
			_, err := ns.Connect(testnet.Addr(4, closedPort))
			if !errors.Is(err, unix.ECONNREFUSED) {
				t.Fatalf("connect to a port without listener: %v, want ECONNREFUSED", err)
			}
		}
		for i := range resets {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 2, byte(i + 1)}), 0)
			c := must.fd(ns.ConnectFrom(src, server))
			s := must.fd(ns.Accept(lfd))
			aggMust(t, ns.SetLinger0(c))
			aggMust(t, ns.Close(c)) // ESTABLISHED -> CLOSE and an RST: the server's ESTABLISHED -> CLOSE
			aggMust(t, ns.Close(s)) // already CLOSE: no transition
		}
		aggMust(t, ns.Close(lfd))

		want := map[aggEdge]uint64{
			{model.Close, model.Listen}:          1,
			{model.Listen, model.Close}:          1,
			{model.Close, model.SynSent}:         conns + refused + resets,
			{model.SynSent, model.Established}:   conns + resets,
			{model.SynSent, model.Close}:         refused,
			{model.Listen, model.SynRecv}:        conns + resets,
			{model.SynRecv, model.Established}:   conns + resets,
			{model.Established, model.FinWait1}:  conns,
			{model.FinWait1, model.FinWait2}:     conns,
			{model.FinWait2, model.Close}:        conns,
			{model.Established, model.CloseWait}: conns,
			{model.CloseWait, model.LastAck}:     conns,
			{model.LastAck, model.Close}:         conns,
			{model.Established, model.Close}:     2 * resets,
		}
		var wantTotal uint64
		for _, v := range want {
			wantTotal += v
		}
		aggWaitFor(t, tr, func(a *model.Aggregate) bool { return a.Transitions() >= wantTotal })
		aggMust(t, tr.Detach())
		a, err := tr.Aggregate()
		aggMust(t, err)
		c, err := tr.Summary()
		aggMust(t, err)
		aggCheckMatrix(p, a, want, c.Lost())

		wantOut := [model.NumOutcomes]uint64{
			model.OutcomeActiveClose:    conns,
			model.OutcomePassiveClose:   conns,
			model.OutcomeConnectRefused: refused,
			model.OutcomeAbort:          resets, // the client's SO_LINGER 0 close
			model.OutcomeReset:          resets, // the server got the RST
			model.OutcomeListenerClosed: 1,
		}
		if a.Outcomes != wantOut {
			for o := range model.NumOutcomes {
				if a.Outcomes[o] != wantOut[o] {
					p.Errorf("outcome %s: %d, want %d", o, a.Outcomes[o], wantOut[o])
				}
			}
		}

		// Histograms: one count per transition out of a state whose entry was
		// seen (births have no time in their old state), one per handshake,
		// one lifetime per socket that is not a listener.
		wantHist := map[model.HistKind]uint64{
			model.HistKind(model.Listen):      1, // the listener's LISTEN -> CLOSE
			model.HistKind(model.SynSent):     conns + resets + refused,
			model.HistKind(model.SynRecv):     conns + resets,
			model.HistKind(model.Established): 2*conns + 2*resets,
			model.HistKind(model.FinWait1):    conns,
			model.HistKind(model.FinWait2):    conns,
			model.HistKind(model.CloseWait):   conns,
			model.HistKind(model.LastAck):     conns,
			model.HistActiveOpen:              conns + resets,
			model.HistPassiveOpen:             conns + resets,
			model.HistLifetime:                2*conns + refused + 2*resets,
		}
		for k := range model.HistKind(model.NumHistKinds) {
			if got := aggHistCount(a, k); got != wantHist[k] {
				p.Errorf("histogram %q counts %d, want %d", k, got, wantHist[k])
			}
		}
		// The same, against the matrix itself: every edge out of a state
		// except births (CLOSE -> *, a child's LISTEN -> SYN_RECV).
		for old := model.State(1); old < model.NumStates; old++ {
			var out uint64
			for nw := model.State(1); nw < model.NumStates; nw++ {
				if old != model.Close && !model.IsChildBirth(old, nw) {
					out += a.Matrix[old][nw]
				}
			}
			if got := aggHistCount(a, model.HistKind(old)); got != out {
				p.Errorf("time in %s counts %d, but the matrix has %d transitions out of it", old, got, out)
			}
		}
		if got, m := aggHistCount(a, model.HistActiveOpen), a.Matrix[model.SynSent][model.Established]; got != m {
			p.Errorf("active open histogram counts %d, SYN_SENT -> ESTABLISHED %d", got, m)
		}
		if got, m := aggHistCount(a, model.HistPassiveOpen), a.Matrix[model.SynRecv][model.Established]; got != m {
			p.Errorf("passive open histogram counts %d, SYN_RECV -> ESTABLISHED %d", got, m)
		}

		// Per port: every transition is counted under its service port (the
		// remote port of a socket that connect()ed, the local port of the
		// others), or as PortOther.
		var portSum uint64
		for _, pc := range a.Ports {
			portSum += pc.Transitions
		}
		if portSum+a.PortOther != a.Transitions() {
			p.Errorf("per-port counts add up to %d + %d other, want %d transitions", portSum, a.PortOther, a.Transitions())
		}
		// The server side: the listener's 2, and per child LISTEN -> SYN_RECV,
		// SYN_RECV -> ESTABLISHED, then 3 more (orderly) or 1 (reset).
		wantPort := model.Count{Transitions: 2 + 5*conns + 3*resets, Opened: conns + resets}
		if got := a.Ports[model.PortKey{Port: port}]; got.Transitions != wantPort.Transitions || got.Opened != wantPort.Opened {
			p.Errorf("local port %d: %+v, want %+v", port, got, wantPort)
		}
		// The client side, by remote port: 5 transitions per orderly
		// connection, 3 per reset one (ESTABLISHED -> CLOSE), 2 per refused.
		wantRemote := model.Count{Transitions: 5*conns + 3*resets, Opened: conns + resets}
		if got := a.Ports[model.PortKey{Port: port, Remote: true}]; got.Transitions != wantRemote.Transitions || got.Opened != wantRemote.Opened {
			p.Errorf("remote port %d: %+v, want %+v", port, got, wantRemote)
		}
		wantRefused := model.Count{Transitions: 2 * refused, Opened: refused}
		if got := a.Ports[model.PortKey{Port: closedPort, Remote: true}]; got.Transitions != wantRefused.Transitions || got.Opened != wantRefused.Opened {
			p.Errorf("remote port %d (refused): %+v, want %+v", closedPort, got, wantRefused)
		}
		if got := a.Ports[model.PortKey{Port: closedPort}]; got != (model.Count{}) {
			p.Errorf("local port %d (never a local port): %+v, want nothing", closedPort, got)
		}
		// Per owner: the test process did everything, and every socket's owner
		// is known (clients connected here, children inherit the listener's).
		pid := uint32(os.Getpid())
		own := a.Owners[pid]
		if own.Transitions != a.Transitions() || own.Opened != 2*conns+refused+2*resets || len(a.Owners) != 1 || a.OwnerOther != 0 {
			p.Errorf("owners %+v (other %d), want only pid %d with %d transitions and %d opened",
				a.Owners, a.OwnerOther, pid, a.Transitions(), 2*conns+refused+2*resets)
		}
		t.Logf("%d transitions, outcomes %v, port %d %+v, %d events lost", a.Transitions(), a.Outcomes, port, a.Ports[model.PortKey{Port: port}], c.Lost())
	})
}

// TestSocketsStuckCloseWait holds a socket in CLOSE_WAIT (the peer closed,
// the test does not) and finds it in the stuck list with its owner, its
// addresses and the time since the peer's close.
func TestSocketsStuckCloseWait(t *testing.T) {
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		must := aggFD{t}
		port := ns.Port(0)
		server := testnet.Addr(4, port)
		tr := aggOpen(t, tracer.Options{Mode: tracer.ModeAggregate, Filter: model.Filter{Ports: []uint16{port}}})
		defer tr.Close()

		lfd := must.fd(ns.Listen(server))
		c := must.fd(ns.Connect(server))
		s := must.fd(ns.Accept(lfd))
		client, err := ns.LocalAddr(c)
		aggMust(t, err)
		aggMust(t, ns.Close(c)) // the FIN arrives at once on loopback: s is in CLOSE_WAIT
		closed := time.Now()

		th := map[model.State]time.Duration{model.CloseWait: time.Second}
		find := func() []model.SocketInfo {
			socks, err := tr.Sockets()
			aggMust(t, err)
			var out []model.SocketInfo
			for _, si := range model.Stuck(socks, th) {
				if si.Sport == port || si.Dport == port {
					out = append(out, si)
				}
			}
			return out
		}
		if got := find(); len(got) != 0 {
			p.Errorf("stuck right after the close: %+v, want none yet", got)
		}
		time.Sleep(1200 * time.Millisecond)
		got := find()
		truth := time.Since(closed)
		if len(got) != 1 {
			p.Fatalf("stuck sockets on port %d: %+v, want the one in CLOSE_WAIT", port, got)
		}
		si := got[0]
		if si.State != model.CloseWait || !si.OwnerKnown || si.Pid != uint32(os.Getpid()) || si.Comm == "" {
			p.Errorf("stuck socket %+v: want CLOSE_WAIT owned by pid %d", si, os.Getpid())
		}
		if d := si.Since - truth; d > time.Second || d < -time.Second {
			p.Errorf("in CLOSE_WAIT for %v, but the peer closed %v ago", si.Since, truth)
		}
		if si.Age < si.Since || si.Age > truth+time.Second {
			p.Errorf("age %v: want at least the time in state %v and about %v", si.Age, si.Since, truth)
		}
		if si.Family != model.AFInet || si.Saddr != server.Addr() || si.Sport != port ||
			si.Daddr != client.Addr() || si.Dport != client.Port() {
			p.Errorf("stuck socket %v:%d -> %v:%d, want %v -> %v", si.Saddr, si.Sport, si.Daddr, si.Dport, server, client)
		}
		aggMust(t, ns.Close(s))
		aggMust(t, ns.Close(lfd))
	})
}

// TestAnomaliesOnlyReplay runs the anomalies-only mode: legal traffic sends
// nothing to user space; an illegal edge and a gap replayed (BPF_PROG_RUN)
// on live listening sockets (through the replay iterator) arrive flagged by the kernel's check, and
// model.Tracker gives them the same verdicts.
func TestAnomaliesOnlyReplay(t *testing.T) {
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		must := aggFD{t}
		p1, p2 := ns.Port(0), ns.Port(1)
		tr := aggOpen(t, tracer.Options{Mode: tracer.ModeAnomalies, Replay: true, Filter: model.Filter{Ports: []uint16{p1, p2}}})
		defer tr.Close()
		col := tracetest.NewCollector(0)
		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		go func() { runDone <- tr.Run(ctx, col) }()
		defer func() {
			cancel()
			if err := <-runDone; err != nil {
				p.Errorf("Run: %v", err)
			}
		}()

		l1 := must.fd(ns.Listen(testnet.Addr(4, p1)))
		l2 := must.fd(ns.Listen(testnet.Addr(4, p2)))
		traffic := func() {
			t.Helper()
			for _, p := range []uint16{p1, p2} {
				lfd := l1
				if p == p2 {
					lfd = l2
				}
				c := must.fd(ns.Connect(testnet.Addr(4, p)))
				s := must.fd(ns.Accept(lfd))
				aggMust(t, ns.Close(c))
				aggMust(t, ns.ReadEOF(s))
				aggMust(t, ns.Close(s))
			}
		}
		traffic()
		// The last transitions fire in softirq after close() returns, and the
		// reader polls every 10 ms: give both time before saying "nothing".
		time.Sleep(200 * time.Millisecond)
		if evs := col.Events(); len(evs) != 0 {
			p.Fatalf("legal traffic sent %d events in anomalies-only mode, want none: %+v", len(evs), evs)
		}

		socks, err := tr.Sockets()
		aggMust(t, err)
		listener := map[uint16]uint64{}
		for _, s := range socks {
			if s.State == model.Listen && (s.Sport == p1 || s.Sport == p2) {
				listener[s.Sport] = s.Skaddr
			}
		}
		sk1, sk2 := listener[p1], listener[p2]
		if sk1 == 0 || sk2 == 0 {
			p.Fatalf("listeners not in the socket list: %+v", socks)
		}

		// Illegal: LISTEN -> FIN_WAIT2 on a socket last seen in LISTEN (no gap).
		aggMust(t, ns.Do(func() error { return tr.Replay(sk1, model.Listen, model.FinWait2) }))
		// Gap: ESTABLISHED -> CLOSE_WAIT (a legal edge) on a socket last seen in LISTEN.
		aggMust(t, ns.Do(func() error { return tr.Replay(sk2, model.Established, model.CloseWait) }))
		evs := col.WaitCount(2, 3*time.Second)
		if len(evs) != 2 {
			p.Fatalf("got %d events after two replays, want 2: %+v", len(evs), evs)
		}
		type want struct {
			sk             uint64
			port           uint16
			old, new, last model.State
			illegal, gap   bool
			verdict        model.VerdictKind
		}
		check := func(e *model.Event, w want, sparse, fresh *model.Tracker) {
			t.Helper()
			what := fmt.Sprintf("event %s -> %s on 0x%x", e.Old, e.New, e.Skaddr)
			if e.Skaddr != w.sk || e.Old != w.old || e.New != w.new || e.Sport != w.port {
				p.Errorf("%s (port %d): want %s -> %s on 0x%x port %d", what, e.Sport, w.old, w.new, w.sk, w.port)
			}
			if got := e.Flags&model.FlagKernelIllegal != 0; got != w.illegal {
				p.Errorf("%s: kernel illegal flag %v, want %v (flags %#x)", what, got, w.illegal, e.Flags)
			}
			if got := e.Flags&model.FlagKernelGap != 0; got != w.gap {
				p.Errorf("%s: kernel gap flag %v, want %v (flags %#x)", what, got, w.gap, e.Flags)
			}
			if e.LastState != w.last {
				p.Errorf("%s: last state %s, want %s", what, e.LastState, w.last)
			}
			for name, tk := range map[string]*model.Tracker{"sparse": sparse, "not sparse": fresh} {
				if v := tk.Check(e); v.Kind != w.verdict {
					p.Errorf("%s: %s tracker says %s (%s), want %s", what, name, v.Kind, v.Reason, w.verdict)
				}
			}
		}
		linux, err := model.ModelByName("linux")
		aggMust(t, err)
		sparse := model.NewTracker(linux, 0)
		sparse.SetSparse(true)
		fresh := model.NewTracker(linux, 0) // has never seen these sockets: uses LastState
		check(&evs[0], want{sk: sk1, port: p1, old: model.Listen, new: model.FinWait2, last: model.Listen,
			illegal: true, verdict: model.VerdictIllegal}, sparse, fresh)
		check(&evs[1], want{sk: sk2, port: p2, old: model.Established, new: model.CloseWait, last: model.Listen,
			gap: true, verdict: model.VerdictGap}, sparse, fresh)

		// The replays changed only the tracer's bookkeeping: the listeners
		// still accept, and their new children are legal (no events).
		traffic()
		time.Sleep(200 * time.Millisecond)
		if evs := col.Events(); len(evs) != 2 {
			p.Fatalf("traffic after the replays sent %d more events, want none: %+v", len(evs)-2, evs[2:])
		}

		// Closing the listeners is a legal LISTEN -> CLOSE, but the kernel side
		// last saw them in FIN_WAIT2 and CLOSE_WAIT: two gaps.
		aggMust(t, ns.Close(l1))
		aggMust(t, ns.Close(l2))
		evs = col.WaitCount(4, 3*time.Second)
		if len(evs) != 4 {
			p.Fatalf("got %d events after closing the listeners, want 4: %+v", len(evs), evs)
		}
		for _, e := range evs[2:] {
			w := want{sk: sk1, port: p1, old: model.Listen, new: model.Close, last: model.FinWait2, gap: true, verdict: model.VerdictGap}
			if e.Skaddr == sk2 {
				w.sk, w.port, w.last = sk2, p2, model.CloseWait
			}
			check(&e, w, sparse, fresh)
		}
	})
}

// TestAggregateOutcomeClasses checks the outcome of closes without the FIN
// handshake: close() with unread data, children never accepted when their
// listener closes, and close() of a socket still connecting.
func TestAggregateOutcomeClasses(t *testing.T) {
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		must := aggFD{t}
		p0, p1, p2 := ns.Port(0), ns.Port(1), ns.Port(2)
		tr := aggOpen(t, tracer.Options{Mode: tracer.ModeAggregate, Filter: model.Filter{Ports: []uint16{p0, p1, p2}}})
		defer tr.Close()

		// Unread data: the server's close() resets (abort), the client gets the RST.
		l0 := must.fd(ns.Listen(testnet.Addr(4, p0)))
		c := must.fd(ns.Connect(testnet.Addr(4, p0)))
		s := must.fd(ns.Accept(l0))
		aggMust(t, ns.Write(c, 100))
		aggMust(t, ns.Do(func() error {
			for range 100 {
				if n, err := unix.IoctlGetInt(s, unix.SIOCINQ); err != nil || n == 100 {
					return err
				}
				time.Sleep(5 * time.Millisecond)
			}
			return errors.New("the client's data never arrived")
		}))
		aggMust(t, ns.Close(s))
		aggMust(t, ns.Close(c))
		aggMust(t, ns.Close(l0))

		// A child never accepted: the listener's close() resets it.
		l1 := must.fd(ns.Listen(testnet.Addr(4, p1)))
		c = must.fd(ns.Connect(testnet.Addr(4, p1)))
		aggMust(t, ns.Close(l1))
		aggMust(t, ns.Close(c))

		// Still connecting: a listener with backlog 0 takes one connection into
		// its accept queue and drops the next SYN, so that connect() stays in
		// SYN_SENT until closed.
		var l2 int
		aggMust(t, ns.Do(func() error {
			ap := testnet.Addr(4, p2)
			fd, err := testnet.Socket(ap, 0)
			if err != nil {
				return err
			}
			if err := testnet.Bind(fd, ap); err != nil {
				return err
			}
			l2 = fd
			return unix.Listen(fd, 0)
		}))
		c1 := must.fd(ns.Connect(testnet.Addr(4, p2)))
		c2 := must.fd(ns.ConnectNonblock(testnet.Addr(4, p2)))
		time.Sleep(50 * time.Millisecond)
		aggMust(t, ns.Close(c2))
		aggMust(t, ns.Do(func() error { return unix.Close(l2) }))
		aggMust(t, ns.Close(c1))

		wantOut := [model.NumOutcomes]uint64{
			model.OutcomeAbort:          3, // unread data; two children never accepted
			model.OutcomeReset:          3, // their peers
			model.OutcomeConnectAborted: 1,
			model.OutcomeListenerClosed: 3,
		}
		a := aggWaitFor(t, tr, func(a *model.Aggregate) bool { return a.Outcomes == wantOut })
		cnt, err := tr.Counters()
		aggMust(t, err)
		for o := range model.NumOutcomes {
			if a.Outcomes[o] != wantOut[o] {
				p.Errorf("outcome %s: %d, want %d (%d events lost)", o, a.Outcomes[o], wantOut[o], cnt.Lost())
			}
		}
		if got := a.Matrix[model.Established][model.Close]; got != 6 {
			p.Errorf("ESTABLISHED -> CLOSE: %d, want 6", got)
		}
		if got := a.Matrix[model.SynSent][model.Close]; got != 1 {
			p.Errorf("SYN_SENT -> CLOSE: %d, want 1", got)
		}
	})
}
