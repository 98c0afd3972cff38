package tracer

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/tcpstate/tcpstate/model"
)

// MaxLabelPorts bounds Options.LabelPorts: each port is a slot of
// NumStates*NumStates per-CPU counters in port_matrix.
const MaxLabelPorts = 64

// configureTotals sizes and sets what Options.Totals and LabelPorts ask of
// the aggregation, and the gap table every mode carries.
func configureTotals(s *tcpstateSpecs, o *Options) error {
	var dist [16][16]uint8
	for a := range model.NumStates {
		for b := range model.NumStates {
			dist[a][b] = uint8(min(o.Model.Missing(model.State(a), model.State(b)), 255))
		}
	}
	if err := s.MissingDist.Set(dist); err != nil {
		return fmt.Errorf("setting missing_dist: %w", err)
	}
	if len(o.LabelPorts) > MaxLabelPorts {
		return fmt.Errorf("%d labelled ports: at most %d", len(o.LabelPorts), MaxLabelPorts)
	}
	labels := o.Mode&ModeAggregate != 0 && len(o.LabelPorts) > 0
	if err := s.LabelPorts.Set(b2u(labels)); err != nil {
		return fmt.Errorf("setting label_ports: %w", err)
	}
	s.PortLabel.MaxEntries = uint32(max(1, len(o.LabelPorts)))
	if labels {
		s.PortMatrix.MaxEntries = uint32((len(o.LabelPorts) + 1) * model.NumStates * model.NumStates)
	}
	if o.Totals {
		if err := s.CountOwners.Set(uint8(0)); err != nil {
			return fmt.Errorf("setting count_owners: %w", err)
		}
		if err := s.CountCgroups.Set(b2u(o.CountCgroups)); err != nil {
			return fmt.Errorf("setting count_cgroups: %w", err)
		}
		s.PortCounts.MaxEntries = 1
		s.PidCounts.MaxEntries = 1
		if !o.CountCgroups {
			s.CgroupCounts.MaxEntries = 1
		}
	}
	return nil
}

// fillPortLabels gives each labelled port its slot (1, 2, ... in the
// order of Options.LabelPorts; 0 is every other port).
func (t *Tracer) fillPortLabels() error {
	if t.opts.Mode&ModeAggregate == 0 {
		return nil
	}
	for i, p := range t.opts.LabelPorts {
		if err := t.maps.PortLabel.Put(p, uint32(i+1)); err != nil {
			return fmt.Errorf("filling the labelled ports: %w", err)
		}
	}
	return nil
}

// Totals is one reading of what Options.Totals counts, for serve: the
// transition matrix, the histograms with their sums, the closes, and the
// matrices of the labelled ports. A Totals is reused from one reading to the
// next (Tracer.ReadTotals), so that reading allocates little.
type Totals struct {
	Agg model.Aggregate // Matrix, Hists, Closes and Outcomes; no ports, no owners
	// HistSumNs is each histogram's sum of values, in nanoseconds.
	HistSumNs [model.NumHistKinds]uint64
	// Ports[0] counts the transitions of every port without a label,
	// Ports[i] those of LabelPorts[i-1] (empty without labels).
	Ports      [][model.NumStates][model.NumStates]uint64
	LabelPorts []uint16

	buf perCPUBuf
}

// ReadTotals reads the counts into tt: cumulative since Load, summed over
// CPUs. Each map is read with batch lookups (Linux 5.6) where the kernel has
// them, a few system calls in all, else one lookup per entry.
func (t *Tracer) ReadTotals(tt *Totals) error {
	const cells = model.NumStates * model.NumStates
	var err error
	sum := func(m *ebpf.Map, n int, what string) []uint64 {
		if err != nil {
			return nil
		}
		var out []uint64
		if out, err = tt.buf.read(m, n); err != nil {
			err = fmt.Errorf("reading %s: %w", what, err)
		}
		return out
	}
	if v := sum(t.maps.Matrix, cells, "the transition matrix"); v != nil {
		for i, n := range v {
			tt.Agg.Matrix[i/model.NumStates][i%model.NumStates] = n
		}
	}
	if v := sum(t.maps.Hists, int(model.NumHistKinds)*model.HistBuckets, "histograms"); v != nil {
		for i, n := range v {
			tt.Agg.Hists[i/model.HistBuckets][i%model.HistBuckets] = n
		}
	}
	if v := sum(t.maps.HistSums, int(model.NumHistKinds), "histogram sums"); v != nil {
		copy(tt.HistSumNs[:], v)
	}
	if v := sum(t.maps.Closes, model.FactValues, "closes"); v != nil {
		tt.Agg.SetCloses(v)
	}
	tt.LabelPorts = t.opts.LabelPorts
	if len(t.opts.LabelPorts) > 0 && t.opts.Mode&ModeAggregate != 0 {
		slots := len(t.opts.LabelPorts) + 1
		tt.Ports = slices.Grow(tt.Ports[:0], slots)[:slots]
		if v := sum(t.maps.PortMatrix, slots*cells, "the per-port matrices"); v != nil {
			for i, n := range v {
				c := i % cells
				tt.Ports[i/cells][c/model.NumStates][c%model.NumStates] = n
			}
		}
	} else {
		tt.Ports = tt.Ports[:0]
	}
	return err
}

// perCPUBuf reads per-CPU arrays of u64 summed over CPUs, into buffers it
// keeps from one reading to the next.
type perCPUBuf struct {
	cpus    int
	noBatch bool // the kernel refused batch lookups once: look up each key
	keys    []uint32
	vals    []uint64
	out     []uint64
}

func (b *perCPUBuf) read(m *ebpf.Map, n int) ([]uint64, error) {
	if b.cpus == 0 {
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			return nil, err
		}
		b.cpus = cpus
	}
	b.out = slices.Grow(b.out[:0], n)[:n]
	clear(b.out)
	if !b.noBatch {
		err := b.batch(m, n)
		if err == nil {
			return b.out, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, err
		}
		b.noBatch = true
		clear(b.out)
	}
	var vals []uint64
	for i := range n {
		if err := m.Lookup(uint32(i), &vals); err != nil {
			return nil, err
		}
		b.out[i] = sumAll(vals)
	}
	return b.out, nil
}

// batch reads entries 0..n-1 with BPF_MAP_LOOKUP_BATCH, in chunks.
func (b *perCPUBuf) batch(m *ebpf.Map, n int) error {
	const chunk = 1024
	b.keys = slices.Grow(b.keys[:0], chunk)[:chunk]
	b.vals = slices.Grow(b.vals[:0], chunk*b.cpus)[:chunk*b.cpus]
	var cursor ebpf.MapBatchCursor
	for done := 0; done < n; {
		want := min(chunk, n-done)
		got, err := m.BatchLookup(&cursor, b.keys[:want], b.vals[:want*b.cpus], nil)
		for i := range got {
			k := int(b.keys[i])
			if k < n {
				b.out[k] = sumAll(b.vals[i*b.cpus : (i+1)*b.cpus])
			}
		}
		done += got
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("batch lookup returned nothing after %d of %d entries", done, n)
		}
	}
	return nil
}

// ProgramStat is one loaded program: its name in the BPF object, whether a
// link attaches it, and the kernel's run-time statistics (Runs and RunNs
// stay 0 unless kernel.bpf_stats_enabled is set).
type ProgramStat struct {
	Name     string
	Attached bool
	ProgramStats
}

// Programs reads the statistics of every loaded program and says which are
// attached (the iterators run on demand and never are).
func (t *Tracer) Programs() ([]ProgramStat, error) {
	attached := map[ebpf.ProgramID]bool{}
	for _, l := range t.links {
		if info, err := l.Info(); err == nil {
			attached[info.Program] = true
		}
	}
	out := make([]ProgramStat, 0, len(t.progs))
	for i, p := range t.progs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("reading program stats: %w", err)
		}
		ps := ProgramStat{Name: t.names[i], ProgramStats: ProgramStats{Name: t.names[i], Runs: st.RunCount, RunNs: uint64(st.Runtime), RecursionMisses: st.RecursionMisses}}
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ps.Attached = attached[id]
			}
		}
		out = append(out, ps)
	}
	return out, nil
}

// Attached reports whether the main program is attached (after Attach,
// before Detach).
func (t *Tracer) Attached() bool {
	if t.setState == nil || len(t.links) == 0 {
		return false
	}
	info, err := t.setState.Info()
	if err != nil {
		return false
	}
	id, ok := info.ID()
	if !ok {
		return false
	}
	for _, l := range t.links {
		if li, err := l.Info(); err == nil && li.Program == id {
			return true
		}
	}
	return false
}
