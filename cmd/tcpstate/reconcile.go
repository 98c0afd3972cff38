package main

import (
	"cmp"
	"fmt"
	"io"
	"iter"
	"slices"
	"strconv"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// The end-of-run reconciliation: one snapshot of every socket, taken while
// the programs are still attached, compared with what the run believes.
// It finds the transitions no gap can show, because the socket made no
// later transition that would have revealed them:
//
//   - kernel side (tracer.Snapshot.OutOfStep): the state the programs last
//     saw is not the socket's own: they never ran for a transition.
//   - tracker side (trace, not --anomalies): a socket the tracker believes
//     alive, last seen before the snapshot began, that the snapshot finds
//     in another state, or no longer finds: a transition the programs may
//     have handled was never delivered (or they never ran for it).
//   - life's side: life receives only closes, so what it believes of a
//     socket is only that it is alive: the connections open at its start
//     (the start snapshot's) whose close has not arrived. One the snapshot
//     no longer finds closed without its close delivered: its line is
//     missing. A connection opened during the run is not known to life
//     before its close, so one whose close the programs never ran for
//     leaves nothing to find.
//
// Whether such a transition was counted lost cannot be said for sure (the
// kernel does not say whose loss it counted), but when the loss sequence
// did not move since the socket's last event, no loss at all was counted
// in between: the transitions are missing without a count.

// reconcileDoc is the reconciliation in --summary-json.
type reconcileDoc struct {
	// Done: a snapshot was taken; Error says why not.
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
	// TrackerSide: the tracker's beliefs were compared too (not with
	// trace --anomalies, whose tracker follows no socket, nor with
	// --state, whose events leave the sockets' other transitions out).
	TrackerSide bool `json:"tracker_side"`
	// Sockets out of step, the transitions they lack (the fewest the model
	// needs), and of those, the ones with no loss counted since the
	// socket's last event: missing without any kernel count.
	Sockets          int            `json:"sockets"`
	Missing          uint64         `json:"missing"`
	MissingUncounted uint64         `json:"missing_uncounted"`
	OutOfStep        []outOfStepDoc `json:"out_of_step"`
}

// outOfStepDoc is one socket the reconciliation found out of step.
type outOfStepDoc struct {
	Skaddr string `json:"skaddr"`
	// Believed is what tcpstate believed: the new state of the socket's
	// last event it received (the programs' own record in trace
	// --anomalies and stats). Actual is the socket's state in the
	// snapshot; CLOSE when it no longer exists.
	Believed string `json:"believed"`
	Actual   string `json:"actual"`
	// KernelSaw is the state the programs last saw, when the snapshot
	// still has the socket: equal to believed, they never ran for the
	// missing transitions; equal to actual, they handled them and the
	// events were not delivered.
	KernelSaw string `json:"kernel_saw,omitempty"`
	// Missing is the fewest transitions from believed to actual.
	Missing uint64 `json:"missing"`
	// LossCounted: the kernel counted a loss (of any socket) since this
	// socket's last event, which may be these transitions.
	LossCounted bool `json:"loss_counted"`
	// Socket is the snapshot's view of it; absent when it is gone.
	Socket *socketDoc `json:"socket,omitempty"`
	info   *model.SocketInfo
}

// beliefs is what a run believes of the sockets it follows: trace's
// tracker, or the connections life saw open at its start.
type beliefs interface {
	Lookup(skaddr uint64) (model.TrackedSocket, bool)
	Sockets() iter.Seq[model.TrackedSocket]
}

// reconcileInput is what the reconciliation compares.
type reconcileInput struct {
	snap    *tracer.Snapshot
	model   *model.Model
	tracker beliefs // nil or skipped: kernel side only
	// trackerSide: compare the tracker's beliefs (it saw every delivered
	// transition of the sockets it follows, up to the snapshot).
	trackerSide bool
	// aliveOnly: the beliefs say only that a socket is alive, not its
	// state (life: it receives only closes). A socket the snapshot still
	// has is in step, whatever its state, as far as they go (the kernel's
	// own record is still compared); only one gone is out of step.
	aliveOnly bool
	// keep selects the snapshot's sockets the run is about (its filters).
	keep func(s *model.SocketInfo) bool
	// lossSeq is the kernel's loss sequence after the snapshot; lost every
	// loss the run counted.
	lossSeq, lost uint64
}

func reconcile(in reconcileInput) reconcileDoc {
	d := reconcileDoc{Done: true, TrackerSide: in.trackerSide && in.tracker != nil, OutOfStep: []outOfStepDoc{}}
	bySk := make(map[uint64]*model.SocketInfo, len(in.snap.Sockets))
	for i := range in.snap.Sockets {
		bySk[in.snap.Sockets[i].Skaddr] = &in.snap.Sockets[i]
	}
	// counted says whether a loss was counted since an event that carried
	// the loss sequence seq; without one, whether any was in the run.
	counted := func(seq uint64, known bool) bool {
		if known {
			return in.lossSeq > seq
		}
		return in.lost > 0
	}
	// A socket is gone only if the snapshot read its namespace.
	walked := map[uint32]bool{}
	for _, n := range in.snap.Namespaces {
		walked[n.Inode] = n.Err == ""
	}
	seen := map[uint64]bool{}
	add := func(o outOfStepDoc) {
		d.OutOfStep = append(d.OutOfStep, o)
		d.Missing += o.Missing
		if !o.LossCounted {
			d.MissingUncounted += o.Missing
		}
	}
	for _, o := range in.snap.OutOfStep {
		if in.keep != nil && !in.keep(&o.Socket) {
			continue
		}
		info := &o.Socket
		if s, ok := bySk[info.Skaddr]; ok {
			info = s // with its holders
		}
		believed := o.Tracked
		var ts model.TrackedSocket
		known := false
		if in.tracker != nil && !in.aliveOnly {
			ts, known = in.tracker.Lookup(o.Socket.Skaddr)
		}
		if known && d.TrackerSide {
			believed = ts.State
		}
		seen[info.Skaddr] = true
		if believed == o.Actual {
			continue
		}
		sd := newSocketDoc(info)
		add(outOfStepDoc{
			Skaddr: sd.Skaddr, Believed: believed.String(), Actual: o.Actual.String(), KernelSaw: o.Tracked.String(),
			Missing: in.model.Missing(believed, o.Actual), LossCounted: counted(ts.LossSeq, known && ts.LossKnown),
			Socket: &sd, info: info,
		})
	}
	if d.TrackerSide {
		for ts := range in.tracker.Sockets() {
			// Seen since the snapshot began: it may have changed under it.
			if ts.TsNs >= in.snap.StartNs || seen[ts.Skaddr] {
				continue
			}
			o := outOfStepDoc{
				Skaddr: "0x" + strconv.FormatUint(ts.Skaddr, 16), Believed: ts.State.String(),
				LossCounted: counted(ts.LossSeq, ts.LossKnown),
			}
			actual := model.Close
			s, ok := bySk[ts.Skaddr]
			if ok && ts.Netns != 0 && s.Netns != 0 && s.Netns != ts.Netns {
				// The kernel reused the address for a socket of another
				// namespace: this one is gone.
				s, ok = nil, false
			}
			if !ok && ts.Netns != 0 && !walked[ts.Netns] {
				continue // its namespace was not read: it may still be there
			}
			if ok {
				// A timewait or request socket at the same address is
				// another object: the full socket is gone.
				if s.Kind == model.KindFull || s.Kind == 0 {
					if in.aliveOnly {
						continue // alive, as believed
					}
					actual = s.State
					sd := newSocketDoc(s)
					o.Socket, o.info, o.KernelSaw = &sd, s, s.State.String()
				}
			}
			if actual == ts.State {
				continue
			}
			o.Actual, o.Missing = actual.String(), in.model.Missing(ts.State, actual)
			add(o)
		}
	}
	slices.SortFunc(d.OutOfStep, func(a, b outOfStepDoc) int { return cmp.Compare(a.Skaddr, b.Skaddr) })
	d.Sockets = len(d.OutOfStep)
	return d
}

// maxOutOfStepLines bounds the sockets the text summary lists one by one.
const maxOutOfStepLines = 10

// writeOutOfStep lists the sockets out of step under the summary's
// reconciliation line, at most maxOutOfStepLines of them.
func writeOutOfStep(w io.Writer, d *reconcileDoc) {
	for i, o := range d.OutOfStep {
		if i == maxOutOfStepLines {
			fmt.Fprintf(w, "                   ... and %d more (--summary-json lists them all)\n", len(d.OutOfStep)-i)
			break
		}
		what := "is " + o.Actual
		if o.Socket == nil && o.Actual == model.Close.String() {
			what = "is gone"
		}
		where := ""
		if s := o.info; s != nil {
			where = " " + fmtAddrPort(s.Saddr, s.Sport) + " -> " + fmtAddrPort(s.Daddr, s.Dport)
			if s.OwnerKnown {
				where += " (" + termsafe.String(s.Comm) + " " + strconv.FormatUint(uint64(s.Pid), 10) + ")"
			}
		}
		lost := "no loss counted since its last event"
		if o.LossCounted {
			lost = "a loss was counted since its last event"
		}
		fmt.Fprintf(w, "                   %s%s: believed %s, %s: %s missing; %s\n",
			o.Skaddr, where, o.Believed, what, plural(o.Missing, "transition", "transitions"), lost)
	}
}
