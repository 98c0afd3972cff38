// Command loadgen makes a bounded number of short loopback TCP connections
// and reports how fast it made them: the load of tcpstate's benchmark
// (bench/runner).
//
// Each connection is one dial and one close, and makes exactly ten TCP state
// transitions (Linux emits no TIME_WAIT transition: the full socket goes
// FIN_WAIT2->CLOSE when tcp_time_wait() hands it to a timewait socket):
//
//	client: CLOSE->SYN_SENT->ESTABLISHED->FIN_WAIT1->FIN_WAIT2->CLOSE
//	server: LISTEN->SYN_RECV->ESTABLISHED->CLOSE_WAIT->LAST_ACK->CLOSE
//
// The listening socket adds two more per run (CLOSE->LISTEN, LISTEN->CLOSE).
// Sockets are plain TCP on both sides (Go 1.24+ listeners default to MPTCP).
//
// With --new-netns it runs in a network namespace of its own (it needs root),
// so the TIME_WAIT sockets it leaves die with it. It prints one JSON object on
// stdout. Every loop is bounded; --timeout ends a run that hangs.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TransitionsPerConnection is what one dial-and-close makes (see the package
// comment); TransitionsPerRun is the listener's own two.
const (
	TransitionsPerConnection = 10
	TransitionsPerRun        = 2
)

// Result is what loadgen prints on stdout; bench/runner decodes it.
type Result struct {
	Connections int     `json:"connections"` // connections dialled, accepted and closed
	Clients     int     `json:"clients"`
	Errors      int     `json:"errors"`  // failed dials (each one retried once at most)
	Seconds     float64 `json:"seconds"` // first dial to last server-side close
	ConnPerSec  float64 `json:"conn_per_s"`
	// ExpectedTransitions is 10 per connection plus the listener's 2.
	ExpectedTransitions int    `json:"expected_transitions"`
	Netns               uint64 `json:"netns"` // inode of the namespace it ran in
	Addr                string `json:"addr"`
	// SettleSeconds is how long the last sockets took to reach CLOSE after
	// the measured part (not included in Seconds).
	SettleSeconds float64 `json:"settle_seconds"`
}

type options struct {
	connections int
	clients     int
	addr        string
	timeout     time.Duration
	newNetns    bool
	wideRange   bool
	delay       time.Duration
	pidFile     string
	startFile   string
}

const childEnv = "TCPSTATE_LOADGEN_CHILD"

func main() {
	var o options
	flag.IntVar(&o.connections, "connections", 20000, "connections to make (each: dial, close)")
	flag.IntVar(&o.clients, "clients", 4, "concurrent clients")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:18080", "loopback address the server listens on")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
	flag.BoolVar(&o.newNetns, "new-netns", false, "run in a new network namespace (root), with lo up")
	flag.BoolVar(&o.wideRange, "wide-port-range", true, "in a new namespace, use ephemeral ports 1024-65535")
	flag.DurationVar(&o.delay, "start-delay", 0, "wait this long after listening before the first dial")
	flag.StringVar(&o.pidFile, "pid-file", "", "once listening, write the pid of the process that makes the connections (with --new-netns: the child in the namespace) to this file")
	flag.StringVar(&o.startFile, "start-file", "", "once listening (and after --start-delay), wait until this file exists before the first dial: whoever started the load creates it when ready, however long its own setup takes")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.connections < 1 || o.connections > 1_000_000 {
		return fmt.Errorf("--connections %d: must be from 1 to 1000000", o.connections)
	}
	if o.clients < 1 || o.clients > 256 {
		return fmt.Errorf("--clients %d: must be from 1 to 256", o.clients)
	}
	ap, err := net.ResolveTCPAddr("tcp", o.addr)
	if err != nil || !ap.IP.IsLoopback() {
		return fmt.Errorf("--addr %q: must be a loopback address and port", o.addr)
	}
	if o.newNetns && os.Getenv(childEnv) == "" {
		return reexecInNewNetns()
	}
	if os.Getenv(childEnv) != "" {
		if err := setupNetns(o.wideRange); err != nil {
			return err
		}
	}
	res, err := load(o)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// reexecInNewNetns runs this program again in a new network namespace. The
// namespace, and every TIME_WAIT socket in it, goes away when the child exits.
func reexecInNewNetns() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding own executable: %w", err)
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		return fmt.Errorf("starting in a new network namespace (needs root): %w", err)
	}
	return nil
}

// setupNetns brings lo up in the new namespace and widens its ephemeral port
// range, so 20,000 connections (each leaving a TIME_WAIT socket behind on the
// client side) never run connect() out of free ports.
func setupNetns(wideRange bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening a socket to configure lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading the flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	if wideRange {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535\n"), 0o644); err != nil {
			return fmt.Errorf("widening the ephemeral port range: %w", err)
		}
	}
	return nil
}

func netnsInode() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0
	}
	return st.Ino
}

// waitForFile returns once path exists.
func waitForFile(ctx context.Context, path string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for --start-file %s: %w", path, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func load(o options) (*Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", o.addr, err)
	}
	tl := ln.(*net.TCPListener)
	addr := ln.Addr().String() // the real port, if --addr asked for port 0
	if o.pidFile != "" {
		if err := os.WriteFile(o.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("writing --pid-file: %w", err)
		}
	}
	if o.delay > 0 {
		time.Sleep(o.delay)
	}
	if o.startFile != "" {
		if err := waitForFile(ctx, o.startFile); err != nil {
			return nil, err
		}
	}

	var (
		served   sync.WaitGroup // one per accepted connection, done after its close
		accepted atomic.Int64
		acceptEr = make(chan error, 1)
	)
	served.Add(o.connections)
	// The server: accept exactly as many connections as the clients make;
	// each handler reads to EOF (the client's FIN) and closes.
	go func() {
		for range o.connections {
			c, err := tl.AcceptTCP()
			if err != nil {
				acceptEr <- fmt.Errorf("accepting: %w", err)
				return
			}
			accepted.Add(1)
			go serve(c, &served)
		}
	}()

	d := net.Dialer{Timeout: 10 * time.Second}
	d.SetMultipathTCP(false)
	var (
		clients sync.WaitGroup
		made    atomic.Int64
		errs    atomic.Int64
		firstEr atomic.Value
	)
	start := time.Now()
	per, extra := o.connections/o.clients, o.connections%o.clients
	for i := range o.clients {
		n := per
		if i < extra {
			n++
		}
		clients.Add(1)
		go func() {
			defer clients.Done()
			for range n {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					// One retry: a connection that never happens would leave
					// the server waiting for it.
					errs.Add(1)
					firstEr.CompareAndSwap(nil, err)
					if c, err = d.DialContext(ctx, "tcp", addr); err != nil {
						errs.Add(1)
						cancel()
						return
					}
				}
				c.Close()
				made.Add(1)
			}
		}()
	}

	done := make(chan struct{})
	go func() {
		clients.Wait()
		served.Wait()
		close(done)
	}()
	select {
	case <-done:
	case err := <-acceptEr:
		return nil, err
	case <-ctx.Done():
		e, _ := firstEr.Load().(error)
		return nil, fmt.Errorf("gave up after %v: %d connections made, %d accepted, %d dial errors (first: %v)",
			time.Since(start).Round(time.Millisecond), made.Load(), accepted.Load(), errs.Load(), e)
	}
	elapsed := time.Since(start)

	ln.Close()
	settleStart := time.Now()
	waitClosed(ctx)
	return &Result{
		Connections:         int(made.Load()),
		Clients:             o.clients,
		Errors:              int(errs.Load()),
		Seconds:             elapsed.Seconds(),
		ConnPerSec:          float64(made.Load()) / elapsed.Seconds(),
		ExpectedTransitions: TransitionsPerConnection*int(made.Load()) + TransitionsPerRun,
		Netns:               netnsInode(),
		Addr:                addr,
		SettleSeconds:       time.Since(settleStart).Seconds(),
	}, nil
}

func serve(c *net.TCPConn, wg *sync.WaitGroup) {
	defer wg.Done()
	var buf [64]byte
	// Bounded: a well-behaved client sends nothing and closes.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, err := c.Read(buf[:]); err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(os.Stderr, "loadgen: server read: %v\n", err)
			}
			break
		}
	}
	c.Close()
}

// waitClosed waits (at most 5 s, or until ctx ends) until no TCP socket of
// this namespace is left but TIME_WAIT ones, so every transition of the run
// has happened when loadgen exits. Only meaningful in a namespace of its own.
func waitClosed(ctx context.Context) {
	if os.Getenv(childEnv) == "" {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if n, err := tcpInUse(); err != nil || n == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// tcpInUse reads this namespace's count of TCP sockets that are not in
// TIME_WAIT ("TCP: inuse N" in /proc/net/sockstat, and TCP6 in sockstat6).
func tcpInUse() (int, error) {
	total := 0
	for _, f := range []struct{ path, prefix string }{
		{"/proc/net/sockstat", "TCP:"},
		{"/proc/net/sockstat6", "TCP6:"},
	} {
		n, err := inuse(f.path, f.prefix)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func inuse(path, prefix string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[0] == prefix && fields[1] == "inuse" {
			return strconv.Atoi(fields[2])
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, prefix)
}
