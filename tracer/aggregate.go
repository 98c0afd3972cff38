package tracer

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/tcpstate/tcpstate/model"
)

// Aggregate reads the aggregation maps (ModeAggregate): cumulative counts
// since Load, summed over CPUs.
func (t *Tracer) Aggregate() (*model.Aggregate, error) {
	a := &model.Aggregate{Ports: map[model.PortKey]model.Count{}, Owners: map[uint32]model.Count{}, Cgroups: map[uint64]model.Count{}}
	matrix, err := readPerCPUArray(t.maps.Matrix, model.NumStates*model.NumStates)
	if err != nil {
		return nil, fmt.Errorf("reading the transition matrix: %w", err)
	}
	for i, v := range matrix {
		a.Matrix[i/model.NumStates][i%model.NumStates] = v
	}
	hists, err := readPerCPUArray(t.maps.Hists, model.NumHistKinds*model.HistBuckets)
	if err != nil {
		return nil, fmt.Errorf("reading histograms: %w", err)
	}
	for i, v := range hists {
		a.Hists[i/model.HistBuckets][i%model.HistBuckets] = v
	}
	closes, err := readPerCPUArray(t.maps.Closes, model.FactValues)
	if err != nil {
		return nil, fmt.Errorf("reading closes: %w", err)
	}
	a.SetCloses(closes)
	if err := t.readPorts(a); err != nil {
		return nil, err
	}
	var (
		key uint32
		c   tcpstateOwnerCount
	)
	it := t.maps.PidCounts.Iterate()
	for it.Next(&key, &c) {
		a.Owners[key] = model.Count{Transitions: c.Transitions, Opened: c.Opened, Comm: cString(c.Comm[:])}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading per-owner counts: %w", err)
	}
	var (
		cgid uint64
		cc   tcpstateCount
	)
	cit := t.maps.CgroupCounts.Iterate()
	for cit.Next(&cgid, &cc) {
		a.Cgroups[cgid] = model.Count{Transitions: cc.Transitions, Opened: cc.Opened}
	}
	if err := cit.Err(); err != nil {
		return nil, fmt.Errorf("reading per-cgroup counts: %w", err)
	}
	per, err := t.allCounters()
	if err != nil {
		return nil, err
	}
	a.OwnerOther = per[tcpstateCounterCNT_PID_OTHER]
	a.CgroupOther = per[tcpstateCounterCNT_CGROUP_OTHER]
	return a, nil
}

// readPorts reads the per-port array through its memory mapping: one entry
// per port and side, 2 MiB, where lookups would take 131,072 system calls.
func (t *Tracer) readPorts(a *model.Aggregate) error {
	if t.opts.Mode&ModeAggregate == 0 {
		return nil
	}
	mem, err := t.maps.PortCounts.Memory()
	if err != nil {
		return fmt.Errorf("mapping the per-port counts: %w", err)
	}
	const entry = int(unsafe.Sizeof(tcpstateCount{}))
	buf := make([]byte, mem.Size())
	if _, err := mem.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("reading the per-port counts: %w", err)
	}
	le := binary.LittleEndian
	for i := 0; i+entry <= len(buf) && i/entry < 2*65536; i += entry {
		tr := le.Uint64(buf[i:])
		if tr == 0 {
			continue
		}
		k := i / entry
		// Index side * 65536 + port; side 1: the socket connect()ed.
		pk := model.PortKey{Port: uint16(k), Remote: k >= 65536}
		a.Ports[pk] = model.Count{Transitions: tr, Opened: le.Uint64(buf[i+8:])}
	}
	return nil
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

// readPerCPUArray reads the first n elements of a per-CPU array of u64,
// each summed over the CPUs (perCPUBuf: in batches where the kernel can).
func readPerCPUArray(m *ebpf.Map, n int) ([]uint64, error) {
	var b perCPUBuf
	return b.read(m, n)
}
