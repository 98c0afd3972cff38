package model

import (
	"fmt"
	"slices"
	"strings"
)

// PortKind says on which side of a socket a filtered port is wanted. The
// values are the kernel's (enum port_kind in bpf/common.h).
type PortKind uint8

// The port kinds; a port may be wanted on several sides at once.
const (
	PortEither PortKind = 0x1 // --port: local or remote
	PortLocal  PortKind = 0x2 // --lport
	PortRemote PortKind = 0x4 // --rport
)

// Filter selects sockets and transitions. It is the one definition of what
// the filter flags mean: the tracer fills the kernel's filter maps from it
// (the BPF program applies the same rules, bpf/filter.h), user space
// filters socket lists with it, and the tests check deliveries against it.
//
// Different filters AND; the values of one filter OR. The port, pid,
// family, network namespace and cgroup filters select sockets; a socket
// that matches once is followed for the rest of its life (sticky), so its
// transitions arrive whole. The state filter selects single transitions:
// those into or out of a listed state.
type Filter struct {
	Ports  []uint16 // local or remote port
	LPorts []uint16 // local port
	RPorts []uint16 // remote port
	Pids   []uint32 // owner process (tgid)
	Family Family   // 0: both
	States []State  // transitions into or out of these states
	// Netns selects sockets of these network namespaces (inode numbers).
	Netns []uint32
	// Cgroups selects sockets whose own cgroup (the one their creator was
	// in) is one of these or below one (--cgroup).
	Cgroups []CgroupWant
	// Containers selects sockets whose cgroup is, or is below, a cgroup
	// whose path names one of these containers (--container: an id or a
	// prefix of one, a systemd unit, a Kubernetes pod uid; see
	// Container.MatchesContainer). The tracer finds those cgroups, and
	// finds them again as containers start and restart.
	Containers []string
}

// CgroupFilter reports whether sockets are selected by their cgroup.
func (f *Filter) CgroupFilter() bool { return len(f.Cgroups) > 0 || len(f.Containers) > 0 }

// NamesContainer reports whether the cgroup path, or one of its
// ancestors, names one of the containers (a container id, a prefix of one,
// a systemd unit's name, or a Kubernetes pod's uid): --container's
// semantics in user space.
func NamesContainer(path string, containers []string) bool {
	for p := path; p != "" && p != "/"; p = p[:max(strings.LastIndexByte(p, '/'), 0)] {
		c := ParseCgroupPath(p)
		for _, arg := range containers {
			if c.MatchesContainer(arg) || c.PodUID != "" && c.PodUID == arg {
				return true
			}
		}
	}
	return false
}

// CgroupWant is one cgroup subtree a filter wants, as the kernel takes it
// (struct cgroup_want in bpf/maps.h): the cgroup's id and its depth, with
// its path for user space.
type CgroupWant struct {
	ID    uint64 // the cgroup v2 id: the inode of its directory
	Level uint32 // its depth: the number of path components below the root
	Path  string // from the root of the cgroup2 hierarchy ("/" for the root)
}

// Contains reports whether the cgroup with this id and path is w or below
// it. The kernel compares ids (the socket's ancestor at w's depth); user
// space, which learns a socket's cgroup as an id and resolves it to a
// path, compares the id and the path (a cgroup whose id is not resolved
// matches only by its id).
func (w CgroupWant) Contains(id uint64, path string) bool {
	if id != 0 && id == w.ID {
		return true
	}
	if path == "" || w.Path == "" {
		return false
	}
	return w.Path == "/" || path == w.Path || strings.HasPrefix(path, strings.TrimSuffix(w.Path, "/")+"/")
}

// Sticky reports whether the filter selects sockets (ports, owner,
// namespace, cgroup), which the kernel then follows for the rest of their
// life. Events made before a socket's port or owner is known are held
// back until it is decided; a namespace and a cgroup are known at the
// first event.
func (f *Filter) Sticky() bool {
	return len(f.Ports) > 0 || len(f.LPorts) > 0 || len(f.RPorts) > 0 || len(f.Pids) > 0 ||
		len(f.Netns) > 0 || f.CgroupFilter()
}

// Empty reports whether the filter lets everything through.
func (f *Filter) Empty() bool {
	return !f.Sticky() && f.Family == 0 && len(f.States) == 0
}

// PortKinds maps each filtered port to the sides it is wanted on, as the
// kernel's port_filter map holds them.
func (f *Filter) PortKinds() map[uint16]PortKind {
	kinds := map[uint16]PortKind{}
	for _, p := range f.Ports {
		kinds[p] |= PortEither
	}
	for _, p := range f.LPorts {
		kinds[p] |= PortLocal
	}
	for _, p := range f.RPorts {
		kinds[p] |= PortRemote
	}
	return kinds
}

// KindsInUse is the union of PortKinds' values: which port filters are set.
func (f *Filter) KindsInUse() PortKind {
	var k PortKind
	if len(f.Ports) > 0 {
		k |= PortEither
	}
	if len(f.LPorts) > 0 {
		k |= PortLocal
	}
	if len(f.RPorts) > 0 {
		k |= PortRemote
	}
	return k
}

// StateMask is the state filter as the kernel takes it: bit n set for state
// n; 0 lets every transition through.
func (f *Filter) StateMask() uint16 {
	var m uint16
	for _, s := range f.States {
		m |= 1 << s
	}
	return m
}

// Validate reports a filter the kernel cannot apply.
func (f *Filter) Validate() error {
	for _, s := range f.States {
		if !s.Valid() {
			return fmt.Errorf("invalid state %d", s)
		}
	}
	switch f.Family {
	case 0, AFInet, AFInet6:
	default:
		return fmt.Errorf("invalid address family %d", f.Family)
	}
	if len(f.Cgroups) > MaxCgroupWants {
		return fmt.Errorf("%d cgroups to filter on: the kernel takes at most %d", len(f.Cgroups), MaxCgroupWants)
	}
	for _, w := range f.Cgroups {
		if w.ID == 0 || w.Level > MaxCgroupLevel {
			return fmt.Errorf("invalid cgroup %q (id %d, depth %d)", w.Path, w.ID, w.Level)
		}
	}
	for _, n := range f.Netns {
		if n == 0 {
			return fmt.Errorf("invalid network namespace inode 0")
		}
	}
	return nil
}

// The kernel's bounds on the cgroup filter (bpf/filter.h, cgroup_is): the
// subtrees it checks per socket, and the deepest cgroup it looks at.
const (
	MaxCgroupWants = 16
	MaxCgroupLevel = 4095
)

// WantsTransition reports whether the state filter lets old->new through.
func (f *Filter) WantsTransition(old, nw State) bool {
	if len(f.States) == 0 {
		return true
	}
	return slices.Contains(f.States, old) || slices.Contains(f.States, nw)
}

// SocketFacts is what a socket filter looks at.
type SocketFacts struct {
	Family     Family
	Sport      uint16 // local port
	Dport      uint16 // remote port
	Pid        uint32 // owner
	OwnerKnown bool
	Netns      uint32 // network namespace inode (0: not known)
	CgroupID   uint64 // the socket's own cgroup v2 id (0: not known)
	CgroupPath string // its path, when resolved
}

// MatchSocket reports whether the socket filters (ports, pids, family,
// network namespace, cgroup) select a socket whose fields are all known. A
// socket whose owner is not known matches no pid filter; one whose
// namespace or cgroup is not known matches no namespace or cgroup filter.
func (f *Filter) MatchSocket(s SocketFacts) bool {
	if f.Family != 0 && s.Family != f.Family {
		return false
	}
	if len(f.Netns) > 0 && (s.Netns == 0 || !slices.Contains(f.Netns, s.Netns)) {
		return false
	}
	if len(f.Cgroups) > 0 && !slices.ContainsFunc(f.Cgroups, func(w CgroupWant) bool { return w.Contains(s.CgroupID, s.CgroupPath) }) {
		return false
	}
	if len(f.Containers) > 0 && !NamesContainer(s.CgroupPath, f.Containers) {
		return false
	}
	if len(f.Ports) > 0 && !slices.Contains(f.Ports, s.Sport) && !slices.Contains(f.Ports, s.Dport) {
		return false
	}
	if len(f.LPorts) > 0 && !slices.Contains(f.LPorts, s.Sport) {
		return false
	}
	if len(f.RPorts) > 0 && !slices.Contains(f.RPorts, s.Dport) {
		return false
	}
	if len(f.Pids) > 0 && (!s.OwnerKnown || !slices.Contains(f.Pids, s.Pid)) {
		return false
	}
	return true
}

// Facts returns what a socket filter looks at in a socket listing entry.
func (s *SocketInfo) Facts() SocketFacts {
	f := SocketFacts{Family: s.Family, Sport: s.Sport, Dport: s.Dport, Pid: s.Pid, OwnerKnown: s.OwnerKnown,
		Netns: s.Netns, CgroupID: s.CgroupID}
	if s.Cgroup != nil {
		f.CgroupPath = s.Cgroup.Path
	}
	return f
}

// FilterSockets returns the sockets f selects (the state filter selects
// transitions, not sockets, and does not apply).
func (f *Filter) FilterSockets(socks []SocketInfo) []SocketInfo {
	out := socks[:0:0]
	for _, s := range socks {
		if f.MatchSocket(s.Facts()) {
			out = append(out, s)
		}
	}
	return out
}
