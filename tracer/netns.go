package tracer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Netns is one network namespace and a path that opens it.
type Netns struct {
	Inode uint32 `json:"inode"`
	Path  string `json:"path"` // /proc/PID/ns/net, /run/netns/NAME, or the tracer's own
}

// ListNetns finds the host's network namespaces: the tracer's own, every
// process's and thread's (/proc/*/task/*/ns/net) and the named ones (/run/netns, ip netns add),
// one path each, in inode order. A namespace no process lives in and
// nothing names cannot be found; its sockets that a process holds are still
// seen through the process's files.
func ListNetns() ([]Netns, error) {
	seen := map[uint32]string{}
	add := func(path string) {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			return
		}
		ino := uint32(st.Ino)
		if _, ok := seen[ino]; !ok {
			seen[ino] = path
		}
	}
	add("/proc/thread-self/ns/net")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		add(filepath.Join("/proc", e.Name(), "ns", "net"))
		// A thread may live in another namespace than its process (a Go
		// program that entered one on a locked thread, a CNI plugin).
		tasks, _ := os.ReadDir(filepath.Join("/proc", e.Name(), "task"))
		for _, task := range tasks {
			if task.Name() != e.Name() {
				add(filepath.Join("/proc", e.Name(), "task", task.Name(), "ns", "net"))
			}
		}
	}
	for _, dir := range []string{"/run/netns", "/var/run/netns"} {
		named, _ := os.ReadDir(dir)
		for _, e := range named {
			add(filepath.Join(dir, e.Name()))
		}
	}
	out := make([]Netns, 0, len(seen))
	for ino, p := range seen {
		out = append(out, Netns{Inode: ino, Path: p})
	}
	slices.SortFunc(out, func(a, b Netns) int { return int(int64(a.Inode) - int64(b.Inode)) })
	return out, nil
}

// ResolveNetns turns what a user gives for a namespace (an inode number, or
// a path such as /run/netns/NAME or /proc/PID/ns/net) into its inode.
func ResolveNetns(arg string) (uint32, error) {
	if n, err := strconv.ParseUint(arg, 10, 32); err == nil {
		return uint32(n), nil
	}
	if strings.HasPrefix(arg, "net:[") && strings.HasSuffix(arg, "]") {
		if n, err := strconv.ParseUint(arg[5:len(arg)-1], 10, 32); err == nil {
			return uint32(n), nil
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(arg, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", arg, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(arg, &fs); err == nil && fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a network namespace (an inode number, /run/netns/NAME or /proc/PID/ns/net)", arg)
	}
	return uint32(st.Ino), nil
}

// errNoSetns marks a namespace the tracer could not enter.
var errNoSetns = errors.New("cannot enter the namespace")

// inNetns runs f on an OS thread that has entered the namespace at path, and
// returns the thread to its own namespace afterwards. If it cannot return,
// the thread stays locked and the runtime drops it when f's goroutine ends.
func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("%w %s: %v", errNoSetns, path, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			if errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%v (entering another network namespace needs CAP_SYS_ADMIN)", err)
			}
			errc <- fmt.Errorf("%w %s: %v", errNoSetns, path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}
