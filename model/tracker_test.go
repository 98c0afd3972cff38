package model

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// step is one event of a tracker scenario and what it should get.
type step struct {
	sk     uint64
	old    State
	new    State
	loss   uint64 // NoteLoss(loss) before the event
	last   State  // Event.LastState: the kernel's memory
	kind   VerdictKind
	reason string // exact Reason; "" means empty
}

// Kernel-looking socket addresses.
const (
	skA = 0xffff8881_0a3c_0000
	skB = 0xffff8881_0a3c_0800
	skC = 0xffff8881_0a3c_1000
)

func runSteps(t *testing.T, tr *Tracker, steps []step) {
	t.Helper()
	for i, s := range steps {
		if s.loss > 0 {
			tr.NoteLoss(s.loss)
		}
		e := Event{Skaddr: s.sk, Old: s.old, New: s.new, LastState: s.last}
		v := tr.Check(&e)
		if v.Kind != s.kind || v.Reason != s.reason {
			t.Errorf("step %d (%#x %v -> %v): got %v %q, want %v %q", i, s.sk, s.old, s.new, v.Kind, v.Reason, s.kind, s.reason)
		}
		checkStatsConsistent(t, tr.Stats())
	}
}

func checkStatsConsistent(t testing.TB, st TrackerStats) {
	t.Helper()
	if st.OK+st.Illegal+st.Gap+st.Unknown != st.Events {
		t.Fatalf("verdict counters %d+%d+%d+%d do not add up to %d events", st.OK, st.Illegal, st.Gap, st.Unknown, st.Events)
	}
	if st.LiveSockets < 0 || st.LiveSockets > st.MaxSockets {
		t.Fatalf("%d live sockets, max %d", st.LiveSockets, st.MaxSockets)
	}
	if st.GapAfterLoss > st.Gap || st.IllegalGap > st.Illegal || st.Reborn > st.Sockets {
		t.Fatalf("inconsistent sub-counters: %+v", st)
	}
	if st.Sockets < st.Closed+st.Evicted+uint64(st.LiveSockets) {
		t.Fatalf("more sockets closed, evicted or live than seen: %+v", st)
	}
}

const ok, gap, illegal, unknown = VerdictOK, VerdictGap, VerdictIllegal, VerdictUnknown

func TestTrackerScenarios(t *testing.T) {
	activeClose := []step{
		{sk: skA, old: Close, new: SynSent, kind: ok},
		{sk: skA, old: SynSent, new: Established, kind: ok},
		{sk: skA, old: Established, new: FinWait1, kind: ok},
		{sk: skA, old: FinWait1, new: FinWait2, kind: ok},
	}
	for _, tc := range []struct {
		name   string
		model  string
		sparse bool
		noLoss bool
		steps  []step
		want   TrackerStats
	}{
		{
			name: "active open and close", model: "linux",
			steps: append(activeClose[:4:4], step{sk: skA, old: FinWait2, new: Close, kind: ok}),
			want:  TrackerStats{Sockets: 1, Closed: 1, Events: 5, OK: 5},
		},
		{
			name: "rfc793 flags the timewait handover", model: "rfc793",
			steps: append(activeClose[:4:4], step{sk: skA, old: FinWait2, new: Close, kind: illegal,
				reason: "FIN_WAIT2 -> CLOSE is not a transition of model rfc793"}),
			want: TrackerStats{Sockets: 1, Closed: 1, Events: 5, OK: 4, Illegal: 1},
		},
		{
			name: "passive open: child birth, then passive close with self transition", model: "linux",
			steps: []step{
				{sk: skA, old: Close, new: Listen, kind: ok},
				{sk: skB, old: Listen, new: SynRecv, kind: ok},
				{sk: skB, old: SynRecv, new: Established, kind: ok},
				{sk: skB, old: Established, new: CloseWait, kind: ok},
				{sk: skB, old: CloseWait, new: LastAck, kind: ok},
				{sk: skB, old: LastAck, new: LastAck, kind: ok},
				{sk: skB, old: LastAck, new: Close, kind: ok},
				{sk: skA, old: Listen, new: Close, kind: ok},
			},
			want: TrackerStats{Sockets: 2, Closed: 2, Events: 8, OK: 8},
		},
		{
			name: "rfc793 rejects a child birth but tracks the child", model: "rfc793",
			steps: []step{
				{sk: skB, old: Listen, new: SynRecv, kind: illegal,
					reason: "LISTEN -> SYN_RECV (birth of a child socket) is not a transition of model rfc793"},
				{sk: skB, old: SynRecv, new: Established, kind: ok},
				{sk: skB, old: Established, new: CloseWait, kind: ok},
			},
			want: TrackerStats{Sockets: 1, Events: 3, OK: 2, Illegal: 1, LiveSockets: 1},
		},
		{
			name: "address reuse starts a new socket", model: "linux",
			steps: []step{
				{sk: skA, old: Close, new: SynSent, kind: ok},
				{sk: skA, old: SynSent, new: Close, kind: ok},
				// Same address, a child this time: it is a new socket, not
				// a SYN_SENT socket going wrong.
				{sk: skA, old: Listen, new: SynRecv, kind: ok},
				{sk: skA, old: SynRecv, new: Close, kind: ok},
				{sk: skA, old: Close, new: Listen, kind: ok},
			},
			want: TrackerStats{Sockets: 3, Closed: 2, Events: 5, OK: 5, LiveSockets: 1},
		},
		{
			name: "gap without loss", model: "linux",
			steps: append(activeClose[:3:3],
				step{sk: skA, old: FinWait2, new: Close, kind: gap,
					reason: "expected old state FIN_WAIT1 (last seen), got FIN_WAIT2; no loss counted meanwhile: lost without a count"}),
			want: TrackerStats{Sockets: 1, Closed: 1, Events: 4, OK: 3, Gap: 1, Missing: 1, MissingUncounted: 1},
		},
		{
			name: "gap after loss", model: "linux",
			steps: []step{
				{sk: skA, old: Close, new: SynSent, kind: ok, loss: 2}, // lost before: not this socket's gap
				{sk: skA, old: SynSent, new: Established, kind: ok},
				{sk: skB, old: Close, new: SynSent, kind: ok},
				{sk: skA, old: Established, new: FinWait1, kind: ok, loss: 1},
				{sk: skB, old: SynSent, new: Established, kind: ok, loss: 2},
				{sk: skA, old: FinWait2, new: Close, kind: gap,
					reason: "expected old state FIN_WAIT1 (last seen), got FIN_WAIT2; 2 events counted lost meanwhile (any socket)"},
				{sk: skB, old: FinWait1, new: FinWait2, kind: gap,
					reason: "expected old state ESTABLISHED (last seen), got FIN_WAIT1; no loss counted meanwhile: lost without a count"},
			},
			want: TrackerStats{Sockets: 2, Closed: 1, Events: 7, OK: 5, Gap: 2, GapAfterLoss: 1, Lost: 5, LiveSockets: 1, Missing: 2, MissingUncounted: 1},
		},
		{
			name: "missed close, then reuse", model: "linux",
			steps: []step{
				{sk: skA, old: Close, new: SynSent, kind: ok},
				{sk: skA, old: SynSent, new: Established, kind: ok},
				{sk: skA, old: Close, new: SynSent, kind: gap, loss: 4,
					reason: "the previous socket at this address, last seen in ESTABLISHED, never reported -> CLOSE; CLOSE -> SYN_SENT starts a new one; 4 events counted lost meanwhile (any socket)"},
				{sk: skA, old: SynSent, new: Established, kind: ok},
				// A listener whose close was lost, its address reused by a child.
				{sk: skB, old: Close, new: Listen, kind: ok},
				{sk: skB, old: Listen, new: SynRecv, kind: gap,
					reason: "the previous socket at this address, last seen in LISTEN, never reported -> CLOSE; LISTEN -> SYN_RECV starts a new one; no loss counted meanwhile: lost without a count"},
				{sk: skB, old: SynRecv, new: Established, kind: ok},
			},
			want: TrackerStats{Sockets: 4, Reborn: 2, Events: 7, OK: 5, Gap: 2, GapAfterLoss: 1, Lost: 4, LiveSockets: 2, Missing: 2, MissingUncounted: 1},
		},
		{
			name: "unknown sockets", model: "linux",
			steps: []step{
				{sk: skA, old: Established, new: FinWait1, kind: unknown},
				{sk: skA, old: FinWait1, new: FinWait2, kind: ok},
				{sk: skB, old: LastAck, new: Close, kind: unknown}, // seen only at its end
				{sk: skC, old: SynRecv, new: Established, kind: unknown},
			},
			want: TrackerStats{Sockets: 3, Events: 4, OK: 1, Unknown: 3, LiveSockets: 2},
		},
		{
			name: "first sight of an illegal edge is illegal, not unknown", model: "linux",
			steps: []step{
				{sk: skA, old: FinWait2, new: TimeWait, kind: illegal,
					reason: "FIN_WAIT2 -> TIME_WAIT is not a transition of model linux"},
				{sk: skA, old: TimeWait, new: Close, kind: illegal,
					reason: "TIME_WAIT -> CLOSE is not a transition of model linux"},
			},
			want: TrackerStats{Sockets: 1, Closed: 1, Events: 2, Illegal: 2},
		},
		{
			name: "illegal wins over gap and says so", model: "rfc793",
			steps: append(activeClose[:3:3],
				step{sk: skA, old: FinWait2, new: Close, kind: illegal, loss: 1,
					reason: "FIN_WAIT2 -> CLOSE is not a transition of model rfc793; also a gap: expected old state FIN_WAIT1 (last seen), got FIN_WAIT2; 1 events counted lost meanwhile (any socket)"}),
			want: TrackerStats{Sockets: 1, Closed: 1, Events: 4, OK: 3, Illegal: 1, IllegalGap: 1, Lost: 1, Missing: 1},
		},
		{
			name: "the kernel's memory checks sockets the tracker does not know", model: "linux",
			steps: []step{
				{sk: skA, old: Established, new: FinWait1, last: Established, kind: ok},
				{sk: skB, old: FinWait2, new: Close, last: FinWait1, kind: gap,
					reason: "expected old state FIN_WAIT1 (last seen by the kernel), got FIN_WAIT2"},
				{sk: skC, old: Close, new: SynSent, last: LastAck, kind: gap,
					reason: "the previous socket at this address, last seen by the kernel in LAST_ACK, never reported -> CLOSE; CLOSE -> SYN_SENT starts a new one"},
				// Tracked: the tracker's own memory wins (it also sees what
				// was lost between the kernel and user space).
				{sk: skA, old: FinWait2, new: Close, last: FinWait2, kind: gap,
					reason: "expected old state FIN_WAIT1 (last seen), got FIN_WAIT2; no loss counted meanwhile: lost without a count"},
			},
			want: TrackerStats{Sockets: 3, Closed: 1, Reborn: 1, Events: 4, OK: 1, Gap: 3, LiveSockets: 1, Missing: 3, MissingUncounted: 1},
		},
		{
			name: "sparse: only the kernel's memory counts", model: "linux", sparse: true,
			steps: []step{
				{sk: skA, old: Close, new: SynSent, kind: ok},
				// The kernel kept back SYN_SENT -> ESTABLISHED: no gap.
				{sk: skA, old: Established, new: FinWait1, last: Established, kind: ok},
				{sk: skA, old: FinWait2, new: Close, last: FinWait1, loss: 3, kind: gap,
					reason: "expected old state FIN_WAIT1 (last seen by the kernel), got FIN_WAIT2"},
				{sk: skB, old: SynRecv, new: Established, kind: unknown},
				{sk: skB, old: Close, new: Listen, last: Established, kind: gap,
					reason: "the previous socket at this address, last seen by the kernel in ESTABLISHED, never reported -> CLOSE; CLOSE -> LISTEN starts a new one"},
			},
			want: TrackerStats{Sockets: 3, Reborn: 1, Events: 5, OK: 2, Gap: 2, Unknown: 1, Lost: 3, Missing: 2},
		},
		{
			name: "a replayed capture has no loss reports", model: "linux", noLoss: true,
			steps: append(activeClose[:3:3],
				step{sk: skA, old: FinWait2, new: Close, kind: gap,
					reason: "expected old state FIN_WAIT1 (last seen), got FIN_WAIT2"}),
			want: TrackerStats{Sockets: 1, Closed: 1, Events: 4, OK: 3, Gap: 1, Missing: 1},
		},
		{
			name: "states outside the kernel's range", model: "linux",
			steps: []step{
				{sk: skA, old: 0, new: 0, kind: illegal, reason: "STATE(0) -> STATE(0) is not a transition of model linux"},
				{sk: skA, old: 0, new: 200, kind: illegal, reason: "STATE(0) -> STATE(200) is not a transition of model linux"},
				{sk: skA, old: 200, new: Close, kind: illegal,
					reason: "STATE(200) -> CLOSE is not a transition of model linux"},
				{sk: skB, old: Close, new: 13, kind: illegal, reason: "CLOSE -> STATE(13) is not a transition of model linux"},
			},
			want: TrackerStats{Sockets: 2, Closed: 1, Events: 4, Illegal: 4, LiveSockets: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(mustModel(t, tc.model), 16)
			tr.SetSparse(tc.sparse)
			tr.SetNoLossReports(tc.noLoss)
			runSteps(t, tr, tc.steps)
			got := tr.Stats()
			w := tc.want
			w.MaxSockets = 16
			if got != w {
				t.Errorf("stats:\n got %+v\nwant %+v", got, w)
			}
			if tr.Model().Name() != tc.model {
				t.Errorf("Model() = %s", tr.Model().Name())
			}
		})
	}
}

func TestTrackerEvictsLeastRecentlySeen(t *testing.T) {
	tr := NewTracker(mustModel(t, "linux"), 3)
	born := func(sk uint64) {
		e := Event{Skaddr: sk, Old: Close, New: SynSent}
		if v := tr.Check(&e); v.Kind != VerdictOK {
			t.Fatalf("birth of %#x: %v %s", sk, v.Kind, v.Reason)
		}
	}
	born(1)
	born(2)
	born(3)
	// Socket 1 is seen again: socket 2 becomes the least recently seen.
	e := Event{Skaddr: 1, Old: SynSent, New: Established}
	if v := tr.Check(&e); v.Kind != VerdictOK {
		t.Fatalf("socket 1: %v", v.Kind)
	}
	born(4) // evicts 2
	born(5) // evicts 3
	st := tr.Stats()
	if st.Evicted != 2 || st.LiveSockets != 3 {
		t.Fatalf("evicted %d, live %d; want 2, 3", st.Evicted, st.LiveSockets)
	}
	// LRU order (most recent first) is 5 4 1. Each line is checked in turn.
	for _, tc := range []struct {
		sk   uint64
		old  State
		want VerdictKind
	}{
		{1, Established, VerdictOK},      // 1 5 4
		{4, Established, VerdictGap},     // 4 1 5: tracked, last state SYN_SENT
		{5, SynSent, VerdictOK},          // 5 4 1
		{2, SynSent, VerdictUnknown},     // 2 5 4, 1 evicted: 2 is back mid-life
		{3, SynSent, VerdictUnknown},     // 3 2 5, 4 evicted
		{1, Established, VerdictUnknown}, // 1 3 2, 5 evicted
	} {
		e := Event{Skaddr: tc.sk, Old: tc.old, New: Established}
		if tc.old == Established {
			e.New = FinWait1
		}
		if v := tr.Check(&e); v.Kind != tc.want {
			t.Errorf("socket %d %v -> %v: %v (%s), want %v", tc.sk, e.Old, e.New, v.Kind, v.Reason, tc.want)
		}
	}
	if st := tr.Stats(); st.LiveSockets != 3 || st.Evicted != 5 {
		t.Errorf("after re-seeing evicted sockets: live %d evicted %d, want 3, 5", st.LiveSockets, st.Evicted)
	}
	for sk := uint64(1); sk <= 5; sk++ {
		if tracked, want := tr.lookup(sk) >= 0, sk <= 3; tracked != want {
			t.Errorf("socket %d tracked: %v, want %v", sk, tracked, want)
		}
	}
}

func TestNewTrackerBounds(t *testing.T) {
	for _, tc := range []struct{ in, want int }{
		{0, DefaultMaxSockets}, {-5, DefaultMaxSockets}, {1, 1}, {1000, 1000}, {1 << 40, 1 << 30},
	} {
		if got := NewTracker(mustModel(t, "linux"), tc.in).Stats().MaxSockets; got != tc.want {
			t.Errorf("NewTracker(%d): max %d, want %d", tc.in, got, tc.want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("NewTracker(nil) did not panic")
		}
	}()
	NewTracker(nil, 1)
}

// refTracker is a slow, obviously correct tracker: the reference for the
// randomised test of Tracker's index, LRU list and free list.
type refTracker struct {
	m     *Model
	max   int
	clock uint64
	socks map[uint64]*refSock
	lost  uint64
}

type refSock struct {
	state  State
	seen   uint64
	lostAt uint64
}

func (r *refTracker) check(e *Event) VerdictKind {
	r.clock++
	edgeOK := r.m.Allowed(e.Old, e.New)
	birth := e.Old == Close || IsChildBirth(e.Old, e.New)
	s, tracked := r.socks[e.Skaddr]
	var k VerdictKind
	switch {
	case !edgeOK:
		k = VerdictIllegal
	case !tracked && birth:
		k = VerdictOK
	case !tracked:
		k = VerdictUnknown
	case birth || e.Old != s.state:
		k = VerdictGap
	default:
		k = VerdictOK
	}
	switch {
	case e.New == Close:
		delete(r.socks, e.Skaddr)
	case tracked:
		s.state, s.seen, s.lostAt = e.New, r.clock, r.lost
	default:
		if len(r.socks) >= r.max {
			var oldest uint64
			first := true
			for sk, o := range r.socks {
				if first || o.seen < r.socks[oldest].seen {
					oldest, first = sk, false
				}
			}
			delete(r.socks, oldest)
		}
		r.socks[e.Skaddr] = &refSock{state: e.New, seen: r.clock, lostAt: r.lost}
	}
	return k
}

// TestTrackerMatchesReference drives Tracker and refTracker with the same
// random events over a pool of addresses larger than the bound, so that
// births, closes, reuse, gaps and evictions all interleave, and the hash
// index grows and deletes with collisions (addresses share their low bits).
func TestTrackerMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		max, pool, events int
	}{
		{1, 3, 2000}, {7, 20, 20000}, {64, 100, 50000}, {500, 2000, 100000},
	} {
		rng := rand.New(rand.NewPCG(uint64(tc.max), 1))
		m := mustModel(t, "linux")
		tr := NewTracker(m, tc.max)
		ref := &refTracker{m: m, max: tc.max, socks: map[uint64]*refSock{}}
		state := map[uint64]State{}
		states := States()
		for i := 0; i < tc.events; i++ {
			sk := 0xffff888100000000 + uint64(rng.IntN(tc.pool))*0x800
			e := Event{Skaddr: sk}
			// Mostly legal lives, with skipped, repeated and random events.
			cur, ok := state[sk]
			if !ok {
				cur = Close
			}
			e.Old = cur
			switch r := rng.IntN(100); {
			case r < 80:
				next := m.Edges()
				var cands []State
				for _, ed := range next {
					if ed.Old == cur {
						cands = append(cands, ed.New)
					}
				}
				if cur == Close || len(cands) == 0 {
					cands = []State{SynSent, Listen}
				}
				e.New = cands[rng.IntN(len(cands))]
				if cur == Close && rng.IntN(4) == 0 {
					e.Old, e.New = Listen, SynRecv // a child
				}
			case r < 95:
				e.Old, e.New = states[rng.IntN(len(states))], states[rng.IntN(len(states))]
			default:
				tr.NoteLoss(1)
				ref.lost++
				continue
			}
			state[sk] = e.New
			want := ref.check(&e)
			got := tr.Check(&e)
			if got.Kind != want {
				t.Fatalf("max %d, event %d %#x %v -> %v: got %v (%s), want %v", tc.max, i, sk, e.Old, e.New, got.Kind, got.Reason, want)
			}
			st := tr.Stats()
			checkStatsConsistent(t, st)
			if st.LiveSockets != len(ref.socks) {
				t.Fatalf("max %d, event %d: %d live sockets, reference has %d", tc.max, i, st.LiveSockets, len(ref.socks))
			}
		}
		// Every tracked socket is found, and the table is at most half full.
		for sk := range ref.socks {
			if tr.lookup(sk) < 0 {
				t.Fatalf("max %d: socket %#x lost from the index", tc.max, sk)
			}
		}
		if 2*tr.live > len(tr.slots) {
			t.Fatalf("index %d slots for %d sockets", len(tr.slots), tr.live)
		}
		if st := tr.Stats(); st.Evicted == 0 && tc.pool > tc.max {
			t.Errorf("max %d: no eviction in %d events", tc.max, tc.events)
		}
	}
}

// lifeEvents returns the events of n sockets living a full active or passive
// life each, interleaved, on addresses that are reused from one round to the
// next, as the kernel reuses struct sock.
func lifeEvents(n int) []Event {
	lives := [][]State{
		{Close, SynSent, Established, FinWait1, FinWait2, Close},
		{Listen, SynRecv, Established, CloseWait, LastAck, Close},
		{Close, SynSent, Established, FinWait1, FinWait1, Closing, Closing, Close},
	}
	var evs []Event
	for step := 0; step < 7; step++ {
		for i := 0; i < n; i++ {
			life := lives[i%len(lives)]
			if step+1 < len(life) {
				evs = append(evs, Event{Skaddr: 0xffff888100000000 + uint64(i)*0x800, Old: life[step], New: life[step+1]})
			}
		}
	}
	return evs
}

// TestTrackerCheckDoesNotAllocate: ok and unknown verdicts, and illegal ones
// without a gap, allocate nothing once the tracker has seen its peak.
func TestTrackerCheckDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		model string
		max   int
		kinds []VerdictKind
	}{
		{"linux", 4096, []VerdictKind{VerdictOK}},
		{"rfc793", 4096, []VerdictKind{VerdictOK, VerdictIllegal}},
		// Fewer entries than sockets: evictions and unknown verdicts.
		{"linux", 300, []VerdictKind{VerdictOK, VerdictUnknown}},
	} {
		tr := NewTracker(mustModel(t, tc.model), tc.max)
		evs := lifeEvents(1000)
		seen := map[VerdictKind]bool{}
		for i := range evs { // warm up: reach the peak
			seen[tr.Check(&evs[i]).Kind] = true
		}
		for k := range seen {
			if !strings.Contains(" "+kindsString(tc.kinds)+" ", " "+k.String()+" ") {
				t.Fatalf("%s/%d: unexpected verdict %v", tc.model, tc.max, k)
			}
		}
		allocs := testing.AllocsPerRun(20, func() {
			for i := range evs {
				tr.Check(&evs[i])
			}
		})
		if allocs != 0 {
			t.Errorf("%s/%d: %v allocations per %d events", tc.model, tc.max, allocs, len(evs))
		}
	}
}

func kindsString(ks []VerdictKind) string {
	var s []string
	for _, k := range ks {
		s = append(s, k.String())
	}
	return strings.Join(s, " ")
}

func BenchmarkTrackerCheck(b *testing.B) {
	for _, bc := range []struct {
		name    string
		model   string
		sockets int
		max     int
	}{
		{"linux/1k-sockets", "linux", 1000, DefaultMaxSockets},
		{"linux/100k-sockets", "linux", 100000, DefaultMaxSockets},
		{"rfc793/1k-sockets", "rfc793", 1000, DefaultMaxSockets}, // a third of the lives end illegal
		{"linux/evicting", "linux", 10000, 1000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := NewTracker(mustModel(b, bc.model), bc.max)
			evs := lifeEvents(bc.sockets)
			for i := range evs {
				tr.Check(&evs[i])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tr.Check(&evs[i%len(evs)])
			}
		})
	}
}

// TestTrackerLossSequence: with the kernel's loss sequence on every event,
// a gap says exactly whether a loss was counted between the socket's two
// events, whatever happened on other sockets meanwhile and however late the
// counters are read (NoteLoss is never called).
func TestTrackerLossSequence(t *testing.T) {
	m, _ := ModelByName("linux")
	ev := func(sk uint64, old, nw State, seq uint64) Event {
		return Event{Skaddr: sk, Old: old, New: nw, LossSeq: seq, LossKnown: true}
	}
	t.Run("stream", func(t *testing.T) {
		tr := NewTracker(m, 16)
		tr.SetNoLossReports(true) // the exact mode: counted losses are in LossSeq
		steps := []struct {
			e      Event
			kind   VerdictKind
			reason string
		}{
			{ev(skA, Close, SynSent, 5), ok, ""},
			{ev(skA, SynSent, Established, 5), ok, ""},
			// skB loses events (counted), skA does not.
			{ev(skB, Close, SynSent, 5), ok, ""},
			{ev(skB, SynSent, Established, 6), ok, ""},
			// skA misses FIN_WAIT1 with no loss counted since its previous event.
			{ev(skA, FinWait1, FinWait2, 7), gap, "expected old state ESTABLISHED (last seen), got FIN_WAIT1; 2 events counted lost meanwhile (any socket)"},
			// skA's FIN_WAIT2 -> CLOSE missed with no counted loss: the reuse says so.
			{ev(skA, Close, SynSent, 7), gap, "the previous socket at this address, last seen in FIN_WAIT2, never reported -> CLOSE; CLOSE -> SYN_SENT starts a new one; no loss counted meanwhile: lost without a count"},
			// Exactly the 2 counted recursion misses between skB's events.
			{ev(skB, FinWait2, Close, 9), gap, "expected old state ESTABLISHED (last seen), got FIN_WAIT2; 3 events counted lost meanwhile (any socket)"},
		}
		for i, s := range steps {
			v := tr.Check(&s.e)
			if v.Kind != s.kind || v.Reason != s.reason {
				t.Errorf("step %d: got %v %q, want %v %q", i, v.Kind, v.Reason, s.kind, s.reason)
			}
		}
		st := tr.Stats()
		// FIN_WAIT1 (1, counted window), FIN_WAIT2 -> CLOSE (1, uncounted),
		// ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 (2, counted window).
		if st.Gap != 3 || st.GapAfterLoss != 2 || st.Missing != 4 || st.MissingUncounted != 1 {
			t.Errorf("stats %+v: want 3 gaps, 2 after counted loss, 4 transitions missing, 1 without a count", st)
		}
	})
	t.Run("sparse: the kernel's previous loss sequence", func(t *testing.T) {
		tr := NewTracker(m, 16)
		tr.SetSparse(true)
		tr.SetNoLossReports(true)
		e := ev(skA, FinWait1, FinWait2, 12)
		e.LastState, e.PrevLossSeq = Established, 12
		if v := tr.Check(&e); v.Kind != gap || !strings.HasSuffix(v.Reason, "no loss counted meanwhile: lost without a count") {
			t.Errorf("no counted loss since the socket's previous event: %v %q", v.Kind, v.Reason)
		}
		e = ev(skB, FinWait1, FinWait2, 14)
		e.LastState, e.PrevLossSeq = Established, 12
		if v := tr.Check(&e); v.Kind != gap || !strings.HasSuffix(v.Reason, "2 events counted lost meanwhile (any socket)") {
			t.Errorf("two counted since the socket's previous event: %v %q", v.Kind, v.Reason)
		}
	})
}

// TestTrackerEvictedSocketIsUnknown: a socket the tracker evicted is
// unknown at its next transition, as check's --max-sockets help says, even
// when its record carries the kernel's last state (before: the tracker
// checked it against last_state, so check --max-sockets 4 over 30 sockets
// said "evicted 22, unknown 0"); a socket first seen mid-life with a last
// state is still checked against it, and a birth at an evicted address
// starts afresh.
func TestTrackerEvictedSocketIsUnknown(t *testing.T) {
	tr := NewTracker(mustModel(t, "linux"), 4)
	const n = 30
	sk := func(i int) uint64 { return 0xffff888100000000 + uint64(i)*0x800 }
	for i := range n {
		e := Event{Skaddr: sk(i), Old: Close, New: SynSent}
		tr.Check(&e)
	}
	// Each socket's next transition carries the kernel's last state.
	unknown := 0
	for i := range n {
		e := Event{Skaddr: sk(i), Old: SynSent, New: Established, LastState: SynSent}
		if v := tr.Check(&e); v.Kind == VerdictUnknown {
			unknown++
		} else if v.Kind != VerdictOK {
			t.Errorf("socket %d: %v %s", i, v.Kind, v.Reason)
		}
	}
	st := tr.Stats()
	// The first 26 births were evicted by the last 4; then each socket
	// seen again evicts one of the others, which is seen again later.
	if st.Evicted < n-4 || uint64(unknown) != st.Unknown || st.Unknown < n-4 {
		t.Errorf("evicted %d, unknown %d (counted %d): want every evicted socket unknown at its next transition", st.Evicted, unknown, st.Unknown)
	}

	// A socket never evicted, first seen mid-life: checked against the
	// kernel's last state.
	fresh := Event{Skaddr: 0xffff8882_00000000, Old: Established, New: FinWait1, LastState: CloseWait}
	if v := tr.Check(&fresh); v.Kind != VerdictGap {
		t.Errorf("first sight with last_state CLOSE_WAIT, old ESTABLISHED: %v, want a gap", v.Kind)
	}
	// A birth at an evicted address is a new socket: ok.
	tr2 := NewTracker(mustModel(t, "linux"), 1)
	for _, e := range []Event{{Skaddr: 1, Old: Close, New: SynSent}, {Skaddr: 2, Old: Close, New: SynSent}} {
		tr2.Check(&e)
	}
	if v := tr2.Check(&Event{Skaddr: 1, Old: Close, New: Listen, LastState: Close}); v.Kind != VerdictOK {
		t.Errorf("birth at an evicted address: %v %s, want ok", v.Kind, v.Reason)
	}
}
