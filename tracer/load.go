package tracer

import (
	"fmt"
	"maps"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tcpstate/tcpstate/model"
)

// Tracer owns every kernel resource of one tcpstate run: the maps, the
// programs, their links and the ring buffer reader. Load makes it, Attach
// starts the events, Run reads them, Detach stops them, Close releases
// everything in reverse order.
type Tracer struct {
	opts  Options
	spec  *ebpf.CollectionSpec
	coll  *ebpf.Collection     // the data sections (.rodata, .bss)
	all   map[string]*ebpf.Map // every map, for loading programs against them
	maps  tcpstateMaps
	vars  tcpstateVariables
	progs []*ebpf.Program
	links []link.Link
	ring  *ring
	clock Clock

	setState, rescue, dump, replay *ebpf.Program

	accept   AcceptHook // the hook in use, after Attach
	features []Feature

	// tracefs is where tcpstate mounted tracefs itself (for the accept
	// syscall tracepoints), "" when it found one mounted; Close unmounts
	// it with unmountTracefs.
	tracefs        string
	unmountTracefs func() error
}

// Open loads and attaches: the events flow into the ring buffer from then
// on; call Run to read them.
func Open(opts Options) (*Tracer, error) {
	t, err := Load(opts)
	if err != nil {
		return nil, err
	}
	if err := t.Attach(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Load checks the environment and loads the maps and the programs a
// tracing command needs, without attaching anything.
func Load(opts Options) (_ *Tracer, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := checkEnvironment(); err != nil {
		return nil, err
	}
	spec, err := loadTcpstate()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	if err := configure(spec, &opts); err != nil {
		return nil, err
	}

	t := &Tracer{opts: opts, spec: spec}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	// The maps first, with no program: each program is then loaded on its
	// own against them, so that one the kernel refuses costs only itself.
	onlyMaps := &ebpf.CollectionSpec{Maps: spec.Maps, Programs: map[string]*ebpf.ProgramSpec{},
		Variables: spec.Variables, Types: spec.Types, ByteOrder: spec.ByteOrder}
	if t.coll, err = ebpf.NewCollection(onlyMaps); err != nil {
		return nil, privilegeHint(fmt.Errorf("creating BPF maps: %w", cleanKernelError(err)))
	}
	t.all = maps.Clone(t.coll.Maps)
	if err := t.coll.Assign(&t.maps); err != nil {
		return nil, fmt.Errorf("assigning BPF maps: %w", err)
	}
	if err := t.coll.Assign(&t.vars); err != nil {
		return nil, fmt.Errorf("assigning BPF variables: %w", err)
	}
	if t.setState, err = t.loadProgram("handle_set_state"); err != nil {
		return nil, err
	}
	if t.dump, err = t.loadOptional("dump_sock_states"); err != nil {
		t.features = append(t.features, Feature{Name: "socket listing", Detail: err.Error(), Without: programInfo("dump_sock_states").Without})
		opts.Warn(fmt.Sprintf("%s: %v", programInfo("dump_sock_states").Without, err))
	} else {
		t.features = append(t.features, Feature{Name: "socket listing", Active: true, Detail: "iter/bpf_sk_storage_map"})
	}
	if opts.RescueNested {
		if t.rescue, err = t.loadProgram("rescue_set_state"); err != nil {
			return nil, err
		}
	}
	if opts.Replay {
		if t.replay, err = t.loadProgram("replay_set_state"); err != nil {
			return nil, err
		}
	}
	if err := t.fillFilters(); err != nil {
		return nil, err
	}
	return t, nil
}

// Attach starts the events: the reader first, so nothing attached writes
// into a ring nobody maps, then the main program, then the accept hook.
func (t *Tracer) Attach() error {
	var err error
	if t.ring, err = newRing(t.maps.Events); err != nil {
		return fmt.Errorf("opening the ring buffer: %w", err)
	}
	t.clock = NewClock()
	if err := t.attachSetState(); err != nil {
		return err
	}
	t.attachAccept()
	if t.rescue != nil {
		t.features = append(t.features, Feature{Name: "rescue of nested transitions", Active: true, Detail: "rescue_set_state (--rescue-nested)"})
	}
	return nil
}

// configure writes the settings and map sizes into the spec before loading,
// through bpf2go's typed specs.
func configure(spec *ebpf.CollectionSpec, o *Options) error {
	if o.RingSize < os.Getpagesize() || o.RingSize&(o.RingSize-1) != 0 {
		return fmt.Errorf("ring buffer size %d is not a power of two of at least %d bytes", o.RingSize, os.Getpagesize())
	}
	if o.MaxSockets < 16 {
		return fmt.Errorf("max sockets %d is too small (at least 16)", o.MaxSockets)
	}
	var s tcpstateSpecs
	if err := spec.Assign(&s); err != nil {
		return fmt.Errorf("reading the BPF object's specs: %w", err)
	}
	pids := uint8(0)
	if len(o.Pids) > 0 {
		pids = 1
	}
	for _, set := range []struct {
		v   *ebpf.VariableSpec
		val any
	}{
		{s.FilterFamily, uint16(o.Family)},
		{s.FilterPorts, uint8(o.KindsInUse())},
		{s.FilterPids, pids},
		{s.FilterStates, o.StateMask()},
		{s.ModeStream, b2u(o.Mode&ModeStream != 0)},
		{s.ModeAnomalies, b2u(o.Mode&ModeAnomalies != 0)},
		{s.ModeAggregate, b2u(o.Mode&ModeAggregate != 0)},
		{s.WantCpuTask, b2u(o.CPUTask)},
		{s.EdgeMask, edgeMask(o.Model)},
	} {
		if err := set.v.Set(set.val); err != nil {
			return fmt.Errorf("setting %s: %w", set.v.Name, err)
		}
	}

	if o.Mode == ModeAggregate {
		o.RingSize = os.Getpagesize() // nothing is sent
	}
	s.Events.MaxEntries = uint32(o.RingSize)
	s.Held.MaxEntries = uint32(o.MaxSockets)
	s.Accepted.MaxEntries = uint32(o.MaxSockets)
	s.PortFilter.MaxEntries = uint32(max(1, len(o.PortKinds())))
	s.PidFilter.MaxEntries = uint32(max(1, len(o.Pids)))
	if o.Mode&ModeAggregate == 0 {
		// Nothing is counted: keep the aggregation maps minimal.
		s.PortCounts.MaxEntries = 1
		s.PidCounts.MaxEntries = 1
	}
	return nil
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// fillFilters writes the filter sets into the kernel's maps, before anything
// is attached.
func (t *Tracer) fillFilters() error {
	for p, k := range t.opts.PortKinds() {
		if err := t.maps.PortFilter.Put(p, uint8(k)); err != nil {
			return fmt.Errorf("filling the port filter: %w", err)
		}
	}
	for _, pid := range t.opts.Pids {
		if err := t.maps.PidFilter.Put(pid, uint8(1)); err != nil {
			return fmt.Errorf("filling the pid filter: %w", err)
		}
	}
	return nil
}

// Features lists the optional parts of the tracer and whether this run has
// them (after Attach): for --verbose and the summary.
func (t *Tracer) Features() []Feature { return t.features }

// AcceptHook is the accept hook in use (after Attach).
func (t *Tracer) AcceptHook() AcceptHook { return t.accept }

// Model is the transition model the kernel checks against.
func (t *Tracer) Model() *model.Model { return t.opts.Model }

// edgeMask is the model's edge table as the kernel takes it: 16 rows, one
// per 4-bit state number.
func edgeMask(m *model.Model) [16]uint16 {
	var out [16]uint16
	mask := m.Mask()
	copy(out[:], mask[:])
	return out
}
