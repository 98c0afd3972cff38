package tracer_test

// Privileged tests of what serve reads (tracer.Options.Totals): the
// per-port matrices of labelled ports, the kernel's gap counts, the
// histogram sums, and the snapshot's reconciliation of sockets out of step.

import (
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

func TestTotalsLabelledPortsGapsAndReconcile(t *testing.T) {
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		must := aggFD{t}
		labelled, other := ns.Port(0), ns.Port(1)
		tr := aggOpen(t, tracer.Options{Mode: tracer.ModeAggregate, Totals: true, Replay: true,
			LabelPorts: []uint16{9, labelled}, Accept: tracer.AcceptOff})
		defer tr.Close()
		var before, after tracer.Totals
		aggMust(t, tr.ReadTotals(&before))
		c0, err := tr.Counters()
		aggMust(t, err)

		const n = 5
		l1 := must.fd(ns.Listen(testnet.Addr(4, labelled)))
		l2 := must.fd(ns.Listen(testnet.Addr(4, other)))
		for i := range n + 1 {
			lfd, port := l1, labelled
			if i == n {
				lfd, port = l2, other
			}
			c := must.fd(ns.Connect(testnet.Addr(4, port)))
			s := must.fd(ns.Accept(lfd))
			aggMust(t, ns.Close(c))
			aggMust(t, ns.ReadEOF(s))
			aggMust(t, ns.Close(s))
		}
		want := map[[2]model.State]uint64{
			{model.Close, model.Listen}: 1, {model.Close, model.SynSent}: n, {model.SynSent, model.Established}: n,
			{model.Listen, model.SynRecv}: n, {model.SynRecv, model.Established}: n,
			{model.Established, model.FinWait1}: n, {model.FinWait1, model.FinWait2}: n, {model.FinWait2, model.Close}: n,
			{model.Established, model.CloseWait}: n, {model.CloseWait, model.LastAck}: n, {model.LastAck, model.Close}: n,
		}
		got := map[[2]model.State]uint64{}
		deadline := time.Now().Add(3 * time.Second)
		for {
			aggMust(t, tr.ReadTotals(&after))
			clear(got)
			if len(after.Ports) != 3 {
				p.Fatalf("%d port slots, want 3 (other, 9, %d)", len(after.Ports), labelled)
			}
			for o := range model.NumStates {
				for nw := range model.NumStates {
					if v := after.Ports[2][o][nw] - before.Ports[2][o][nw]; v > 0 {
						got[[2]model.State{model.State(o), model.State(nw)}] = v
					}
				}
			}
			if len(got) == len(want) && got[[2]model.State{model.LastAck, model.Close}] == n || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		for e, v := range want {
			if got[e] != v {
				p.Errorf("port %d: %s -> %s counted %d, want %d (all: %v)", labelled, e[0], e[1], got[e], v, got)
			}
		}
		if len(got) != len(want) {
			p.Errorf("port %d: edges %v, want %v", labelled, got, want)
		}
		for o := range model.NumStates {
			for nw := range model.NumStates {
				if v := after.Ports[1][o][nw] - before.Ports[1][o][nw]; v != 0 {
					p.Errorf("port 9, which nothing used: %d transitions %s -> %s", v, model.State(o), model.State(nw))
				}
			}
		}
		// The unlabelled port's connection is in slot 0, with the rest of
		// the host; every slot adds up to the matrix.
		if d := after.Ports[0][model.LastAck][model.Close] - before.Ports[0][model.LastAck][model.Close]; d < 1 {
			p.Errorf("slot 0 counted %d LAST_ACK -> CLOSE, want at least the unlabelled port's 1", d)
		}
		var slots, matrix uint64
		for _, m := range after.Ports {
			for o := range m {
				for _, v := range m[o] {
					slots += v
				}
			}
		}
		matrix = after.Agg.Transitions()
		if slots > matrix+100 || matrix > slots+100 {
			p.Errorf("port slots add up to %d, the matrix to %d (read one after the other)", slots, matrix)
		}
		// Histogram sums: the lifetimes of the connections are in the sum.
		lifetimes := model.HistCount(after.Agg.Hists[model.HistLifetime][:]) - model.HistCount(before.Agg.Hists[model.HistLifetime][:])
		if lifetimes < 2*(n+1) || after.HistSumNs[model.HistLifetime] <= before.HistSumNs[model.HistLifetime] {
			p.Errorf("lifetimes: %d counted, sum %d -> %d ns", lifetimes, before.HistSumNs[model.HistLifetime], after.HistSumNs[model.HistLifetime])
		}
		if c := after.Agg.Causes(); len(c) == 0 {
			p.Errorf("no close causes counted")
		}

		// A gap: ESTABLISHED -> CLOSE_WAIT replayed on the labelled listener,
		// last seen in LISTEN. The fewest transitions missing: LISTEN to
		// ESTABLISHED.
		socks, err := tr.Sockets()
		aggMust(t, err)
		var sk uint64
		for _, s := range socks {
			if s.State == model.Listen && s.Sport == labelled && s.Netns == ns.Inode() {
				sk = s.Skaddr
			}
		}
		if sk == 0 {
			p.Fatalf("the listener on %d is not in the socket list", labelled)
		}
		aggMust(t, ns.Do(func() error { return tr.Replay(sk, model.Established, model.CloseWait) }))
		c1, err := tr.Counters()
		aggMust(t, err)
		m, _ := model.ModelByName("linux")
		if c1.Gaps-c0.Gaps < 1 {
			p.Errorf("gaps %d -> %d after a replayed gap", c0.Gaps, c1.Gaps)
		}
		if c1.GapsAfterLoss == c0.GapsAfterLoss && c1.GapMissing-c0.GapMissing < m.Missing(model.Listen, model.Established) {
			p.Errorf("gap missing %d -> %d, want at least %d more", c0.GapMissing, c1.GapMissing, m.Missing(model.Listen, model.Established))
		}

		// The kernel now believes the listener is in CLOSE_WAIT: out of
		// step. A reconciling snapshot reports and corrects it; the next
		// one finds it in step, and closing it is no gap.
		find := func(s *tracer.Snapshot) *tracer.OutOfStep {
			for i := range s.OutOfStep {
				if s.OutOfStep[i].Socket.Skaddr == sk {
					return &s.OutOfStep[i]
				}
			}
			return nil
		}
		s1, err := tr.Snapshot(tracer.SnapshotOptions{Reconcile: true, Netns: []uint32{ns.Inode()}})
		aggMust(t, err)
		o := find(s1)
		if o == nil || o.Tracked != model.CloseWait || o.Actual != model.Listen || !o.Reconciled {
			p.Fatalf("reconciling snapshot: listener out of step %+v, want CLOSE_WAIT believed, LISTEN actual, reconciled", o)
		}
		s2, err := tr.Snapshot(tracer.SnapshotOptions{Reconcile: true, Netns: []uint32{ns.Inode()}})
		aggMust(t, err)
		if o := find(s2); o != nil {
			p.Errorf("second snapshot: listener still out of step %+v", o)
		}
		aggMust(t, ns.Close(l1))
		aggMust(t, ns.Close(l2))
		time.Sleep(50 * time.Millisecond)
		c2, err := tr.Counters()
		aggMust(t, err)
		if c2.Gaps != c1.Gaps {
			p.Errorf("closing the reconciled listener: gaps %d -> %d, want no new gap", c1.Gaps, c2.Gaps)
		}
	})
}
