package tracer

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
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
	kspec *btf.Spec            // the running kernel's BTF, for probing (nil if unreadable)
	coll  *ebpf.Collection     // the data sections (.rodata, .bss)
	all   map[string]*ebpf.Map // every map, for loading programs against them
	maps  tcpstateMaps
	vars  tcpstateVariables
	progs []*ebpf.Program
	names []string // each of progs' name in the BPF object
	links []link.Link
	ring  *ring

	setState, rescue, dump, replay *ebpf.Program
	snapTCP, snapFiles             *ebpf.Program

	accept    AcceptHook // the hook in use, after Attach
	startSnap *Snapshot  // taken by Attach

	cgroups    *CgroupResolver
	ownCgroups bool // made by Load: Close closes it
	// cgroupSlots is the kernel's cgroup filter, slot by slot (an ID 0
	// slot is unused); cgroupGen its generation (AddCgroups).
	cgroupMu    sync.Mutex // cgroupSlots, cgroupGen: AddCgroups runs in the watch's goroutine
	cgroupSlots []model.CgroupWant
	cgroupGen   uint32
	watch       *ContainerWatch // Filter.Containers' rescans (nil without)
	stopWatch   func()
	exactLoss   bool // LossSeq counts recursion misses (find_self ran)
	features    []Feature

	// resetsNoSocket: handle_send_reset is attached, on the tracepoint
	// of Linux 6.10 and later, which fires for a reset without a socket
	// too: CNT_RST_NO_SOCKET counts (Counters.ResetsNoSocket).
	resetsNoSocket bool

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
	kspec, err := btf.LoadKernelSpec()
	if err == nil {
		loadResetReasons(kspec)
		// A listing (ls) filters in user space: any kernel will do.
		if opts.CgroupFilter() && !opts.ListOnly && !hasMember(kspec, "cgroup", "ancestors") {
			return nil, fmt.Errorf("--cgroup and --container need Linux 6.1 or later: the kernel's filter walks struct cgroup's ancestors[], which this kernel lacks")
		}
	} else {
		kspec = nil // loading says what is missing instead
	}
	if err := configure(spec, &opts); err != nil {
		return nil, err
	}

	t := &Tracer{opts: opts, spec: spec, kspec: kspec, cgroups: opts.cgroupResolver(), ownCgroups: opts.CgroupResolver == nil}
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
	cf := Feature{Name: "socket cgroups", Active: t.cgroups.FS().Mount != "", Detail: t.cgroups.FS().Describe()}
	if !cf.Active {
		cf.Without = "no cgroup paths or containers for sockets, no --cgroup or --container (the kernel's ids name cgroups of a hierarchy not mounted here)"
	} else if t.cgroups.Stats().ByHandle {
		cf.Detail += "; ids resolved by file handle"
	} else {
		cf.Detail += fmt.Sprintf("; ids resolved by reading the cgroup tree, at most every %v (no CAP_DAC_READ_SEARCH for file handles)", DefaultCgroupRetry)
	}
	t.features = append(t.features, cf)
	if opts.ListOnly {
		if t.snapTCP, err = t.loadOptional("snap_tcp"); err != nil {
			return nil, err
		}
		if t.snapFiles, err = t.loadOptional("snap_files"); err != nil {
			return nil, err
		}
		return t, nil
	}
	if t.setState, err = t.loadProgram("handle_set_state"); err != nil {
		return nil, fmt.Errorf("%w; handle_set_state needs %s (this kernel is %s)", err, programInfo("handle_set_state").Needs, kernelRelease())
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
		t.warnLoss(fmt.Sprintf("%s: %v", info.Without, err), err)
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
			t.warnLoss(fmt.Sprintf("%s: %v", info.Without, err), err)
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
	// The start snapshot's window opens before the programs attach: a
	// socket they first see in the middle of its life from now until the
	// snapshot ends existed before tracing, and they seed it themselves
	// (bpf/snapshot.h). Snapshot closes the window when it ends.
	if t.snapTCP != nil {
		if err := t.vars.SnapSeed.Set(uint8(1)); err != nil {
			return fmt.Errorf("opening the start snapshot's window: %w", err)
		}
	}
	if err := t.attachSetState(); err != nil {
		return err
	}
	t.attachAccept()
	t.attachResets()
	t.startWatch()
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
		t.warnLoss(fmt.Sprintf("%s: %v", info.Without, err), err)
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
	netns := uint8(0)
	if len(o.Netns) > 0 {
		netns = 1
	}
	for _, set := range []struct {
		v   *ebpf.VariableSpec
		val any
	}{
		{s.FilterFamily, uint16(o.Family)},
		{s.FilterPorts, uint8(o.KindsInUse())},
		{s.FilterPids, pids},
		{s.FilterStates, o.StateMask()},
		{s.FilterNetns, netns},
		{s.FilterCgroups, uint8(o.cgroupSlots())},
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
	s.NetnsFilter.MaxEntries = uint32(max(1, len(o.Netns)))
	s.CgroupFilter.MaxEntries = uint32(max(1, o.cgroupSlots()))
	s.CgroupCounts.MaxEntries = uint32(o.MaxCgroups)
	if o.Mode&ModeAggregate == 0 {
		// Nothing is counted: keep the aggregation maps minimal.
		s.PortCounts.MaxEntries = 1
		s.PidCounts.MaxEntries = 1
		s.CgroupCounts.MaxEntries = 1
	}
	return configureTotals(&s, o)
}

// cgroupSlots is the size of the kernel's cgroup filter: the filter's
// cgroups, or every slot when --container may add cgroups later.
func (o *Options) cgroupSlots() int {
	if len(o.Containers) > 0 {
		return model.MaxCgroupWants
	}
	return len(o.Cgroups)
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
	for _, ns := range t.opts.Netns {
		if err := t.maps.NetnsFilter.Put(ns, uint8(1)); err != nil {
			return fmt.Errorf("filling the network namespace filter: %w", err)
		}
	}
	wants := t.opts.Cgroups
	if len(t.opts.Containers) > 0 {
		// The kernel takes the containers' own cgroups (inside the
		// --cgroup subtrees): a subtree each.
		t.watch = &ContainerWatch{t: t, fs: t.cgroups.FS(), args: slices.Clone(t.opts.Containers), within: t.opts.Cgroups}
		var none []string
		var err error
		if wants, none, err = t.watch.find(); err != nil {
			return err
		}
		for _, c := range none {
			again := "tcpstate does not look again (CgroupRescan < 0)"
			if t.opts.CgroupRescan >= 0 {
				again = fmt.Sprintf("tcpstate looks again every %v and follows it from when it appears", t.opts.CgroupRescan)
			}
			t.opts.Info(fmt.Sprintf("--container %s: no cgroup names it now; %s", c, again))
		}
	}
	t.cgroupSlots = make([]model.CgroupWant, t.opts.cgroupSlots())
	if len(wants) > len(t.cgroupSlots) {
		return fmt.Errorf("the cgroup filter takes %d cgroups, and %d are wanted", len(t.cgroupSlots), len(wants))
	}
	for i := range t.cgroupSlots {
		if i < len(wants) {
			t.cgroupSlots[i] = wants[i]
		}
		if err := t.putCgroupSlot(uint32(i), t.cgroupSlots[i], 0, true); err != nil {
			return err
		}
	}
	return nil
}

// cgroupWant is struct cgroup_want (bpf/maps.h); unusedLevel marks a slot
// that matches nothing.
type cgroupWant struct {
	ID    uint64
	Level uint32
	Gen   uint32
}

const unusedLevel = ^uint32(0)

// putCgroupSlot writes one slot of the kernel's cgroup filter. A BPF
// program may read the slot while it changes, and an array update is a
// plain copy: so the slot is first made unused, then given its cgroup and
// generation while still unused, then made used, and a program that reads
// it half-way sees an unused slot or an old or new whole one.
func (t *Tracer) putCgroupSlot(i uint32, w model.CgroupWant, gen uint32, fresh bool) error {
	steps := []cgroupWant{{ID: w.ID, Level: unusedLevel, Gen: gen}}
	if !fresh {
		var cur cgroupWant
		if err := t.maps.CgroupFilter.Lookup(i, &cur); err != nil {
			return fmt.Errorf("reading the cgroup filter: %w", err)
		}
		cur.Level = unusedLevel
		steps = append([]cgroupWant{cur}, steps...)
	}
	if w.ID != 0 {
		steps = append(steps, cgroupWant{ID: w.ID, Level: w.Level, Gen: gen})
	}
	for _, v := range steps {
		if err := t.maps.CgroupFilter.Put(i, v); err != nil {
			return fmt.Errorf("filling the cgroup filter: %w", err)
		}
	}
	return nil
}

// maxCgroupGen is the highest generation the kernel keeps per socket (a u16
// in struct sock_state): past it, sockets born before a cgroup is added may
// match it.
const maxCgroupGen = 0xffff

// AddCgroups adds cgroups to the kernel's cgroup filter while tracing runs
// (--container: a container that started, or restarted, since the
// filter was filled). They select only sockets born after this call, so
// that every socket traced is traced whole; the others of those cgroups
// are not traced. gone says which cgroups of the filter no longer exist,
// whose slots may be given to new ones when no slot is free. It returns
// the cgroups added; a full filter is an error, after adding what fits.
func (t *Tracer) AddCgroups(wants []model.CgroupWant, gone func(id uint64) bool) ([]model.CgroupWant, error) {
	t.cgroupMu.Lock()
	defer t.cgroupMu.Unlock()
	var added []model.CgroupWant
	gen := min(t.cgroupGen+1, maxCgroupGen)
	for _, w := range wants {
		if slices.ContainsFunc(t.cgroupSlots, func(s model.CgroupWant) bool { return s.ID == w.ID }) {
			continue
		}
		slot := slices.IndexFunc(t.cgroupSlots, func(s model.CgroupWant) bool { return s.ID == 0 })
		if slot < 0 && gone != nil {
			slot = slices.IndexFunc(t.cgroupSlots, func(s model.CgroupWant) bool { return gone(s.ID) })
		}
		if slot < 0 {
			return added, fmt.Errorf("the cgroup filter is full (%d cgroups): %s is not followed", len(t.cgroupSlots), w.Path)
		}
		fresh := t.cgroupSlots[slot].ID == 0
		if err := t.putCgroupSlot(uint32(slot), w, gen, fresh); err != nil {
			return added, err
		}
		t.cgroupSlots[slot] = w
		added = append(added, w)
	}
	if len(added) > 0 {
		// After the slots: a socket that sees the new generation sees
		// them (bpf/maps.h, cgroup_filter).
		if err := t.vars.CgroupGen.Set(gen); err != nil {
			return added, fmt.Errorf("raising the cgroup filter's generation: %w", err)
		}
		t.cgroupGen = gen
	}
	return added, nil
}

// ContainerWatch is the watch that follows Filter.Containers' cgroups
// (nil without containers).
func (t *Tracer) ContainerWatch() *ContainerWatch { return t.watch }

// startWatch rescans for the containers' cgroups every CgroupRescan while
// the programs are attached.
func (t *Tracer) startWatch() {
	if t.watch == nil || t.opts.CgroupRescan < 0 {
		return
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(t.opts.CgroupRescan)
		defer tick.Stop()
		failed := ""
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			added, err := t.watch.Scan()
			for _, w := range added {
				t.opts.Info(fmt.Sprintf("--container: following the new cgroup %s (its sockets created from now on)", w.Path))
			}
			if err != nil && err.Error() != failed {
				t.opts.Warn(fmt.Sprintf("--container: looking for the containers' cgroups again: %v", err))
			}
			failed = ""
			if err != nil {
				failed = err.Error() // said once, until it changes
			}
		}
	}()
	t.stopWatch = func() {
		close(done)
		<-stopped
	}
}

// CgroupSlots returns the cgroups in the kernel's filter now.
func (t *Tracer) CgroupSlots() []model.CgroupWant {
	t.cgroupMu.Lock()
	defer t.cgroupMu.Unlock()
	return slices.DeleteFunc(slices.Clone(t.cgroupSlots), func(w model.CgroupWant) bool { return w.ID == 0 })
}

// Cgroups is the tracer's cgroup resolver: what events' and sockets'
// cgroup ids name (nil on a host without cgroup2).
func (t *Tracer) Cgroups() *CgroupResolver { return t.cgroups }

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
		t.warnLoss(fmt.Sprintf("%s: %v", info.Without, err), err)
	}
	p, err := t.loadOptional("find_self")
	if err != nil {
		fail(err)
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

// ExactLoss reports whether every event's LossSeq includes the recursion
// misses (find_self ran): then a gap's window of counted loss is exact.
func (t *Tracer) ExactLoss() bool { return t.exactLoss }

// Rescuing says whether the rescue program runs (Options.RescueNested):
// without it, Counters.Rescued is 0 because nothing tried.
func (t *Tracer) Rescuing() bool { return t.rescue != nil }

// hasMember reports whether the kernel's struct name has a member called
// member.
func hasMember(spec *btf.Spec, name, member string) bool {
	var st *btf.Struct
	if spec.TypeByName(name, &st) != nil {
		return false
	}
	for _, m := range st.Members {
		if m.Name == member {
			return true
		}
	}
	return false
}
