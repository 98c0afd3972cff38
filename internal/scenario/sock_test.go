package scenario_test

// Socket steps of the scenarios. Sockets are made on the namespace thread
// (socket(2) puts a socket in the calling thread's namespace) through the
// NS methods, which also close them when the test ends; once made, a
// socket belongs to its namespace for good, so the other system calls here
// run on any thread. Every step fails the test on an error.

import (
	"errors"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

func (e *env) ok(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) fd(fd int, err error) int {
	e.t.Helper()
	e.ok(err)
	return fd
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func family(fam int) model.Family {
	if fam == 6 {
		return model.AFInet6
	}
	return model.AFInet
}

// addr is the namespace's loopback address of the family with port i of
// its block.
func (e *env) addr(fam, i int) netip.AddrPort { return testnet.Addr(fam, e.ns.Port(i)) }

// socket makes a plain TCP socket (not MPTCP) with the operation timeouts.
func (e *env) socket(fam int) int {
	e.t.Helper()
	return e.fd(e.ns.Socket(testnet.Addr(fam, 0)))
}

func (e *env) setInt(fd, level, opt, v int) {
	e.t.Helper()
	e.ok(unix.SetsockoptInt(fd, level, opt, v))
}

// listen makes a listener on ap with the given accept backlog; before runs
// on the socket before bind (socket options a child inherits).
func (e *env) listen(ap netip.AddrPort, backlog int, before ...func(fd int)) int {
	e.t.Helper()
	return e.listenIn(e.ns, ap, backlog, before...)
}

// listenIn is listen in the namespace ns (the peer's, say).
func (e *env) listenIn(ns *testnet.NS, ap netip.AddrPort, backlog int, before ...func(fd int)) int {
	e.t.Helper()
	fd := e.fd(ns.Socket(ap))
	for _, f := range before {
		f(fd)
	}
	e.ok(testnet.Bind(fd, ap))
	e.ok(unix.Listen(fd, backlog))
	return fd
}

func famOf(ap netip.AddrPort) int {
	if ap.Addr().Is4() {
		return 4
	}
	return 6
}

// connect connects from an autobound port, blocking.
func (e *env) connect(ap netip.AddrPort) int {
	e.t.Helper()
	return e.fd(e.ns.Connect(ap))
}

func (e *env) accept(lfd int) int {
	e.t.Helper()
	return e.fd(e.ns.Accept(lfd))
}

// port is a socket's local port.
func (e *env) port(fd int) uint16 {
	e.t.Helper()
	ap, err := e.ns.LocalAddr(fd)
	e.ok(err)
	return ap.Port()
}

func (e *env) close(fd int) {
	e.t.Helper()
	e.ok(e.ns.Close(fd))
}

// startConnect starts a non-blocking connect; finishConnect waits for its
// outcome and makes the socket blocking again.
func (e *env) startConnect(fd int, ap netip.AddrPort) {
	e.t.Helper()
	e.ok(unix.SetNonblock(fd, true))
	if err := unix.Connect(fd, sockaddr(ap)); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		e.t.Fatalf("connect %v: %v", ap, err)
	}
}

func (e *env) finishConnect(fd int) error {
	e.t.Helper()
	err := testnet.WaitConnected(fd)
	e.ok(unix.SetNonblock(fd, false))
	return err
}

// disconnect is connect(AF_UNSPEC): tcp_disconnect() on the socket.
func (e *env) disconnect(fd int) {
	e.t.Helper()
	var sa unix.RawSockaddrInet4 // Family 0 is AF_UNSPEC
	_, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	if errno != 0 {
		e.t.Fatalf("connect(AF_UNSPEC): %v", errno)
	}
}

func tcpInfo(fd int) (*unix.TCPInfo, error) {
	return unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
}

// state is the socket's state as the kernel reports it to its owner.
func (e *env) state(fd int) model.State {
	e.t.Helper()
	info, err := tcpInfo(fd)
	e.ok(err)
	return model.State(info.State)
}

// requireState fails the scenario unless the socket is in st: a scenario
// step did not do what the next steps rely on.
func (e *env) requireState(what string, fd int, st model.State) {
	e.t.Helper()
	if got := e.state(fd); got != st {
		e.t.Fatalf("%s is in %v, want %v", what, got, st)
	}
}

// waitState waits (at most 5 s) until the socket is in st.
func (e *env) waitState(what string, fd int, st model.State) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.state(fd) != st {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s is in %v after 5s, want %v", what, e.state(fd), st)
		}
		time.Sleep(time.Millisecond)
	}
}

// unsent is how many bytes the socket's write queue holds that were never
// sent (SIOCOUTQNSD).
func (e *env) unsent(fd int) int {
	e.t.Helper()
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	e.ok(err)
	return n
}

// fill writes until the socket's send buffer is full: with the peer not
// reading and its receive buffer small, the peer's window closes and what
// is left stays unsent in the write queue. A FIN queued then waits behind
// it, so it is neither sent nor acknowledged until the peer reads.
func (e *env) fill(what string, fd int) {
	e.t.Helper()
	e.ok(unix.SetNonblock(fd, true))
	buf := make([]byte, 16<<10)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := unix.Write(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		e.ok(err)
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: the send buffer never filled", what)
		}
	}
	e.ok(unix.SetNonblock(fd, false))
	if n := e.unsent(fd); n == 0 {
		e.t.Fatalf("%s: the send buffer is full but nothing is unsent: the peer's window did not close", what)
	}
}

// smallRcvbuf keeps a socket's receive buffer (and so its window) small.
func (e *env) smallRcvbuf(fd int) { e.setInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) }

// smallSndbuf keeps a socket's send buffer small, so fill ends quickly.
func (e *env) smallSndbuf(fd int) { e.setInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096) }

// waitReadable waits until the socket has something to read (or, for a
// listener, a connection to accept).
func (e *env) waitReadable(what string, fd int) {
	e.t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 5000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		e.ok(err)
		if n == 0 {
			e.t.Fatalf("%s: nothing to read after 5s", what)
		}
		return
	}
}

// fullListener makes a listener whose accept queue is full: backlog 0
// admits one connection (sk_acceptq_is_full is ack_backlog > backlog), and
// one filler connection is made and left unaccepted. tcp_conn_request()
// then drops every new SYN silently (LISTENOVERFLOWS), before syncookies are
// considered: the kernel's own way to lose SYNs, no packet filter needed.
// It returns the listener and the filler's client fd and port.
func (e *env) fullListener(ap netip.AddrPort, before ...func(fd int)) (lfd, filler int, fport uint16) {
	e.t.Helper()
	lfd = e.listen(ap, 0, before...)
	filler = e.connect(ap)
	fport = e.port(filler)
	e.waitQueued(lfd, 1)
	return lfd, filler, fport
}

// waitQueued waits (at most 5 s) until the listener's accept queue holds n
// connections (TCP_INFO of a listener reports it as tcpi_unacked).
func (e *env) waitQueued(lfd, n int) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := tcpInfo(lfd)
		e.ok(err)
		if int(info.Unacked) == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the listener's accept queue holds %d connections after 5s, want %d", info.Unacked, n)
		}
		time.Sleep(time.Millisecond)
	}
}
