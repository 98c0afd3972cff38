package testnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A helper child process is the test binary itself, run again with
// -test.run=^TestHelperProcess$ and helperEnv set. Every package that uses
// StartProc needs this test function:
//
//	func TestHelperProcess(t *testing.T) { testnet.HelperProcess() }
//
// The child enters the namespace (its fd 3) on a locked thread and then
// serves socket requests, one line each on its stdin, answering one line
// each on its stdout. Further files handed to StartProc are its fds 4, 5, ...
const (
	helperEnv  = "TCPSTATE_TESTNET_HELPER"
	helperTest = "TestHelperProcess"
	nsFD       = 3
	// FirstExtraFD is the child's fd number of StartProc's first file.
	FirstExtraFD = 4
)

// Proc is a helper child process whose sockets live in a test's
// namespace: its sockets' owner is its own pid, not the test's.
type Proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     *os.File
	out    *os.File
	r      *bufio.Reader
	stderr *lockedBuffer
	mu     sync.Mutex
	once   sync.Once
	done   chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartProc starts a helper child process in the namespace. files become
// the child's fds FirstExtraFD, FirstExtraFD+1, ... (for example a
// listening socket, so that the child accepts from the test's listener).
// The child is stopped when the test ends; Stop stops it earlier.
func (ns *NS) StartProc(t testing.TB, files ...*os.File) *Proc {
	t.Helper()
	nsf, err := ns.File()
	if err != nil {
		t.Fatalf("testnet: opening the namespace: %v", err)
	}
	defer nsf.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	p := &Proc{t: t, in: inW, out: outR, r: bufio.NewReader(outR), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], "-test.run=^"+helperTest+"$", "-test.count=1")
	p.cmd.Env = append(os.Environ(), helperEnv+"=1")
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = inR, outW, p.stderr
	p.cmd.ExtraFiles = append([]*os.File{nsf}, files...)
	if err := StartCmd(p.cmd); err != nil {
		t.Fatalf("testnet: starting the helper process: %v", err)
	}
	inR.Close()
	outW.Close()
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(p.Stop)

	line, err := p.readLine(10 * time.Second)
	if err != nil {
		t.Fatalf("testnet: the helper process did not start: %v", err)
	}
	ino, ok := strings.CutPrefix(line, "ready ")
	if !ok || ino != strconv.FormatUint(uint64(ns.Inode()), 10) {
		t.Fatalf("testnet: the helper process said %q, want \"ready %d\" (its namespace inode)", line, ns.Inode())
	}
	return p
}

// Pid is the child's pid: the owner of its sockets.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stop ends the child (closing its stdin; killing it if it lingers) and
// waits for it. Its sockets still open are closed by its exit.
func (p *Proc) Stop() {
	p.once.Do(func() {
		p.in.Close()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		p.out.Close()
	})
}

func (p *Proc) readLine(timeout time.Duration) (string, error) {
	if err := p.out.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	line, err := p.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the helper's answer: %w (its stderr: %q)", err, p.stderr.String())
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// ProcError is a failed request in the helper; it unwraps to the errno.
type ProcError struct {
	Msg   string
	Errno unix.Errno
}

func (e *ProcError) Error() string { return "helper process: " + e.Msg }
func (e *ProcError) Unwrap() error { return e.Errno }

func (p *Proc) call(args ...string) (string, error) {
	return p.callTimeout(OpTimeout+5*time.Second, args...)
}

// callTimeout sends one request and waits at most timeout for its answer.
func (p *Proc) callTimeout(timeout time.Duration, args ...string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, strings.Join(args, " ")); err != nil {
		return "", fmt.Errorf("helper process: sending %v: %w", args, err)
	}
	line, err := p.readLine(timeout)
	if err != nil {
		return "", err
	}
	if res, ok := strings.CutPrefix(line, "ok"); ok {
		return strings.TrimSpace(res), nil
	}
	// "err ERRNO message"
	f := strings.SplitN(line, " ", 3)
	if len(f) == 3 && f[0] == "err" {
		n, _ := strconv.Atoi(f[1])
		return "", &ProcError{Msg: f[2], Errno: unix.Errno(n)}
	}
	return "", fmt.Errorf("helper process: unexpected answer %q", line)
}

func (p *Proc) callFD(args ...string) (int, error) {
	res, err := p.call(args...)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(res)
}

func itoa(n int) string { return strconv.Itoa(n) }

// Listen makes a listening socket in the child.
func (p *Proc) Listen(ap netip.AddrPort) (int, error) { return p.callFD("listen", ap.String()) }

// ListenBacklog makes a listening socket with its own accept backlog in the
// child.
func (p *Proc) ListenBacklog(ap netip.AddrPort, backlog int) (int, error) {
	return p.callFD("listen", ap.String(), itoa(backlog))
}

// BulkTimeout bounds one bulk request of a helper (ConnectMany,
// AcceptMany, ResetAll): a minute, Scaled.
var BulkTimeout = Scaled(60 * time.Second)

// ConnectMany makes n connections to remote in the child, one after the
// other, each from an autobound port and blocking until its handshake ends.
// The child keeps them among its bulk sockets, which only ResetAll and its
// exit close; the test never learns their fds. It stops at the first
// failure.
func (p *Proc) ConnectMany(remote netip.AddrPort, n int) error {
	_, err := p.callTimeout(BulkTimeout, "connectmany", remote.String(), itoa(n))
	return err
}

// AcceptMany accepts n connections on the child's listener lfd and keeps
// them among the child's bulk sockets.
func (p *Proc) AcceptMany(lfd, n int) error {
	_, err := p.callTimeout(BulkTimeout, "acceptmany", itoa(lfd), itoa(n))
	return err
}

// ResetAll sets SO_LINGER 0 on every bulk socket of the child and closes
// it: each connection is reset (ESTABLISHED->CLOSE here, and at its peer
// when the RST arrives). It returns how many it closed.
func (p *Proc) ResetAll() (int, error) {
	res, err := p.callTimeout(BulkTimeout, "resetall")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(res)
}

// Connect connects from an autobound port in the child.
func (p *Proc) Connect(remote netip.AddrPort) (int, error) {
	return p.callFD("connect", remote.String())
}

// ConnectFrom binds to local and connects in the child.
func (p *Proc) ConnectFrom(local, remote netip.AddrPort) (int, error) {
	return p.callFD("connectfrom", local.String(), remote.String())
}

// ConnectNonblock starts a non-blocking connect in the child.
func (p *Proc) ConnectNonblock(remote netip.AddrPort) (int, error) {
	return p.callFD("connectnb", remote.String())
}

// WaitConnected waits for a non-blocking connect in the child.
func (p *Proc) WaitConnected(fd int) error {
	_, err := p.call("waitconnected", itoa(fd))
	return err
}

// Accept accepts a connection in the child (lfd is a child fd).
func (p *Proc) Accept(lfd int) (int, error) { return p.callFD("accept", itoa(lfd)) }

// Write writes n bytes in the child.
func (p *Proc) Write(fd, n int) error { _, err := p.call("write", itoa(fd), itoa(n)); return err }

// ReadFull reads n bytes in the child.
func (p *Proc) ReadFull(fd, n int) error {
	_, err := p.call("readfull", itoa(fd), itoa(n))
	return err
}

// ReadEOF reads until the peer's FIN in the child.
func (p *Proc) ReadEOF(fd int) error { _, err := p.call("readeof", itoa(fd)); return err }

// Shutdown calls shutdown(2) in the child.
func (p *Proc) Shutdown(fd, how int) error {
	_, err := p.call("shutdown", itoa(fd), itoa(how))
	return err
}

// SetLinger0 sets SO_LINGER 0 in the child.
func (p *Proc) SetLinger0(fd int) error { _, err := p.call("linger0", itoa(fd)); return err }

// Close closes a socket in the child.
func (p *Proc) Close(fd int) error { _, err := p.call("close", itoa(fd)); return err }

// LocalAddr returns a child socket's local address.
func (p *Proc) LocalAddr(fd int) (netip.AddrPort, error) {
	res, err := p.call("localaddr", itoa(fd))
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.ParseAddrPort(res)
}

// HelperProcess is the helper child's main loop. Call it from a test named
// TestHelperProcess; in an ordinary test run it returns at once.
func HelperProcess() {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	// This goroutine keeps the thread: setns changes only the calling
	// thread's namespace. The process exits from here, so the thread is
	// never handed back.
	runtime.LockOSThread()
	if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
		fmt.Fprintf(os.Stderr, "setns: %v\n", err)
		os.Exit(2)
	}
	unix.Close(nsFD)
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		fmt.Fprintf(os.Stderr, "stat /proc/thread-self/ns/net: %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stdout, "ready %d\n", st.Ino)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		res, err := helperDo(strings.Fields(in.Text()))
		if err != nil {
			var errno unix.Errno
			errors.As(err, &errno)
			fmt.Fprintf(os.Stdout, "err %d %s\n", int(errno), strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Fprintf(os.Stdout, "ok %s\n", res)
	}
	os.Exit(0)
}

// bulk holds the helper's bulk sockets (ConnectMany, AcceptMany).
var bulk []int

func helperDo(args []string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("empty request")
	}
	ints := make([]int, 0, 2)
	aps := make([]netip.AddrPort, 0, 2)
	for _, a := range args[1:] {
		if n, err := strconv.Atoi(a); err == nil {
			ints = append(ints, n)
		} else if ap, err := netip.ParseAddrPort(a); err == nil {
			aps = append(aps, ap)
		} else {
			return "", fmt.Errorf("bad argument %q", a)
		}
	}
	fdRes := func(fd int, err error) (string, error) {
		if err != nil {
			return "", err
		}
		return itoa(fd), nil
	}
	need := func(ni, na int) error {
		if len(ints) != ni || len(aps) != na {
			return fmt.Errorf("%s: want %d numbers and %d addresses", args[0], ni, na)
		}
		return nil
	}
	var err error
	switch args[0] {
	case "listen":
		if len(ints) == 1 && len(aps) == 1 {
			return fdRes(ListenBacklog(aps[0], ints[0]))
		}
		if err = need(0, 1); err == nil {
			return fdRes(Listen(aps[0]))
		}
	case "connectmany":
		if err = need(1, 1); err == nil {
			for i := range ints[0] {
				fd, err := Connect(netip.AddrPort{}, aps[0])
				if err != nil {
					return "", fmt.Errorf("connection %d of %d: %w", i+1, ints[0], err)
				}
				bulk = append(bulk, fd)
			}
			return itoa(ints[0]), nil
		}
	case "acceptmany":
		if err = need(2, 0); err == nil {
			for i := range ints[1] {
				fd, err := Accept(ints[0])
				if err != nil {
					return "", fmt.Errorf("connection %d of %d: %w", i+1, ints[1], err)
				}
				bulk = append(bulk, fd)
			}
			return itoa(ints[1]), nil
		}
	case "resetall":
		if err = need(0, 0); err == nil {
			n := len(bulk)
			for len(bulk) > 0 {
				fd := bulk[len(bulk)-1]
				if err := SetLinger0(fd); err != nil {
					return "", err
				}
				if err := Close(fd); err != nil {
					return "", err
				}
				bulk = bulk[:len(bulk)-1]
			}
			return itoa(n), nil
		}
	case "connect":
		if err = need(0, 1); err == nil {
			return fdRes(Connect(netip.AddrPort{}, aps[0]))
		}
	case "connectfrom":
		if err = need(0, 2); err == nil {
			return fdRes(Connect(aps[0], aps[1]))
		}
	case "connectnb":
		if err = need(0, 1); err == nil {
			return fdRes(ConnectNonblock(aps[0]))
		}
	case "waitconnected":
		if err = need(1, 0); err == nil {
			err = WaitConnected(ints[0])
		}
	case "accept":
		if err = need(1, 0); err == nil {
			return fdRes(Accept(ints[0]))
		}
	case "write":
		if err = need(2, 0); err == nil {
			err = Write(ints[0], ints[1])
		}
	case "readfull":
		if err = need(2, 0); err == nil {
			err = ReadFull(ints[0], ints[1])
		}
	case "readeof":
		if err = need(1, 0); err == nil {
			err = ReadEOF(ints[0])
		}
	case "shutdown":
		if err = need(2, 0); err == nil {
			err = Shutdown(ints[0], ints[1])
		}
	case "linger0":
		if err = need(1, 0); err == nil {
			err = SetLinger0(ints[0])
		}
	case "close":
		if err = need(1, 0); err == nil {
			err = Close(ints[0])
		}
	case "localaddr":
		if err = need(1, 0); err == nil {
			var ap netip.AddrPort
			if ap, err = LocalAddr(ints[0]); err == nil {
				return ap.String(), nil
			}
		}
	default:
		err = fmt.Errorf("unknown request %q", args[0])
	}
	return "", err
}
