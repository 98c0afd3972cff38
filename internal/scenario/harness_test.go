package scenario_test

// The harness of the scenarios: one network namespace, one tracer and one
// tracefs oracle per scenario, and the four checks every scenario makes.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// env is one scenario's world: its namespace (lo up, a private port block
// and ephemeral range), the tracer reading every namespace's transitions
// and keeping this one's, and the kernel's own record of the port block.
type env struct {
	t      *testing.T
	ns     *testnet.NS
	oracle *testnet.Oracle
	resets *testnet.ResetOracle
	s      *tracetest.Session
	// peer and veth, for the scenarios that need a peer that can vanish
	// (peerScenario): a second namespace joined to ns by a veth pair. Its
	// sockets use ports of ns's block too, so the oracles see them.
	peer *testnet.NS
	veth *testnet.Veth
}

// newEnv opens everything before the scenario makes its first socket, so
// every socket is born inside the trace.
func newEnv(t *testing.T, withPeer bool) *env {
	t.Helper()
	e := &env{t: t, ns: testnet.New(t)} // skips (or fails under CI=true) without root
	cfg := tracetest.Config{Netns: e.ns.Inode(), JudgeLoss: true}
	if withPeer {
		e.peer = testnet.New(t)
		e.veth = testnet.NewVeth(t, e.ns, e.peer)
		cfg.AlsoNetns = []uint32{e.peer.Inode()}
	}
	// Default ring and map sizes: the tracer sees the whole machine, and
	// other programs (load benchmarks) may be busy meanwhile. finish
	// judges the loss it reports.
	e.s = tracetest.StartConfig(t, cfg, tracer.Options{})[0]
	// The oracle selects the kernel's TCP transitions whose ports are both
	// in the namespace's block, or 0 (testnet.PortFilter): a load generator
	// in another namespace with a wide ephemeral range connects from ports
	// in the block to its own server port.
	e.oracle = e.ns.Oracle(t)
	e.resets = e.ns.ResetOracle(t)
	return e
}

// netns are the namespaces whose sockets the scenario makes.
func (e *env) netns() []uint32 {
	if e.peer != nil {
		return []uint32{e.ns.Inode(), e.peer.Inode()}
	}
	return []uint32{e.ns.Inode()}
}

// sock is one expected socket incarnation (from its birth to its ->CLOSE).
type sock struct {
	name   string
	family model.Family
	// The ports of the socket's last transition, which identify it
	// (lport 0: any; its port was chosen by the kernel and never learnt).
	lport, rport uint16
	edges        []string
	// end is how its ->CLOSE must say the connection ended.
	end end
}

// end is how a socket's connection ended: what its ->CLOSE event must
// carry, the cause with its detail as model.CloseCause spells it
// ("fin/active", "reset_received", "timeout/retransmission", ...), the
// name of the socket error (model.ErrnoName; "" for none) and the reason
// of a reset it sent (ResetReason: enum sk_rst_reason without
// SK_RST_REASON_; "" for none); and sent, the reasons of the resets the
// kernel's own record (tcp:tcp_send_reset) shows the socket sending, in
// order, comma-separated ("" for none).
//
// reason and sent differ where the kernel sends its reset after the
// ->CLOSE transition (aborted, below): the event cannot carry it.
type end struct {
	cause, err, reason, sent string
	// wrong, when set, is the cause tcpstate gives today where it is
	// wrong because the kernel side does not gather the fact that tells
	// (a known defect, which the scenario explains): finish expects it
	// and logs the defect, so that a fix fails the scenario until it
	// drops wrong.
	wrong string
}

func (d end) String() string {
	s := d.cause
	if d.err != "" {
		s += " " + d.err
	}
	if d.reason != "" {
		s += " reason " + d.reason
	}
	return s
}

// The ends of a clean close, where no error and no reset is involved.
var (
	finActive       = end{cause: "fin/active"}
	finPassive      = end{cause: "fin/passive"}
	finSimultaneous = end{cause: "fin/simultaneous"}
	listenerClosed  = end{cause: "listener_closed"}
)

// resetBy is the end of a socket reset by its peer, with the socket error
// the kernel set (ECONNRESET; EPIPE in CLOSE_WAIT).
func resetBy(err string) end { return end{cause: "reset_received", err: err} }

// aborted is the end of a socket closed without FIN whose reset the
// kernel sent, for reason, after its ->CLOSE transition: tcp_disconnect()
// (close() with SO_LINGER 0, connect(AF_UNSPEC), a listener's unaccepted
// children) and __tcp_close() with unread data set TCP_CLOSE first and
// then send the reset, so the ->CLOSE event has neither the reset mark
// nor its reason (model/cause.go decides reset_sent from the state and
// the missing error).
func aborted(reason string) end { return end{cause: "reset_sent", sent: reason} }

// endOf is what a ->CLOSE event says of how its connection ended.
func endOf(e *model.Event) end {
	d := end{cause: e.CloseFacts.Cause().String(), reason: e.ResetReason}
	if e.CloseErr != 0 {
		d.err = model.ErrnoName(e.CloseErr)
	}
	return d
}

// factsString spells out a close's facts, for failure messages.
func factsString(e *model.Event) string {
	f := e.CloseFacts
	s := fmt.Sprintf("facts %#x: old %v, error class %d (errno %d), timer %d", uint16(f), f.Old(), f.Err(), e.CloseErr, f.Timer())
	for _, b := range []struct {
		bit  model.CloseFacts
		name string
	}{{model.FactRstSent, "reset sent"}, {model.FactRstReceived, "reset received"}, {model.FactClosing, "through CLOSING"}} {
		if f&b.bit != 0 {
			s += ", " + b.name
		}
	}
	return s + fmt.Sprintf("; acked %d, received %d, retransmits %d, srtt %d us, age %d ns",
		e.BytesAcked, e.BytesReceived, e.TotalRetrans, e.SrttUs, e.AgeNs)
}

// want is what a scenario must produce.
type want struct {
	socks []sock
	// rfc793Illegal lists, as "name OLD>NEW", every event the rfc793 model
	// must call illegal: exactly the Linux-specific edges of the scenario.
	rfc793Illegal []string
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

// finish waits until tcpstate has delivered the scenario's transitions,
// stops the tracer and the oracle, and checks:
//
//	(a) the exact transitions of every socket, against w, and how its
//	    ->CLOSE says it ended (its cause, socket error and reset reason),
//	    its age at ->CLOSE (the time since its birth event, exactly), and
//	    the resets the kernel's record (tcp:tcp_send_reset) shows it
//	    sending;
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
func (e *env) finish(w want) (map[string]*tracetest.Life, error) {
	t := e.t
	t.Helper()
	var problems []string
	fail := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

	total := 0
	for _, s := range w.socks {
		total += len(s.edges)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.s.Collector().Count() < total && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// A few poll intervals more, so an unexpected extra event shows up.
	time.Sleep(3 * tracer.DefaultPollInterval)
	evs := byTime(e.s.Stop())
	oevs, oerr := e.oracle.Events()
	if oerr != nil {
		t.Fatalf("oracle: %v", oerr)
	}

	resets, rerr := e.resets.Resets()
	if rerr != nil {
		t.Fatalf("reset oracle: %v", rerr)
	}

	ls := tracetest.LivesIn(evs, e.netns()...)
	byName := match(ls, w, fail)

	// (a) exact transitions per socket.
	for _, s := range w.socks {
		l := byName[s.name]
		if l == nil {
			continue
		}
		t.Logf("%-12s %s", s.name, strings.Join(l.Edges(), " "))
		if got := l.Edges(); !slices.Equal(got, s.edges) {
			fail("%s: transitions\n      %s\n  want\n      %s", s.name, strings.Join(got, " "), strings.Join(s.edges, " "))
		}
		if !e.resets.HasReasons() {
			s.end = withoutReasons(s.end)
		}
		checkEnd(s, l, fail, t.Logf)
		if last := &l.Evs[len(l.Evs)-1]; last.New == model.Close {
			t.Logf("%-12s ended %v (%s)", s.name, endOf(last), factsString(last))
			if got := sentBy(last, resets); got != s.end.sent {
				fail("%s: the kernel's record shows it sending resets [%s], want [%s]", s.name, got, s.end.sent)
			}
		}
	}

	// (b) the kernel's record.
	for _, p := range tracetest.OracleDiff(oevs, ls, nil) {
		fail("%s", p)
	}

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
				illegal = append(illegal, name+" "+tracetest.Edge(ev.Old, ev.New))
			default:
				other = append(other, fmt.Sprintf("%s %s: %v %s", name, tracetest.Edge(ev.Old, ev.New), v.Kind, v.Reason))
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
		for i := range l.Evs {
			ev := &l.Evs[i]
			if !ev.OwnerKnown() || ev.Pid != pid {
				fail("%s: owner pid %d (known %v), want this process %d: %s", l.Name, ev.Pid, ev.OwnerKnown(), pid, tracetest.FmtEvent(ev))
			}
		}
	}

	if len(problems) == 0 {
		if e.s.Counters.Lost() > 0 {
			t.Logf("the tracer reported %d events lost machine-wide, none of this namespace's (its %d events are the kernel's); counters %+v",
				e.s.Counters.Lost(), len(evs), e.s.Counters)
		}
		return byName, nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tcpstate's events:\n%s", tracetest.Dump(ls))
	b.WriteString("the kernel's record:\n")
	for _, o := range oevs {
		fmt.Fprintf(&b, "      %v\n", o)
	}
	b.WriteString("the kernel's resets:\n")
	for _, r := range resets {
		fmt.Fprintf(&b, "      %v\n", r)
	}
	if e.s.Counters.Lost() > 0 {
		for _, p := range problems {
			t.Logf("(tracer reported loss) %s", p)
		}
		t.Log(b.String())
		return byName, fmt.Errorf("the tracer reported %d events lost machine-wide (counters %+v) and this namespace's events are not the kernel's: %w",
			e.s.Counters.Lost(), e.s.Counters, errRetry)
	}
	for _, p := range problems {
		t.Error(p)
	}
	t.Log(b.String())
	return byName, nil
}

// withoutReasons is what a scenario's end looks like on a kernel whose
// resets carry no reason (before Linux 6.10): no reason on the event, and
// as many resets in the kernel's record, each with an empty reason.
func withoutReasons(e end) end {
	e.reason = ""
	if e.sent != "" {
		e.sent = strings.Repeat(",", strings.Count(e.sent, ","))
	}
	return e
}

// sentBy lists, comma-separated, the reasons of the resets the kernel
// sent from the socket whose ->CLOSE is last, found by its addresses and
// ports: the resets of the timewait socket that took over its connection
// count as its; those answering packets that matched no socket do not.
func sentBy(last *model.Event, resets []testnet.Reset) string {
	src := netip.AddrPortFrom(last.Saddr, last.Sport)
	dst := netip.AddrPortFrom(last.Daddr, last.Dport)
	var rs []string
	for _, r := range resets {
		if !r.NoSocket && r.Src == src && r.Dst == dst {
			rs = append(rs, r.Reason)
		}
	}
	return strings.Join(rs, ",")
}

// checkEnd checks a socket's ->CLOSE: how it says the connection ended,
// and its age. Birth and ->CLOSE are stamped with the same clock read once
// per event (bpf_ktime_get_ns), and the age is the difference the kernel
// computed from the same two readings: it must be exact.
func checkEnd(s sock, l *tracetest.Life, fail, log func(string, ...any)) {
	last := &l.Evs[len(l.Evs)-1]
	if last.New != model.Close {
		return // the transitions' check reports it
	}
	if s.end.cause == "" {
		fail("%s: the scenario does not say how it ends; it ended %v (%s)", s.name, endOf(last), factsString(last))
		return
	}
	want := s.end
	want.sent = "" // the kernel's record, not the event's: finish checks it
	want.wrong = ""
	got := endOf(last)
	switch {
	case s.end.wrong == "":
	case got.cause == s.end.cause:
		fail("%s: ended %v, as it should: the known defect is fixed, drop the scenario's wrong %q", s.name, got, s.end.wrong)
		want.cause = got.cause
	default:
		want.cause = s.end.wrong
		if got == want {
			log("KNOWN DEFECT: %s ends %s, should be %s (%s)", s.name, got.cause, s.end.cause, factsString(last))
		}
	}
	if got != want {
		fail("%s: ended %v, want %v (%s)", s.name, got, want, factsString(last))
	}
	if age := last.TsNs - l.Evs[0].TsNs; last.AgeNs != age {
		fail("%s: age at ->CLOSE %d ns, want %d (->CLOSE at %d, birth at %d)", s.name, last.AgeNs, age, last.TsNs, l.Evs[0].TsNs)
	}
}

// socketName names ev's socket incarnation; li counts the incarnations of
// each skaddr seen so far (events come in time order).
func socketName(ls []*tracetest.Life, ev *model.Event, li map[uint64]int) string {
	n := li[ev.Skaddr]
	if ev.New == model.Close {
		li[ev.Skaddr]++
	}
	for _, l := range ls {
		if l.Skaddr == ev.Skaddr && l.N == n {
			if l.Name == "" {
				return l.Key()
			}
			return l.Name
		}
	}
	return fmt.Sprintf("%#x/%d", ev.Skaddr, n)
}

// match names tcpstate's socket incarnations after the expected sockets:
// in order of birth, each takes the first expected socket not yet taken
// whose family and ports match its last transition.
func match(ls []*tracetest.Life, w want, fail func(string, ...any)) map[string]*tracetest.Life {
	byName := map[string]*tracetest.Life{}
	for _, l := range ls {
		last := l.Evs[len(l.Evs)-1]
		for _, s := range w.socks {
			if byName[s.name] != nil || s.family != last.Family || s.rport != last.Dport ||
				(s.lport != 0 && s.lport != last.Sport) {
				continue
			}
			byName[s.name] = l
			l.Name = s.name
			break
		}
		if l.Name == "" {
			fail("a socket no scenario step made: %s", l.Key())
		}
	}
	for _, s := range w.socks {
		if byName[s.name] == nil {
			fail("%s (%v local port %d, remote port %d): no such socket in tcpstate's events", s.name, s.family, s.lport, s.rport)
		}
	}
	return byName
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
	attempts(t, maxAttempts, false, body)
}

// peerScenario is scenario with a peer namespace joined by a veth pair
// (env.peer, env.veth).
func peerScenario(t *testing.T, body func(e *env) error) {
	t.Helper()
	attempts(t, maxAttempts, true, body)
}

// attempts runs body up to n times, each in a fresh env, until it returns
// something other than errRetry.
func attempts(t *testing.T, n int, withPeer bool, body func(e *env) error) {
	t.Helper()
	for i := 1; ; i++ {
		e := newEnv(t, withPeer)
		err := body(e)
		if !errors.Is(err, errRetry) {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		e.s.Stop()
		if e.veth != nil {
			e.veth.Remove()
			e.peer.Remove()
		}
		e.ns.Remove()
		if i == n {
			t.Fatalf("attempt %d of %d: %v", i, n, err)
		}
		t.Logf("attempt %d of %d: %v; again in a new namespace", i, n, err)
	}
}
