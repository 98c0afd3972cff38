// Package testnet is test support for tcpstate's privileged tests: a private
// network namespace per test, served by one locked OS thread; plain TCP
// sockets made with raw system calls on that thread (or in a helper child
// process that entered the same namespace, so that client and server have
// different owners); and the kernel's own record of the transitions, read
// from a private tracefs instance, to compare tcpstate's events against.
//
// Every socket belongs to the network namespace of the thread that called
// socket(2). Go's scheduler moves goroutines between threads, so the
// namespace thread is locked (runtime.LockOSThread) and never unlocked: when
// the namespace is closed its goroutine returns while still locked, and the
// runtime destroys the thread instead of handing a thread in a foreign
// namespace to other goroutines (if it happened to be the main thread, the
// runtime parks it for good instead: /proc/self/ns/net may then name a
// test's namespace; use /proc/thread-self).
//
// Start subprocesses with StartCmd or RunCmd, never cmd.Start: between fork
// and exec a child holds every socket of the test process, and a socket
// closed in that window would close later, in the child's name.
//
// Each namespace also owns a block of BlockSize TCP ports, reserved across
// test processes with a lock file (packages' test binaries run in
// parallel), and restricts its ephemeral ports to the upper half of that
// block: every port a test's sockets use is in the block, so the tracefs
// oracle, which sees every namespace, can select the test's transitions with
// a port filter (PortFilter), and tcpstate's events are selected exactly by
// netns inode.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Capabilities the privileged tests need: loading and attaching BPF
// programs (CAP_BPF, CAP_PERFMON), creating network namespaces
// (CAP_SYS_ADMIN) and configuring them (CAP_NET_ADMIN). Reading tracefs
// needs root's file permissions as well.
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// missingPrivileges names what this process lacks for the privileged tests.
func missingPrivileges() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "uid 0")
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return append(missing, "capget: "+err.Error())
	}
	for _, c := range []struct {
		n    uint
		name string
	}{{capBPF, "CAP_BPF"}, {capPerfmon, "CAP_PERFMON"}, {capNetAdmin, "CAP_NET_ADMIN"}, {capSysAdmin, "CAP_SYS_ADMIN"}} {
		if data[c.n/32].Effective&(1<<(c.n%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	return missing
}

// Privileged reports whether the process can run the privileged tests.
func Privileged() bool { return len(missingPrivileges()) == 0 }

// RequireRoot skips the test when the process lacks the privileges of the
// privileged tests; with CI=true in the environment a skip would hide
// missing coverage, so it fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	missing := missingPrivileges()
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): run go test -exec sudo ./... as a user, go test ./... as root (this process lacks %s)",
		strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this is a failure, not a skip")
	}
	t.Skip(msg)
}

// Port blocks: BlockSize ports from portBase on, below every usual
// ephemeral range (Linux's default starts at 32768).
const (
	BlockSize = 16
	// Ports below Block+ListenPorts are for listeners and explicit binds;
	// the rest of the block is the namespace's ephemeral range.
	ListenPorts = 8
	portBase    = 20000
	portBlocks  = (32768 - portBase) / BlockSize
)

// reservePorts locks one port block for the life of the test, across
// processes: the lock is an flock on a file per block, released by the
// kernel if the process dies.
func reservePorts(t testing.TB) uint16 {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "tcpstate-testnet-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testnet: reserving ports: %v", err)
	}
	start := rand.IntN(portBlocks)
	for i := range portBlocks {
		b := (start + i) % portBlocks
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("block-%d.lock", b)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatalf("testnet: reserving ports: %v", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() })
		return uint16(portBase + b*BlockSize)
	}
	t.Fatalf("testnet: all %d port blocks are in use", portBlocks)
	return 0
}

// NS is a private network namespace with lo up, and the locked OS thread
// that lives in it. Create it with New; it is removed when the test ends.
type NS struct {
	t      testing.TB
	reqs   chan func()
	quit   chan struct{}
	exited chan struct{}
	once   sync.Once

	inode uint32
	tid   int
	base  uint16

	mu  sync.Mutex
	fds map[int]bool // sockets made through NS methods and not closed yet
}

// New creates a network namespace for t, brings lo up, reserves a port
// block and makes its upper half the namespace's ephemeral port range. It
// calls RequireRoot first.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	// The block first: its lock is released last, after the namespace and
	// its sockets are gone.
	base := reservePorts(t)
	ns := &NS{
		base:   base,
		t:      t,
		reqs:   make(chan func()),
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
		fds:    map[int]bool{},
	}
	ready := make(chan error, 1)
	go ns.serve(ready)
	if err := <-ready; err != nil {
		t.Fatalf("testnet: creating a network namespace: %v", err)
	}
	t.Cleanup(ns.Remove)
	lo, hi := ns.EphemeralRange()
	if err := ns.SetSysctl("net.ipv4.ip_local_port_range", fmt.Sprintf("%d %d", lo, hi)); err != nil {
		t.Fatalf("testnet: %v", err)
	}
	return ns
}

// serve is the namespace thread. It never unlocks: see the package comment.
func (ns *NS) serve(ready chan<- error) {
	runtime.LockOSThread()
	defer close(ns.exited)
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		return
	}
	if err := linkUp("lo"); err != nil {
		ready <- err
		return
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		ready <- fmt.Errorf("stat /proc/thread-self/ns/net: %w", err)
		return
	}
	ns.inode = uint32(st.Ino)
	ns.tid = unix.Gettid()
	ready <- nil
	for {
		select {
		case f := <-ns.reqs:
			f()
		case <-ns.quit:
			return
		}
	}
}

// linkUp sets IFF_UP on an interface of the calling thread's namespace.
// Bringing lo up also gives it 127.0.0.1/8 and ::1.
func linkUp(name string) error { return setLink(name, true) }

// Remove closes the sockets the NS methods made and not closed yet (so
// close them with NS.Close, never behind its back), and
// ends the namespace thread (the namespace goes away with its last socket
// and thread). New registers it with t.Cleanup; calling it twice is fine.
func (ns *NS) Remove() {
	ns.once.Do(func() {
		ns.mu.Lock()
		for fd := range ns.fds {
			closeFD(fd)
		}
		ns.fds = nil
		ns.mu.Unlock()
		close(ns.quit)
		<-ns.exited
	})
}

// Do runs f on the namespace thread and returns its error. A panic in f is
// returned as an error with its stack.
func (ns *NS) Do(f func() error) error {
	done := make(chan error, 1)
	run := func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic on the namespace thread: %v\n%s", r, debug.Stack())
			}
		}()
		done <- f()
	}
	select {
	case ns.reqs <- run:
	case <-ns.exited:
		return fmt.Errorf("testnet: the namespace is closed")
	}
	return <-done
}

// Inode is the namespace's inode number, as tcpstate's events carry it
// (model.Event.Netns) and as stat(2) of /proc/PID/ns/net reports it.
func (ns *NS) Inode() uint32 { return ns.inode }

// Path names the namespace while it exists: the namespace thread's
// /proc/PID/task/TID/ns/net.
func (ns *NS) Path() string {
	return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), ns.tid)
}

// Port returns the i-th listening port of the namespace's block (i <
// ListenPorts). No other test using testnet (in any process) has the same
// block while this one runs; other programs may still use its ports in
// their own namespaces (a load generator's wide ephemeral range): select
// tcpstate's events by Inode, the oracle's with PortFilter.
func (ns *NS) Port(i int) uint16 {
	if i < 0 || i >= ListenPorts {
		panic(fmt.Sprintf("testnet: port index %d out of range [0, %d)", i, ListenPorts))
	}
	return ns.base + uint16(i)
}

// PortRange is the namespace's whole port block, listening and ephemeral.
func (ns *NS) PortRange() (lo, hi uint16) { return ns.base, ns.base + BlockSize - 1 }

// EphemeralRange is the namespace's net.ipv4.ip_local_port_range.
func (ns *NS) EphemeralRange() (lo, hi uint16) {
	return ns.base + ListenPorts, ns.base + BlockSize - 1
}

// Addr returns the loopback address of the family (4 or 6) with a port.
func Addr(family int, port uint16) netip.AddrPort {
	if family == 6 {
		return netip.AddrPortFrom(netip.IPv6Loopback(), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
}

// sysctlPath maps "net.ipv4.tcp_fin_timeout" (or "net/ipv4/tcp_fin_timeout")
// to its /proc/sys file.
func sysctlPath(name string) string {
	if !strings.Contains(name, "/") {
		name = strings.ReplaceAll(name, ".", "/")
	}
	return filepath.Join("/proc/sys", name)
}

// SetSysctl writes a sysctl from the namespace thread: /proc/sys/net
// resolves to the namespace of the thread that opens it, so net.* settings
// apply to this namespace only (TestSysctlIsPerNamespace checks it).
func (ns *NS) SetSysctl(name, value string) error {
	return ns.Do(func() error {
		if err := os.WriteFile(sysctlPath(name), []byte(value), 0); err != nil {
			return fmt.Errorf("setting sysctl %s in the namespace: %w", name, err)
		}
		return nil
	})
}

// Sysctl reads a sysctl from the namespace thread.
func (ns *NS) Sysctl(name string) (string, error) {
	var v string
	err := ns.Do(func() error {
		b, err := os.ReadFile(sysctlPath(name))
		if err != nil {
			return fmt.Errorf("reading sysctl %s in the namespace: %w", name, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

// File opens the namespace (for unix.Setns, or to hand to a child process).
func (ns *NS) File() (*os.File, error) {
	var f *os.File
	err := ns.Do(func() error {
		var err error
		f, err = os.Open("/proc/thread-self/ns/net")
		return err
	})
	return f, err
}
