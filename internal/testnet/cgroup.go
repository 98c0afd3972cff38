package testnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroup is a cgroup v2 that a test made under the cgroup2 mount (on a
// hybrid host, /sys/fs/cgroup/unified), removed when the test ends. Put a
// process in it with Add: the sockets it creates from then on are the
// cgroup's (the kernel records the creator's cgroup in each socket).
type Cgroup struct {
	t     testing.TB
	Dir   string // its directory
	Path  string // from the root of the hierarchy, as /proc/PID/cgroup shows it
	ID    uint64 // its id: the inode of Dir, as the kernel records it for sockets
	Level uint32 // its depth below the root
	mount string
}

var cgroupSeq atomic.Int64

// cgroupPrefix names the tests' top cgroups: tcpstate-test-PID-N.
const cgroupPrefix = "tcpstate-test-"

// Cgroup2Mount finds the cgroup2 mount of the whole hierarchy in
// /proc/self/mountinfo ("" when there is none).
func Cgroup2Mount() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		for i, w := range f {
			if w == "-" && i+1 < len(f) && f[i+1] == "cgroup2" && len(f) > 4 && f[3] == "/" {
				return f[4]
			}
		}
	}
	return ""
}

// NewCgroup makes a top cgroup for the test, directly under the root of
// the hierarchy. It calls RequireRoot first; a host without cgroup2 fails
// the test.
func NewCgroup(t testing.TB) *Cgroup {
	t.Helper()
	RequireRoot(t)
	mount := Cgroup2Mount()
	if mount == "" {
		t.Fatal("testnet: no cgroup2 file system is mounted")
	}
	removeStaleCgroups(mount)
	name := fmt.Sprintf("%s%d-%d", cgroupPrefix, os.Getpid(), cgroupSeq.Add(1))
	return newCgroup(t, mount, "/", name)
}

// Sub makes a child cgroup (removed before its parent).
func (c *Cgroup) Sub(name string) *Cgroup {
	c.t.Helper()
	return newCgroup(c.t, c.mount, c.Path, name)
}

func newCgroup(t testing.TB, mount, parent, name string) *Cgroup {
	t.Helper()
	path := filepath.Join(parent, name)
	dir := filepath.Join(mount, path)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("testnet: making cgroup %s: %v", path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatalf("testnet: %v", err)
	}
	c := &Cgroup{t: t, Dir: dir, Path: path, ID: st.Ino, Level: uint32(strings.Count(path, "/")), mount: mount}
	t.Cleanup(c.remove)
	return c
}

// remove moves whatever is still in the cgroup to the root and removes
// it. Sockets do not keep a cgroup's directory: only tasks and children do.
func (c *Cgroup) remove() {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.Remove(c.Dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if errors.Is(err, unix.EBUSY) {
			for _, pid := range c.Procs() {
				os.WriteFile(filepath.Join(c.mount, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
			}
		}
		if time.Now().After(deadline) {
			c.t.Errorf("testnet: removing cgroup %s: %v", c.Path, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Add moves a process into the cgroup.
func (c *Cgroup) Add(pid int) error {
	if err := os.WriteFile(filepath.Join(c.Dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("moving process %d into cgroup %s: %w", pid, c.Path, err)
	}
	return nil
}

// Procs lists the processes in the cgroup.
func (c *Cgroup) Procs() []int {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "cgroup.procs"))
	var out []int
	for f := range strings.FieldsSeq(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// removeStaleCgroups removes the top cgroups of test processes that died
// without cleaning up (and the empty children left in them).
func removeStaleCgroups(mount string) {
	ents, err := os.ReadDir(mount)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); os.IsNotExist(err) {
			removeTree(filepath.Join(mount, e.Name()))
		}
	}
}

// removeTree removes a cgroup and its children, deepest first.
func removeTree(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}
