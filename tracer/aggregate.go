package tracer

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tcpstate/tcpstate/model"
)

// Mode says what the kernel does with an event that passes the filters.
type Mode uint8

// The modes. They can be combined, but each command uses one.
const (
	// ModeStream sends every event to user space (trace).
	ModeStream Mode = 1 << iota
	// ModeAnomalies sends only the events the in-kernel model check flags
	// as illegal or a gap (trace --anomalies).
	ModeAnomalies
	// ModeAggregate counts events in kernel maps and sends nothing (stats).
	ModeAggregate
)

func (t *Tracer) sum(idx int) (uint64, error) {
	var vals []uint64
	if err := t.objs.Counters.Lookup(uint32(idx), &vals); err != nil {
		return 0, fmt.Errorf("reading counters: %w", err)
	}
	return sumAll(vals), nil
}

// Aggregate reads the aggregation maps (ModeAggregate): cumulative counts
// since Open, summed over CPUs.
func (t *Tracer) Aggregate() (*model.Aggregate, error) {
	a := &model.Aggregate{Ports: map[model.PortKey]model.Count{}, Owners: map[uint32]model.Count{}}
	var vals []uint64
	for i := range model.NumStates * model.NumStates {
		if err := t.objs.Matrix.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("reading the transition matrix: %w", err)
		}
		a.Matrix[i/model.NumStates][i%model.NumStates] = sumAll(vals)
	}
	// One batch read of the whole histogram array would be faster; 768
	// lookups take about a millisecond and run once per interval.
	for i := range model.NumHistKinds * model.HistBuckets {
		if err := t.objs.Hists.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("reading histograms: %w", err)
		}
		a.Hists[i/model.HistBuckets][i%model.HistBuckets] = sumAll(vals)
	}
	for i := range model.NumOutcomes {
		if err := t.objs.Outcomes.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("reading outcomes: %w", err)
		}
		a.Outcomes[i] = sumAll(vals)
	}
	var (
		key uint32
		c   tcpstateTcpstateCount
	)
	it := t.objs.PortCounts.Iterate()
	for it.Next(&key, &c) {
		// Key bit 16: counted by remote port (the socket connect()ed).
		pk := model.PortKey{Port: uint16(key), Remote: key>>16 != 0}
		a.Ports[pk] = model.Count{Transitions: c.Transitions, Opened: c.Opened}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading per-port counts: %w", err)
	}
	it = t.objs.PidCounts.Iterate()
	for it.Next(&key, &c) {
		a.Owners[key] = model.Count{Transitions: c.Transitions, Opened: c.Opened, Comm: cString(c.Comm[:])}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading per-owner counts: %w", err)
	}
	var err error
	if a.PortOther, err = t.sum(cntPortOther); err != nil {
		return nil, err
	}
	if a.OwnerOther, err = t.sum(cntPidOther); err != nil {
		return nil, err
	}
	return a, nil
}

// Sockets lists the live sockets the kernel remembers: every socket that made
// a transition since Open and has not reached CLOSE. Sockets that existed
// before Open and have not changed state since are not known.
func (t *Tracer) Sockets() ([]model.SocketInfo, error) {
	now := uint64(monotonicNow())
	var (
		key uint64
		si  tcpstateTcpstateSock
		out []model.SocketInfo
	)
	it := t.objs.Socks.Iterate()
	for it.Next(&key, &si) {
		st := model.State(si.State)
		if !st.Valid() || si.StateTs == 0 {
			continue // seen only by accept(): no state yet
		}
		s := model.SocketInfo{
			Skaddr:     key,
			State:      st,
			Since:      since(now, si.StateTs),
			Age:        since(now, si.BornTs),
			Pid:        si.Pid,
			Comm:       cString(si.Comm[:]),
			OwnerKnown: si.Owner != 0,
			Family:     model.Family(si.Family),
			Sport:      si.Sport,
			Dport:      si.Dport,
		}
		if s.Family == model.AFInet {
			s.Saddr = netip.AddrFrom4([4]byte(si.Saddr[:4]))
			s.Daddr = netip.AddrFrom4([4]byte(si.Daddr[:4]))
		} else {
			s.Saddr = netip.AddrFrom16(si.Saddr)
			s.Daddr = netip.AddrFrom16(si.Daddr)
		}
		out = append(out, s)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading the socket map: %w", err)
	}
	return out, nil
}

func since(now, ts uint64) time.Duration {
	if ts == 0 || ts > now {
		return 0
	}
	return time.Duration(now - ts)
}

func sumAll(vals []uint64) uint64 {
	var n uint64
	for _, v := range vals {
		n += v
	}
	return n
}

func cString[T int8 | uint8](b []T) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// Replay runs the BPF program as if the kernel had reported old->new for the
// socket at skaddr, through the same code and maps as real events (the
// raw_tp twin of the attached program, run with BPF_PROG_RUN). skaddr must be
// a live TCP socket: the program reads its fields. It exists for tests of the
// in-kernel model check, which real kernels never exercise with bad edges.
func (t *Tracer) Replay(skaddr uint64, old, new model.State) error {
	_, err := t.objs.ReplaySetState.Run(&ebpf.RunOptions{
		Context: []uint64{skaddr, uint64(old), uint64(new)},
	})
	if err != nil {
		return fmt.Errorf("replaying %s -> %s on 0x%x: %w", old, new, skaddr, err)
	}
	return nil
}
