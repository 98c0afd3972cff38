package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/tcpstate/tcpstate/model"
)

// ReadCgroupCounts visits the kernel's counts per socket cgroup (stats, and
// serve with Options.CountCgroups): each entry's transitions and sockets
// opened since the entry was made, and returns the transitions not counted
// per cgroup because the map was full. A map modified while it is read may
// yield a cgroup twice (the kernel's walk of a hash map): visit keeps the
// last.
func (t *Tracer) ReadCgroupCounts(visit func(id uint64, c model.Count)) (uncounted uint64, err error) {
	var (
		id uint64
		c  tcpstateCount
	)
	it := t.maps.CgroupCounts.Iterate()
	for it.Next(&id, &c) {
		visit(id, model.Count{Transitions: c.Transitions, Opened: c.Opened})
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("reading per-cgroup counts: %w", err)
	}
	per, err := t.allCounters()
	if err != nil {
		return 0, err
	}
	return per[tcpstateCounterCNT_CGROUP_OTHER], nil
}

// TakeCgroupCount removes a cgroup's entry from the kernel's per-cgroup
// map and returns what it held (false: there was none), so that the
// cgroups that are gone do not fill it: the next transition of one of
// their sockets makes the entry again, from 0. The entry is read and
// removed in one step (Linux 5.14; before it, read then removed, and a
// transition between the two is not counted). A transition whose program
// found the entry just before it was removed adds to the removed entry,
// or, the map's memory being reused, to the next cgroup's: the caller
// takes only entries that stopped changing, of cgroups that are gone.
func (t *Tracer) TakeCgroupCount(id uint64) (model.Count, bool, error) {
	var c tcpstateCount
	err := t.maps.CgroupCounts.LookupAndDelete(&id, &c)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		// Hash maps take lookup-and-delete from Linux 5.14.
		if err = t.maps.CgroupCounts.Lookup(&id, &c); err == nil {
			err = t.maps.CgroupCounts.Delete(&id)
		}
	}
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return model.Count{}, false, nil
	case err != nil:
		return model.Count{}, false, fmt.Errorf("removing cgroup %d's counts: %w", id, err)
	}
	return model.Count{Transitions: c.Transitions, Opened: c.Opened}, true, nil
}
