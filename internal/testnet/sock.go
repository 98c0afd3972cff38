package testnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// OpTimeout bounds every blocking socket operation (connect, accept, read,
// write): the sockets carry SO_SNDTIMEO and SO_RCVTIMEO, and waits poll with
// it. A test never hangs on a socket.
const OpTimeout = 5 * time.Second

// The functions below are plain system calls on plain TCP sockets
// (IPPROTO_TCP: never MPTCP, which Go's listeners use by default since Go
// 1.24). socket(2) puts a socket in the network namespace of the calling
// thread, so call them inside NS.Do (or use the NS and Proc methods, which
// do). Failures close the socket they made.

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func setTimeouts(fd int) error {
	tv := unix.NsecToTimeval(OpTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("setting SO_RCVTIMEO: %w", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("setting SO_SNDTIMEO: %w", err)
	}
	return nil
}

// Socket makes a TCP socket of ap's family with the operation timeouts set
// (IPv6 sockets are IPV6_V6ONLY, so they never carry IPv4 traffic).
func Socket(ap netip.AddrPort, flags int) (int, error) {
	family := unix.AF_INET
	if !ap.Addr().Is4() {
		family = unix.AF_INET6
	}
	fd, err := lockedFD(func() (int, error) {
		return unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|flags, unix.IPPROTO_TCP)
	})
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	err = setTimeouts(fd)
	if err == nil && family == unix.AF_INET6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err != nil {
		closeFD(fd)
		return -1, err
	}
	return fd, nil
}

// Bind binds fd to ap with SO_REUSEADDR.
func Bind(fd int, ap netip.AddrPort) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("setting SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		return fmt.Errorf("bind %s: %w", ap, err)
	}
	return nil
}

// DefaultBacklog is the accept backlog of Listen and BindListen.
const DefaultBacklog = 16

// Listen makes a listening socket bound to ap (CLOSE->LISTEN with the port
// already set, since it is bound first).
func Listen(ap netip.AddrPort) (int, error) { return ListenBacklog(ap, DefaultBacklog) }

// ListenBacklog is Listen with an accept backlog of its own (the kernel caps
// it at the namespace's net.core.somaxconn).
func ListenBacklog(ap netip.AddrPort, backlog int) (int, error) {
	fd, err := Socket(ap, 0)
	if err != nil {
		return -1, err
	}
	if err := bindListen(fd, ap, backlog); err != nil {
		closeFD(fd)
		return -1, err
	}
	return fd, nil
}

// BindListen binds a socket made by Socket to ap and listens on it.
func BindListen(fd int, ap netip.AddrPort) error { return bindListen(fd, ap, DefaultBacklog) }

func bindListen(fd int, ap netip.AddrPort, backlog int) error {
	if err := Bind(fd, ap); err != nil {
		return err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fmt.Errorf("listen %s: %w", ap, err)
	}
	return nil
}

// Connect makes a socket and connects it to remote, blocking until the
// handshake ends (at most OpTimeout). If local is valid the socket is bound
// to it first; otherwise connect() picks the port (autobind).
func Connect(local, remote netip.AddrPort) (int, error) {
	fd, err := Socket(remote, 0)
	if err != nil {
		return -1, err
	}
	if local.IsValid() {
		if err := Bind(fd, local); err != nil {
			closeFD(fd)
			return -1, err
		}
	}
	err = unix.Connect(fd, sockaddr(remote))
	if errors.Is(err, unix.EINTR) {
		// A signal (the Go runtime's preemption, say) interrupted the wait;
		// the handshake goes on without it: wait for its outcome.
		err = WaitConnected(fd)
	}
	if err != nil {
		closeFD(fd)
		return -1, fmt.Errorf("connect %s: %w", remote, err)
	}
	return fd, nil
}

// ConnectNonblock makes a non-blocking socket and starts connecting it to
// remote; EINPROGRESS is success. WaitConnected waits for the outcome.
func ConnectNonblock(remote netip.AddrPort) (int, error) {
	fd, err := Socket(remote, unix.SOCK_NONBLOCK)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, sockaddr(remote)); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		closeFD(fd)
		return -1, fmt.Errorf("connect %s: %w", remote, err)
	}
	return fd, nil
}

// WaitConnected waits until a non-blocking connect finished, and returns
// its error (SO_ERROR), for example ECONNREFUSED.
func WaitConnected(fd int) error {
	if err := poll(fd, unix.POLLOUT); err != nil {
		return fmt.Errorf("waiting for connect: %w", err)
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fmt.Errorf("reading SO_ERROR: %w", err)
	}
	if soerr != 0 {
		return fmt.Errorf("connect: %w", unix.Errno(soerr))
	}
	return nil
}

func poll(fd int, events int16) error {
	deadline := time.Now().Add(OpTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("timed out after %v", OpTimeout)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// Accept waits (at most OpTimeout) for a connection on the listening
// socket lfd and returns the accepted socket (accept4: the call tcpstate's
// accept program watches).
func Accept(lfd int) (int, error) {
	if err := poll(lfd, unix.POLLIN); err != nil {
		return -1, fmt.Errorf("accept: %w", err)
	}
	fd, err := lockedFD(func() (int, error) {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		return fd, err
	})
	if err != nil {
		return -1, fmt.Errorf("accept: %w", err)
	}
	if err := setTimeouts(fd); err != nil {
		closeFD(fd)
		return -1, err
	}
	return fd, nil
}

// Write writes n bytes.
func Write(fd, n int) error {
	buf := make([]byte, n)
	for len(buf) > 0 {
		w, err := unix.Write(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		buf = buf[w:]
	}
	return nil
}

// ReadFull reads exactly n bytes.
func ReadFull(fd, n int) error {
	buf := make([]byte, n)
	for got := 0; got < n; {
		r, err := unix.Read(fd, buf[got:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if r == 0 {
			return fmt.Errorf("read: end of stream after %d of %d bytes", got, n)
		}
		got += r
	}
	return nil
}

// ReadEOF reads until the peer's FIN (end of stream), at most OpTimeout.
func ReadEOF(fd int) error {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(OpTimeout)
	for time.Now().Before(deadline) {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for end of stream: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
	return fmt.Errorf("waiting for end of stream: timed out after %v", OpTimeout)
}

// Shutdown calls shutdown(2); how is unix.SHUT_RD, SHUT_WR or SHUT_RDWR.
func Shutdown(fd, how int) error {
	if err := unix.Shutdown(fd, how); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// SetLinger0 sets SO_LINGER {on, 0}: close() then resets the connection
// (ESTABLISHED->CLOSE and an RST) instead of the FIN handshake.
func SetLinger0(fd int) error {
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return fmt.Errorf("setting SO_LINGER 0: %w", err)
	}
	return nil
}

// Close closes a socket.
func Close(fd int) error {
	if err := closeFD(fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// LocalAddr returns the socket's local address and port.
func LocalAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	return addrPort(sa), nil
}

// Sockets is the socket API of one process in a test's namespace: *NS
// makes its sockets in the test process, *Proc in a helper child process.
// A scenario written against Sockets runs its client and server in one
// process or in two, so that their sockets' owners differ. The ints are
// file descriptors of that process.
type Sockets interface {
	Pid() int
	Listen(ap netip.AddrPort) (int, error)
	// Connect connects from an autobound port, blocking.
	Connect(remote netip.AddrPort) (int, error)
	// ConnectFrom binds to local first, then connects, blocking.
	ConnectFrom(local, remote netip.AddrPort) (int, error)
	ConnectNonblock(remote netip.AddrPort) (int, error)
	WaitConnected(fd int) error
	Accept(lfd int) (int, error)
	Write(fd, n int) error
	ReadFull(fd, n int) error
	ReadEOF(fd int) error
	Shutdown(fd, how int) error
	SetLinger0(fd int) error
	Close(fd int) error
	LocalAddr(fd int) (netip.AddrPort, error)
}

var (
	_ Sockets = (*NS)(nil)
	_ Sockets = (*Proc)(nil)
)

// Pid is the test process's pid: the owner of the sockets NS makes.
func (ns *NS) Pid() int { return os.Getpid() }

func (ns *NS) track(fd int) {
	ns.mu.Lock()
	if ns.fds != nil {
		ns.fds[fd] = true
	}
	ns.mu.Unlock()
}

func (ns *NS) newSocket(f func() (int, error)) (int, error) {
	fd := -1
	err := ns.Do(func() error {
		var err error
		fd, err = f()
		return err
	})
	if err != nil {
		return -1, err
	}
	ns.track(fd)
	return fd, nil
}

// Socket makes a TCP socket of ap's family in the namespace, neither bound
// nor connected (see the function Socket): for example to hand it to a
// helper process before BindListen makes it a listener.
func (ns *NS) Socket(ap netip.AddrPort) (int, error) {
	return ns.newSocket(func() (int, error) { return Socket(ap, 0) })
}

// BindListen binds a socket to ap and listens (see the function).
func (ns *NS) BindListen(fd int, ap netip.AddrPort) error {
	return ns.Do(func() error { return BindListen(fd, ap) })
}

// Listen makes a listening socket in the namespace (see the function Listen).
func (ns *NS) Listen(ap netip.AddrPort) (int, error) {
	return ns.newSocket(func() (int, error) { return Listen(ap) })
}

// Connect connects from an autobound port (see the function Connect).
func (ns *NS) Connect(remote netip.AddrPort) (int, error) {
	return ns.newSocket(func() (int, error) { return Connect(netip.AddrPort{}, remote) })
}

// ConnectFrom binds to local and connects (see the function Connect).
func (ns *NS) ConnectFrom(local, remote netip.AddrPort) (int, error) {
	return ns.newSocket(func() (int, error) { return Connect(local, remote) })
}

// ConnectNonblock starts a non-blocking connect (see the function).
func (ns *NS) ConnectNonblock(remote netip.AddrPort) (int, error) {
	return ns.newSocket(func() (int, error) { return ConnectNonblock(remote) })
}

// Accept accepts a connection (see the function Accept).
func (ns *NS) Accept(lfd int) (int, error) {
	return ns.newSocket(func() (int, error) { return Accept(lfd) })
}

// WaitConnected waits for a non-blocking connect (see the function).
func (ns *NS) WaitConnected(fd int) error { return ns.Do(func() error { return WaitConnected(fd) }) }

// Write writes n bytes.
func (ns *NS) Write(fd, n int) error { return ns.Do(func() error { return Write(fd, n) }) }

// ReadFull reads n bytes.
func (ns *NS) ReadFull(fd, n int) error { return ns.Do(func() error { return ReadFull(fd, n) }) }

// ReadEOF reads until the peer's FIN.
func (ns *NS) ReadEOF(fd int) error { return ns.Do(func() error { return ReadEOF(fd) }) }

// Shutdown calls shutdown(2).
func (ns *NS) Shutdown(fd, how int) error { return ns.Do(func() error { return Shutdown(fd, how) }) }

// SetLinger0 sets SO_LINGER 0.
func (ns *NS) SetLinger0(fd int) error { return ns.Do(func() error { return SetLinger0(fd) }) }

// Close closes a socket made through ns.
func (ns *NS) Close(fd int) error {
	ns.mu.Lock()
	if ns.fds != nil {
		delete(ns.fds, fd)
	}
	ns.mu.Unlock()
	return ns.Do(func() error { return Close(fd) })
}

// SocketFile returns a duplicate of a socket the NS methods made, as an
// *os.File, for example to hand it to StartProc. The file owns the
// duplicate (close it when done); fd stays the test's.
func (ns *NS) SocketFile(fd int) (*os.File, error) {
	nfd, err := lockedFD(func() (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		return nil, fmt.Errorf("duplicating fd %d: %w", fd, err)
	}
	return os.NewFile(uintptr(nfd), fmt.Sprintf("socket %d", fd)), nil
}

// LocalAddr returns a socket's local address.
func (ns *NS) LocalAddr(fd int) (netip.AddrPort, error) {
	var ap netip.AddrPort
	err := ns.Do(func() error {
		var err error
		ap, err = LocalAddr(fd)
		return err
	})
	return ap, err
}
