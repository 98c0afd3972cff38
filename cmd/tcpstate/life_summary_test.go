package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// TestLifeReconcile: life believes only that the connections open at its
// start are alive until their close arrives. At the end, one the snapshot
// no longer has lost its close (its line), with or without a loss counted
// in the run; one still there is in step whatever its state, except
// where the kernel's own record says otherwise; one in a namespace the
// snapshot could not enter is not judged. Listeners (without
// --listeners), timewait sockets, sockets in CLOSE and those the filters
// leave out are not followed at all.
func TestLifeReconcile(t *testing.T) {
	m := statsLinux(t)
	lo := netip.MustParseAddr("127.0.0.1")
	const ns1, ns2 = 1, 2
	full := func(sk uint64, st model.State, sport uint16, netns uint32) model.SocketInfo {
		return model.SocketInfo{Skaddr: sk, Kind: model.KindFull, State: st, Family: model.AFInet, Saddr: lo, Sport: sport, Daddr: lo, Dport: 40000, Netns: netns}
	}
	tw := full(0xc0, model.TimeWait, 8080, ns1)
	tw.Kind = model.KindTimeWait
	start := &tracer.Snapshot{StartNs: 100, Sockets: []model.SocketInfo{
		full(0xa0, model.Established, 8080, ns1), // gone at the end, its close never came
		full(0xb0, model.Listen, 8080, ns1),      // a listener: not followed without --listeners
		tw,                                       // not a connection
		full(0xd0, model.Close, 8080, ns1),       // never connected
		full(0xe0, model.Established, 9999, ns1), // the filters leave it out
		full(0xf0, model.Established, 8080, ns1), // alive at the end, the kernel's record out of step
		full(0x10, model.CloseWait, 8080, ns1),   // alive at the end, in another state: in step
		full(0x20, model.Established, 8080, ns2), // its namespace not entered at the end
		full(0x30, model.Established, 8080, ns1), // its close arrives
	}}
	keep := func(so *model.SocketInfo) bool { return so.Sport == 8080 }
	open := openConnections(start, false, true, keep)
	var got []uint64
	for s := range open.Sockets() {
		got = append(got, s.Skaddr)
		if s.TsNs != 100 || !s.LossKnown || s.LossSeq != 0 {
			t.Errorf("%#x: %+v, want the start snapshot's time, loss sequence 0", s.Skaddr, s)
		}
	}
	if len(got) != 5 || len(openConnections(start, true, true, keep)) != 6 {
		t.Fatalf("followed %x (with --listeners %d), want a0 f0 10 20 30, and the listener with --listeners",
			got, len(openConnections(start, true, true, keep)))
	}

	h := &lifeHandler{tracker: model.NewTracker(m, 0), open: open, out: newAsyncOut(&bytes.Buffer{}, 1024, nil), giveUp: make(chan struct{})}
	h.tracker.SetSparse(true)
	close30 := model.Event{Skaddr: 0x30, Old: model.Established, New: model.Close, LastState: model.Established, LossKnown: true}
	if err := h.Event(&close30); err != nil {
		t.Fatal(err)
	}
	if _, ok := open.Lookup(0x30); ok {
		t.Errorf("0x30 still followed after its close")
	}

	fsock := full(0xf0, model.FinWait2, 8080, ns1)
	end := &tracer.Snapshot{
		StartNs:    500,
		Sockets:    []model.SocketInfo{fsock, full(0x10, model.LastAck, 8080, ns1), full(0xe0, model.Established, 9999, ns1)},
		Namespaces: []tracer.NetnsScan{{Netns: tracer.Netns{Inode: ns1}}, {Netns: tracer.Netns{Inode: ns2}, Err: "permission denied"}},
		OutOfStep:  []tracer.OutOfStep{{Socket: fsock, Tracked: model.FinWait1, Actual: model.FinWait2}},
	}
	type row struct {
		skaddr, believed, actual string
		missing                  uint64
		counted, socket          bool
	}
	for _, c := range []struct {
		lossSeq uint64
		want    []row
	}{
		{0, []row{{"0xa0", "ESTABLISHED", "CLOSE", 1, false, false}, {"0xf0", "FIN_WAIT1", "FIN_WAIT2", 1, false, true}}},
		// A loss counted in the run may have been any of them.
		{3, []row{{"0xa0", "ESTABLISHED", "CLOSE", 1, true, false}, {"0xf0", "FIN_WAIT1", "FIN_WAIT2", 1, true, true}}},
	} {
		d := reconcile(reconcileInput{snap: end, model: m, tracker: open, trackerSide: true, aliveOnly: true, keep: keep, lossSeq: c.lossSeq, lost: c.lossSeq})
		var rows []row
		for _, o := range d.OutOfStep {
			rows = append(rows, row{o.Skaddr, o.Believed, o.Actual, o.Missing, o.LossCounted, o.Socket != nil})
		}
		if !reflect.DeepEqual(rows, c.want) || !d.TrackerSide || d.Sockets != 2 {
			t.Errorf("loss sequence %d: out of step\n  %+v\nwant\n  %+v", c.lossSeq, rows, c.want)
		}
	}
}

// TestLifeHandler: every close is taken (checked, struck off the open
// connections) but only connections are printed, listeners without
// --listeners left out and counted; --count stops the run, and what the
// final drain brings past it is taken, not printed.
func TestLifeHandler(t *testing.T) {
	var out bytes.Buffer
	giveUp := make(chan struct{})
	h := &lifeHandler{
		out: newAsyncOut(&out, 1024, nil), buf: outBuf{b: make([]byte, 0, 1024)}, giveUp: giveUp, mode: outJSON,
		tracker: model.NewTracker(statsLinux(t), 0), open: openConns{0xa: {Skaddr: 0xa, State: model.Established}}, limit: 2,
	}
	h.tracker.SetSparse(true)
	lo := netip.MustParseAddr("127.0.0.1")
	ev := func(sk uint64, old model.State) *model.Event {
		return &model.Event{Skaddr: sk, Old: old, New: model.Close, LastState: old, Family: model.AFInet, Saddr: lo, Daddr: lo,
			Time: time.Unix(1e9, 0).UTC(), Flags: model.FlagCounts, LossKnown: true}
	}
	steps := []struct {
		e    *model.Event
		stop bool
	}{
		{ev(0xb, model.Listen), false},
		{ev(0xa, model.Established), false},
		// A gap: the kernel last saw it in SYN_SENT.
		{func() *model.Event { e := ev(0xc, model.FinWait2); e.LastState = model.SynSent; return e }(), true},
	}
	for i, s := range steps {
		err := h.Event(s.e)
		if (err == tracer.ErrStop) != s.stop || err != nil && err != tracer.ErrStop {
			t.Fatalf("event %d: %v, want stop %v", i, err, s.stop)
		}
	}
	h.draining = true
	if err := h.Event(ev(0xd, model.Established)); err != nil {
		t.Fatalf("draining past --count: %v", err)
	}
	h.out.finish(&h.buf, giveUp)
	if len(h.open) != 0 {
		t.Errorf("open connections left: %v", h.open)
	}
	if h.events != 4 || h.leftOut != 1 || h.printed != 2 || h.out.Written() != 2 || strings.Count(out.String(), "\n") != 2 {
		t.Errorf("events %d, left out %d, printed %d, written %d, want 4, 1, 2, 2:\n%s", h.events, h.leftOut, h.printed, h.out.Written(), out.String())
	}
	if st := h.tracker.Stats(); st.Events != 4 || st.Gap != 1 || st.Missing == 0 {
		t.Errorf("checks %+v: want the 4 closes checked, 1 gap", st)
	}
}

// TestLifeJSONCgroup: life's JSON names a connection's cgroup with the
// record's keys, written as the record writes them (omitted when not
// known), and -o wide shows the namespace and the container.
func TestLifeJSONCgroup(t *testing.T) {
	id := strings.Repeat("ab12", 16)
	e := model.Event{Old: model.Established, New: model.Close, Family: model.AFInet, Saddr: netip.MustParseAddr("10.0.0.1"),
		Daddr: netip.MustParseAddr("10.0.0.2"), Sport: 8080, Dport: 40000, Netns: 4026532001, Time: time.Unix(1e9, 0).UTC(),
		CgroupID: 5309, Cgroup: model.NewCgroupInfo("/machine.slice/libpod-" + id + ".scope")}
	line := appendLifeJSON(nil, &e)
	var v map[string]any
	if err := json.Unmarshal(line, &v); err != nil {
		t.Fatalf("%v\n%s", err, line)
	}
	if v["cgroup_id"] != 5309.0 || v["cgroup"] != "/machine.slice/libpod-"+id+".scope" || v["container"] != id ||
		v["container_runtime"] != "podman" || v["netns"] != 4026532001.0 {
		t.Errorf("life's JSON does not name the cgroup:\n%s", line)
	}
	rec := string(model.AppendJSON(nil, &e, nil))
	keys := `"cgroup_id":5309,"cgroup":"/machine.slice/libpod-` + id + `.scope","container":"` + id + `","container_runtime":"podman"`
	if !strings.Contains(string(line), keys) || !strings.Contains(rec, keys) {
		t.Errorf("cgroup keys differ from the record's:\n life:   %s record: %s", line, rec)
	}
	e.CgroupID, e.Cgroup = 0, nil
	if line := string(appendLifeJSON(nil, &e)); strings.Contains(line, "cgroup") || strings.Contains(line, "container") {
		t.Errorf("no cgroup known, yet: %s", line)
	}

	e.CgroupID, e.Cgroup = 5309, model.NewCgroupInfo("/machine.slice/libpod-"+id+".scope")
	head := string(appendLifeHeader(nil, true))
	wide := string(appendLifeLine(nil, &e, true))
	if !strings.Contains(wide, " 4026532001 podman:"+id[:12]+" ") {
		t.Errorf("-o wide without the namespace and the container:\n%s", wide)
	}
	for _, col := range []string{"NETNS", "CGROUP", "CAUSE"} {
		hi, li := strings.Index(head, col), 0
		switch col {
		case "NETNS":
			li = strings.Index(wide, "4026532001")
		case "CGROUP":
			li = strings.Index(wide, "podman:")
		case "CAUSE":
			li = strings.Index(wide, e.CloseFacts.Cause().String())
		}
		if hi != li {
			t.Errorf("%s at column %d of the header, its cell at %d:\n%s%s", col, hi, li, head, wide)
		}
	}
	if plain := string(appendLifeHeader(nil, false)); strings.Contains(plain, "NETNS") || strings.Contains(string(appendLifeLine(nil, &e, false)), "podman") {
		t.Errorf("the plain table has -o wide's columns:\n%s", plain)
	}
}

// TestLifeSummary: the summary says delivered, lost by cause (the
// recursion misses apart, host-wide) and missing, never a bare "lost 0";
// it says what life cannot know; and without the start's connections
// (--state, --pid) it says they were not looked for.
func TestLifeSummary(t *testing.T) {
	s := lifeSummary{Events: 9, ListenersLeftOut: 1, PastCount: 2, Printed: 5, NotWritten: 1, Output: outputClosed,
		Kernel: tracer.Counters{RingbufFull: 3, RecursionMisses: 4}, MissingGaps: 2, Missing: 3, OpenAtStart: 6,
		ClosesMissing: 2, ClosesMissingUncounted: 1, Model: "linux",
		Reconciliation: reconcileDoc{Done: true, TrackerSide: true, Sockets: 2, Missing: 2, MissingUncounted: 1, OutOfStep: []outOfStepDoc{}}}
	var b strings.Builder
	s.write(&b)
	out := b.String()
	for _, w := range []string{
		"\ntcpstate life summary\n",
		"  delivered:       9 closes (5 printed; 1 line not written: standard output was closed by its reader; 1 listener's, not printed without --listeners; 2 past --count)\n",
		"  lost, counted:   3 of the events that passed the filters (ring buffer full 3,",
		"recursion misses 4 host-wide, filters or not: the kernel does not say whose",
		"  missing:         3 transitions without any kernel count (2 in gaps",
		"  closes missing:  2 of the 6 connections open at the start are gone without their close delivered (their lines are missing; 1 of them with no loss counted in the run)",
		"whose close the kernel skipped leaves nothing to find: not known",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("summary lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "lost 0") || strings.Contains(out, "lost 7") {
		t.Errorf("a bare lost figure:\n%s", out)
	}
	s.reconcileNote = lifeReconcileNote(false, true, true)
	b.Reset()
	s.write(&b)
	if !strings.Contains(b.String(), "closes missing:  not looked for (--pid: the kernel selects by the owner it knows at the close") {
		t.Errorf("with --pid:\n%s", b.String())
	}
}

// TestLifeAllocatesNothing: a close, checked, struck off the open
// connections, formatted with its cgroup and handed to the writer,
// allocates nothing, in every output mode.
func TestLifeAllocatesNothing(t *testing.T) {
	for _, mode := range []string{outTable, outWide, outJSON} {
		giveUp := make(chan struct{})
		h := &lifeHandler{
			out: newAsyncOut(io.Discard, 64<<10, nil), buf: outBuf{b: make([]byte, 0, 64<<10)}, giveUp: giveUp, mode: mode,
			tracker: model.NewTracker(statsLinux(t), 0), open: openConns{1: {Skaddr: 1}},
		}
		h.tracker.SetSparse(true)
		e := model.Event{Skaddr: 2, Old: model.Established, New: model.Close, LastState: model.Established, Family: model.AFInet,
			Saddr: netip.MustParseAddr("10.0.0.1"), Daddr: netip.MustParseAddr("10.0.0.2"), Time: time.Unix(1e9, 0).UTC(),
			Flags: model.FlagCounts | model.FlagOwnerKnown, Comm: model.CommFrom("curl"), Netns: 4026531840,
			CgroupID: 5309, Cgroup: model.NewCgroupInfo("/system.slice/docker-" + strings.Repeat("ab", 32) + ".scope")}
		if n := testing.AllocsPerRun(2000, func() {
			if err := h.Event(&e); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("-o %s: %v allocations per close", mode, n)
		}
		h.out.finish(&h.buf, giveUp)
	}
}
