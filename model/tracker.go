package model

import (
	"iter"
	"strconv"
)

// DefaultMaxSockets is a sensible bound for NewTracker: the sockets a busy
// server has between their first and last transition. About 50 bytes each.
const DefaultMaxSockets = 1 << 18

// maxTrackerSockets caps maxSockets so that node indexes fit in int32.
const maxTrackerSockets = 1 << 30

// Tracker gives every event a Verdict by following each socket's state.
//
// Identity: a socket is one incarnation of a kernel address (Event.Skaddr).
// The kernel reuses a struct sock's address soon after freeing it, so an
// incarnation begins with a birth and ends at ->CLOSE, where its entry is
// dropped:
//   - births: any event whose old state is CLOSE (CLOSE->SYN_SENT on connect(),
//     CLOSE->LISTEN on listen()), and a child's LISTEN->SYN_RECV (IsChildBirth),
//     which the kernel reports on the new socket.
//   - every Linux TCP socket that ever left CLOSE goes back through ->CLOSE
//     before it is freed, so a birth on an address that is still tracked
//     means the previous incarnation's ->CLOSE was missed.
//
// Verdicts, in order of precedence:
//   - illegal: old->new is not an edge of the model. The event's old state is
//     the kernel's own sk_state at the time of the change, not something the
//     tracker inferred, so no missed event can make the edge legal: illegal
//     wins over gap. When the event also broke the socket's continuity, the
//     Reason says so and TrackerStats.IllegalGap counts it, so gaps are never
//     hidden (TrackerStats.Gaps).
//   - gap: the socket's last state is known (tracked, or Event.LastState:
//     see SetSparse) and either the old state is not that state, or a birth
//     arrives on it (its ->CLOSE was missed: the old incarnation is dropped
//     and the new one tracked). The Reason names the expected state and
//     whether NoteLoss reported lost events since the socket's previous event
//     (see SetNoLossReports).
//   - unknown: first sight of a socket in the middle of its life (the tracer
//     started after it was born) with no Event.LastState, or the next event
//     of a socket the tracker evicted, whatever its Event.LastState; its
//     continuity cannot be checked. Not an anomaly.
//   - ok: everything else.
//
// Memory is bounded by maxSockets: when a new socket needs an entry and all
// are in use, the least recently seen socket is evicted, and its next event,
// if any, is an unknown. The kernel's memory (Event.LastState) does not
// stand in for the tracker's there: it cannot vouch for the events lost
// between the kernel and the tracker meanwhile, which is what the tracker's
// own memory catches. Evicted addresses are remembered as bits of a hash (at
// most 2 MiB, made at the first eviction): a socket first seen at an address
// whose bit an evicted one set is unknown too, rarely, instead of checked
// against its Event.LastState. Entries live in one slice, indexed by an
// open-addressing hash table without tombstones and chained in an intrusive
// LRU list; freed entries are reused, so Check allocates nothing in steady
// state, whatever its verdict, except the Reason of a gap or of an illegal
// edge that is also a gap.
//
// A Tracker is not safe for concurrent use.
type Tracker struct {
	m     *Model
	max   int
	nodes []sockNode
	// slots is the hash index: a power of two long, at most half full. A slot
	// holds a node index + 1 (0: empty) and the node's key, so probing does
	// not touch the nodes.
	slots []slot
	shift uint8 // 64 - log2(len(slots)), for Fibonacci hashing
	// LRU list through sockNode.prev/next: head is the most recently seen.
	head, tail int32
	free       int32 // free list through sockNode.next, -1 when empty
	live       int
	// evicted marks, one bit per hash of an address, the sockets evicted
	// to stay within max and not seen since (made at the first eviction;
	// evictedShift is its Fibonacci shift).
	evicted      []uint64
	evictedShift uint8
	lost         uint64 // events NoteLoss reported, ever
	sparse       bool   // SetSparse
	noLoss       bool   // SetNoLossReports
	stats        TrackerStats
}

type sockNode struct {
	skaddr uint64
	// lostAt is Tracker.lost when the socket's previous event was checked.
	lostAt uint64
	// lossSeq is the previous event's Event.LossSeq, if seqKnown.
	lossSeq uint64
	// ts is the previous event's TsNs.
	ts         uint64
	prev, next int32
	netns      uint32 // Event.Netns: where a snapshot would find it
	state      State
	seqKnown   bool
}

type slot struct {
	key uint64
	ref int32 // node index + 1; 0 marks an empty slot
}

// TrackerStats counts what a Tracker saw. The event counters by verdict add up
// to Events.
type TrackerStats struct {
	// MaxSockets is the bound on tracked sockets; LiveSockets are tracked now.
	MaxSockets  int `json:"max_sockets"`
	LiveSockets int `json:"live_sockets"`
	// Sockets counts incarnations: births plus sockets first seen mid-life.
	Sockets uint64 `json:"sockets"`
	// Closed counts incarnations that ended at ->CLOSE while tracked.
	Closed uint64 `json:"closed"`
	// Evicted counts sockets dropped to stay within MaxSockets.
	Evicted uint64 `json:"evicted"`
	// Reborn counts births on a tracked address: a ->CLOSE was missed.
	Reborn uint64 `json:"reborn"`
	// Events counts checked events; OK, Illegal, Gap and Unknown split them by verdict.
	Events  uint64 `json:"events"`
	OK      uint64 `json:"ok"`
	Illegal uint64 `json:"illegal"`
	Gap     uint64 `json:"gap"`
	Unknown uint64 `json:"unknown"`
	// GapAfterLoss counts gap verdicts after NoteLoss reported lost events
	// since the socket's previous event; Gap-GapAfterLoss had no loss
	// reported (the kernel skipped the program silently, or a tracer bug).
	GapAfterLoss uint64 `json:"gap_after_loss"`
	// IllegalGap counts illegal verdicts whose event also broke continuity.
	IllegalGap uint64 `json:"illegal_gap"`
	// Missing counts the transitions the gaps prove missing (the fewest
	// the model needs to go from a socket's last state to the old state of
	// its next event); MissingUncounted those of gaps between two events
	// with no loss counted in between: transitions lost without any count.
	Missing          uint64 `json:"missing"`
	MissingUncounted uint64 `json:"missing_uncounted"`
	// Lost is the total NoteLoss reported.
	Lost uint64 `json:"lost"`
}

// Gaps counts every continuity break: gap verdicts and illegal verdicts that
// were gaps too.
func (s TrackerStats) Gaps() uint64 { return s.Gap + s.IllegalGap }

// Anomalies counts the events whose verdict is an anomaly.
func (s TrackerStats) Anomalies() uint64 { return s.Illegal + s.Gap }

// NewTracker returns a tracker checking events against m and following at
// most maxSockets sockets at a time (DefaultMaxSockets when maxSockets <= 0;
// at most 2^30).
func NewTracker(m *Model, maxSockets int) *Tracker {
	if m == nil {
		panic("model: NewTracker with a nil model")
	}
	if maxSockets <= 0 {
		maxSockets = DefaultMaxSockets
	}
	if maxSockets > maxTrackerSockets {
		maxSockets = maxTrackerSockets
	}
	t := &Tracker{m: m, max: maxSockets, head: -1, tail: -1, free: -1}
	t.stats.MaxSockets = maxSockets
	// Start small and double: a tracker bounded at a million sockets that
	// sees a hundred costs a few kilobytes.
	n := 64
	for n < 2*maxSockets && n < 1024 {
		n *= 2
	}
	t.setSlots(n)
	return t
}

// Model returns the model the tracker checks against.
func (t *Tracker) Model() *Model { return t.m }

// NoteLoss records that the kernel reported n more lost events (ring buffer
// full, recursion misses). Call it between events, when the loss is learnt;
// the next gap on any socket whose previous event came before it says so.
func (t *Tracker) NoteLoss(n uint64) {
	t.lost += n
	t.stats.Lost += n
}

// Stats returns the counters so far.
func (t *Tracker) Stats() TrackerStats {
	s := t.stats
	s.LiveSockets = t.live
	return s
}

// SetSparse tells the tracker whether it sees a kernel-selected subset of the
// events (anomalies-only tracing) rather than all of them. Call it before the
// first Check.
//
// Sparse: the tracker's own memory would miss every event the kernel kept
// back, so continuity is checked against Event.LastState alone (the new state
// of the socket's previous event as the BPF program remembers it, 0 when it
// has none), and no socket is tracked: the socket counters other than
// Sockets and Reborn stay 0.
//
// Not sparse (the default): continuity is checked against the tracker's own
// memory, which catches events lost between the kernel and user space too;
// Event.LastState is used only for a socket the tracker first sees, instead
// of an unknown verdict; never for one it evicted (see Tracker).
func (t *Tracker) SetSparse(sparse bool) { t.sparse = sparse }

// SetNoLossReports tells the tracker that nobody will call NoteLoss: the
// events come from a capture that does not record losses (check replaying
// JSON lines). A gap's Reason then says nothing about loss instead of
// claiming "no events reported lost".
func (t *Tracker) SetNoLossReports(on bool) { t.noLoss = on }

// Check gives e its verdict and updates the socket's state.
func (t *Tracker) Check(e *Event) Verdict {
	old, nw := e.Old, e.New
	t.stats.Events++
	edgeOK := t.m.Allowed(old, nw)
	birth := old == Close || IsChildBirth(old, nw)

	// last is the state e must continue from (0: unknown); lost counts the
	// events lost since the socket's previous event, when lostKnown: the
	// difference of the two events' loss sequences where the kernel gave
	// them (exact), plus the losses NoteLoss reported meanwhile.
	var (
		last      State
		lost      uint64
		lostKnown bool
		byKernel  bool
	)
	i := int32(-1)
	if !t.sparse {
		i = t.lookup(e.Skaddr)
	}
	if i >= 0 {
		n := &t.nodes[i]
		last = n.state
		if e.LossKnown && n.seqKnown {
			lost, lostKnown = e.LossSeq-n.lossSeq, true
		}
		if !t.noLoss {
			lost, lostKnown = lost+t.lost-n.lostAt, true
		}
		if birth {
			t.stats.Sockets++ // a new incarnation on the same address
		}
		if nw == Close {
			t.stats.Closed++
			t.remove(e.Skaddr, i)
		} else {
			n.state, n.lostAt, n.lossSeq, n.seqKnown, n.ts = nw, t.lost, e.LossSeq, e.LossKnown, e.TsNs
			t.touch(i)
		}
	} else {
		last, byKernel = e.LastState, true
		if t.evicted != nil && t.unmarkEvicted(e.Skaddr) {
			// Evicted here: what the kernel remembers skips whatever the
			// capture lost since the tracker let go of it.
			last, byKernel = 0, false
		}
		if e.LossKnown && last != 0 {
			lost, lostKnown = e.LossSeq-e.PrevLossSeq, true
		}
		if birth || last == 0 || !t.sparse {
			t.stats.Sockets++
		}
		if !t.sparse && nw != Close {
			t.insert(e.Skaddr, nw, e)
		}
	}
	// A tracked socket must continue from its last state. A birth from
	// CLOSE continues a socket last seen in CLOSE (the kernel remembers a
	// socket that connects again after its ->CLOSE); a child's birth
	// continues nothing, so a child born on a known address means that
	// socket's ->CLOSE was missed.
	broken := last != 0 && (old != last || (birth && old != Close))
	if broken {
		if birth {
			t.stats.Reborn++
		}
		to := old
		if birth {
			to = Close
		}
		m := t.m.Missing(last, to)
		t.stats.Missing += m
		if lostKnown && lost == 0 {
			t.stats.MissingUncounted += m
		}
	}

	switch {
	case !edgeOK:
		t.stats.Illegal++
		r := t.m.illegalReason(old, nw)
		if broken {
			t.stats.IllegalGap++
			r += "; also a gap: " + gapReason(old, nw, last, birth, byKernel, lost, lostKnown)
		}
		return Verdict{Kind: VerdictIllegal, Reason: r}
	case broken:
		t.stats.Gap++
		if lost > 0 {
			t.stats.GapAfterLoss++
		}
		return Verdict{Kind: VerdictGap, Reason: gapReason(old, nw, last, birth, byKernel, lost, lostKnown)}
	case last == 0 && !birth:
		t.stats.Unknown++
		return Verdict{Kind: VerdictUnknown}
	}
	t.stats.OK++
	return Verdict{Kind: VerdictOK}
}

// gapReason explains a continuity break. byKernel: last comes from
// Event.LastState, not from the tracker's memory. lost counts events lost on
// any socket since this socket's previous event (the kernel does not say
// whose they were); unknown when the tracker did not see that event.
func gapReason(old, nw, last State, birth, byKernel bool, lost uint64, lostKnown bool) string {
	by := ""
	if byKernel {
		by = " by the kernel"
	}
	var r string
	if birth {
		r = "the previous socket at this address, last seen" + by + " in " + last.String() +
			", never reported -> CLOSE; " + old.String() + " -> " + nw.String() + " starts a new one"
	} else {
		r = "expected old state " + last.String() + " (last seen" + by + "), got " + old.String()
	}
	switch {
	case !lostKnown:
		return r
	case lost > 0:
		return r + "; " + strconv.FormatUint(lost, 10) + " events counted lost meanwhile (any socket)"
	}
	return r + "; no loss counted meanwhile: lost without a count"
}

// hash spreads kernel addresses (slab objects, aligned to their size) over
// the table: Fibonacci hashing keeps the high bits of a multiplication.
func (t *Tracker) hash(key uint64) int {
	return int((key * 0x9E3779B97F4A7C15) >> t.shift)
}

func (t *Tracker) setSlots(n int) {
	t.slots = make([]slot, n)
	shift := uint8(64)
	for m := n; m > 1; m >>= 1 {
		shift--
	}
	t.shift = shift
}

// lookup returns the node index of key, or -1.
func (t *Tracker) lookup(key uint64) int32 {
	mask := len(t.slots) - 1
	for p := t.hash(key); ; p = (p + 1) & mask {
		s := &t.slots[p]
		if s.ref == 0 {
			return -1
		}
		if s.key == key {
			return s.ref - 1
		}
	}
}

// insert tracks a socket that is not tracked yet, evicting the least
// recently seen one when full.
func (t *Tracker) insert(key uint64, st State, e *Event) {
	if t.live >= t.max {
		t.evict()
	}
	var i int32
	if t.free >= 0 {
		i = t.free
		t.free = t.nodes[i].next
	} else {
		t.nodes = append(t.nodes, sockNode{})
		i = int32(len(t.nodes) - 1)
	}
	t.nodes[i] = sockNode{skaddr: key, lostAt: t.lost, lossSeq: e.LossSeq, seqKnown: e.LossKnown, ts: e.TsNs, netns: e.Netns, state: st, prev: -1, next: t.head}
	if t.head >= 0 {
		t.nodes[t.head].prev = i
	} else {
		t.tail = i
	}
	t.head = i
	t.live++
	if 2*t.live > len(t.slots) {
		t.grow()
	}
	t.place(key, i)
}

// place puts key -> node i in the first empty slot of its probe sequence.
func (t *Tracker) place(key uint64, i int32) {
	mask := len(t.slots) - 1
	p := t.hash(key)
	for t.slots[p].ref != 0 {
		p = (p + 1) & mask
	}
	t.slots[p] = slot{key: key, ref: i + 1}
}

// grow doubles the hash index. It runs only while the number of live sockets
// reaches a new high, so never in steady state.
func (t *Tracker) grow() {
	old := t.slots
	t.setSlots(2 * len(old))
	for _, s := range old {
		if s.ref != 0 {
			t.place(s.key, s.ref-1)
		}
	}
}

func (t *Tracker) evict() {
	i := t.tail
	t.markEvicted(t.nodes[i].skaddr)
	t.remove(t.nodes[i].skaddr, i)
	t.stats.Evicted++
}

// Bounds of the evicted marks, in bits: 8 per socket the tracker may
// follow, from 4 Ki to 16 Mi (2 MiB).
const (
	minEvictedBits = 1 << 12
	maxEvictedBits = 1 << 24
)

func (t *Tracker) markEvicted(key uint64) {
	if t.evicted == nil {
		bits := minEvictedBits
		for bits < 8*t.max && bits < maxEvictedBits {
			bits *= 2
		}
		t.evicted = make([]uint64, bits/64)
		t.evictedShift = 64
		for b := bits; b > 1; b >>= 1 {
			t.evictedShift--
		}
	}
	h := (key * 0x9E3779B97F4A7C15) >> t.evictedShift
	t.evicted[h/64] |= 1 << (h % 64)
}

// unmarkEvicted reports whether key's bit was set, and clears it: the
// socket is seen again (or a new one is born there).
func (t *Tracker) unmarkEvicted(key uint64) bool {
	h := (key * 0x9E3779B97F4A7C15) >> t.evictedShift
	w, bit := &t.evicted[h/64], uint64(1)<<(h%64)
	was := *w&bit != 0
	*w &^= bit
	return was
}

// remove drops node i (whose key is key) from the index and the LRU list and
// puts it on the free list.
func (t *Tracker) remove(key uint64, i int32) {
	t.unindex(key)
	n := &t.nodes[i]
	t.unlink(i)
	n.next = t.free
	n.prev = -1
	t.free = i
	t.live--
}

// unindex deletes key from the open-addressing index by shifting back the
// entries that follow it in its probe run (no tombstones, so lookups stay
// short however many sockets come and go).
func (t *Tracker) unindex(key uint64) {
	mask := len(t.slots) - 1
	p := t.hash(key)
	for t.slots[p].key != key || t.slots[p].ref == 0 {
		p = (p + 1) & mask
	}
	hole := p
	for q := (hole + 1) & mask; t.slots[q].ref != 0; q = (q + 1) & mask {
		home := t.hash(t.slots[q].key)
		// The entry at q may move to the hole unless its home lies
		// cyclically in (hole, q]: then the hole is before its home.
		if hole <= q {
			if hole < home && home <= q {
				continue
			}
		} else if hole < home || home <= q {
			continue
		}
		t.slots[hole] = t.slots[q]
		hole = q
	}
	t.slots[hole] = slot{}
}

func (t *Tracker) unlink(i int32) {
	n := &t.nodes[i]
	if n.prev >= 0 {
		t.nodes[n.prev].next = n.next
	} else {
		t.head = n.next
	}
	if n.next >= 0 {
		t.nodes[n.next].prev = n.prev
	} else {
		t.tail = n.prev
	}
}

// touch moves node i to the head of the LRU list.
func (t *Tracker) touch(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	n := &t.nodes[i]
	n.prev, n.next = -1, t.head
	t.nodes[t.head].prev = i
	t.head = i
}

// OutOfStep is a socket whose state a snapshot contradicts: transitions the
// kernel never delivered.
type OutOfStep struct {
	Skaddr uint64 `json:"skaddr"`
	// Believed is the state the tracker (or the kernel's own memory)
	// last saw; Actual the socket's state in the snapshot (CLOSE: the
	// socket no longer exists).
	Believed State `json:"believed"`
	Actual   State `json:"actual"`
	// Missing is the fewest transitions that must have been missed.
	Missing uint64 `json:"missing"`
}

// TrackedSocket is what the tracker believes of one socket: the new state
// of its last event, when that event happened and the loss sequence it
// carried.
type TrackedSocket struct {
	Skaddr    uint64
	State     State
	TsNs      uint64
	LossSeq   uint64
	LossKnown bool
	Netns     uint32 // its network namespace (0: not recorded)
}

func (n *sockNode) tracked() TrackedSocket {
	return TrackedSocket{Skaddr: n.skaddr, State: n.state, TsNs: n.ts, LossSeq: n.lossSeq, LossKnown: n.seqKnown, Netns: n.netns}
}

// Sockets yields every socket the tracker believes alive, the most
// recently seen first. The tracker must not be changed meanwhile.
func (t *Tracker) Sockets() iter.Seq[TrackedSocket] {
	return func(yield func(TrackedSocket) bool) {
		for i := t.head; i >= 0; i = t.nodes[i].next {
			if !yield(t.nodes[i].tracked()) {
				return
			}
		}
	}
}

// Lookup returns what the tracker believes of the socket at skaddr.
func (t *Tracker) Lookup(skaddr uint64) (TrackedSocket, bool) {
	if i := t.lookup(skaddr); i >= 0 {
		return t.nodes[i].tracked(), true
	}
	return TrackedSocket{}, false
}

// Gone reports the sockets the tracker believes alive, last seen before
// the kernel time before, that a snapshot taken at that time no longer
// found (exists says whether a socket address is in it): their ->CLOSE,
// at least, was never delivered.
func (t *Tracker) Gone(before uint64, exists func(skaddr uint64) bool) []OutOfStep {
	var out []OutOfStep
	for s := range t.Sockets() {
		if s.TsNs >= before || exists(s.Skaddr) {
			continue
		}
		out = append(out, OutOfStep{Skaddr: s.Skaddr, Believed: s.State, Actual: Close, Missing: t.m.Missing(s.State, Close)})
	}
	return out
}
