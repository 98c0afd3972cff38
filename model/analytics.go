package model

import (
	"cmp"
	"slices"
)

// The analytics that stats prints and serve exports: one definition of what
// each count means, used by every output.

// LifeOrder lists the states in the order of a connection's life: the rows
// and columns of the transition matrix, the order of the histograms.
var LifeOrder = []State{
	Close, Listen, SynSent, SynRecv, Established,
	FinWait1, FinWait2, Closing, TimeWait,
	CloseWait, LastAck, NewSynRecv,
}

var outcomeMeanings = [NumOutcomes]string{
	OutcomeActiveClose:       "we sent FIN first: FIN_WAIT1/FIN_WAIT2 -> CLOSE (then TIME_WAIT)",
	OutcomePassiveClose:      "the peer sent FIN first: LAST_ACK -> CLOSE",
	OutcomeSimultaneousClose: "both sent FIN at once: through CLOSING",
	OutcomeReset:             "RST received (socket error ECONNRESET/EPIPE)",
	OutcomeTimeout:           "retransmissions gave up (ETIMEDOUT)",
	OutcomeAbort:             "closed locally without FIN: SO_LINGER 0, unread data, child never accepted",
	OutcomeConnectRefused:    "connect() answered by RST (ECONNREFUSED)",
	OutcomeConnectTimeout:    "connect() got no answer (ETIMEDOUT)",
	OutcomeConnectAborted:    "closed or failed while connecting, for another reason",
	OutcomeListenerClosed:    "a listening socket closed: LISTEN -> CLOSE",
}

// Meaning explains the outcome in a sentence, for tables and help.
func (o Outcome) Meaning() string {
	if o < NumOutcomes {
		return outcomeMeanings[o]
	}
	return ""
}

// Illegal sums the transitions on edges m does not have.
func (a *Aggregate) Illegal(m *Model) uint64 {
	var n uint64
	for old := range a.Matrix {
		for nw, v := range a.Matrix[old] {
			if v > 0 && !m.Allowed(State(old), State(nw)) {
				n += v
			}
		}
	}
	return n
}

// PortRow is one service port's counts.
type PortRow struct {
	Port        uint16 `json:"port"`
	Side        string `json:"side"` // "local" (listeners, accepted sockets) or "remote" (sockets that connected)
	Transitions uint64 `json:"transitions"`
	Opened      uint64 `json:"opened"`
}

// OwnerRow is one owner's counts.
type OwnerRow struct {
	Pid         uint32 `json:"pid"`
	Comm        string `json:"comm"`
	Transitions uint64 `json:"transitions"`
	Opened      uint64 `json:"opened"`
}

// PortRows lists the per-port counts, most transitions first.
func (a *Aggregate) PortRows() []PortRow {
	rows := make([]PortRow, 0, len(a.Ports))
	for p, c := range a.Ports {
		side := "local"
		if p.Remote {
			side = "remote"
		}
		rows = append(rows, PortRow{Port: p.Port, Side: side, Transitions: c.Transitions, Opened: c.Opened})
	}
	slices.SortFunc(rows, func(x, y PortRow) int {
		return cmp.Or(cmp.Compare(y.Transitions, x.Transitions), cmp.Compare(x.Port, y.Port), cmp.Compare(x.Side, y.Side))
	})
	return rows
}

// OwnerRows lists the per-owner counts, most transitions first.
func (a *Aggregate) OwnerRows() []OwnerRow {
	rows := make([]OwnerRow, 0, len(a.Owners))
	for p, c := range a.Owners {
		rows = append(rows, OwnerRow{Pid: p, Comm: c.Comm, Transitions: c.Transitions, Opened: c.Opened})
	}
	slices.SortFunc(rows, func(x, y OwnerRow) int {
		return cmp.Or(cmp.Compare(y.Transitions, x.Transitions), cmp.Compare(x.Pid, y.Pid))
	})
	return rows
}

// CgroupRow is one cgroup's counts, with what its id resolved to.
type CgroupRow struct {
	ID          uint64 `json:"cgroup_id"`
	Path        string `json:"cgroup,omitempty"`
	Container   string `json:"container,omitempty"`
	Runtime     string `json:"container_runtime,omitempty"`
	PodUID      string `json:"pod_uid,omitempty"`
	Transitions uint64 `json:"transitions"`
	Opened      uint64 `json:"opened"`
	// Info is what the id resolved to (nil: not resolved), for tables.
	Info *CgroupInfo `json:"-"`
}

// CgroupRows lists the per-cgroup counts, most transitions first, with
// each id resolved by info (which may be nil, or return nil for an id it
// cannot resolve).
func (a *Aggregate) CgroupRows(info func(id uint64) *CgroupInfo) []CgroupRow {
	rows := make([]CgroupRow, 0, len(a.Cgroups))
	for id, c := range a.Cgroups {
		r := CgroupRow{ID: id, Transitions: c.Transitions, Opened: c.Opened}
		if info != nil && id != 0 {
			r.Info = info(id)
		}
		if ci := r.Info; ci != nil {
			r.Path, r.Container, r.Runtime, r.PodUID = ci.Path, ci.Container.ID, ci.Container.Runtime, ci.Container.PodUID
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(x, y CgroupRow) int {
		return cmp.Or(cmp.Compare(y.Transitions, x.Transitions), cmp.Compare(x.ID, y.ID))
	})
	return rows
}

// OwnerUnknown counts the transitions of sockets whose owner the kernel did
// not know: they are in no owner's row. Readings are not atomic, so an
// interval's difference may not add up exactly; never below 0.
func (a *Aggregate) OwnerUnknown() uint64 {
	known := a.OwnerOther
	for _, c := range a.Owners {
		known += c.Transitions
	}
	if t := a.Transitions(); t > known {
		return t - known
	}
	return 0
}

// HistOrder lists the histograms in the order they are drawn: time in each
// state in the order of a connection's life, then the handshakes and the
// lifetime.
func HistOrder() []HistKind {
	var ks []HistKind
	for _, s := range LifeOrder {
		ks = append(ks, HistKind(s))
	}
	return append(ks, HistActiveOpen, HistPassiveOpen, HistLifetime)
}

// HistCount sums a histogram's buckets.
func HistCount(buckets []uint64) uint64 {
	var n uint64
	for _, v := range buckets {
		n += v
	}
	return n
}

// BucketBounds is bucket i's range in microseconds: bucket 0 holds 0 and 1,
// bucket i holds [2^i, 2^(i+1)).
func BucketBounds(i int) (low, high uint64) {
	low = (uint64(1) << (i + 1)) >> 1
	high = (uint64(1) << (i + 1)) - 1
	if low == high {
		low--
	}
	return low, high
}
