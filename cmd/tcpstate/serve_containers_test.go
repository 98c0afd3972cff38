package main

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// fakeCgroups is a kernel per-cgroup map and a resolver: ids to counts,
// ids to paths, and the ids whose cgroup is gone.
type fakeCgroups struct {
	counts    map[uint64]model.Count
	uncounted uint64
	paths     map[uint64]string
	gone      map[uint64]bool
	taken     []uint64
}

func (f *fakeCgroups) ReadCgroupCounts(visit func(uint64, model.Count)) (uint64, error) {
	for _, id := range slices.Sorted(maps.Keys(f.counts)) {
		visit(id, f.counts[id])
	}
	return f.uncounted, nil
}

func (f *fakeCgroups) TakeCgroupCount(id uint64) (model.Count, bool, error) {
	c, ok := f.counts[id]
	delete(f.counts, id)
	f.taken = append(f.taken, id)
	return c, ok, nil
}

func (f *fakeCgroups) Lookup(id uint64) *model.CgroupInfo {
	p, ok := f.paths[id]
	if !ok {
		return nil
	}
	return model.NewCgroupInfo(p)
}

func (f *fakeCgroups) Alive(id uint64) bool { return !f.gone[id] }

func (f *fakeCgroups) add(id uint64, tr, op uint64) {
	c := f.counts[id]
	c.Transitions += tr
	c.Opened += op
	f.counts[id] = c
}

// scrapeContainers gathers only the container labels' metrics: series ->
// value.
func scrapeContainers(t *testing.T, reg *prometheus.Registry) (map[string]float64, string) {
	t.Helper()
	text := gatherText(t, reg)
	out := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, "tcpstate_container_") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, ok := metricValue(l, l[:i])
		if !ok {
			t.Fatalf("bad line %q", l)
		}
		out[l[:i]] = v
	}
	return out, text
}

type ctrCollector struct{ c *containerLabels }

func (c ctrCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }
func (c ctrCollector) Collect(ch chan<- prometheus.Metric) { c.c.collect(ch) }

func ctrSeries(metric, container, pod string) string {
	return metric + `{container="` + container + `",pod_uid="` + pod + `"}`
}

// The container labels' bookkeeping, against a fake kernel map: the
// labels each cgroup gets, the bound, the fixed values, the pruning of
// removed cgroups into their container's count, the retention, and every
// counter monotonic throughout.
func TestServeContainerLabels(t *testing.T) {
	const (
		podmanID = "4c0b7b8a9e1f2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbc"
		dockerID = "d0cce7d0cce7d0cce7d0cce7d0cce7d0cce7d0cce7d0cce7d0cce7d0cce7d0cc"
		podUID   = "0d3c1a7e-5b6f-4c2d-9e8f-7a6b5c4d3e2f"
		crioID   = "c210c210c210c210c210c210c210c210c210c210c210c210c210c210c210c210"
	)
	const (
		idPodman, idPodmanInner, idDocker, idSession, idRoot, idUnresolved, idPod = 100, 101, 200, 300, 1, 400, 500
	)
	f := &fakeCgroups{counts: map[uint64]model.Count{}, gone: map[uint64]bool{}, paths: map[uint64]string{
		idPodman:      "/machine.slice/libpod-" + podmanID + ".scope",
		idPodmanInner: "/machine.slice/libpod-" + podmanID + ".scope/container",
		idDocker:      "/system.slice/docker-" + dockerID + ".scope",
		idSession:     "/user.slice/user-0.slice/session-3.scope",
		idRoot:        "/",
		idPod:         "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(podUID, "-", "_") + ".slice/crio-" + crioID + ".scope",
	}}
	now := time.Unix(10000, 0)
	c := newContainerLabels(f, f, 2)
	c.now = func() time.Time { return now }
	reg := prometheus.NewRegistry()
	reg.MustRegister(ctrCollector{c})
	tr := func(name, pod string) string { return ctrSeries("tcpstate_container_transitions_total", name, pod) }
	op := func(name, pod string) string { return ctrSeries("tcpstate_container_sockets_opened_total", name, pod) }
	podman, docker, crio := "podman:"+podmanID[:12], "docker:"+dockerID[:12], "cri-o:"+crioID[:12]

	last := map[string]float64{}
	var texts []string
	scrape := func(step string, want map[string]float64, absent ...string) {
		t.Helper()
		got, text := scrapeContainers(t, reg)
		for s, v := range want {
			if g, ok := got[s]; !ok || g != v {
				t.Errorf("%s: %s = %v (present %v), want %v\n%s", step, s, g, ok, v, text)
			}
		}
		for _, s := range absent {
			if _, ok := got[s]; ok {
				t.Errorf("%s: %s present, want it gone", step, s)
			}
		}
		for s, v := range last {
			if g, ok := got[s]; ok && g < v && !strings.HasPrefix(s, "tcpstate_container_cgroups") && !strings.HasPrefix(s, "tcpstate_container_labels") {
				t.Errorf("%s: %s went down from %v to %v", step, s, v, g)
			}
		}
		last = got
		texts = append(texts, text)
	}

	// First sight: the podman container (both its cgroups) and docker take
	// the two slots in the map's order; the session and the root are the
	// host; the unresolved cgroup waits a scrape.
	f.add(idPodman, 5, 1)
	f.add(idPodmanInner, 7, 2)
	f.add(idDocker, 3, 1)
	f.add(idSession, 4, 1)
	f.add(idRoot, 2, 0)
	f.add(idUnresolved, 9, 1)
	f.uncounted = 11
	scrape("first", map[string]float64{
		tr(podman, ""): 12, op(podman, ""): 3,
		tr(docker, ""): 3, op(docker, ""): 1,
		tr("host", ""): 6, op("host", ""): 1,
		tr("unknown", ""): 0, tr("other", ""): 0,
		"tcpstate_container_uncounted_transitions_total": 11,
		"tcpstate_container_cgroups":                     6,
		"tcpstate_container_labels":                      2,
	})
	// A period later the unresolved cgroup is unknown; a third container
	// finds no slot: other.
	now = now.Add(2 * time.Second)
	f.add(idPod, 6, 2)
	scrape("second", map[string]float64{
		tr("unknown", ""): 9, op("unknown", ""): 1,
		tr("other", ""): 6, op("other", ""): 2,
		tr(podman, ""): 12,
	}, tr(crio, podUID))

	// The podman container stops: both cgroups gone. The first prune
	// finds them gone, the next (their counts unchanged) takes them out
	// of the kernel's map into the container's count.
	f.gone[idPodman], f.gone[idPodmanInner] = true, true
	f.add(idPodman, 1, 0) // its last transition
	now = now.Add(containerPruneEvery)
	scrape("gone once", map[string]float64{tr(podman, ""): 13})
	if len(f.taken) != 0 {
		t.Errorf("taken at the first prune that found them gone: %v", f.taken)
	}
	now = now.Add(containerPruneEvery)
	scrape("pruned", map[string]float64{tr(podman, ""): 13, op(podman, ""): 3, "tcpstate_container_cgroups": 5})
	if slices.Sort(f.taken); !slices.Equal(f.taken, []uint64{idPodman, idPodmanInner}) {
		t.Errorf("taken %v, want the podman container's two cgroups", f.taken)
	}
	if _, ok := f.counts[idPodman]; ok {
		t.Error("a pruned cgroup is still in the kernel's map")
	}
	// A cgroup that is gone but still counting is not taken.
	f.gone[idDocker] = true
	for range 3 {
		f.add(idDocker, 1, 0)
		now = now.Add(containerPruneEvery)
		scrape("docker gone, counting", nil)
	}
	if slices.Contains(f.taken, idDocker) {
		t.Error("a gone cgroup whose count changed between prunes was taken")
	}
	delete(f.gone, idDocker)

	// A late transition of a pruned cgroup: its container again.
	f.add(idPodmanInner, 1, 0)
	scrape("late", map[string]float64{tr(podman, ""): 14})

	// Past the retention with no cgroup left, the podman series go, and
	// the slot is free for the next container.
	f.gone[idPodmanInner] = true
	for range 2 {
		now = now.Add(containerPruneEvery)
		scrape("podman gone again", map[string]float64{tr(podman, ""): 14})
	}
	now = now.Add(containerRetention)
	scrape("retention over", map[string]float64{"tcpstate_container_labels": 1}, tr(podman, ""), op(podman, ""))
	const idNew = 600
	f.paths[idNew] = "/system.slice/nginx.service"
	f.add(idNew, 2, 1)
	scrape("a new service", map[string]float64{tr("systemd:nginx.service", ""): 2, "tcpstate_container_labels": 2})
	// The host's removed session: pruned into host, never dropped.
	f.gone[idSession] = true
	for range 2 {
		now = now.Add(containerPruneEvery)
		scrape("session gone", map[string]float64{tr("host", ""): 6})
	}
	now = now.Add(2 * containerRetention)
	scrape("host stays", map[string]float64{tr("host", ""): 6, tr("other", ""): 6, tr("unknown", ""): 9})
	if _, ok := f.counts[idSession]; ok {
		t.Error("the removed session's cgroup was not pruned")
	}
	// Last: it may skip the test where promtool is missing.
	promtoolCheckMetrics(t, texts[0])
	promtoolCheckMetrics(t, texts[len(texts)-1])
}

// A label value is valid UTF-8 and bounded, whatever a cgroup's name.
func TestContainerLabelFor(t *testing.T) {
	for _, c := range []struct {
		path, name, pod string
		ok              bool
	}{
		{"", "unknown", "", false},
		{"/", "host", "", true},
		{"/user.slice/user-0.slice/session-3.scope", "host", "", true},
		{"/system.slice/nginx.service", "systemd:nginx.service", "", true},
		{"/lxc.payload.a\xffb", "lxc:a\uFFFDb", "", true},
		{"/lxc.payload." + strings.Repeat("é", 100), "lxc:" + strings.Repeat("é", 62), "", true},
	} {
		var info *model.CgroupInfo
		if c.path != "" {
			info = model.NewCgroupInfo(c.path)
		}
		name, pod, ok := labelFor(info)
		if name != c.name || pod != c.pod || ok != c.ok {
			t.Errorf("%q: %q %q %v, want %q %q %v", c.path, name, pod, ok, c.name, c.pod, c.ok)
		}
		if len(name) > maxContainerLabel {
			t.Errorf("%q: label of %d bytes", c.path, len(name))
		}
	}
}

// On a host without cgroup2 --label-container is refused before anything
// is loaded, as --cgroup is: the host is at fault, exit status 1, one line.
func TestServeLabelContainerNoCgroup2(t *testing.T) {
	o := &serveOptions{listen: defaultServeListen, stuck: newStuckFlag(), snapEvery: defaultSnapshotEvery, model: model.DefaultModelName,
		containerMax: defaultLabelContainerMax, labelContainers: true,
		findCgroupFS: func() (tracer.CgroupFS, error) { return tracer.CgroupFS{V1: []string{"/sys/fs/cgroup/cpu"}}, nil }}
	err := runServe(context.Background(), o, io.Discard)
	var usage *usageError
	if err == nil || errors.As(err, &usage) || !errors.Is(err, tracer.ErrNoCgroup2) || !strings.HasPrefix(err.Error(), "--label-container: no cgroup2 file system is mounted") {
		t.Errorf("runServe: %v; want --label-container: %v, not a usage error", err, tracer.ErrNoCgroup2)
	}
}
