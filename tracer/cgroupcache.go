package tracer

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
)

// Defaults of the cgroup resolver.
const (
	// DefaultCgroupCache is how many cgroups the resolver remembers.
	DefaultCgroupCache = 4096
	// DefaultCgroupRetry is how long an id that could not be resolved
	// stays unresolved before the resolver looks again, and, where the
	// resolver has to walk the cgroup tree, the least time between walks.
	DefaultCgroupRetry = time.Second
	// defaultCgroupBudget bounds the ids resolved (by handle) per
	// DefaultCgroupRetry: past it, ids stay unresolved until the next
	// period, so a host whose live cgroups outnumber the cache cannot make
	// every event a lookup in the file system.
	defaultCgroupBudget = 1000
)

// CgroupResolver turns the cgroup ids of events and sockets into their
// paths and the containers the paths name. It remembers the last
// DefaultCgroupCache cgroups it was asked for (least recently used out
// first), so a cgroup removed since keeps its last known path; a hit costs
// a map lookup and no allocation. A miss resolves the id at once where the
// kernel lets it (open_by_handle_at with the id: needs
// CAP_DAC_READ_SEARCH), at most defaultCgroupBudget times per period, or
// else walks the whole cgroup tree, at most once per period; an id that
// cannot be resolved is looked at again after a period. Safe for
// concurrent use.
type CgroupResolver struct {
	mu      sync.Mutex
	fs      CgroupFS
	mountFD int // for open_by_handle_at; -1 when it cannot be used
	max     int
	period  time.Duration
	budget  int
	now     func() time.Time

	m          map[uint64]*cgEntry
	head       cgEntry // sentinel: head.next is the most recently used
	lastWalk   time.Time
	periodFrom time.Time
	spent      int // resolutions in the current period
	stats      CgroupStats
}

// CgroupStats counts what the resolver did.
type CgroupStats struct {
	Lookups    uint64 `json:"lookups"`
	Hits       uint64 `json:"hits"`
	Resolved   uint64 `json:"resolved"`   // ids found (by handle, or by a walk)
	Unresolved uint64 `json:"unresolved"` // lookups that found nothing (the cgroup was gone, or the budget spent)
	Walks      uint64 `json:"walks"`
	Evicted    uint64 `json:"evicted"`
	ByHandle   bool   `json:"by_handle"` // ids are resolved directly, not by walks
}

type cgEntry struct {
	id         uint64
	info       *model.CgroupInfo // nil: not resolved
	retry      time.Time         // when an unresolved entry may be looked at again
	prev, next *cgEntry
}

// NewCgroupResolver makes a resolver for fs (see CgroupResolver). size
// and period 0 take the defaults. With no cgroup2 mount it resolves
// nothing.
func NewCgroupResolver(fs CgroupFS, size int, period time.Duration) *CgroupResolver {
	r := &CgroupResolver{fs: fs, mountFD: -1, max: size, period: period, budget: defaultCgroupBudget,
		now: time.Now, m: map[uint64]*cgEntry{}}
	if r.max <= 0 {
		r.max = DefaultCgroupCache
	}
	if r.period <= 0 {
		r.period = DefaultCgroupRetry
	}
	r.head.next, r.head.prev = &r.head, &r.head
	if fs.Mount != "" {
		if fd, err := unix.Open(fs.Mount, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			r.mountFD = fd
			// Does the kernel resolve ids by handle, for this process?
			// The mount's root is always there to try with.
			var st unix.Stat_t
			if unix.Fstat(fd, &st) != nil {
				r.noHandles()
			} else if _, err := fs.pathByID(fd, st.Ino); err != nil {
				r.noHandles()
			}
		}
	}
	r.stats.ByHandle = r.mountFD >= 0
	return r
}

func (r *CgroupResolver) noHandles() {
	if r.mountFD >= 0 {
		unix.Close(r.mountFD)
	}
	r.mountFD = -1
}

// Close releases the mount's descriptor.
func (r *CgroupResolver) Close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.noHandles()
}

// FS is the cgroup2 file system the resolver reads.
func (r *CgroupResolver) FS() CgroupFS { return r.fs }

// Stats returns what the resolver did so far.
func (r *CgroupResolver) Stats() CgroupStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Lookup returns what the cgroup id resolves to, nil for 0, on a host
// without cgroup2, and for an id not resolved (yet). The result is shared:
// never modify it.
func (r *CgroupResolver) Lookup(id uint64) *model.CgroupInfo {
	if r == nil || id == 0 || r.fs.Mount == "" {
		return nil
	}
	r.mu.Lock()
	r.stats.Lookups++
	e := r.m[id]
	if e != nil && e.info != nil {
		r.stats.Hits++
		r.touch(e)
		r.mu.Unlock()
		return e.info
	}
	info := r.miss(id, e)
	r.mu.Unlock()
	return info
}

// Alive reports whether the cgroup with this id is there now (not
// removed): by its handle where the kernel resolves them, else by the
// inode of its path, resolved as Lookup does (at most one walk of the
// tree per period). An id that cannot be resolved is taken as gone; on a
// host without cgroup2, and for id 0, nothing is known to be gone (true).
func (r *CgroupResolver) Alive(id uint64) bool {
	if r == nil || id == 0 || r.fs.Mount == "" {
		return true
	}
	r.mu.Lock()
	byHandle := r.mountFD >= 0
	var err error
	if byHandle {
		_, err = r.fs.pathByID(r.mountFD, id)
	}
	r.mu.Unlock()
	switch {
	case !byHandle || handleUnsupported(err):
		// Resolve the path, below.
	case err == nil:
		return true
	case errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT):
		return false
	default:
		return true // cannot tell
	}
	info := r.Lookup(id)
	if info == nil || info.Path == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(r.fs.file(info.Path), &st); err != nil {
		return !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR)
	}
	return st.Ino == id
}

// touch makes e the most recently used.
func (r *CgroupResolver) touch(e *cgEntry) {
	if r.head.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.next, e.prev = r.head.next, &r.head
	r.head.next.prev = e
	r.head.next = e
}

// insert adds an entry for id, the most recently used (or, cold, the
// least), evicting the least recently used past the bound.
func (r *CgroupResolver) insert(id uint64, info *model.CgroupInfo, cold bool) *cgEntry {
	e := &cgEntry{id: id, info: info}
	if cold {
		e.prev, e.next = r.head.prev, &r.head
		r.head.prev.next = e
		r.head.prev = e
	} else {
		e.next, e.prev = r.head.next, &r.head
		r.head.next.prev = e
		r.head.next = e
	}
	r.m[id] = e
	for len(r.m) > r.max {
		old := r.head.prev
		old.prev.next, r.head.prev = &r.head, old.prev
		delete(r.m, old.id)
		r.stats.Evicted++
	}
	return e
}

// miss resolves id (e: its unresolved entry, if any), within the bounds.
func (r *CgroupResolver) miss(id uint64, e *cgEntry) *model.CgroupInfo {
	now := r.now()
	if e != nil && now.Before(e.retry) {
		r.touch(e)
		r.stats.Unresolved++
		return nil
	}
	if now.Sub(r.periodFrom) >= r.period {
		r.periodFrom, r.spent = now, 0
	}
	var info *model.CgroupInfo
	if r.mountFD >= 0 && r.spent < r.budget {
		r.spent++
		path, err := r.fs.pathByID(r.mountFD, id)
		switch {
		case err == nil:
			info = newCgroupInfo(path)
		case handleUnsupported(err):
			r.noHandles() // not for this process after all: walk from now on
			r.stats.ByHandle = false
		}
	}
	if info == nil && r.mountFD < 0 && now.Sub(r.lastWalk) >= r.period {
		info = r.walk(id, now)
	}
	if info == nil {
		r.stats.Unresolved++
		if e == nil {
			e = r.insert(id, nil, false)
		} else {
			r.touch(e)
		}
		e.retry = now.Add(r.period)
		return nil
	}
	r.stats.Resolved++
	if e != nil {
		e.info = info
		r.touch(e)
	} else {
		r.insert(id, info, false)
	}
	return info
}

// walk reads the whole tree once and returns id's info. The other cgroups
// it finds fill the cache's free room (as the least recently used) and
// resolve entries waiting for a retry: a walk is the expensive way, done
// at most once a period.
func (r *CgroupResolver) walk(id uint64, now time.Time) *model.CgroupInfo {
	r.lastWalk = now
	r.stats.Walks++
	cgs, err := r.fs.Walk()
	if err != nil {
		return nil
	}
	var found *model.CgroupInfo
	for _, cg := range cgs {
		if cg.ID == id {
			found = newCgroupInfo(cg.Path)
			continue
		}
		if e := r.m[cg.ID]; e != nil {
			if e.info == nil {
				e.info = newCgroupInfo(cg.Path)
				r.stats.Resolved++
			}
		} else if len(r.m) < r.max-1 {
			r.insert(cg.ID, newCgroupInfo(cg.Path), true)
		}
	}
	return found
}

func newCgroupInfo(path string) *model.CgroupInfo { return model.NewCgroupInfo(path) }
