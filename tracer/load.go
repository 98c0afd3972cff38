package tracer

import (
	"fmt"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
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
	names []string // each of progs' name in the BPF object
	links []link.Link
	ring  *ring
	clock Clock

	setState, rescue, dump, replay *ebpf.Program
	snapTCP, snapFiles             *ebpf.Program

	accept    AcceptHook // the hook in use, after Attach
	startSnap *Snapshot  // taken by Attach
	exactLoss bool       // LossSeq counts recursion misses (find_self ran)
	features  []Feature

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
	if kspec, err := btf.LoadKernelSpec(); err == nil {
		loadResetReasons(kspec)
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
	if opts.ListOnly {
		if t.snapTCP, err = t.loadProgram("snap_tcp"); err != nil {
			return nil, err
		}
		if t.snapFiles, err = t.loadProgram("snap_files"); err != nil {
			return nil, err
		}
		return t, nil
	}
	if t.setState, err = t.loadProgram("handle_set_state"); err != nil {
		return nil, err
	}
	t.loadListing()
	t.loadSnapshot()
	t.resolveMisses()
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
	if err := t.fillPortLabels(); err != nil {
		return nil, err
	}
	return t, nil
}

// loadListing loads the iterator that lists the sockets the kernel follows.
func (t *Tracer) loadListing() {
	info := programInfo("dump_sock_states")
	p, err := t.loadOptional(info.Name)
	if err != nil {
		t.features = append(t.features, Feature{Name: "socket listing", Detail: err.Error(), Without: info.Without})
		t.opts.Warn(fmt.Sprintf("%s: %v", info.Without, err))
		return
	}
	t.dump = p
	t.features = append(t.features, Feature{Name: "socket listing", Active: true, Detail: "iter/bpf_sk_storage_map"})
}

// loadSnapshot loads the snapshot iterators (Snapshot).
func (t *Tracer) loadSnapshot() {
	var err error
	for _, p := range []struct {
		name string
		into **ebpf.Program
	}{{"snap_tcp", &t.snapTCP}, {"snap_files", &t.snapFiles}} {
		if *p.into, err = t.loadOptional(p.name); err != nil {
			t.snapTCP, t.snapFiles = nil, nil
			info := programInfo(p.name)
			t.features = append(t.features, Feature{Name: "snapshot", Detail: err.Error(), Without: info.Without})
			t.opts.Warn(fmt.Sprintf("%s: %v", info.Without, err))
			return
		}
	}
	t.features = append(t.features, Feature{Name: "snapshot", Active: true, Detail: "iter/task_file and iter/tcp in each network namespace"})
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
	t.attachResets()
	if t.rescue != nil {
		t.features = append(t.features, Feature{Name: "rescue of nested transitions", Active: true, Detail: "rescue_set_state (--rescue-nested)"})
	}
	t.seed()
	return nil
}

// seed takes the snapshot that tells the programs about every socket that
// already exists, after they are attached (bpf/snapshot.h says why that
// order loses nothing).
func (t *Tracer) seed() {
	if t.snapTCP == nil {
		return
	}
	s, err := t.Snapshot(SnapshotOptions{Seed: true})
	if err != nil {
		info := programInfo("snap_tcp")
		t.features = append(t.features, Feature{Name: "snapshot at start", Detail: err.Error(), Without: info.Without})
		t.opts.Warn(fmt.Sprintf("%s: %v", info.Without, err))
		return
	}
	t.startSnap = s
	var skipped []string
	for _, n := range s.Namespaces {
		if n.Err != "" {
			skipped = append(skipped, n.Err)
		}
	}
	f := Feature{Name: "snapshot at start", Active: true,
		Detail: fmt.Sprintf("%d sockets in %d network namespaces, %d seeded, in %v", len(s.Sockets), len(s.Namespaces), s.Seeded, s.End.Sub(s.Start).Round(time.Millisecond))}
	if len(skipped) > 0 {
		f.Detail += fmt.Sprintf("; %d namespaces not entered (their sockets that processes hold are seen through the processes' files): %s", len(skipped), skipped[0])
	}
	if s.ProcessesRefused > 0 {
		f.Detail += fmt.Sprintf("; the network namespace of %d processes could not be looked up (permission denied despite CAP_SYS_PTRACE)", s.ProcessesRefused)
	}
	// What the snapshot could not see, for lack of a capability, is said
	// once, at the start: serve's later snapshots see no more.
	lost := lostSeeded
	if t.opts.Totals {
		lost = lostCounted
	}
	if limits := s.Limits(lost); len(limits) > 0 {
		f.Without = strings.Join(limits, "; ")
		for _, l := range limits {
			t.opts.Warn(l)
		}
	}
	t.features = append(t.features, f)
}

// StartSnapshot is the snapshot Attach took (nil without one).
func (t *Tracer) StartSnapshot() *Snapshot { return t.startSnap }

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
		{s.OnlyCloses, b2u(o.OnlyCloses)},
		{s.EdgeMask, edgeMask(o.Model)},
	} {
		if err := set.v.Set(set.val); err != nil {
			return fmt.Errorf("setting %s: %w", set.v.Name, err)
		}
	}

	if o.Mode == ModeAggregate || o.ListOnly {
		o.RingSize = os.Getpagesize() // nothing is sent
	}
	s.Events.MaxEntries = uint32(o.RingSize)
	s.Held.MaxEntries = uint32(o.MaxSockets)
	s.Accepted.MaxEntries = uint32(o.MaxSockets)
	if o.ListOnly {
		s.Held.MaxEntries, s.Accepted.MaxEntries = 1, 1
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting the possible CPUs: %w", err)
	}
	s.MissAddr.MaxEntries = uint32(cpus)
	s.PortFilter.MaxEntries = uint32(max(1, len(o.PortKinds())))
	s.PidFilter.MaxEntries = uint32(max(1, len(o.Pids)))
	if o.Mode&ModeAggregate == 0 {
		// Nothing is counted: keep the aggregation maps minimal.
		s.PortCounts.MaxEntries = 1
		s.PidCounts.MaxEntries = 1
	}
	return configureTotals(&s, o)
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

// resolveMisses runs find_self once, so that handle_set_state can read its
// own recursion misses (bpf/misses.h), and records whether it could.
func (t *Tracer) resolveMisses() {
	const name = "exact loss attribution"
	info := programInfo("find_self")
	fail := func(err error) {
		t.features = append(t.features, Feature{Name: name, Detail: err.Error(), Without: info.Without})
	}
	p, err := t.loadOptional("find_self")
	if err != nil {
		fail(err)
		return
	}
	if !t.haveRdonlyCast() {
		fail(fmt.Errorf("%s needs bpf_rdonly_cast (Linux 6.2)", info.Name))
		return
	}
	pi, err := t.setState.Info()
	if err != nil {
		fail(fmt.Errorf("reading handle_set_state's id: %w", err))
		return
	}
	pid, _ := pi.ID()
	mi, err := t.maps.Counters.Info()
	if err != nil {
		fail(fmt.Errorf("reading the counters map's id: %w", err))
		return
	}
	mid, _ := mi.ID()
	cpus, _ := ebpf.PossibleCPU()
	for _, set := range []struct {
		v   *ebpf.Variable
		val uint32
	}{{t.vars.SelfProgId, uint32(pid)}, {t.vars.CountersMapId, uint32(mid)}, {t.vars.NrCpus, uint32(cpus)}} {
		if err := set.v.Set(set.val); err != nil {
			fail(fmt.Errorf("setting up find_self: %w", err))
			return
		}
	}
	if err := runIter(p, nil); err != nil {
		fail(fmt.Errorf("running find_self: %w", err))
		return
	}
	var found uint32
	if err := t.vars.SelfFound.Get(&found); err != nil || int(found) != cpus {
		fail(fmt.Errorf("find_self resolved %d of %d CPUs", found, cpus))
		return
	}
	t.exactLoss = true
	t.features = append(t.features, Feature{Name: name, Active: true, Detail: fmt.Sprintf("handle_set_state reads its own recursion misses on %d CPUs", cpus)})
}

// haveRdonlyCast reports whether the running kernel has the bpf_rdonly_cast
// kfunc (Linux 6.2), which the exact miss counting reads through.
func (t *Tracer) haveRdonlyCast() bool {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return false
	}
	var fn *btf.Func
	return spec.TypeByName("bpf_rdonly_cast", &fn) == nil
}

// ExactLoss reports whether every event's LossSeq includes the recursion
// misses (find_self ran): then a gap's window of counted loss is exact.
func (t *Tracer) ExactLoss() bool { return t.exactLoss }
