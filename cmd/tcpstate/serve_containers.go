package main

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// serve --label-container: the kernel's counts per socket cgroup
// (cgroup_counts, the map stats reads) exported by container.
//
// The container label is what trace -o wide's CGROUP column shows for a
// container: RUNTIME:ID with the id's first 12 hex digits
// ("podman:4f797c539e6c", "containerd:...", "systemd:nginx.service" for a
// service, "pod:UID" for a pod's own cgroup; model.Container.Label). Three
// values are not containers, and have no colon, so no container takes
// them:
//
//	host     a cgroup that names no container or service (a login session,
//	         the root cgroup: the host's own processes, kernel sockets)
//	unknown  a cgroup that could not be resolved: removed before a scrape
//	         named it, or none recorded (id 0: Linux before 5.15)
//	other    the containers past --label-container-max
//
// Bounded: at most max container values, each given at first sight and
// kept; "other" takes the rest. The kernel's map is bounded too
// (tracer.DefaultMaxCgroups cgroups); what does not fit is counted in
// tcpstate_container_uncounted_transitions_total. So that it does not fill
// with removed cgroups over weeks, each scrape (at most every
// containerPruneEvery) takes out the entries of cgroups that are gone and
// stopped changing, and adds them to their container's count kept here:
// every series stays monotonic. A container none of whose cgroups is left
// is kept containerRetention, then its series are dropped and its slot is
// free again (the fixed values are never dropped). A transition of a
// pruned cgroup's socket that outlived it makes its entry again: it
// counts under the container it had, or, that one dropped, under a new
// series of the container's name (its counter starts again from 0).
const (
	defaultLabelContainerMax = 256
	containerPruneEvery      = 30 * time.Second
	containerRetention       = 10 * time.Minute
	// containerTombstones bounds the pruned cgroups remembered, so that
	// a late transition of one (a socket that outlived its cgroup) counts
	// under its container again.
	containerTombstones = 4096
	// maxContainerLabel bounds a label value's bytes (an LXC container's
	// name is whatever its creator chose).
	maxContainerLabel = 128
)

// The label values that are not containers.
const (
	containerHost    = "host"
	containerUnknown = "unknown"
	containerOther   = "other"
)

// containerSource is what the container labels read: the tracer, or a
// fake in tests.
type containerSource interface {
	ReadCgroupCounts(visit func(id uint64, c model.Count)) (uint64, error)
	TakeCgroupCount(id uint64) (model.Count, bool, error)
}

// cgroupNamer names cgroup ids: the tracer's CgroupResolver.
type cgroupNamer interface {
	Lookup(id uint64) *model.CgroupInfo
	Alive(id uint64) bool
}

// ctrLabel is one container label value and what it counted.
type ctrLabel struct {
	name, podUID string
	base         model.Count // of its cgroups taken out of the kernel's map
	live         int         // its cgroups in the kernel's map
	idleSince    time.Time   // when live fell to 0
	fixed        bool        // host, unknown, other: never dropped
	dropped      bool
}

// ctrCgroup is one cgroup of the kernel's map.
type ctrCgroup struct {
	label   *ctrLabel
	cur     model.Count // the kernel's count at the last reading
	checked model.Count // at the last prune that found it gone
	gone    bool        // found gone at the last prune
}

type containerLabels struct {
	src   containerSource
	names cgroupNamer
	max   int
	now   func() time.Time
	// How often the map is pruned, and how long a container without
	// cgroups keeps its series.
	pruneEvery, retention time.Duration

	cgroups   map[uint64]*ctrCgroup
	pending   map[uint64]time.Time // not resolved yet: since
	labels    map[string]*ctrLabel // the container values
	fixed     map[string]*ctrLabel // host, unknown, other
	tombs     map[uint64]*ctrLabel
	tombQ     []uint64
	lastPrune time.Time
	pruned    uint64 // cgroups taken out of the kernel's map, in all

	d struct{ transitions, opened, uncounted, cgroups, labels *prometheus.Desc }
}

func newContainerLabels(src containerSource, names cgroupNamer, max int) *containerLabels {
	c := &containerLabels{src: src, names: names, max: max, now: time.Now,
		pruneEvery: containerPruneEvery, retention: containerRetention,
		cgroups: map[uint64]*ctrCgroup{}, pending: map[uint64]time.Time{}, labels: map[string]*ctrLabel{},
		fixed: map[string]*ctrLabel{}, tombs: map[uint64]*ctrLabel{}}
	for _, n := range []string{containerHost, containerUnknown, containerOther} {
		c.fixed[n] = &ctrLabel{name: n, fixed: true}
	}
	lv := []string{"container", "pod_uid"}
	c.d.transitions = prometheus.NewDesc("tcpstate_container_transitions_total",
		"TCP state transitions by the container of the socket's own cgroup (its creator's; --label-container): RUNTIME:ID as trace -o wide's CGROUP column shows it, "+
			"host (a cgroup that names no container), unknown (not resolved: removed before a scrape named it, or none recorded), other (past --label-container-max); pod_uid for Kubernetes.",
		lv, nil)
	c.d.opened = prometheus.NewDesc("tcpstate_container_sockets_opened_total",
		"TCP sockets born (connect(), or a connection accepted: a listener's child; listeners are not counted) by the container of their cgroup, as tcpstate_container_transitions_total labels them.",
		lv, nil)
	c.d.uncounted = prometheus.NewDesc("tcpstate_container_uncounted_transitions_total",
		"Transitions not counted by container because the kernel's per-cgroup map was full (they are in tcpstate_transitions_total).", nil, nil)
	c.d.cgroups = prometheus.NewDesc("tcpstate_container_cgroups",
		"Cgroups the kernel counts by now: entries of its per-cgroup map (at most "+strconv.Itoa(tracer.DefaultMaxCgroups)+"; removed cgroups are taken out at scrapes).", nil, nil)
	c.d.labels = prometheus.NewDesc("tcpstate_container_labels",
		"Container label values in use now, at most --label-container-max (host, unknown and other not included).", nil, nil)
	return c
}

// labelFor names a cgroup at first sight: its container's label, host,
// or unknown (ok false: not resolved, and it may be yet).
func labelFor(info *model.CgroupInfo) (name, podUID string, ok bool) {
	if info == nil || info.Path == "" {
		return containerUnknown, "", false
	}
	l := info.Container.Label()
	if l == "" {
		return containerHost, "", true
	}
	l = strings.ToValidUTF8(l, "\uFFFD")
	for len(l) > maxContainerLabel {
		_, n := utf8.DecodeLastRuneInString(l)
		l = l[:len(l)-n]
	}
	return l, strings.ToValidUTF8(info.Container.PodUID, "\uFFFD"), true
}

// adopt gives a cgroup seen for the first time its label; false: not
// resolved yet, wait for the next scrape.
func (c *containerLabels) adopt(id uint64, now time.Time) (*ctrCgroup, bool) {
	var l *ctrLabel
	if t := c.tombs[id]; t != nil && !t.dropped {
		l = t
	} else {
		name, pod, ok := labelFor(c.names.Lookup(id))
		if !ok && id != 0 {
			// Give the resolver a period (it walks the tree at most
			// once a period) and a scrape before calling it unknown.
			since, waiting := c.pending[id]
			if !waiting {
				c.pending[id] = now
				return nil, false
			}
			if now.Sub(since) < tracer.DefaultCgroupRetry {
				return nil, false
			}
		}
		delete(c.pending, id)
		switch {
		case c.fixed[name] != nil:
			l = c.fixed[name]
		case c.labels[name] != nil:
			l = c.labels[name]
		case len(c.labels) < c.max:
			l = &ctrLabel{name: name, podUID: pod}
			c.labels[name] = l
		default:
			l = c.fixed[containerOther]
		}
	}
	l.live++
	l.idleSince = time.Time{}
	cg := &ctrCgroup{label: l}
	c.cgroups[id] = cg
	return cg, true
}

// collect reads the kernel's map, prunes it when due, and reports each
// label's counts. Called with the collector's lock held.
func (c *containerLabels) collect(ch chan<- prometheus.Metric) {
	now := c.now()
	seen := map[uint64]bool{}
	uncounted, err := c.src.ReadCgroupCounts(func(id uint64, n model.Count) {
		seen[id] = true
		cg := c.cgroups[id]
		if cg == nil {
			var ok bool
			if cg, ok = c.adopt(id, now); !ok {
				return
			}
		}
		cg.cur = n
	})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.d.transitions, err)
		return
	}
	for id := range c.pending {
		if !seen[id] {
			delete(c.pending, id)
		}
	}
	entries := len(seen)
	if now.Sub(c.lastPrune) >= c.pruneEvery {
		c.lastPrune = now
		entries -= c.prune(now)
	}
	sums := map[*ctrLabel]model.Count{}
	for _, cg := range c.cgroups {
		s := sums[cg.label]
		s.Transitions += cg.cur.Transitions
		s.Opened += cg.cur.Opened
		sums[cg.label] = s
	}
	emit := func(l *ctrLabel) {
		s := sums[l]
		ch <- prometheus.MustNewConstMetric(c.d.transitions, prometheus.CounterValue, float64(l.base.Transitions+s.Transitions), l.name, l.podUID)
		ch <- prometheus.MustNewConstMetric(c.d.opened, prometheus.CounterValue, float64(l.base.Opened+s.Opened), l.name, l.podUID)
	}
	for _, n := range []string{containerHost, containerUnknown, containerOther} {
		emit(c.fixed[n])
	}
	for _, l := range c.labels {
		emit(l)
	}
	ch <- prometheus.MustNewConstMetric(c.d.uncounted, prometheus.CounterValue, float64(uncounted))
	ch <- prometheus.MustNewConstMetric(c.d.cgroups, prometheus.GaugeValue, float64(entries))
	ch <- prometheus.MustNewConstMetric(c.d.labels, prometheus.GaugeValue, float64(len(c.labels)))
}

// prune takes the cgroups that are gone out of the kernel's map, once
// their counts stopped changing (found gone, and the same, at two prunes
// in a row: a transition that races the removal is then all but
// impossible), into their container's count here; and drops the
// containers left without cgroups for the retention time. It returns the
// entries taken out.
func (c *containerLabels) prune(now time.Time) (taken int) {
	for id, cg := range c.cgroups {
		if c.names.Alive(id) {
			cg.gone = false
			continue
		}
		if !cg.gone || cg.checked != cg.cur {
			cg.gone, cg.checked = true, cg.cur
			continue
		}
		n, ok, err := c.src.TakeCgroupCount(id)
		if err != nil {
			continue // try again at the next prune
		}
		if ok {
			taken++
		} else {
			n = cg.cur
		}
		l := cg.label
		l.base.Transitions += n.Transitions
		l.base.Opened += n.Opened
		l.live--
		if l.live == 0 {
			l.idleSince = now
		}
		delete(c.cgroups, id)
		c.pruned++
		c.tomb(id, l)
	}
	for name, l := range c.labels {
		if l.live == 0 && !l.idleSince.IsZero() && now.Sub(l.idleSince) >= c.retention {
			l.dropped = true
			delete(c.labels, name)
		}
	}
	return taken
}

// tomb remembers a pruned cgroup's label, the oldest forgotten first.
func (c *containerLabels) tomb(id uint64, l *ctrLabel) {
	if _, ok := c.tombs[id]; !ok {
		c.tombQ = append(c.tombQ, id)
	}
	c.tombs[id] = l
	for len(c.tombQ) > containerTombstones {
		delete(c.tombs, c.tombQ[0])
		c.tombQ = c.tombQ[1:]
	}
}
