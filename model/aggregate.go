package model

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// Outcome is how a socket's life ended, in the coarse classes stats has
// always shown. User space derives it from the close's facts
// (CloseFacts.Outcome, from the same definition as Cause); the kernel keeps
// no outcome of its own since f782e35 (it counts closes by their facts, the
// closes map), so these numbers are Go's alone: JSON names the outcomes.
type Outcome uint8

// The outcomes.
const (
	OutcomeActiveClose       Outcome = iota // we sent FIN first: FIN_WAIT1/FIN_WAIT2 -> CLOSE
	OutcomePassiveClose                     // the peer sent FIN first: LAST_ACK -> CLOSE
	OutcomeSimultaneousClose                // both sent FIN at once: through CLOSING
	OutcomeReset                            // RST received (ECONNRESET, EPIPE)
	OutcomeTimeout                          // retransmissions gave up (ETIMEDOUT)
	OutcomeAbort                            // closed locally without FIN: SO_LINGER 0, unread data, never accepted
	OutcomeConnectRefused                   // connect() answered by RST (ECONNREFUSED)
	OutcomeConnectTimeout                   // connect() got no answer (ETIMEDOUT)
	OutcomeConnectAborted                   // closed while connecting
	OutcomeListenerClosed                   // LISTEN -> CLOSE
	NumOutcomes
)

var outcomeNames = [NumOutcomes]string{
	"active_close", "passive_close", "simultaneous_close", "reset", "timeout",
	"abort", "connect_refused", "connect_timeout", "connect_aborted", "listener_closed",
}

// String returns the outcome's name as JSON and the tables show it.
func (o Outcome) String() string {
	if o < NumOutcomes {
		return outcomeNames[o]
	}
	return "outcome(" + itoa(uint64(o)) + ")"
}

// Histogram rows (HistKind): one per state for the time spent in it, then
// handshakes and lifetimes. Buckets are log2 of microseconds: bucket 0 holds
// 0-1 us, bucket b holds [2^b, 2^(b+1)) us.
type HistKind uint8

// The histogram kinds beyond the per-state rows (0..NumStates-1).
const (
	HistActiveOpen  HistKind = NumStates     // SYN_SENT -> ESTABLISHED
	HistPassiveOpen HistKind = NumStates + 1 // a child's SYN_RECV -> ESTABLISHED
	HistLifetime    HistKind = NumStates + 2 // birth to ->CLOSE, listeners excluded
	NumHistKinds             = NumStates + 3
	HistBuckets              = 48
)

// String names the histogram: "time in ESTABLISHED", "active open", ...
func (k HistKind) String() string {
	switch k {
	case HistActiveOpen:
		return "active open (SYN_SENT -> ESTABLISHED)"
	case HistPassiveOpen:
		return "passive open (SYN_RECV -> ESTABLISHED)"
	case HistLifetime:
		return "connection lifetime"
	}
	return "time in " + State(k).String()
}

// Key is HistKind's short name for JSON: a state name, "active_open",
// "passive_open" or "lifetime".
func (k HistKind) Key() string {
	switch k {
	case HistActiveOpen:
		return "active_open"
	case HistPassiveOpen:
		return "passive_open"
	case HistLifetime:
		return "lifetime"
	}
	return State(k).String()
}

// Count is what the kernel counted for one local port or owner.
type Count struct {
	Transitions uint64 `json:"transitions"`
	Opened      uint64 `json:"opened"` // sockets born: connect(), listen(), accepted children
	Comm        string `json:"comm,omitempty"`
}

// PortKey is how the kernel counts by port: the service port of a
// connection, not its ephemeral one. Sockets that connect()ed are counted by
// their remote port (Remote true); listeners and accepted sockets by their
// local port.
type PortKey struct {
	Port   uint16
	Remote bool
}

// String returns "8080 (local)" or "443 (remote)".
func (k PortKey) String() string {
	if k.Remote {
		return itoa(uint64(k.Port)) + " (remote)"
	}
	return itoa(uint64(k.Port)) + " (local)"
}

// Aggregate is one reading of the kernel's counters (cumulative since start).
type Aggregate struct {
	Matrix   [NumStates][NumStates]uint64
	Hists    [NumHistKinds][HistBuckets]uint64
	Outcomes [NumOutcomes]uint64
	// Closes counts closes by their facts; Outcomes and Causes are read
	// from it.
	Closes [FactValues]uint64
	Ports  map[PortKey]Count
	Owners map[uint32]Count
	// Cgroups counts by the socket's own cgroup v2 id (0: the kernel
	// recorded none).
	Cgroups map[uint64]Count
	// PortOther, OwnerOther and CgroupOther count transitions that did not
	// fit the bounded per-port, per-owner and per-cgroup maps.
	PortOther, OwnerOther, CgroupOther uint64
}

// Transitions sums the matrix.
func (a *Aggregate) Transitions() uint64 {
	var n uint64
	for i := range a.Matrix {
		for _, v := range a.Matrix[i] {
			n += v
		}
	}
	return n
}

// Sub returns a - prev: what was counted between two readings.
func (a *Aggregate) Sub(prev *Aggregate) Aggregate {
	d := Aggregate{
		Ports:       map[PortKey]Count{},
		Owners:      map[uint32]Count{},
		Cgroups:     map[uint64]Count{},
		PortOther:   a.PortOther - prev.PortOther,
		OwnerOther:  a.OwnerOther - prev.OwnerOther,
		CgroupOther: a.CgroupOther - prev.CgroupOther,
	}
	for i := range a.Matrix {
		for j := range a.Matrix[i] {
			d.Matrix[i][j] = a.Matrix[i][j] - prev.Matrix[i][j]
		}
	}
	for i := range a.Hists {
		for j := range a.Hists[i] {
			d.Hists[i][j] = a.Hists[i][j] - prev.Hists[i][j]
		}
	}
	for i := range a.Outcomes {
		d.Outcomes[i] = a.Outcomes[i] - prev.Outcomes[i]
	}
	for i := range a.Closes {
		d.Closes[i] = a.Closes[i] - prev.Closes[i]
	}
	for p, c := range a.Ports {
		pc := prev.Ports[p]
		if c.Transitions != pc.Transitions || c.Opened != pc.Opened {
			d.Ports[p] = Count{Transitions: c.Transitions - pc.Transitions, Opened: c.Opened - pc.Opened, Comm: c.Comm}
		}
	}
	for p, c := range a.Owners {
		pc := prev.Owners[p]
		if c.Transitions != pc.Transitions || c.Opened != pc.Opened {
			d.Owners[p] = Count{Transitions: c.Transitions - pc.Transitions, Opened: c.Opened - pc.Opened, Comm: c.Comm}
		}
	}
	for id, c := range a.Cgroups {
		pc := prev.Cgroups[id]
		if c.Transitions != pc.Transitions || c.Opened != pc.Opened {
			d.Cgroups[id] = Count{Transitions: c.Transitions - pc.Transitions, Opened: c.Opened - pc.Opened}
		}
	}
	return d
}

// SocketKind says what kind of kernel object a listed socket is.
type SocketKind uint8

// The kinds, as the kernel numbers them in a snapshot (enum snap_kind).
const (
	KindFull     SocketKind = 1 // a full socket: listener, connecting, connected, orphan
	KindTimeWait SocketKind = 2 // a timewait socket; its State is the substate (as ss shows it)
	KindRequest  SocketKind = 3 // a request socket: a connection still in its handshake
)

// String returns "full", "timewait" or "request".
func (k SocketKind) String() string {
	switch k {
	case KindFull:
		return "full"
	case KindTimeWait:
		return "timewait"
	case KindRequest:
		return "request"
	}
	return "kind(" + itoa(uint64(k)) + ")"
}

// Holder is a process that holds a socket open (a file descriptor).
type Holder struct {
	Pid  uint32 `json:"pid"`
	Comm string `json:"comm"`
	Fd   uint32 `json:"fd"`
}

// SocketInfo is one socket: one the kernel follows (the stuck-socket lists),
// or one a snapshot found (ls).
type SocketInfo struct {
	Skaddr uint64
	Kind   SocketKind // 0: not from a snapshot (a followed socket)
	State  State
	// Since is the time in State; 0 when unknown. SinceAtLeast: the socket
	// was already in State when tracing began, Since is a lower bound.
	Since        time.Duration
	SinceAtLeast bool
	Age          time.Duration // since birth; 0 when unknown
	AgeAtLeast   bool          // it existed before tracing began: Age is a lower bound
	Pid          uint32        // the owner
	Comm         string
	OwnerKnown   bool
	Family       Family
	Saddr        netip.Addr
	Sport        uint16
	Daddr        netip.Addr
	Dport        uint16
	Netns        uint32 // inode number of its network namespace
	// CgroupID is the socket's own cgroup v2 id (0: not known, or a
	// timewait socket, which has none); Cgroup is what the id resolved to
	// (nil: not resolved).
	CgroupID uint64
	Cgroup   *CgroupInfo
	Uid      uint32
	Inode    uint64   // its socket file's inode (0: none)
	Holders  []Holder // the processes that hold it open (a snapshot), by pid
}

// DefaultStuckThresholds are how long a socket may stay in a state before
// it is listed as stuck. CLOSE_WAIT is the classic leak (the application
// never called close()); the others outlast their kernel timers only when
// something is wrong.
func DefaultStuckThresholds() map[State]time.Duration {
	return map[State]time.Duration{
		CloseWait: 60 * time.Second,
		SynSent:   10 * time.Second, // tcp_syn_retries=6 gives up after ~127 s
		SynRecv:   10 * time.Second,
		FinWait2:  90 * time.Second, // tcp_fin_timeout is 60 s
		LastAck:   30 * time.Second,
	}
}

// Stuck returns the sockets that have stayed in a state longer than its
// threshold, longest first.
func Stuck(socks []SocketInfo, thresholds map[State]time.Duration) []SocketInfo {
	var out []SocketInfo
	for _, s := range socks {
		if th, ok := thresholds[s.State]; ok && s.Since >= th {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b SocketInfo) int { return cmp.Compare(b.Since, a.Since) })
	return out
}

// SetCloses fills Closes and the Outcomes it implies.
func (a *Aggregate) SetCloses(closes []uint64) {
	a.Outcomes = [NumOutcomes]uint64{}
	for f, n := range closes {
		if f >= FactValues {
			break
		}
		a.Closes[f] = n
		if n > 0 {
			a.Outcomes[CloseFacts(f).Outcome()] += n
		}
	}
}

// CauseCount is the number of closes of one cause and detail.
type CauseCount struct {
	Cause CloseCause
	Count uint64
}

// Causes counts the closes by cause and detail, in Causes() order.
func (a *Aggregate) Causes() []CauseCount {
	byCause := map[CloseCause]uint64{}
	for f, n := range a.Closes {
		if n > 0 {
			byCause[CloseFacts(f).Cause()] += n
		}
	}
	var out []CauseCount
	for _, c := range Causes() {
		for _, d := range []string{"", "active", "passive", "simultaneous", "connect", "retransmission", "keepalive", "zero_window_probe"} {
			if n := byCause[CloseCause{Cause: c, Detail: d}]; n > 0 {
				out = append(out, CauseCount{Cause: CloseCause{Cause: c, Detail: d}, Count: n})
			}
		}
	}
	return out
}
