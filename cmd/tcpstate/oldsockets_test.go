package main

// Sockets older than the tracer, as production has them: made before any
// tcpstate runs, in two namespaces the test creates, then traced by the
// built binary. The tracer must know each of them from its first event.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
)

// lifeWant is what one socket's records in a trace must be.
type lifeWant struct {
	name  string
	netns uint32
	// lport, rport identify the socket: the ports of its last record.
	lport, rport uint16
	edges        []string
	// owner is the pid on every record, but the first inherited ones,
	// which name inheritedOwner marked inherited (a child before accept).
	owner          uint32
	inherited      int
	inheritedOwner uint32
	// old: born before the tracer. Its first record continues from the
	// state the start snapshot seeded (last_state == old state), has no
	// duration, and its ->CLOSE age is a lower bound.
	old bool
}

// findLife returns the one life of netns whose last record has the ports.
func findLife(t *testing.T, ls []*tracetest.Life, w lifeWant) *tracetest.Life {
	t.Helper()
	var found *tracetest.Life
	for _, l := range ls {
		last := l.Evs[len(l.Evs)-1]
		if last.Netns != w.netns || last.Sport != w.lport || last.Dport != w.rport {
			continue
		}
		if found != nil {
			t.Errorf("%s: two sockets with ports %d -> %d:\n%s", w.name, w.lport, w.rport, tracetest.Dump([]*tracetest.Life{found, l}))
			return nil
		}
		found = l
	}
	if found == nil {
		t.Errorf("%s: no socket with ports %d -> %d in netns %d", w.name, w.lport, w.rport, w.netns)
		return nil
	}
	found.Name = w.name
	return found
}

// checkLife asserts a socket's exact records: transitions, owners, the
// inherited marks, and the continuity the kernel reports (last_state).
func checkLife(t *testing.T, l *tracetest.Life, w lifeWant) {
	t.Helper()
	if l == nil {
		return
	}
	if got := l.Edges(); !slices.Equal(got, w.edges) {
		t.Errorf("%s: transitions %v, want %v\n%s", w.name, got, w.edges, tracetest.Dump([]*tracetest.Life{l}))
		return
	}
	for i := range l.Evs {
		e := &l.Evs[i]
		var bad []string
		owner, inh := w.owner, i < w.inherited
		if inh && w.inheritedOwner != 0 {
			owner = w.inheritedOwner
		}
		if !e.OwnerKnown() || e.Pid != owner || e.Comm.String() == "" {
			bad = append(bad, fmt.Sprintf("owner %d %q (known %v), want %d", e.Pid, e.Comm, e.OwnerKnown(), owner))
		}
		if got := e.Flags&model.FlagOwnerInherited != 0; got != inh {
			bad = append(bad, fmt.Sprintf("owner inherited %v, want %v", got, inh))
		}
		switch {
		case i > 0:
			if e.LastState != l.Evs[i-1].New {
				bad = append(bad, fmt.Sprintf("last_state %v, want %v", e.LastState, l.Evs[i-1].New))
			}
		case w.old:
			// Seeded: the kernel knew its state from the snapshot.
			if e.LastState != e.Old {
				bad = append(bad, fmt.Sprintf("last_state %v: the snapshot did not seed its state %v", e.LastState, e.Old))
			}
			if e.DurationKnown() {
				bad = append(bad, "a duration for a state entered before tracing")
			}
		}
		if w.old && e.New == model.Close && e.Flags&model.FlagAgeAtLeast == 0 {
			bad = append(bad, "->CLOSE of a socket older than the tracer without age_at_least")
		}
		if len(bad) > 0 {
			t.Errorf("%s: record %d %s: %s", w.name, i, tracetest.FmtEvent(e), strings.Join(bad, "; "))
		}
	}
}

// traceSummaryFile is the part of --summary-json these tests read.
type traceSummaryFile struct {
	Events uint64 `json:"events"`
	Lost   uint64 `json:"lost"`
	Kernel struct {
		RingbufFull     uint64 `json:"ringbuf_full"`
		RecursionMisses uint64 `json:"recursion_misses"`
		HeldOverflow    uint64 `json:"held_overflow"`
		HeldNoSpace     uint64 `json:"held_no_space"`
		UndecidedClosed uint64 `json:"undecided_closed"`
	} `json:"kernel"`
	Check struct {
		OK, Unknown, Illegal, Gap uint64
	} `json:"check"`
	Stuck []struct { // the socket form of every document
		State          string  `json:"state"`
		InStateS       float64 `json:"in_state_s"`
		InStateAtLeast bool    `json:"in_state_at_least"`
		Pid            uint32  `json:"pid"`
		OwnerKnown     bool    `json:"owner_known"`
		Sport          uint16  `json:"sport"`
		Dport          uint16  `json:"dport"`
	} `json:"stuck"`
}

func readTraceSummary(t *testing.T, path string) traceSummaryFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("--summary-json: %v", err)
	}
	var s traceSummaryFile
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("--summary-json: %v\n%s", err, b)
	}
	return s
}

// checkSummaryLoss: the summary's loss is the kernel's counted loss, on
// stderr and in --summary-json alike.
func checkSummaryLoss(t testing.TB, s traceSummaryFile, stderr string) {
	t.Helper()
	k := s.Kernel
	if sum := k.RingbufFull + k.RecursionMisses + k.HeldOverflow + k.HeldNoSpace + k.UndecidedClosed; s.Lost != sum {
		t.Errorf("--summary-json: lost %d, but the kernel's counters add up to %d: %+v", s.Lost, sum, k)
	}
	filtered := k.RingbufFull + k.HeldOverflow + k.HeldNoSpace + k.UndecidedClosed
	for _, want := range []string{
		fmt.Sprintf("  lost, counted:   %d of the events that passed the filters", filtered),
		fmt.Sprintf("recursion misses %d host-wide", k.RecursionMisses),
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr summary lacks %q:\n%s", want, stderr)
		}
	}
}

// TestTraceOldSockets: every kind of socket a server has when tcpstate
// starts, made before the tracer in two namespaces: a listener held by two
// processes (a server and a worker that accept from it), an established
// pair, two sockets in CLOSE_WAIT, one in TIME_WAIT, a connection waiting
// in the listener's accept queue, and a listener and an IPv6 pair in a
// second namespace. Then the built binary traces them:
//
//   - trace: the first record of each old socket is "ok" (the start
//     snapshot seeded its state), and its softirq transitions name its
//     owner (the snapshot seeded it from the processes that hold it);
//     connections accepted from the old listener carry its owner, marked
//     inherited, on their handshake records and the acceptor's after
//     accept(), also when the other process holding the listener accepts;
//     every record matches the kernel's own (tracefs), and the tracker
//     counts no unknown.
//   - trace --pid <old server>: the server's connections whole, its pid on
//     every record, and nothing else.
//   - stats --stuck and trace --stuck list the old CLOSE_WAIT socket, its
//     time in state marked as a lower bound.
func TestTraceOldSockets(t *testing.T) {
	testnet.RequireRoot(t)
	t.Parallel()
	bin := buildBinary(t, t.TempDir())
	ns1, ns2 := testnet.New(t), testnet.New(t)
	v4, v6 := netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()
	p1, p2 := ns1.Port(0), ns2.Port(0)
	ap1, ap2 := netip.AddrPortFrom(v4, p1), netip.AddrPortFrom(v6, p2)
	must := func(fd int, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	ok := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	port := func(s testnet.Sockets, fd int) uint16 {
		t.Helper()
		ap, err := s.LocalAddr(fd)
		ok(err)
		return ap.Port()
	}

	// --- Before any tracer. ns1: the test makes the listener and hands
	// it to two helper processes, srv and wrk, then lets go of it.
	lfd := must(ns1.Listen(ap1))
	lf, err := ns1.SocketFile(lfd)
	ok(err)
	srv, wrk := ns1.StartProc(t, lf), ns1.StartProc(t, lf)
	lf.Close()
	ok(ns1.Close(lfd))
	if srv.Pid() > wrk.Pid() { // the snapshot names the first holder in pid order
		srv, wrk = wrk, srv
	}
	const l = testnet.FirstExtraFD // the listener in both helpers
	me, server, worker := uint32(os.Getpid()), uint32(srv.Pid()), uint32(wrk.Pid())

	// An established pair: the test's client c1, accepted by srv (a1).
	c1 := must(ns1.Connect(ap1))
	a1 := must(srv.Accept(l))
	c1port := port(ns1, c1)
	// Two in CLOSE_WAIT: the clients closed (c2, c3: timewait sockets in
	// FIN_WAIT2 now), srv did not. a2 stays so (stuck); a3 is closed
	// while traced.
	c2 := must(ns1.Connect(ap1))
	a2 := must(srv.Accept(l))
	c3 := must(ns1.Connect(ap1))
	a3 := must(srv.Accept(l))
	c2port, c3port := port(ns1, c2), port(ns1, c3)
	ok(ns1.Close(c2))
	ok(ns1.Close(c3))
	// TIME_WAIT: c4 closed first, then srv's a4.
	c4 := must(ns1.Connect(ap1))
	a4 := must(srv.Accept(l))
	c4port := port(ns1, c4)
	ok(ns1.Close(c4))
	ok(srv.ReadEOF(a4))
	ok(srv.Close(a4))
	// A connection in the accept queue: established, accepted by no one yet.
	c5 := must(ns1.Connect(ap1))
	c5port := port(ns1, c5)
	// ns2: a listener in a helper, and an IPv6 pair (the test's c6, s2's a6).
	s2 := ns2.StartProc(t)
	l2 := must(s2.Listen(ap2))
	c6 := must(ns2.Connect(ap2))
	a6 := must(s2.Accept(l2))
	time.Sleep(50 * time.Millisecond) // the FINs and ACKs settle
	c6port := port(ns2, c6)
	old := ssList(t, ns1.Path())
	for _, k := range []string{
		fmt.Sprintf("LISTEN %v 0.0.0.0:0", ap1),
		fmt.Sprintf("ESTABLISHED %v 127.0.0.1:%d", ap1, c1port),
		fmt.Sprintf("CLOSE_WAIT %v 127.0.0.1:%d", ap1, c2port),
		fmt.Sprintf("CLOSE_WAIT %v 127.0.0.1:%d", ap1, c3port),
		fmt.Sprintf("TIME_WAIT 127.0.0.1:%d %v", c4port, ap1),
		fmt.Sprintf("ESTABLISHED %v 127.0.0.1:%d", ap1, c5port),
	} {
		if _, ok := old[k]; !ok {
			t.Fatalf("setup: ss -tanp lacks %s:\n%v", k, old)
		}
	}

	// --- The tracers: trace of both namespaces' ports, trace --pid srv,
	// and a short stats run; then the kernel's own record.
	dir := t.TempDir()
	sum1, sum2 := filepath.Join(dir, "trace.json"), filepath.Join(dir, "pid.json")
	tr := startTrace(t, bin, "-o", "json", "--port", strconv.Itoa(int(p1)), "--port", strconv.Itoa(int(p2)),
		"--stuck", "CLOSE_WAIT=300ms", "--summary-json", sum1)
	trPid := startTrace(t, bin, "-o", "json", "--pid", strconv.Itoa(int(server)), "--summary-json", sum2)
	stats := startTcpstate(t, statsAttachedLine, nil, bin,
		"stats", "-o", "json", "--port", strconv.Itoa(int(p1)), "--interval", "0", "--duration", "1s", "--stuck", "CLOSE_WAIT=200ms")
	o1, o2 := ns1.Oracle(t), ns2.Oracle(t)

	// --- While traced. The old pair: the client closes first; a1's
	// ESTABLISHED->CLOSE_WAIT fires in softirq, on the client's CPU.
	ok(ns1.Close(c1))
	ok(srv.ReadEOF(a1))
	ok(srv.Close(a1))
	// The old CLOSE_WAIT a3: srv closes it.
	ok(srv.Close(a3))
	// The queued connection: wrk accepts it now, the client closes first.
	a5 := must(wrk.Accept(l))
	ok(ns1.Close(c5))
	ok(wrk.ReadEOF(a5))
	ok(wrk.Close(a5))
	// New connections to the old listener: n1 accepted by srv (which
	// closes first), n2 by wrk (its client closes first).
	n1 := must(ns1.Connect(ap1))
	n1a := must(srv.Accept(l))
	n2 := must(ns1.Connect(ap1))
	n2a := must(wrk.Accept(l))
	n1port, n2port := port(ns1, n1), port(ns1, n2)
	ok(srv.Close(n1a))
	ok(ns1.ReadEOF(n1))
	ok(ns1.Close(n1))
	ok(ns1.Close(n2))
	ok(wrk.ReadEOF(n2a))
	ok(wrk.Close(n2a))
	// ns2: the server closes first; c6's ESTABLISHED->CLOSE_WAIT fires in
	// softirq, on the server's CPU.
	ok(s2.Close(a6))
	ok(ns2.ReadEOF(c6))
	ok(ns2.Close(c6))
	ok(s2.Close(l2))
	// The old listener: wrk lets go first, srv's close ends it.
	ok(wrk.Close(l))
	ok(srv.Close(l))

	// c1, a1, a3, c5, a5, n1 and n2 with their children, the listener;
	// c6, a6 and the listener of ns2.
	const closes = 13
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(tr.stdout.String(), `"new":"CLOSE"`) < closes && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if stats.wait(10*time.Second) != 0 {
		t.Fatalf("stats: %s", stats.stderr)
	}
	for _, p := range []*traceProc{tr, trPid} {
		ok(p.cmd.Process.Signal(os.Interrupt))
	}
	for _, p := range []*traceProc{tr, trPid} {
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("trace: exit status %d\n%s", code, p.stderr)
		}
	}

	// --- trace: every socket exactly, with its owners.
	evs := tr.records() // every record's verdict must be ok
	ls := tracetest.LivesIn(evs, ns1.Inode(), ns2.Inode())
	n1Inode, n2Inode := ns1.Inode(), ns2.Inode()
	activeClose, passiveClose := tracetest.ActiveClose, tracetest.PassiveClose
	wants := []lifeWant{
		{name: "old client c1", netns: n1Inode, lport: c1port, rport: p1, edges: activeClose, owner: me, old: true},
		{name: "old accepted a1 (softirq CLOSE_WAIT)", netns: n1Inode, lport: p1, rport: c1port, edges: passiveClose[0:], owner: server, old: true},
		{name: "old CLOSE_WAIT a3", netns: n1Inode, lport: p1, rport: c3port, edges: passiveClose[1:], owner: server, old: true},
		{name: "old client c5 (queued)", netns: n1Inode, lport: c5port, rport: p1, edges: activeClose, owner: me, old: true},
		{name: "old queued child a5, accepted by wrk", netns: n1Inode, lport: p1, rport: c5port, edges: passiveClose, owner: worker, old: true},
		{name: "new client n1", netns: n1Inode, lport: n1port, rport: p1, edges: slices.Concat(tracetest.ActiveOpen, passiveClose), owner: me},
		{name: "n1 accepted by srv", netns: n1Inode, lport: p1, rport: n1port, edges: slices.Concat(tracetest.PassiveOpen, activeClose),
			owner: server, inherited: 2},
		{name: "new client n2", netns: n1Inode, lport: n2port, rport: p1, edges: slices.Concat(tracetest.ActiveOpen, activeClose), owner: me},
		{name: "n2 accepted by wrk", netns: n1Inode, lport: p1, rport: n2port, edges: slices.Concat(tracetest.PassiveOpen, passiveClose),
			owner: worker, inherited: 2, inheritedOwner: server},
		{name: "old listener, held by srv and wrk", netns: n1Inode, lport: p1, rport: 0, edges: []string{"LISTEN>CLOSE"}, owner: server, old: true},
		{name: "ns2 old accepted a6", netns: n2Inode, lport: p2, rport: c6port, edges: activeClose, owner: uint32(s2.Pid()), old: true},
		{name: "ns2 old client c6 (softirq CLOSE_WAIT)", netns: n2Inode, lport: c6port, rport: p2, edges: passiveClose, owner: me, old: true},
		{name: "ns2 old listener", netns: n2Inode, lport: p2, rport: 0, edges: []string{"LISTEN>CLOSE"}, owner: uint32(s2.Pid()), old: true},
	}
	for _, w := range wants {
		checkLife(t, findLife(t, ls, w), w)
	}
	for _, l := range ls {
		if l.Name == "" {
			t.Errorf("a socket the test did not make:\n%s", tracetest.Dump([]*tracetest.Life{l}))
		}
	}
	tracetest.CompareOracle(t, o1, tracetest.Lives(evs, n1Inode), nil)
	tracetest.CompareOracle(t, o2, tracetest.Lives(evs, n2Inode), nil)
	s := readTraceSummary(t, sum1)
	checkSummaryLoss(t, s, tr.stderr.String())
	if s.Check.Unknown != 0 || s.Check.Gap != 0 || s.Check.Illegal != 0 {
		t.Errorf("tracker: %+v, want no unknown, gap or illegal verdict", s.Check)
	}

	// --- trace --pid srv: srv's connections whole, its pid on every record.
	pevs := trPid.records()
	var pls []*tracetest.Life
	for _, l := range tracetest.ForeignLives(pevs, 0) {
		for i := range l.Evs {
			if e := &l.Evs[i]; !e.OwnerKnown() || e.Pid != server {
				t.Errorf("trace --pid %d: a record of another owner: %s", server, tracetest.FmtEvent(e))
			}
		}
		if l.Evs[0].Netns == n1Inode {
			pls = append(pls, l)
		}
	}
	for _, w := range wants {
		if w.owner != server {
			continue
		}
		full, got := findLife(t, ls, w), findLife(t, pls, w)
		if full == nil || got == nil {
			t.Errorf("trace --pid %d lacks %s", server, w.name)
			continue
		}
		if !slices.Equal(full.Edges(), got.Edges()) {
			t.Errorf("trace --pid %d: %s: %v, want it whole: %v", server, w.name, got.Edges(), full.Edges())
		}
	}
	if len(pls) != 4 {
		t.Errorf("trace --pid %d: %d sockets of the namespace, want srv's 4 (a1, a3, n1's child, the listener):\n%s", server, len(pls), tracetest.Dump(pls))
	}

	// --- The stuck CLOSE_WAIT a2: in trace's summary and in stats.
	a2want := fmt.Sprintf("127.0.0.1:%d", c2port)
	var listed bool
	for _, so := range s.Stuck {
		if so.State == "CLOSE_WAIT" && so.Sport == p1 && so.Dport == c2port {
			listed = true
			if !so.OwnerKnown || so.Pid != server || !so.InStateAtLeast || so.InStateS < 0.3 {
				t.Errorf("trace --stuck: a2 %+v: want owner %d, in CLOSE_WAIT at least 300ms (a lower bound)", so, server)
			}
		}
	}
	if !listed {
		t.Errorf("trace --summary-json: the old CLOSE_WAIT socket ->%s is not stuck: %+v", a2want, s.Stuck)
	}
	row := ""
	for _, line := range strings.Split(tr.stderr.String(), "\n") {
		if strings.Contains(line, "CLOSE_WAIT") && strings.Contains(line, a2want) {
			row = line
		}
	}
	if !strings.Contains(row, ">=") || !strings.Contains(row, strconv.Itoa(int(server))) {
		t.Errorf("trace's stuck list: a2's row %q: want its owner and its time in CLOSE_WAIT marked >= (a lower bound):\n%s", row, tr.stderr)
	}
	var doc struct {
		Stuck []struct {
			State        string  `json:"state"`
			InStateS     float64 `json:"in_state_s"`
			InStateAtLst bool    `json:"in_state_at_least"`
			Pid          uint32  `json:"pid"`
			Sport        uint16  `json:"sport"`
			Dport        uint16  `json:"dport"`
		} `json:"stuck"`
	}
	if err := json.Unmarshal([]byte(stats.stdout.String()), &doc); err != nil {
		t.Fatalf("stats -o json: %v\n%s", err, stats.stdout)
	}
	listed = false
	for _, so := range doc.Stuck {
		if so.State == "CLOSE_WAIT" && so.Sport == p1 && so.Dport == c2port {
			listed = true
			if so.Pid != server || !so.InStateAtLst || so.InStateS < 0.2 {
				t.Errorf("stats --stuck: a2 %+v: want owner %d, in CLOSE_WAIT at least 0.2 s (a lower bound)", so, server)
			}
		}
	}
	if !listed {
		t.Errorf("stats --stuck: the old CLOSE_WAIT socket ->%s is not listed:\n%s", a2want, stats.stdout)
	}
	_ = a2
}
