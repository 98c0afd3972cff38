package tracer_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// steppedClock is the system's clocks with the realtime one stepped by
// step: what the tracer would read after NTP or date -s stepped the host's
// clock, without stepping it.
type steppedClock struct{ step atomic.Int64 }

func (c *steppedClock) Read() (realtime, monotonic int64) {
	rt, mono := tracer.SystemClock().Read()
	return rt + c.step.Load(), mono
}

// TestWallClockFollowsAStep: a tracer reads its clocks through
// Options.Clock again while it runs, so the wall-clock time of events
// after a step of the realtime clock is the stepped time (before, the
// offset was taken once at Attach and every later time kept the old one).
func TestWallClockFollowsAStep(t *testing.T) {
	ns := testnet.New(t)
	clock := &steppedClock{}
	s := tracetest.StartConfig(t, tracetest.Config{Netns: ns.Inode()},
		tracer.Options{Clock: clock, Filter: model.Filter{Ports: []uint16{ns.Port(0), ns.Port(1)}}})[0]
	const step = 3 * time.Hour
	connOn := func(port uint16, closes int) time.Time {
		t.Helper()
		lfd, err := ns.Listen(testnet.Addr(4, port))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ns.Connect(testnet.Addr(4, port))
		if err != nil {
			t.Fatal(err)
		}
		a, err := ns.Accept(lfd)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		for _, err := range []error{ns.Close(c), ns.ReadEOF(a), ns.Close(a), ns.Close(lfd)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		s.WaitCloses(ns.Inode(), closes)
		return at
	}
	before := connOn(ns.Port(0), 3)
	clock.step.Store(int64(step))
	after := connOn(ns.Port(1), 6)
	for _, e := range s.Stop() {
		want := before
		if e.Sport == ns.Port(1) || e.Dport == ns.Port(1) {
			want = after.Add(step)
		}
		if d := e.Time.Sub(want); d < -time.Second || d > time.Second {
			t.Errorf("%s -> %s on port %d/%d at %v, want about %v", e.Old, e.New, e.Sport, e.Dport, e.Time, want)
		}
	}
}
