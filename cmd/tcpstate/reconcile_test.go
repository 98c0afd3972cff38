package main

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// TestReconcile: the end-of-run comparison of one snapshot with what the
// run believes. The tracker follows A (ESTABLISHED, gone now, a loss
// counted since its last event), B (CLOSE_WAIT, now LAST_ACK, no loss
// counted since), C (seen after the snapshot began: not judged), D (in a
// namespace the snapshot could not enter: not judged) and E (in step); the
// kernel's own record has F out of step, a socket the tracker never saw.
func TestReconcile(t *testing.T) {
	m := statsLinux(t)
	lo := netip.MustParseAddr("127.0.0.1")
	ev := func(sk uint64, old, nw model.State, ts, seq uint64, netns uint32) model.Event {
		return model.Event{Skaddr: sk, Old: old, New: nw, TsNs: ts, LossSeq: seq, LossKnown: true, Netns: netns,
			Family: model.AFInet, Saddr: lo, Daddr: lo}
	}
	const (
		a, b, c, d, e, f = 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0
		ns1, ns2         = 1, 2
	)
	tr := model.NewTracker(m, 0)
	for _, x := range []model.Event{
		ev(a, model.Close, model.SynSent, 10, 5, ns1), ev(a, model.SynSent, model.Established, 20, 5, ns1),
		ev(b, model.Listen, model.SynRecv, 30, 7, ns1), ev(b, model.SynRecv, model.Established, 40, 7, ns1),
		ev(b, model.Established, model.CloseWait, 50, 7, ns1),
		ev(c, model.Close, model.SynSent, 300, 7, ns1),
		ev(d, model.Close, model.SynSent, 60, 7, ns2),
		ev(e, model.Close, model.Listen, 70, 7, ns1),
	} {
		tr.Check(&x)
	}
	full := func(sk uint64, st model.State) model.SocketInfo {
		return model.SocketInfo{Skaddr: sk, Kind: model.KindFull, State: st, Family: model.AFInet, Saddr: lo, Sport: 8080, Daddr: lo, Dport: 40000, Netns: ns1}
	}
	fsock := full(f, model.FinWait2)
	// A's address now holds another namespace's socket: A is gone.
	reused := full(a, model.Listen)
	reused.Netns = ns2
	snap := &tracer.Snapshot{
		StartNs:    200,
		Sockets:    []model.SocketInfo{full(b, model.LastAck), full(e, model.Listen), fsock, reused},
		Namespaces: []tracer.NetnsScan{{Netns: tracer.Netns{Inode: ns1}}, {Netns: tracer.Netns{Inode: ns2}, Err: "permission denied"}},
		OutOfStep:  []tracer.OutOfStep{{Socket: fsock, Tracked: model.FinWait1, Actual: model.FinWait2}},
	}
	in := reconcileInput{snap: snap, model: m, tracker: tr, trackerSide: true, lossSeq: 7, lost: 7}
	got := reconcile(in)
	type row struct {
		skaddr, believed, actual, kernelSaw string
		missing                             uint64
		counted, socket                     bool
	}
	var rows []row
	for _, o := range got.OutOfStep {
		rows = append(rows, row{o.Skaddr, o.Believed, o.Actual, o.KernelSaw, o.Missing, o.LossCounted, o.Socket != nil})
	}
	want := []row{
		{"0xa0", "ESTABLISHED", "CLOSE", "", 1, true, false},
		{"0xb0", "CLOSE_WAIT", "LAST_ACK", "LAST_ACK", 1, false, true},
		{"0xf0", "FIN_WAIT1", "FIN_WAIT2", "FIN_WAIT1", 1, true, true},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("out of step:\n  %+v\nwant\n  %+v", rows, want)
	}
	if !got.Done || !got.TrackerSide || got.Sockets != 3 || got.Missing != 3 || got.MissingUncounted != 1 {
		t.Errorf("reconciliation %+v: want 3 sockets, 3 transitions missing, 1 of them without a count", got)
	}

	// trace --anomalies (no tracker side): only the kernel's record; and
	// the run's filters choose the sockets.
	in.trackerSide = false
	if got := reconcile(in); got.TrackerSide || got.Sockets != 1 || got.OutOfStep[0].Skaddr != "0xf0" {
		t.Errorf("kernel side only: %+v, want F alone", got)
	}
	in.keep = func(s *model.SocketInfo) bool { return s.Sport == 443 }
	if got := reconcile(in); got.Sockets != 0 || got.OutOfStep == nil {
		t.Errorf("filtered out: %+v, want no socket and an empty list", got)
	}
}

// TestSummaryHeadline: trace's summary separates what was delivered, what
// the kernel counted lost (the filtered run's own apart from the host's
// recursion misses) and what is missing without any count, next to the
// reconciliation; never "0 lost" alone while transitions are missing.
func TestSummaryHeadline(t *testing.T) {
	s := traceSummary{
		Events: 120, Printed: 120, Kernel: tracer.Counters{RecursionMisses: 48, RingbufFull: 3},
		MissingGaps: 2, Model: "linux",
		Reconciliation: reconcileDoc{Done: true, Sockets: 1, Missing: 1, MissingUncounted: 1, OutOfStep: []outOfStepDoc{{
			Skaddr: "0xffff8881", Believed: "ESTABLISHED", Actual: "CLOSE", Missing: 1,
		}}},
		snapshotSockets: 17,
	}
	s.Missing = s.MissingGaps + s.Reconciliation.MissingUncounted
	var b strings.Builder
	s.write(&b)
	out := b.String()
	for _, want := range []string{
		"  delivered:       120 events (120 printed)\n",
		"  lost, counted:   3 of the events that passed the filters (ring buffer full 3, held-back queue full 0, no held-back queue 0, owner never learnt 0)\n" +
			"                   recursion misses 48 host-wide, filters or not: the kernel does not say whose (no rescue program: --rescue-nested)\n",
		"  missing:         3 transitions without any kernel count (2 in gaps between a socket's events, beyond the counted loss; 1 found by the reconciliation)\n",
		"  reconciliation:  1 socket out of step at the end, in a snapshot of 17 sockets (1 transition never delivered, 1 of them with no loss counted since the socket's last event)\n",
		"                   0xffff8881: believed ESTABLISHED, is gone: 1 transition missing; no loss counted since its last event\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// trace --anomalies: the reconciliation says only the kernel's side
	// was compared.
	s.reconcileNote = reconcileNote(true, false)
	b.Reset()
	s.write(&b)
	if !strings.Contains(b.String(), "no loss counted since the socket's last event); trace --anomalies: the tracker follows no socket, so only the kernel's own record is compared\n") {
		t.Errorf("--anomalies summary does not say only the kernel side applies:\n%s", b.String())
	}
	// Without exact loss attribution the gaps' figure is an estimate.
	s.MissingEstimate = true
	b.Reset()
	s.write(&b)
	if !strings.Contains(b.String(), "(an estimate: ") {
		t.Errorf("fallback summary does not say the missing figure is an estimate:\n%s", b.String())
	}
}
