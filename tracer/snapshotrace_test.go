package tracer_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// Ephemeral ports of namespaces whose loads need more than a port block's
// (testnet.ServiceFilter selects their transitions).
const wideLo, wideHi = 40000, 60999

func monoNs() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// churn makes connections to ap in ns without pause until stop is
// closed, each in three steps a few connections apart, so that at any
// moment sockets are connecting, established, in CLOSE_WAIT, FIN_WAIT2 and
// closing: a new connection; later one side closes (the client or the
// server, in turn); later the other reads the FIN and closes. It returns
// how many connections it made, after closing every one.
func churn(ns *testnet.NS, lfd int, ap netip.AddrPort, stop <-chan struct{}) (int, error) {
	type conn struct{ first, second int }
	const apart = 8
	var opened, closing []conn
	for n := 0; ; {
		stopping := false
		select {
		case <-stop:
			stopping = true
		default:
		}
		if !stopping {
			time.Sleep(200 * time.Microsecond) // a few thousand a second: the oracle's buffer holds them
			c, err := ns.Connect(ap)
			if err != nil {
				return n, err
			}
			a, err := ns.Accept(lfd)
			if err != nil {
				return n, err
			}
			x := conn{c, a}
			if n%2 == 1 {
				x = conn{a, c}
			}
			n++
			opened = append(opened, x)
		}
		if len(opened) > apart || stopping && len(opened) > 0 {
			x := opened[0]
			opened = opened[1:]
			if err := ns.Close(x.first); err != nil {
				return n, err
			}
			closing = append(closing, x)
		}
		if len(closing) > apart || stopping && len(opened) == 0 && len(closing) > 0 {
			x := closing[0]
			closing = closing[1:]
			if err := ns.ReadEOF(x.second); err != nil {
				return n, err
			}
			if err := ns.Close(x.second); err != nil {
				return n, err
			}
		}
		if stopping && len(opened)+len(closing) == 0 {
			return n, nil
		}
	}
}

// TestSnapshotRace: connections open and close without pause while the
// tracer attaches and takes its start snapshot, so sockets change state
// between the attach and the moment the snapshot reaches them, and while it
// looks at them. Each one is counted once: its records in the tracer are
// exactly the kernel's own record (tracefs, which started first) from the
// attach on, none lost and none twice, and every socket's life is one
// consistent chain: the tracker gives no record an unknown, gap or illegal
// verdict, the first record of a socket older than the tracer included.
// Retried (testnet.Retry) for the kernel's silent skips (docs/kernel.md,
// "Loss no counter sees").
func TestSnapshotRace(t *testing.T) {
	t.Parallel()
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		if err := ns.SetSysctl("net.ipv4.ip_local_port_range", fmt.Sprintf("%d %d", wideLo, wideHi)); err != nil {
			t.Fatal(err)
		}
		ap := testnet.Addr(4, ns.Port(0))
		lfd, err := ns.Listen(ap)
		if err != nil {
			t.Fatal(err)
		}
		o := testnet.NewOracleSize(t, testnet.ServiceFilter(ap.Port(), wideLo, wideHi), 4096)
		stop := make(chan struct{})
		var made int
		var churnErr error
		var wg sync.WaitGroup
		wg.Go(func() { made, churnErr = churn(ns, lfd, ap, stop) })
		time.Sleep(300 * time.Millisecond)
		before := monoNs()
		s := tracetest.StartConfig(t, tracetest.Config{Netns: ns.Inode(), JudgeLoss: true}, tracer.Options{RescueNested: true})[0]
		attached := monoNs()
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()
		if churnErr != nil {
			t.Fatalf("connections: %v", churnErr)
		}
		if err := ns.Close(lfd); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the last FINs and ACKs
		s.WaitCloses(ns.Inode(), 0)
		evs := s.Stop()
		oevs, err := o.Events()
		if err != nil {
			t.Fatalf("oracle: %v", err)
		}

		// The tracker, as trace runs it, over the namespace's records.
		tr := model.NewTracker(mustModel(t, "linux"), 0)
		verdicts := map[model.VerdictKind]int{}
		var bad []string
		for i := range evs {
			v := tr.Check(&evs[i])
			verdicts[v.Kind]++
			if v.Kind != model.VerdictOK && len(bad) < 10 {
				bad = append(bad, fmt.Sprintf("%v %s: %s", v.Kind, v.Reason, tracetest.FmtEvent(&evs[i])))
			}
		}
		if len(bad) > 0 {
			p.Errorf("verdicts %v; the first of those not ok:\n    %s", verdicts, strings.Join(bad, "\n    "))
		}

		// Each incarnation: tcpstate's records are the kernel's from some
		// point on, and that point is the attach: what tcpstate lacks
		// happened before it returned, what it has after it began. A
		// socket address's incarnations are matched from the last: the
		// tracer saw the later ones.
		type incarnations struct {
			o [][]testnet.OracleEvent
			g []*tracetest.Life
		}
		bySk := map[uint64]*incarnations{}
		var sks []uint64
		at := func(sk uint64) *incarnations {
			if bySk[sk] == nil {
				bySk[sk] = &incarnations{}
				sks = append(sks, sk)
			}
			return bySk[sk]
		}
		open := map[uint64]bool{}
		for _, e := range oevs {
			x := at(e.Skaddr)
			if !open[e.Skaddr] {
				x.o = append(x.o, nil)
				open[e.Skaddr] = true
			}
			x.o[len(x.o)-1] = append(x.o[len(x.o)-1], e)
			if e.New == model.Close {
				open[e.Skaddr] = false
			}
		}
		for _, l := range tracetest.Lives(evs, ns.Inode()) {
			at(l.Skaddr).g = append(at(l.Skaddr).g, l)
		}
		var missing, wrong, delivered, after, straddling int
		var diffs []string
		for _, sk := range sks {
			x := bySk[sk]
			if len(x.g) > len(x.o) {
				diffs = append(diffs, fmt.Sprintf("socket %#x: %d incarnations in tcpstate, %d in the kernel's record", sk, len(x.g), len(x.o)))
				wrong++
				continue
			}
			for i, w := range x.o {
				for _, e := range w {
					if e.Ns > attached {
						after++
					}
				}
				var gl []model.Event
				if j := i - (len(x.o) - len(x.g)); j >= 0 {
					gl = x.g[j].Evs
				}
				k := fmt.Sprintf("%#x/%d", sk, i)
				skip := len(w) - len(gl)
				suffix := skip >= 0
				for i := 0; suffix && i < len(gl); i++ {
					o, e := w[skip+i], gl[i]
					suffix = o.Old == e.Old && o.New == e.New && o.Sport == e.Sport && o.Dport == e.Dport
				}
				switch {
				case !suffix:
					wrong++
					diffs = append(diffs, fmt.Sprintf("socket %s: tcpstate %v is not the end of the kernel's %v", k, edgesOf(gl), oracleEdges(w)))
				case skip > 0 && w[skip-1].Ns > attached:
					missing += skip
					diffs = append(diffs, fmt.Sprintf("socket %s: tcpstate lacks %v, made after the tracer was attached (kernel: %v)", k, oracleEdges(w[:skip]), oracleEdges(w)))
				case len(gl) > 0 && w[skip].Ns < before:
					wrong++
					diffs = append(diffs, fmt.Sprintf("socket %s: tcpstate has %v, made before the tracer began", k, oracleEdges(w[skip:skip+1])))
				default:
					delivered += len(gl)
					if skip > 0 && len(gl) > 0 {
						straddling++
					}
				}
			}
		}
		slices.Sort(diffs)
		if len(diffs) > 0 {
			p.Errorf("%d differences with the kernel's record (%d transitions missing, %d sockets wrong):\n    %s", len(diffs), missing, wrong, strings.Join(diffs[:min(10, len(diffs))], "\n    "))
		}
		if len(evs) != delivered {
			p.Errorf("%d records in the namespace, %d of them the kernel's", len(evs), delivered)
		}
		c := s.Counters
		if (len(diffs) > 0 || len(bad) > 0) && c.Lost() > 0 {
			p.Errorf("NOTE: the kernel counted %d lost events meanwhile: %+v", c.Lost(), c)
		}
		if len(oevs) > 0 && len(evs) > 0 {
			// The two clocks the attach is judged by: the kernel's record
			// (tracefs, trace_clock mono) and tcpstate's (bpf_ktime_get_ns)
			// against CLOCK_MONOTONIC read here.
			t.Logf("CLOCK_MONOTONIC: attach from %d to %d ns; the kernel's record from %d to %d ns; tcpstate's from %d to %d ns",
				before, attached, oevs[0].Ns, oevs[len(oevs)-1].Ns, evs[0].TsNs, evs[len(evs)-1].TsNs)
		}
		snap := s.Tracer().StartSnapshot()
		t.Logf("%d connections, %d transitions in the kernel's record, %d of them after the tracer attached; tcpstate delivered %d, %d sockets straddled the attach; the start snapshot took %v (%d sockets, %d seeded); verdicts %v",
			made, len(oevs), after, len(evs), straddling, snap.End.Sub(snap.Start).Round(time.Microsecond), len(snap.Sockets), snap.Seeded, verdicts)
		if straddling == 0 {
			p.Errorf("no socket lived across the attach: the test proved nothing")
		}
	})
}

func edgesOf(evs []model.Event) []string {
	var s []string
	for _, e := range evs {
		s = append(s, tracetest.Edge(e.Old, e.New))
	}
	return s
}

func oracleEdges(evs []testnet.OracleEvent) []string {
	var s []string
	for _, e := range evs {
		s = append(s, tracetest.Edge(e.Old, e.New))
	}
	return s
}
