package main

// --cgroup, --container and --netns without a kernel: what they resolve to,
// what they refuse, and what a host with only cgroup v1 gets.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/tracer"
)

func applyFilters(t *testing.T, ff *filterFlags) (tracer.Options, error) {
	t.Helper()
	var o tracer.Options
	err := ff.apply(&o)
	return o, err
}

func TestNetnsFlag(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Skip(err)
	}
	own := uint32(st.Ino)
	// Two inodes that are not this process's own namespace (on a freshly
	// booted guest that is 4026531840, the first one the kernel hands out).
	a, b := own+1000, own+1001
	o, err := applyFilters(t, &filterFlags{netns: []string{strconv.Itoa(int(a)), fmt.Sprintf("net:[%d]", b), "/proc/self/ns/net", strconv.Itoa(int(a))}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{a, b, own}; len(o.Netns) != 3 || o.Netns[0] != want[0] || o.Netns[1] != want[1] || o.Netns[2] != want[2] {
		t.Errorf("--netns resolved to %v, want %v (each once)", o.Netns, want)
	}
	for _, bad := range []string{"/etc/passwd", "0", "/nonexistent/ns"} {
		_, err := applyFilters(t, &filterFlags{netns: []string{bad}})
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), `--netns "`+bad+`"`) {
			t.Errorf("--netns %s: %v, want a usage error naming it", bad, err)
		}
	}
}

func TestCgroupFlagOnThisHost(t *testing.T) {
	fs, err := tracer.FindCgroupFS()
	if err != nil || fs.Mount == "" {
		t.Skip("no cgroup2 mount")
	}
	var st unix.Stat_t
	if err := unix.Stat(fs.Mount, &st); err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{"/", fs.Mount, fs.Mount + "/"} {
		o, err := applyFilters(t, &filterFlags{cgroups: []string{arg}})
		if err != nil {
			t.Fatalf("--cgroup %s: %v", arg, err)
		}
		if len(o.Cgroups) != 1 || o.Cgroups[0].ID != st.Ino || o.Cgroups[0].Level != 0 || o.Cgroups[0].Path != "/" {
			t.Errorf("--cgroup %s resolved to %+v, want the root (id %d, depth 0)", arg, o.Cgroups, st.Ino)
		}
	}
	for _, bad := range []string{"/no-such-cgroup-here", filepath.Join(fs.Mount, "cgroup.procs")} {
		_, err := applyFilters(t, &filterFlags{cgroups: []string{bad}})
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), `--cgroup "`+bad+`"`) {
			t.Errorf("--cgroup %s: %v, want a usage error naming it", bad, err)
		}
	}
	// A container nothing names now is not an error: the tracer looks again.
	o, err := applyFilters(t, &filterFlags{containers: []string{"ffffeeeeddddcccc"}})
	if err != nil || len(o.Containers) != 1 || o.Containers[0] != "ffffeeeeddddcccc" {
		t.Errorf("--container with no cgroup now: %+v, %v", o.Containers, err)
	}
}

// A cgroup v1-only host: --cgroup and --container are refused, plainly,
// with exit status 1 (the host, not the flag, is at fault); the rest
// works.
func TestCgroupFlagsOnV1Host(t *testing.T) {
	v1 := func() (tracer.CgroupFS, error) {
		return tracer.CgroupFS{V1: []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"}}, nil
	}
	for _, ff := range []*filterFlags{
		{cgroups: []string{"/system.slice"}, findCgroupFS: v1},
		{containers: []string{"4f797c539e6c"}, findCgroupFS: v1},
	} {
		_, err := applyFilters(t, ff)
		if err == nil || exitCode(err) != exitError || !errors.Is(err, tracer.ErrNoCgroup2) {
			t.Errorf("%+v on a v1 host: %v (exit %d), want ErrNoCgroup2, exit 1", ff, err, exitCode(err))
			continue
		}
		for _, w := range []string{"cgroup v1-only host", "name nothing", "cannot filter by --cgroup or --container"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q does not say %q", err, w)
			}
		}
	}
	if _, err := applyFilters(t, &filterFlags{ports: []string{"80"}, findCgroupFS: v1}); err != nil {
		t.Errorf("other filters on a v1 host: %v", err)
	}
}

func TestContainerFlag(t *testing.T) {
	const a = "4c0b7b8a9e1f2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbc"
	const b = "4c0b7b8a00000000000000000000000000000000000000000000000000000001"
	dir := t.TempDir()
	for _, p := range []string{"system.slice/docker-" + a + ".scope", "machine.slice/libpod-" + b + ".scope/container", "system.slice/nginx.service"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake := func() (tracer.CgroupFS, error) { return tracer.CgroupFS{Mount: dir, Root: "/"}, nil }
	for _, c := range []struct {
		args []string
		want []string // Containers as the tracer gets them
		err  string
	}{
		{[]string{a[:12]}, []string{a}, ""}, // a prefix is pinned to the container it names
		{[]string{b[:10], "nginx.service"}, []string{b, "nginx.service"}, ""},
		{[]string{"9999aaaa"}, []string{"9999aaaa"}, ""}, // none now: kept, looked for again
		{[]string{a, a[:12]}, []string{a}, ""},
		{[]string{"4c0b7b8a"}, nil, "names more than one container"},
		{[]string{"x!"}, nil, `--container "x!": want a container id`},
		{[]string{"a b"}, nil, "want a container id"},
	} {
		o, err := applyFilters(t, &filterFlags{containers: c.args, findCgroupFS: fake})
		if c.err != "" {
			if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), c.err) {
				t.Errorf("--container %v: %v, want a usage error saying %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(o.Containers, ",") != strings.Join(c.want, ",") {
			t.Errorf("--container %v: %v, %v; want %v", c.args, o.Containers, err, c.want)
		}
		if len(o.Cgroups) != 0 {
			t.Errorf("--container %v alone set cgroups %+v", c.args, o.Cgroups)
		}
	}
}

// The flags are in trace's and stats' help, and reach the tracer's options
// through the commands.
func TestCgroupFlagsInCommands(t *testing.T) {
	for _, cmd := range []string{"trace", "stats"} {
		c, _, err := statsRoot().Find([]string{cmd})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"cgroup", "container", "netns"} {
			if c.Flags().Lookup(f) == nil {
				t.Errorf("%s has no --%s", cmd, f)
			}
		}
		for _, f := range []string{"cgroup", "container", "netns"} {
			msg := usageErr(t, cmd, "--"+f+"=")
			if !strings.Contains(msg, "--"+f+" needs a value") {
				t.Errorf("%s --%s=: %q", cmd, f, msg)
			}
		}
	}
	o := &traceOptions{stuck: newStuckFlag(), output: outTable, ringSize: tracer.DefaultRingSize}
	o.kernel.maxSockets = tracer.DefaultMaxSockets
	o.kernel.acceptHook = string(tracer.AcceptAuto)
	o.netns = []string{"4026531840"}
	topts, err := o.tracerOptions()
	if err != nil || len(topts.Netns) != 1 || topts.Netns[0] != 4026531840 || !topts.Sticky() {
		t.Errorf("trace --netns: %+v, %v", topts.Filter, err)
	}
}
