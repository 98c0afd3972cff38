package main

// Real servers from Debian's packages (nginx, redis-server, postgresql),
// each in a network namespace of its own, started before the tracer (the
// normal case in production: the listener is older than tcpstate, and its
// owner comes from the start snapshot) and after it, driven by real
// clients and by a load of 16 concurrent clients, and traced by the built
// binary. The kernel's own record (tracefs), ss -tanp run in the namespace
// and /proc are the oracles.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
)

// The servers' namespaces use a wide ephemeral range (16 concurrent clients
// need more than a port block's 8 ports), above the port blocks and the
// load generator's server port: testnet.ServiceFilter selects the
// transitions of the server's port with clients in it.
const wideLo, wideHi = 40000, 60999

// Load: 16 clients, 50 connections each.
const (
	loadClients = 16
	loadEach    = 50
	heldConns   = 4
)

var aptMu sync.Mutex

// requireTools makes sure every file in need exists, installing the Debian
// packages pkgs with apt-get if one is missing (the suite installs its own
// test tools). When it cannot: under CI=true a failure, else a skip that
// says what is missing.
func requireTools(t *testing.T, pkgs []string, need ...string) {
	t.Helper()
	missing := func() []string {
		var m []string
		for _, f := range need {
			if strings.ContainsAny(f, "*?[") {
				if g, _ := filepath.Glob(f); len(g) > 0 {
					continue
				}
			} else if _, err := os.Stat(f); err == nil {
				continue
			}
			m = append(m, f)
		}
		return m
	}
	aptMu.Lock()
	defer aptMu.Unlock()
	if len(missing()) == 0 {
		return
	}
	out, err := aptInstall(pkgs)
	if m := missing(); len(m) > 0 {
		msg := fmt.Sprintf("%v missing and apt-get install %s failed (%v):\n%s", m, strings.Join(pkgs, " "), err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "\nCI=true: this is a failure, not a skip")
		}
		t.Skip(msg)
	}
}

// aptInstall installs Debian packages without starting their services: a
// policy-rc.d that forbids it is put in place if the machine has none.
func aptInstall(pkgs []string) (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("not root")
	}
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); os.IsNotExist(err) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# tcpstate's tests: no service starts while they install packages\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	var log bytes.Buffer
	run := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = &log, &log
		return testnet.RunCmd(cmd)
	}
	install := append([]string{"install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"}, pkgs...)
	if err := run(install...); err == nil {
		return log.String(), nil
	}
	if err := run("update", "-q", "-o", "DPkg::Lock::Timeout=300"); err != nil {
		return log.String(), fmt.Errorf("apt-get update: %w", err)
	}
	if err := run(install...); err != nil {
		return log.String(), fmt.Errorf("apt-get install: %w", err)
	}
	return log.String(), nil
}

// realServer is one server program and how to talk to it.
type realServer struct {
	name string
	pkgs []string // Debian packages
	need []string // files they provide
	// start starts the server inside ns on port, in dir, and returns it
	// running (not yet listening).
	start func(t *testing.T, ns *testnet.NS, dir string, port uint16) *exec.Cmd
	// stop is the signal of a clean, fast shutdown.
	stop syscall.Signal
	// workers: the server has child processes holding its listener
	// (nginx's), which must exist before it counts as ready.
	workers int
	// hold opens a session on a connected socket and leaves it held by
	// the server; finish ends it, the server closing first, and reads
	// to the end.
	hold, finish func(fd int) error
	// client runs the server's own client program once in ns.
	client []string
	// ready, if set, says whether the server accepts connections, once it
	// listens (postgres listens before its startup process is done).
	ready func(dir string) bool
	// forks: the server hands each accepted connection to a child it forks
	// (postgres): the acceptor is the server, the holder the child.
	forks bool
}

func pgBin(t *testing.T, name string) string {
	t.Helper()
	g, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(g) == 0 {
		t.Fatalf("no /usr/lib/postgresql/*/bin/%s", name)
	}
	sort.Strings(g)
	return g[len(g)-1]
}

// startIn starts cmd in the namespace (a child forked by the namespace
// thread starts in it), dying with it if the test dies first.
func startIn(t *testing.T, ns *testnet.NS, cmd *exec.Cmd) {
	t.Helper()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := ns.Do(func() error { return testnet.StartCmd(cmd) }); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
}

var realServers = []realServer{
	{
		name: "nginx",
		pkgs: []string{"nginx", "curl"},
		need: []string{"/usr/sbin/nginx", "/usr/bin/curl"},
		start: func(t *testing.T, ns *testnet.NS, dir string, port uint16) *exec.Cmd {
			conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user nobody nogroup;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 512; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		location / { return 200 "ok\n"; }
	}
}
`, dir, port)
			if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/usr/sbin/nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
			startIn(t, ns, cmd)
			return cmd
		},
		stop:    syscall.SIGTERM,
		workers: 2,
		// A request line without its end: the worker that accepted
		// waits for the rest.
		hold: func(fd int) error { return sendAll(fd, "GET / HTTP/1.0\r\n") },
		finish: func(fd int) error {
			if err := sendAll(fd, "Host: tcpstate\r\n\r\n"); err != nil {
				return err
			}
			return readToEOF(fd, "HTTP/1.1 200 OK")
		},
		client: []string{"curl", "-sS", "--http1.0", "-o", "/dev/null", "http://127.0.0.1:%d/"},
	},
	{
		name: "redis",
		pkgs: []string{"redis-server", "redis-tools"},
		need: []string{"/usr/bin/redis-server", "/usr/bin/redis-cli"},
		start: func(t *testing.T, ns *testnet.NS, dir string, port uint16) *exec.Cmd {
			cmd := exec.Command("/usr/bin/redis-server", "--port", strconv.Itoa(int(port)), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--protected-mode", "no",
				"--logfile", filepath.Join(dir, "redis.log"))
			startIn(t, ns, cmd)
			return cmd
		},
		stop: syscall.SIGTERM,
		hold: func(fd int) error {
			if err := sendAll(fd, "PING\r\n"); err != nil {
				return err
			}
			return readExactly(fd, "+PONG\r\n")
		},
		// QUIT: redis answers and closes first.
		finish: func(fd int) error {
			if err := sendAll(fd, "QUIT\r\n"); err != nil {
				return err
			}
			return readToEOF(fd, "+OK")
		},
		client: []string{"redis-cli", "-h", "127.0.0.1", "-p", "%d", "PING"},
	},
	{
		name: "postgresql",
		pkgs: []string{"postgresql", "postgresql-client"},
		need: []string{"/usr/lib/postgresql/*/bin/postgres", "/usr/lib/postgresql/*/bin/initdb", "/usr/bin/psql"},
		start: func(t *testing.T, ns *testnet.NS, dir string, port uint16) *exec.Cmd {
			u, err := user.Lookup("postgres")
			if err != nil {
				t.Fatalf("the postgresql package made no postgres user: %v", err)
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			if err := os.Chown(dir, uid, gid); err != nil {
				t.Fatal(err)
			}
			asPostgres := func(cmd *exec.Cmd) *exec.Cmd {
				cmd.Dir = dir
				cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "HOME=" + dir}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
				return cmd
			}
			data := filepath.Join(dir, "data")
			initdb := asPostgres(exec.Command(pgBin(t, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"))
			if out, err := initdb.CombinedOutput(); err != nil {
				t.Fatalf("initdb: %v\n%s", err, out)
			}
			cmd := asPostgres(exec.Command(pgBin(t, "postgres"), "-D", data, "-k", dir, "-p", strconv.Itoa(int(port)),
				"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"))
			var log bytes.Buffer
			cmd.Stdout, cmd.Stderr = &log, &log
			startIn(t, ns, cmd)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("postgres log:\n%s", log.String())
				}
			})
			return cmd
		},
		stop: syscall.SIGINT,
		// The postmaster writes "ready" as the last line of its pid file
		// once it accepts connections.
		ready: func(dir string) bool {
			b, _ := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			return len(lines) >= 8 && strings.TrimSpace(lines[len(lines)-1]) == "ready"
		},
		hold:  pgStartup,
		forks: true,
		// Terminate: the backend exits, closing first.
		finish: func(fd int) error {
			if err := sendAll(fd, "X\x00\x00\x00\x04"); err != nil {
				return err
			}
			return readToEOF(fd, "")
		},
		client: []string{"psql", "-X", "-q", "-h", "127.0.0.1", "-p", "%d", "-U", "postgres", "-d", "postgres", "-c", "select 1"},
	},
}

// pgStartup sends the protocol 3.0 startup message and reads until the
// backend is ready for a query.
func pgStartup(fd int) error {
	params := "user\x00postgres\x00database\x00postgres\x00\x00"
	msg := make([]byte, 8, 8+len(params))
	binary.BigEndian.PutUint32(msg, uint32(8+len(params)))
	binary.BigEndian.PutUint32(msg[4:], 3<<16)
	if err := sendAll(fd, string(append(msg, params...))); err != nil {
		return err
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		// Messages: type byte, int32 length (itself included), body.
		for len(got) >= 5 {
			n := int(binary.BigEndian.Uint32(got[1:5]))
			if len(got) < 1+n {
				break
			}
			switch got[0] {
			case 'Z':
				return nil
			case 'E':
				return fmt.Errorf("postgres: error %q", got[5:1+n])
			}
			got = got[1+n:]
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("postgres startup: %w", err)
		}
		if n == 0 {
			return errors.New("postgres startup: end of stream")
		}
		got = append(got, buf[:n]...)
	}
}

func sendAll(fd int, s string) error {
	b := []byte(s)
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// readToEOF reads until the peer's FIN; what it read must begin with prefix.
func readToEOF(fd int, prefix string) error {
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w (after %q)", err, got)
		}
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.HasPrefix(got, []byte(prefix)) {
		return fmt.Errorf("the server answered %q, want %q...", got, prefix)
	}
	return nil
}

func readExactly(fd int, want string) error {
	buf := make([]byte, len(want))
	for got := 0; got < len(buf); {
		n, err := unix.Read(fd, buf[got:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return fmt.Errorf("read: %v after %q", err, buf[:got])
		}
		got += n
	}
	if string(buf) != want {
		return fmt.Errorf("the server answered %q, want %q", buf, want)
	}
	return nil
}

// dial makes a socket in ns and connects it to ap from any goroutine (the
// socket belongs to the namespace it was made in). It returns the fd and
// the local port.
func dial(ns *testnet.NS, ap netip.AddrPort) (int, uint16, error) {
	var fd int
	if err := ns.Do(func() (err error) { fd, err = testnet.Socket(ap, 0); return }); err != nil {
		return -1, 0, err
	}
	err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if errors.Is(err, unix.EINTR) {
		// The handshake goes on without the interrupted wait.
		err = testnet.WaitConnected(fd)
	}
	if err != nil {
		testnet.Close(fd)
		return -1, 0, fmt.Errorf("connect %v: %w", ap, err)
	}
	local, err := testnet.LocalAddr(fd)
	if err != nil {
		testnet.Close(fd)
		return -1, 0, err
	}
	return fd, local.Port(), nil
}

// children lists a process's children (/proc/PID/task/*/children).
func children(pid int) []uint32 {
	var out []uint32
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			n, _ := strconv.ParseUint(s, 10, 32)
			out = append(out, uint32(n))
		}
	}
	return out
}

// procStatusField is one field of /proc/PID/status, trimmed; "" when the
// process or the field is not there.
func procStatusField(pid int, field string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func ppid(pid uint32) uint32 {
	n, _ := strconv.ParseUint(procStatusField(int(pid), "PPid"), 10, 32)
	return uint32(n)
}

func comm(pid uint32) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// running is a server started in a namespace.
type running struct {
	t       *testing.T
	cmd     *exec.Cmd
	sig     syscall.Signal
	workers []uint32
	wcomm   map[uint32]string // the workers' names, to tell them from a later process with the same pid
	done    chan error
	once    sync.Once
}

func (r *running) pid() uint32 { return uint32(r.cmd.Process.Pid) }

// stopServer stops the server cleanly and waits; whatever is left of it
// (workers) is killed by pid.
func (r *running) stopServer() {
	r.once.Do(func() {
		r.cmd.Process.Signal(r.sig)
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			r.t.Errorf("%v did not stop within 15 s of %v: killed", r.cmd.Args[0], r.sig)
			r.cmd.Process.Kill()
			<-r.done
		}
		// Workers outlive a master that was killed: end them by pid.
		for _, w := range r.workers {
			if c := comm(w); c != "" && c == r.wcomm[w] {
				unix.Kill(int(w), unix.SIGKILL)
			}
		}
	})
}

// startServer starts s in ns and waits (at most 20 s) until ss shows it
// listening on port, held by the server and its workers.
func startServer(t *testing.T, s realServer, ns *testnet.NS, port uint16) *running {
	t.Helper()
	dir, err := os.MkdirTemp("", "tcpstate-"+s.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &running{t: t, sig: s.stop, done: make(chan error, 1), wcomm: map[uint32]string{}}
	r.cmd = s.start(t, ns, dir, port)
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(r.stopServer)
	listen := fmt.Sprintf("LISTEN 127.0.0.1:%d 0.0.0.0:0", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-r.done:
			t.Fatalf("%s exited before listening: %v (logs in %s)", s.name, err, dir)
		default:
		}
		holders := ssList(t, ns.Path())[listen]
		if len(holders) == 1+s.workers && slices.Contains(holders, r.pid()) && (s.ready == nil || s.ready(dir)) {
			for _, h := range holders {
				if h != r.pid() {
					if ppid(h) != r.pid() {
						t.Fatalf("%s: the listener is held by %d, not a child of the server %d", s.name, h, r.pid())
					}
					r.workers = append(r.workers, h)
					r.wcomm[h] = comm(h)
				}
			}
			return r
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("%s not listening on port %d after 20 s (ss: %v) %s", s.name, port, holders, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRealServers: nginx (a master and 2 workers sharing one listener),
// redis-server and postgresql (which forks a backend per connection), each
// in its own network namespace, each started before the tracer and after
// it. For each: connections held open while ss -tanp names their holder,
// the server's own client program, and a load of 16 concurrent clients
// making 50 connections each. The built binary's trace must match the
// kernel's record exactly, give every record an ok verdict, name the
// server's processes as the owners of its sockets (the listener's owner on
// a child's handshake, marked inherited; the acceptor after accept, the
// process ss names for a held connection), and report a loss only if the
// kernel counted one. Retried (testnet.Retry) for the kernel's uncounted
// skips under load (KERNEL-NOTES).
func TestRealServers(t *testing.T) {
	testnet.RequireRoot(t)
	t.Parallel()
	bin := buildBinary(t, t.TempDir())
	for _, s := range realServers {
		for _, before := range []bool{true, false} {
			name := s.name + "/started-after-the-tracer"
			if before {
				name = s.name + "/started-before-the-tracer"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				requireTools(t, s.pkgs, s.need...)
				testnet.Retry(t, func(p *testnet.Problems) { serverRun(t, p, bin, s, before) })
			})
		}
	}
}

func serverRun(t *testing.T, p *testnet.Problems, bin string, s realServer, before bool) {
	began := time.Now()
	ns := testnet.New(t)
	if err := ns.SetSysctl("net.ipv4.ip_local_port_range", fmt.Sprintf("%d %d", wideLo, wideHi)); err != nil {
		t.Fatal(err)
	}
	port := ns.Port(0)
	ap := testnet.Addr(4, port)
	var srv *running
	if before {
		srv = startServer(t, s, ns, port)
	}
	summary := filepath.Join(t.TempDir(), "summary.json")
	tr := startTrace(t, bin, "-o", "json", "--port", strconv.Itoa(int(port)), "--summary-json", summary)
	o := testnet.NewOracleSize(t, testnet.ServiceFilter(port, wideLo, wideHi), 8192)
	if !before {
		srv = startServer(t, s, ns, port)
	}
	defer srv.stopServer()
	master := srv.pid()
	servers := append([]uint32{master}, srv.workers...)

	// Held connections: ss names the process holding each (for nginx
	// the worker that accepted it, for postgres the backend it forked).
	holder := map[uint16]uint32{}
	var held []int
	heldPort := map[int]uint16{}
	for range heldConns {
		fd, cport, err := dial(ns, ap)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.hold(fd); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		held = append(held, fd)
		heldPort[fd] = cport
	}
	time.Sleep(50 * time.Millisecond) // nginx's workers read the partial request
	socks := ssList(t, ns.Path())
	for _, fd := range held {
		cport := heldPort[fd]
		k := fmt.Sprintf("ESTABLISHED %v 127.0.0.1:%d", ap, cport)
		users := socks[k]
		if len(users) != 1 {
			t.Fatalf("%s: ss -tanp: %s held by %v, want one process", s.name, k, users)
		}
		h := users[0]
		switch {
		case s.forks && ppid(h) != master:
			t.Fatalf("%s: the connection from %d is held by %d (%s), not a child of the server %d", s.name, cport, h, comm(h), master)
		case s.workers > 0 && !slices.Contains(srv.workers, h):
			t.Fatalf("%s: the connection from %d is held by %d (%s), not a worker %v", s.name, cport, h, comm(h), srv.workers)
		case !s.forks && s.workers == 0 && h != master:
			t.Fatalf("%s: the connection from %d is held by %d (%s), not the server %d", s.name, cport, h, comm(h), master)
		}
		holder[cport] = h
		if s.forks {
			servers = append(servers, h)
		}
	}
	for _, fd := range held {
		if err := s.finish(fd); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		testnet.Close(fd)
	}

	// The server's own client, once.
	args := slices.Clone(s.client)
	for i, a := range args {
		if strings.Contains(a, "%d") {
			args[i] = fmt.Sprintf(a, port)
		}
	}
	cl := exec.Command(args[0], args[1:]...)
	var clOut bytes.Buffer
	cl.Stdout, cl.Stderr = &clOut, &clOut
	startIn(t, ns, cl)
	if err := cl.Wait(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, clOut.String())
	}
	clientPid := uint32(cl.Process.Pid)

	// The load: 16 clients, 50 connections each, one at a time each.
	loadStart := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, loadClients)
	for range loadClients {
		wg.Go(func() {
			for range loadEach {
				fd, _, err := dial(ns, ap)
				if err == nil {
					if err = s.hold(fd); err == nil {
						err = s.finish(fd)
					}
					testnet.Close(fd)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%s load: %v", s.name, err)
	}
	loadTook := time.Since(loadStart)
	// The server's children that served connections (postgres backends)
	// are gone by now; remember the server processes /proc shows.
	servers = append(servers, children(int(master))...)
	srv.stopServer()
	time.Sleep(100 * time.Millisecond) // the last ACKs
	if err := tr.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := tr.wait(20 * time.Second); code != 0 {
		t.Fatalf("trace: exit status %d\n%s", code, tr.stderr)
	}

	// --- The checks.
	var evs []model.Event
	sc := bufio.NewScanner(strings.NewReader(tr.stdout.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		e, v, err := model.ParseRecord(sc.Bytes())
		if err != nil {
			t.Fatalf("not a record: %v\n%s", err, sc.Text())
		}
		if e.Netns != ns.Inode() {
			continue
		}
		if v.Kind != model.VerdictOK {
			p.Errorf("verdict %v %q: %s", v.Kind, v.Reason, sc.Text())
		}
		evs = append(evs, e)
	}
	ls := tracetest.Lives(evs, ns.Inode())
	oevs, err := o.Events()
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	diffs := tracetest.OracleDiff(oevs, ls, nil)
	for _, d := range diffs {
		p.Errorf("%s", d[:min(len(d), 4000)])
	}
	sum := readTraceSummary(t, summary)
	checkSummaryLoss(problemsTB{t, p}, sum, tr.stderr.String())
	if len(diffs) > 0 {
		if sum.Lost == 0 {
			p.Errorf("the summary reports 0 lost, yet transitions are missing or wrong")
		} else {
			p.Errorf("NOTE: the summary reports %d lost host-wide", sum.Lost)
		}
	}
	if sum.Check.Unknown != 0 || sum.Check.Gap != 0 || sum.Check.Illegal != 0 {
		p.Errorf("tracker: %+v, want no unknown, gap or illegal verdict", sum.Check)
	}

	// Owners, socket by socket.
	me := uint32(os.Getpid())
	var listeners, kids, clients int
	for _, l := range ls {
		last := l.Evs[len(l.Evs)-1]
		fail := func(format string, a ...any) {
			p.Errorf("%s: %s\n%s", s.name, fmt.Sprintf(format, a...), tracetest.Dump([]*tracetest.Life{l}))
		}
		for i := range l.Evs {
			if e := &l.Evs[i]; !e.OwnerKnown() || e.Comm.String() == "" {
				fail("record %d without owner", i)
			}
		}
		switch {
		case last.Sport == port && last.Dport == 0: // the listener
			listeners++
			for _, e := range l.Evs {
				if !slices.Contains(servers, e.Pid) {
					fail("listener owned by %d (%s), not a server process %v", e.Pid, e.Comm, servers)
				}
			}
			if before {
				if len(l.Evs) != 1 || l.First() != "LISTEN>CLOSE" || l.Evs[0].LastState != model.Listen {
					fail("the old listener: want its LISTEN>CLOSE only, continuing from the seeded LISTEN")
				}
			} else if l.First() != "CLOSE>LISTEN" || l.Evs[0].Pid != master {
				fail("the new listener: want CLOSE>LISTEN by the server %d", master)
			}
		case last.Sport == port: // a child
			kids++
			if l.First() != "LISTEN>SYN_RECV" || len(l.Evs) < 3 {
				fail("a child: want its handshake from LISTEN>SYN_RECV")
				continue
			}
			// The handshake, before accept(): the listener's owner.
			for _, e := range l.Evs[:2] {
				if e.Pid != master || e.Flags&model.FlagOwnerInherited == 0 {
					fail("handshake record %s owned by %d (inherited %v), want the listener's owner %d, inherited",
						tracetest.Edge(e.Old, e.New), e.Pid, e.Flags&model.FlagOwnerInherited != 0, master)
				}
			}
			// After accept: the acceptor, then whoever acts on it.
			h, isHeld := holder[last.Dport]
			for _, e := range l.Evs[2:] {
				switch {
				case e.Flags&model.FlagOwnerInherited != 0:
					fail("record %s after accept still inherited", tracetest.Edge(e.Old, e.New))
				case isHeld && e.Pid != h:
					fail("record %s owned by %d (%s), but ss -tanp named %d (%s) as the holder", tracetest.Edge(e.Old, e.New), e.Pid, e.Comm, h, comm(h))
				case s.workers > 0 && !slices.Contains(srv.workers, e.Pid):
					fail("record %s owned by %d (%s), not a worker %v", tracetest.Edge(e.Old, e.New), e.Pid, e.Comm, srv.workers)
				case s.forks && e.Pid != master && !slices.Contains(servers, e.Pid) && ppid(e.Pid) != master:
					// Backends have exited: their comm, and the
					// owner ss named while one was held, speak for
					// them.
					if e.Comm.String() != "postgres" {
						fail("record %s owned by %d (%s), not the server or a backend", tracetest.Edge(e.Old, e.New), e.Pid, e.Comm)
					}
				case !s.forks && s.workers == 0 && e.Pid != master:
					fail("record %s owned by %d (%s), not the server %d", tracetest.Edge(e.Old, e.New), e.Pid, e.Comm, master)
				}
			}
		case last.Dport == port: // a client
			clients++
			for _, e := range l.Evs {
				if e.Pid != me && e.Pid != clientPid {
					fail("client record %s owned by %d (%s), want the test %d or %s %d", tracetest.Edge(e.Old, e.New), e.Pid, e.Comm, me, args[0], clientPid)
				}
			}
		default:
			fail("a socket of neither side of port %d", port)
		}
	}
	// The server's side of its own client's connection.
	for _, l := range ls {
		if l.Evs[0].Pid != clientPid || l.First() != "CLOSE>SYN_SENT" {
			continue
		}
		cport := l.Evs[len(l.Evs)-1].Sport
		for _, k := range ls {
			if last := k.Evs[len(k.Evs)-1]; last.Sport != port || last.Dport != cport || len(k.Evs) < 4 {
				continue
			}
			t.Logf("%s: the connection of %s, both sides:\n%s", s.name, args[0], tracetest.Dump([]*tracetest.Life{l, k}))
			// psql sends Terminate and closes at once: its FIN reaches
			// the backend's socket in softirq before the backend acts on
			// it. tcpstate names the last process seen acting on the
			// socket, the postmaster that accepted it, though the backend
			// it forked is the only process holding it then (what ss
			// would name). A known limit of owner attribution (docs/
			// kernel.md: a forked server): nothing tells the programs
			// that fork handed the socket on, until the backend's own
			// close. Checked as it is, so that a fix shows here.
			if e := k.Evs[2]; s.forks && tracetest.Edge(e.Old, e.New) == "ESTABLISHED>CLOSE_WAIT" {
				if e.Pid != master {
					p.Errorf("%s: %s's connection: ESTABLISHED>CLOSE_WAIT owned by %d (%s); the known limit named the postmaster %d: if the backend is named now, drop this expectation", s.name, args[0], e.Pid, e.Comm, master)
				} else {
					t.Logf("known limit: the backend's socket's ESTABLISHED>CLOSE_WAIT (softirq, the client closed first) names the postmaster %d, which accepted it and passed it on at fork; the backend %d is named from its own close on", master, k.Evs[3].Pid)
				}
				if b := k.Evs[3]; b.Pid == master || b.Comm.String() != "postgres" {
					p.Errorf("%s: %s's connection: %s owned by %d (%s), want the backend", s.name, args[0], tracetest.Edge(b.Old, b.New), b.Pid, b.Comm)
				}
			}
		}
	}
	conns := heldConns + 1 + loadClients*loadEach
	if listeners != 1 || kids != conns || clients != conns {
		p.Errorf("%s: %d listeners, %d children, %d clients; want 1, %d, %d", s.name, listeners, kids, clients, conns, conns)
	}
	t.Logf("%s (started %s the tracer): %d connections (the load in %v), %d transitions, all as the kernel recorded them; owners: server %d, workers %v, held by %v; lost %d host-wide; %v in all",
		s.name, map[bool]string{true: "before", false: "after"}[before], conns, loadTook.Round(time.Millisecond), len(evs), master, srv.workers, holder, sum.Lost, time.Since(began).Round(time.Millisecond))
}

// problemsTB lets a check written for testing.TB report to an attempt's
// Problems.
type problemsTB struct {
	*testing.T
	p *testnet.Problems
}

func (x problemsTB) Errorf(format string, a ...any) { x.p.Errorf(format, a...) }
