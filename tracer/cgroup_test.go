package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
)

func TestParseMountinfo(t *testing.T) {
	for _, c := range []struct {
		name       string
		mountinfo  string
		mount      string
		root       string
		v1         int
		hybrid     bool
		describeAs string
	}{
		{"hybrid, as on the project's machines", `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`, "/sys/fs/cgroup/unified", "/", 3, true, "hybrid"},
		{"cgroup v2", `22 28 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`, "/sys/fs/cgroup", "/", 0, false, "cgroup v2 at /sys/fs/cgroup"},
		{"v1 only", `32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
`, "", "", 2, false, "cgroup v1 only"},
		{"a subtree bind-mounted first, the whole hierarchy later", `100 99 0:21 /kubepods.slice /host/cg rw - cgroup2 cgroup2 rw
22 28 0:21 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
`, "/sys/fs/cgroup", "/", 0, false, "cgroup v2"},
		{"only a subtree", `100 99 0:21 /kubepods.slice /host/cg\040x rw - cgroup2 cgroup2 rw
`, "/host/cg x", "/kubepods.slice", 0, false, "cgroup v2 at /host/cg x"},
		{"optional fields before the separator", `22 28 0:21 / /sys/fs/cgroup rw shared:9 master:2 - cgroup2 cgroup2 rw
`, "/sys/fs/cgroup", "/", 0, false, "cgroup v2"},
		{"nothing", "", "", "", 0, false, "no cgroup file system"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs, err := parseMountinfo(strings.NewReader(c.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			if fs.Mount != c.mount || fs.Root != c.root || len(fs.V1) != c.v1 || fs.Hybrid() != c.hybrid {
				t.Errorf("got %+v (hybrid %v), want mount %q root %q, %d v1 hierarchies, hybrid %v", fs, fs.Hybrid(), c.mount, c.root, c.v1, c.hybrid)
			}
			if d := fs.Describe(); !strings.HasPrefix(d, c.describeAs) {
				t.Errorf("Describe() = %q, want it to begin %q", d, c.describeAs)
			}
		})
	}
}

func TestCgroupFSPaths(t *testing.T) {
	fs := CgroupFS{Mount: "/sys/fs/cgroup/unified", Root: "/"}
	if got := fs.file("/system.slice/a.service"); got != "/sys/fs/cgroup/unified/system.slice/a.service" {
		t.Errorf("file = %q", got)
	}
	for in, want := range map[string]string{
		"/sys/fs/cgroup/unified":                 "/",
		"/sys/fs/cgroup/unified/system.slice/x/": "/system.slice/x",
	} {
		if got, ok := fs.path(in); !ok || got != want {
			t.Errorf("path(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := fs.path("/sys/fs/cgroup/unifiedx/a"); ok {
		t.Error("a sibling of the mount is not in it")
	}
	sub := CgroupFS{Mount: "/host/cg", Root: "/kubepods.slice"}
	if got := sub.file("/kubepods.slice/pod1"); got != "/host/cg/pod1" {
		t.Errorf("subtree mount: file = %q", got)
	}
	if got, _ := sub.path("/host/cg/pod1"); got != "/kubepods.slice/pod1" {
		t.Errorf("subtree mount: path = %q", got)
	}
	for p, n := range map[string]uint32{"/": 0, "": 0, "/a": 1, "/a/b/": 2, "a/b/c": 3} {
		if got := level(p); got != n {
			t.Errorf("level(%q) = %d, want %d", p, got, n)
		}
	}
	if _, err := (CgroupFS{}).ResolveCgroup("/x"); err != ErrNoCgroup2 {
		t.Errorf("ResolveCgroup without cgroup2: %v, want ErrNoCgroup2", err)
	}
	if _, err := (CgroupFS{}).Walk(); err != ErrNoCgroup2 {
		t.Errorf("Walk without cgroup2: %v, want ErrNoCgroup2", err)
	}
}

// fakeTree makes directories under a temporary "mount" and returns the
// file system, and each path's inode (a fake tree's ids, as cgroup2's
// are its directories' inodes).
func fakeTree(t testing.TB, paths ...string) (CgroupFS, map[string]uint64) {
	t.Helper()
	dir := t.TempDir()
	ids := map[string]uint64{}
	for _, p := range append([]string{"/"}, paths...) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(full, 0o755); err != nil {
			t.Fatal(err)
		}
		// Interface files, as cgroupfs has: not cgroups.
		if err := os.WriteFile(filepath.Join(full, "cgroup.procs"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range append([]string{"/"}, paths...) {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, p), &st); err != nil {
			t.Fatal(err)
		}
		ids[p] = st.Ino
		// Parents too.
		for q := filepath.Dir(p); q != "/" && q != "."; q = filepath.Dir(q) {
			if unix.Stat(filepath.Join(dir, q), &st) == nil {
				ids[q] = st.Ino
			}
		}
	}
	return CgroupFS{Mount: dir, Root: "/"}, ids
}

const (
	testID1 = "4c0b7b8a9e1f2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbc"
	testID2 = "4c0b7b8a00000000000000000000000000000000000000000000000000000001"
	testUID = "3a9f5c2e-7d41-4b8e-9c06-51f2e8a7d3b4"
)

func TestWalk(t *testing.T) {
	fs, ids := fakeTree(t, "/system.slice/docker-"+testID1+".scope", "/system.slice/nginx.service", "/user.slice")
	cgs, err := fs.Walk()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, cg := range cgs {
		paths = append(paths, cg.Path)
		if cg.ID != ids[cg.Path] {
			t.Errorf("%s: id %d, want its inode %d", cg.Path, cg.ID, ids[cg.Path])
		}
	}
	want := []string{"/", "/system.slice", "/user.slice", "/system.slice/docker-" + testID1 + ".scope", "/system.slice/nginx.service"}
	slices.Sort(paths[1:3])
	slices.Sort(paths[3:])
	if !slices.Equal(paths, want) {
		t.Errorf("walk found %v, want %v (parents first; interface files are not cgroups)", paths, want)
	}
}

func TestContainerCgroups(t *testing.T) {
	pod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(testUID, "-", "_") + ".slice"
	fs, ids := fakeTree(t,
		"/system.slice/docker-"+testID1+".scope/init.scope",
		"/machine.slice/libpod-"+testID2+".scope/container",
		"/system.slice/nginx.service",
		pod+"/cri-containerd-"+testID1[:60]+"0000.scope",
	)
	cgs, err := fs.Walk()
	if err != nil {
		t.Fatal(err)
	}
	get := func(args []string, within []model.CgroupWant) ([]string, error) {
		wants, _, err := ContainerCgroups(cgs, args, within)
		var out []string
		for _, w := range wants {
			if w.ID != ids[w.Path] || w.Level != level(w.Path) {
				t.Errorf("%s: id %d level %d, want %d and %d", w.Path, w.ID, w.Level, ids[w.Path], level(w.Path))
			}
			out = append(out, w.Path)
		}
		slices.Sort(out)
		return out, err
	}
	for _, c := range []struct {
		name   string
		args   []string
		within []model.CgroupWant
		want   []string
		err    string
	}{
		{"full id: the container's own cgroup, not its init.scope", []string{testID1}, nil, []string{"/system.slice/docker-" + testID1 + ".scope"}, ""},
		{"short id", []string{testID2[:12]}, nil, []string{"/machine.slice/libpod-" + testID2 + ".scope"}, ""},
		{"a service", []string{"nginx.service"}, nil, []string{"/system.slice/nginx.service"}, ""},
		{"a pod uid: the pod's cgroup", []string{testUID}, nil, []string{pod}, ""},
		{"two", []string{"nginx.service", testID2}, nil, []string{"/machine.slice/libpod-" + testID2 + ".scope", "/system.slice/nginx.service"}, ""},
		{"none", []string{"ffffffffffff"}, nil, nil, ""},
		{"an ambiguous prefix", []string{"4c0b7b8a"}, nil, nil, "more than one container"},
		{"within a --cgroup subtree", []string{"4c0b7b8a"}, []model.CgroupWant{{ID: ids["/machine.slice"], Path: "/machine.slice"}},
			[]string{"/machine.slice/libpod-" + testID2 + ".scope"}, ""},
		{"outside it", []string{"nginx.service"}, []model.CgroupWant{{ID: ids["/machine.slice"], Path: "/machine.slice"}}, nil, ""},
	} {
		got, err := get(c.args, c.within)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want one saying %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: ContainerCgroups(%v) = %v, %v; want %v", c.name, c.args, got, err, c.want)
		}
	}
}

// A resolver on a fake tree resolves by walking (a temporary directory has
// no kernfs handles), at most once a period, and keeps what it learnt.
func TestCgroupResolverWalks(t *testing.T) {
	fs, ids := fakeTree(t, "/system.slice/docker-"+testID1+".scope", "/a", "/b", "/c")
	// Six cgroups (the root and /system.slice too), room for six.
	r := NewCgroupResolver(fs, 6, time.Second)
	defer r.Close()
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	if r.Stats().ByHandle {
		t.Fatal("a temporary directory resolved ids by handle")
	}
	docker := "/system.slice/docker-" + testID1 + ".scope"
	info := r.Lookup(ids[docker])
	if info == nil || info.Path != docker || info.Container.ID != testID1 || info.Container.Runtime != model.RuntimeDocker {
		t.Fatalf("Lookup(docker) = %+v", info)
	}
	if st := r.Stats(); st.Walks != 1 {
		t.Errorf("walks %d, want 1", st.Walks)
	}
	// The walk filled the cache's free room: the others are hits now.
	if r.Lookup(ids["/a"]) == nil || r.Stats().Walks != 1 {
		t.Errorf("a cgroup the first walk saw was not remembered: %+v", r.Stats())
	}
	if r.Lookup(ids[docker]) != info {
		t.Error("a hit returns the same CgroupInfo")
	}
	// A new cgroup: not found until the period is over, then walked for.
	if err := os.Mkdir(filepath.Join(fs.Mount, "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(fs.Mount, "new"), &st); err != nil {
		t.Fatal(err)
	}
	if r.Lookup(st.Ino) != nil {
		t.Error("a miss within the period walked again")
	}
	now = now.Add(500 * time.Millisecond)
	if r.Lookup(st.Ino) != nil || r.Stats().Walks != 1 {
		t.Errorf("an unresolved id was looked for again before its retry: %+v", r.Stats())
	}
	now = now.Add(600 * time.Millisecond)
	if got := r.Lookup(st.Ino); got == nil || got.Path != "/new" {
		t.Errorf("after the period: %+v, want /new", got)
	}
	// Removed: its last known path stays.
	if err := os.Remove(filepath.Join(fs.Mount, "new")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	if got := r.Lookup(st.Ino); got == nil || got.Path != "/new" {
		t.Errorf("a removed cgroup: %+v, want its last known path", got)
	}
	// Bounded: 6 entries at most, the least recently used out first.
	if n := len(r.m); n > 6 {
		t.Errorf("%d entries, bound 6", n)
	}
	if r.Stats().Evicted == 0 {
		t.Errorf("nothing evicted: %+v", r.Stats())
	}
	if r.Lookup(0) != nil {
		t.Error("id 0 is no cgroup")
	}
}

func TestCgroupResolverLRU(t *testing.T) {
	r := NewCgroupResolver(CgroupFS{Mount: "/nonexistent"}, 3, time.Second)
	for id := uint64(1); id <= 3; id++ {
		r.insert(id, &model.CgroupInfo{Path: "/" + string(rune('a'+id))}, false)
	}
	r.Lookup(1) // 1 is the most recently used now
	r.insert(4, &model.CgroupInfo{Path: "/e"}, false)
	if _, ok := r.m[2]; ok {
		t.Error("2, the least recently used, should have been evicted")
	}
	for _, id := range []uint64{1, 3, 4} {
		if r.m[id] == nil {
			t.Errorf("%d evicted", id)
		}
	}
	// The list and the map agree.
	n := 0
	for e := r.head.next; e != &r.head; e = e.next {
		if r.m[e.id] != e {
			t.Errorf("list entry %d not in the map", e.id)
		}
		n++
	}
	if n != len(r.m) {
		t.Errorf("list has %d entries, map %d", n, len(r.m))
	}
	// Hits allocate nothing.
	if a := testing.AllocsPerRun(1000, func() { r.Lookup(3); r.Lookup(4) }); a != 0 {
		t.Errorf("%v allocations per hit", a)
	}
	var nilR *CgroupResolver
	if nilR.Lookup(1) != nil {
		t.Error("a nil resolver resolves nothing")
	}
	if (NewCgroupResolver(CgroupFS{}, 0, 0)).Lookup(5) != nil {
		t.Error("without cgroup2 nothing resolves")
	}
}

// The resolver's costs: a hit (every event of a known cgroup), a miss
// resolved by handle, and a walk of the tree (the fallback, at most once a
// second).
func BenchmarkCgroupLookup(b *testing.B) {
	b.Run("hit", func(b *testing.B) {
		fs, ids := fakeTree(b, "/system.slice/docker-"+testID1+".scope", "/a", "/b")
		r := NewCgroupResolver(fs, 0, 0)
		defer r.Close()
		keys := []uint64{ids["/system.slice/docker-"+testID1+".scope"], ids["/a"], ids["/b"]}
		for _, k := range keys {
			r.Lookup(k)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if r.Lookup(keys[i%len(keys)]) == nil {
				b.Fatal("miss")
			}
			i++
		}
	})
	real, err := FindCgroupFS()
	if err != nil || real.Mount == "" {
		b.Skip("no cgroup2 mount")
	}
	b.Run("miss by handle", func(b *testing.B) {
		fd, err := unix.Open(real.Mount, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			b.Skip(err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			b.Fatal(err)
		}
		if _, err := real.pathByID(fd, st.Ino); err != nil {
			b.Skipf("open_by_handle_at: %v (needs CAP_DAC_READ_SEARCH)", err)
		}
		for b.Loop() {
			if _, err := real.pathByID(fd, st.Ino); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("walk of this host's tree", func(b *testing.B) {
		n := 0
		for b.Loop() {
			cgs, err := real.Walk()
			if err != nil {
				b.Fatal(err)
			}
			n = len(cgs)
		}
		b.ReportMetric(float64(n), "cgroups")
	})
}

// A walk of a tree the size of a busy Kubernetes node's (1,000 cgroups)
// in an ordinary directory: what the walk itself costs per cgroup.
func BenchmarkCgroupWalk1000(b *testing.B) {
	var paths []string
	for pod := range 100 {
		for c := range 9 {
			paths = append(paths, fmt.Sprintf("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%d.slice/cri-containerd-%064d.scope", pod, c))
		}
	}
	fs, _ := fakeTree(b, paths...)
	n := 0
	for b.Loop() {
		cgs, err := fs.Walk()
		if err != nil {
			b.Fatal(err)
		}
		n = len(cgs)
	}
	b.ReportMetric(float64(n), "cgroups")
}

// Alive, where ids are resolved by walks: a cgroup is there while its
// path's inode is its id; removed, or replaced by another of the same
// path, it is gone; an id never seen is gone; id 0 and a host without
// cgroup2 have nothing known gone.
func TestCgroupResolverAlive(t *testing.T) {
	fs, ids := fakeTree(t, "/system.slice/nginx.service", "/a")
	r := NewCgroupResolver(fs, 0, time.Second)
	defer r.Close()
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	svc := ids["/system.slice/nginx.service"]
	if !r.Alive(svc) || !r.Alive(ids["/a"]) {
		t.Fatal("a cgroup that is there is not alive")
	}
	// The service restarted: the same path, a new cgroup (made while the
	// old directory is still there, so that the file system cannot give
	// it the old one's inode; cgroupfs never reuses an id).
	dir := filepath.Join(fs.Mount, "system.slice", "nginx.service")
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir + ".old"); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	if r.Alive(svc) || !r.Alive(st.Ino) {
		t.Errorf("restarted: the old id alive %v, the new %v; want false, true", r.Alive(svc), r.Alive(st.Ino))
	}
	if err := os.RemoveAll(filepath.Join(fs.Mount, "a")); err != nil {
		t.Fatal(err)
	}
	if r.Alive(ids["/a"]) {
		t.Error("a removed cgroup is alive")
	}
	now = now.Add(2 * time.Second)
	if r.Alive(st.Ino + 1000) {
		t.Error("an id no cgroup has is alive")
	}
	if !r.Alive(0) || !NewCgroupResolver(CgroupFS{}, 0, 0).Alive(svc) {
		t.Error("id 0, or a host without cgroup2: nothing is known gone")
	}
}
