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
// seen through the process's files. Namespaces of processes whose
// /proc/PID/ns/net this process may not look at (another user's, without
// CAP_SYS_PTRACE) are not found either: listNetns counts those processes.
func ListNetns() ([]Netns, error) {
	l, err := listNetns()
	return l.found, err
}

// netnsList is what listNetns found, and how many processes it could not
// ask.
type netnsList struct {
	found []Netns
	// denied counts the processes whose /proc/PID/ns/net gave EACCES or
	// EPERM: ptrace access mode read, which another user's process (or a
	// process with more capabilities) grants only with CAP_SYS_PTRACE.
	// With CAP_SYS_PTRACE, refusals that remain (a security module's: on
	// the project's machines even root may not look at PID 1's) are
	// counted in deniedAnyway: no capability would help.
	denied, deniedAnyway int
}

func listNetns() (netnsList, error) {
	seen := map[uint32]string{}
	add := func(path string) error {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return err
		}
		ino := uint32(st.Ino)
		if _, ok := seen[ino]; !ok {
			seen[ino] = path
		}
		return nil
	}
	var l netnsList
	ptrace := hasCap(capSysPtrace)
	add("/proc/thread-self/ns/net")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return l, fmt.Errorf("listing /proc: %w", err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if err := add(filepath.Join("/proc", e.Name(), "ns", "net")); errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			// Its threads answer the same.
			if ptrace {
				l.deniedAnyway++
			} else {
				l.denied++
			}
			continue
		}
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
	l.found = make([]Netns, 0, len(seen))
	for ino, p := range seen {
		l.found = append(l.found, Netns{Inode: ino, Path: p})
	}
	slices.SortFunc(l.found, func(a, b Netns) int { return int(int64(a.Inode) - int64(b.Inode)) })
	return l, nil
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
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return 0, fmt.Errorf("%s: %w (another user's /proc/PID/ns/net needs CAP_SYS_PTRACE)", arg, err)
		}
		return 0, fmt.Errorf("%s: %w", arg, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(arg, &fs); err == nil && fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a network namespace (an inode number, /run/netns/NAME or /proc/PID/ns/net)", arg)
	}
	return uint32(st.Ino), nil
}

// errNoSetns marks a namespace the tracer could not enter; errSetnsDenied
// one it was not allowed to (no CAP_SYS_ADMIN).
var (
	errNoSetns     = errors.New("cannot enter the namespace")
	errSetnsDenied = errors.New("entering another network namespace needs CAP_SYS_ADMIN")
)

// inNetns runs f on an OS thread that is in the namespace at path, and
// returns the thread to its own namespace afterwards. If it cannot return,
// the thread stays locked and the runtime drops it when f's goroutine ends.
// The tracer's own namespace is not entered: setns(2), even into the
// namespace a thread is in, needs CAP_SYS_ADMIN, and without it the
// tracer's own sockets are still its to read.
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
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%v (another user's /proc/PID/ns/net needs CAP_SYS_PTRACE)", err)
			}
			errc <- fmt.Errorf("%w %s: %v", errNoSetns, path, err)
			return
		}
		defer target.Close()
		if sameFile(own, target) {
			err := f()
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			if errors.Is(err, unix.EPERM) {
				errc <- fmt.Errorf("%w %s: %v (%w)", errNoSetns, path, err, errSetnsDenied)
				return
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

// sameFile reports whether two open files are the same inode of the same
// file system (two handles of one namespace).
func sameFile(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
