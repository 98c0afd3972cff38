package main

// End-to-end tests of the built binary: `go build`, then run
// `tcpstate trace` as a subprocess, as a user would. The tracing tests are
// privileged (testnet.RequireRoot); the usage and privilege errors are not.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// TestHelperProcess is the helper child of testnet.StartProc.
func TestHelperProcess(t *testing.T) { testnet.HelperProcess() }

// attachedLine is what trace prints on stderr once its programs are attached.
const attachedLine = "tcpstate: tracing TCP state transitions; Ctrl-C to stop"

// buildBinary builds cmd/tcpstate into dir, readable and executable by
// every user (the unprivileged test runs it as nobody).
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	if pre, ok := testnet.Prebuilt("tcpstate"); ok {
		return copyBinary(t, pre, dir)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		// sudo's secure_path usually lacks Go: use the toolchain that
		// built this test.
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "tcpstate")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Every subprocess starts through testnet: it must not take the
	// sockets of parallel tests with it (see testnet.StartCmd).
	if err := testnet.RunCmd(cmd); err != nil {
		out := out.String()
		// This package compiled (it is this test), so a failure is the
		// environment's: typically an unprivileged user without a Go
		// cache or module cache of its own (sudo -u nobody).
		if !testnet.Privileged() && os.Getenv("CI") != "true" {
			t.Skipf("go build failed in this unprivileged environment: %v\n%s", err, out)
		}
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// copyBinary copies a prebuilt tcpstate into dir, as buildBinary would
// have built it there.
func copyBinary(t *testing.T, src, dir string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tcpstate")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// unexpectedWarnings returns the warning lines of out but those that name
// a feature the running kernel lacks ("... (Linux 6.2; this kernel is
// 6.1.0-...)": an older kernel's degraded features, each said once).
func unexpectedWarnings(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "warning") && !strings.Contains(l, "; this kernel is ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// syncBuffer collects a subprocess's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// traceProc is a running `tcpstate trace`.
type traceProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
	// attached is closed when the process printed its ready line.
	attached chan struct{}
}

// startTrace runs `tcpstate trace args...` and waits until it is attached.
func startTrace(t *testing.T, bin string, args ...string) *traceProc {
	t.Helper()
	return startTcpstate(t, attachedLine, nil, append([]string{bin, "trace"}, args...)...)
}

// statsAttachedLine is what stats prints on stderr once it is attached.
const statsAttachedLine = "tcpstate: counting TCP state transitions in the kernel; Ctrl-C to stop"

// startTcpstate runs argv (tcpstate, or a command that runs it) and waits
// until its stderr has the line ready. stdout is where its standard output
// goes (nil: p.stdout).
func startTcpstate(t *testing.T, ready string, stdout *os.File, argv ...string) *traceProc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	if stdout != nil {
		cmd.Stdout = stdout
	}
	p := launch(t, cmd, ready)
	p.waitAttached()
	return p
}

// launch starts cmd and returns at once; waitAttached waits for its line
// ready on stderr. Several tracers can load at the same time. Its standard
// output goes to p.stdout unless cmd has one.
func launch(t *testing.T, cmd *exec.Cmd, ready string) *traceProc {
	t.Helper()
	p := &traceProc{t: t, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{}), attached: make(chan struct{})}
	p.cmd = cmd
	if p.cmd.Stdout == nil {
		p.cmd.Stdout = p.stdout
	}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := testnet.StartCmd(p.cmd); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		r := bufio.NewReader(errPipe)
		once := sync.Once{}
		for {
			line, err := r.ReadString('\n')
			p.stderr.Write([]byte(line))
			if strings.TrimSuffix(line, "\n") == ready {
				once.Do(func() { close(p.attached) })
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		<-copied // Wait must not run before the pipe is drained
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitAttached waits (at most 20 s, testnet.Scaled) until the process
// printed its ready line.
func (p *traceProc) waitAttached() {
	p.t.Helper()
	args := p.cmd.Args
	limit := testnet.Scaled(20 * time.Second)
	select {
	case <-p.attached:
	case <-p.done:
		p.t.Fatalf("%v exited before attaching: %v\nstderr:\n%s", args, p.err, p.stderr)
	case <-time.After(limit):
		p.t.Fatalf("%v did not attach within %v\nstderr:\n%s", args, limit, p.stderr)
	}
}

// wait waits (at most timeout, testnet.Scaled) for the process to exit and
// returns its exit status.
func (p *traceProc) wait(timeout time.Duration) int {
	p.t.Helper()
	timeout = testnet.Scaled(timeout)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("tcpstate did not exit within %v\nstderr:\n%s", timeout, p.stderr)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("waiting for tcpstate: %v", p.err)
	}
	return 0
}

// records parses stdout: every line must be a JSON record.
func (p *traceProc) records() []model.Event {
	p.t.Helper()
	var evs []model.Event
	for i, line := range strings.Split(strings.TrimSuffix(p.stdout.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		e, v, err := model.ParseRecord([]byte(line))
		if err != nil {
			p.t.Fatalf("line %d is not a record: %v\n%s", i+1, err, line)
		}
		if v.Kind != model.VerdictOK {
			p.t.Errorf("line %d: verdict %v %q on a normal connection\n%s", i+1, v.Kind, v.Reason, line)
		}
		evs = append(evs, e)
	}
	return evs
}

// summaryEvents reads "delivered: N events (M printed)" from the stderr
// summary.
func summaryEvents(t *testing.T, stderr string) (events, printed int) {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "delivered:"); ok {
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d events (%d printed)", &events, &printed); err == nil {
				return events, printed
			}
		}
	}
	t.Fatalf("no \"delivered: N events (M printed)\" line in the summary:\n%s", stderr)
	return 0, 0
}

type summaryFile struct {
	Events     uint64 `json:"events"`
	Printed    uint64 `json:"printed"`
	Lost       uint64 `json:"lost"`
	AcceptHook string `json:"accept_hook"`
	Kernel     struct {
		RecursionMisses uint64 `json:"recursion_misses"`
		Sockets         uint64 `json:"sockets"`
		Accepts         uint64 `json:"accepts"`
	} `json:"kernel"`
}

func readSummary(t *testing.T, path string) summaryFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("--summary-json: %v", err)
	}
	var s summaryFile
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("--summary-json is not JSON: %v\n%s", err, b)
	}
	return s
}

// connect makes one connection from client to server on ap, closed from
// the client's side (or the server's) first. It returns the client's port.
func connect(t *testing.T, server, client testnet.Sockets, ap netip.AddrPort, serverFirst bool) uint16 {
	t.Helper()
	lfd, err := server.Listen(ap)
	if err != nil {
		t.Fatal(err)
	}
	cfd, err := client.Connect(ap)
	if err != nil {
		t.Fatal(err)
	}
	afd, err := server.Accept(lfd)
	if err != nil {
		t.Fatal(err)
	}
	local, err := client.LocalAddr(cfd)
	if err != nil {
		t.Fatal(err)
	}
	first, firstFD, second, secondFD := client, cfd, server, afd
	if serverFirst {
		first, firstFD, second, secondFD = server, afd, client, cfd
	}
	for _, err := range []error{first.Close(firstFD), second.ReadEOF(secondFD), second.Close(secondFD), server.Close(lfd)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return local.Port()
}

func TestCLI(t *testing.T) {
	bin := buildBinary(t, t.TempDir())

	// Bad input: exit status 2 and one clear line (plus the pointer to
	// --help), never a usage dump or a stack trace. No privileges needed:
	// flags are checked before anything is loaded.
	t.Run("usage-errors", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			args []string
			msg  string
		}{
			{[]string{"trace", "--bogus"}, "unknown flag: --bogus"},
			{[]string{"trace", "--port", "0"}, `--port "0": a port is a number from 1 to 65535`},
			{[]string{"trace", "--port", "70000"}, `--port "70000": a port is a number from 1 to 65535`},
			{[]string{"trace", "--port", "abc"}, `--port "abc": a port is a number from 1 to 65535`},
			{[]string{"trace", "--pid", "abc"}, `--pid "abc": a process id is a number`},
			{[]string{"trace", "-4", "-6"}, "-4 and -6 exclude each other"},
			{[]string{"trace", "--state", "BOGUS"}, `--state: unknown TCP state "BOGUS"`},
			{[]string{"trace", "-o", "bogus"}, `--output "bogus": want table, wide or json`},
		} {
			cmd := exec.Command(bin, c.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := testnet.RunCmd(cmd)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
				t.Errorf("tcpstate %s: %v, want exit status %d\nstderr: %s", strings.Join(c.args, " "), err, exitUsage, &stderr)
				continue
			}
			want := "tcpstate: " + c.msg
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], want) || lines[1] != "Run 'tcpstate trace --help' for usage." {
				t.Errorf("tcpstate %s: stderr\n%s\nwant two lines: %q... and the pointer to trace --help", strings.Join(c.args, " "), &stderr, want)
			}
			if stdout.Len() != 0 {
				t.Errorf("tcpstate %s: printed on stdout: %s", strings.Join(c.args, " "), &stdout)
			}
		}
	})

	// Without CAP_BPF and CAP_PERFMON: exit status 1 and a message that
	// names them.
	t.Run("unprivileged", func(t *testing.T) {
		t.Parallel()
		cmd := exec.Command(bin, "trace")
		cmd.Dir = "/"
		if os.Geteuid() == 0 {
			// nobody, with no capabilities left (setresuid from root to a
			// non-zero uid clears them all).
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		} else if testnet.Privileged() {
			t.Skip("this unprivileged test needs to run as root (to drop to nobody) or without capabilities")
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := testnet.RunCmd(cmd)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitError {
			t.Fatalf("unprivileged tcpstate trace: %v, want exit status %d\nstderr: %s", err, exitError, &stderr)
		}
		msg := strings.TrimSuffix(stderr.String(), "\n")
		if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "CAP_BPF") || !strings.Contains(msg, "CAP_PERFMON") ||
			!strings.HasPrefix(msg, "tcpstate: ") {
			t.Errorf("unprivileged: stderr %q, want one line naming CAP_BPF and CAP_PERFMON", msg)
		}
	})

	// The real thing: trace -o json --port P, traffic in a namespace,
	// SIGINT. Exit status 0; every line a record; the expected transitions
	// with their owners; the summary (stderr and --summary-json) counts
	// what was printed.
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		ns := testnet.New(t)
		srv := ns.StartProc(t)
		port := ns.Port(0)
		summary := filepath.Join(t.TempDir(), "summary.json")
		p := startTrace(t, bin, "-o", "json", "--port", strconv.Itoa(int(port)), "--summary-json", summary)

		// An IPv4 connection to the helper, closed by the client first, and
		// an IPv6 one in the test process, closed by the server first, on
		// the same port.
		c4 := connect(t, srv, ns, testnet.Addr(4, port), false)
		c6 := connect(t, ns, ns, testnet.Addr(6, port), true)
		// Wait for the 6 sockets' ->CLOSE in the output, then interrupt.
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(p.stdout.String(), `"new":"CLOSE"`) < 6 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("exit status %d after SIGINT, want 0\nstderr:\n%s", code, p.stderr)
		}
		evs := p.records()

		me, them := uint32(os.Getpid()), uint32(srv.Pid())
		type sock struct {
			family model.Family
			lport  uint16
			rport  uint16
			owner  uint32
			edges  []string
		}
		want := map[string]sock{
			"v4 listener": {model.AFInet, port, 0, them, []string{"CLOSE>LISTEN", "LISTEN>CLOSE"}},
			"v4 client": {model.AFInet, c4, port, me, []string{"CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED",
				"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}},
			"v4 accepted": {model.AFInet, port, c4, them, []string{"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED",
				"ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"}},
			"v6 listener": {model.AFInet6, port, 0, me, []string{"CLOSE>LISTEN", "LISTEN>CLOSE"}},
			"v6 client": {model.AFInet6, c6, port, me, []string{"CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED",
				"ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"}},
			"v6 accepted": {model.AFInet6, port, c6, me, []string{"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED",
				"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}},
		}
		// Group by socket; name each by its family and ports (the last
		// event has them all).
		type life struct {
			evs []model.Event
		}
		var order []*life
		open := map[uint64]*life{}
		for _, e := range evs {
			if e.Netns != ns.Inode() {
				t.Errorf("event from another namespace (netns %d, want %d): %+v", e.Netns, ns.Inode(), e)
				continue
			}
			l := open[e.Skaddr]
			if l == nil {
				l = &life{}
				open[e.Skaddr] = l
				order = append(order, l)
			}
			l.evs = append(l.evs, e)
			if e.New == model.Close {
				delete(open, e.Skaddr)
			}
		}
		got := map[string]bool{}
		for _, l := range order {
			last := l.evs[len(l.evs)-1]
			name := "?"
			for n, w := range want {
				if w.family == last.Family && w.lport == last.Sport && w.rport == last.Dport {
					name = n
				}
			}
			var edges []string
			for _, e := range l.evs {
				edges = append(edges, e.Old.String()+">"+e.New.String())
			}
			w, ok := want[name]
			if !ok || got[name] {
				t.Errorf("unexpected socket %s: %v", name, edges)
				continue
			}
			got[name] = true
			if !slices.Equal(edges, w.edges) {
				t.Errorf("%s: transitions %v, want %v", name, edges, w.edges)
			}
			for _, e := range l.evs {
				if !e.OwnerKnown() || e.Pid != w.owner {
					t.Errorf("%s: %s>%s owner %d (known %v), want %d", name, e.Old, e.New, e.Pid, e.OwnerKnown(), w.owner)
				}
			}
		}
		for n := range want {
			if !got[n] {
				t.Errorf("socket %s missing from the output:\n%s", n, p.stdout)
			}
		}

		// The summary counts what was printed, on stderr and in the file.
		events, printed := summaryEvents(t, p.stderr.String())
		if events != len(evs) || printed != len(evs) {
			t.Errorf("stderr summary: events %d (%d printed), but %d lines were printed", events, printed, len(evs))
		}
		s := readSummary(t, summary)
		if s.Events != uint64(len(evs)) || s.Printed != uint64(len(evs)) {
			t.Errorf("--summary-json: events %d printed %d, but %d lines were printed", s.Events, s.Printed, len(evs))
		}
		if s.AcceptHook == "off" || s.Kernel.Sockets < 6 || s.Kernel.Accepts < 2 {
			t.Errorf("--summary-json: %+v: want accept attached, at least 6 sockets tracked and 2 accepts", s)
		}
		// Loss is counted machine-wide (the program runs for every TCP
		// transition): with this test's sockets all complete above, a loss
		// can only be someone else's load.
		if s.Lost != 0 {
			if t.Failed() {
				t.Errorf("NOTE: tcpstate reported %d lost events: %+v", s.Lost, s)
			} else {
				t.Logf("tcpstate reported %d lost events machine-wide; this test's sockets were complete", s.Lost)
			}
		}
		if w := unexpectedWarnings(p.stderr.String()); w != "" {
			t.Errorf("warnings on stderr:\n%s", w)
		}
	})

	// Real sockets under names any local user can give a process, over
	// IPv4, IPv4-mapped IPv6, a full-length IPv6 address and ::1: trace's
	// table and -o wide print no control byte, show each name escaped,
	// and every line lines up with the header above it, reprinted where a
	// column had to grow.
	t.Run("table-names-addresses", func(t *testing.T) {
		t.Parallel()
		ns := testnet.New(t)
		port := ns.Port(0)
		long6 := netip.MustParseAddr("2001:db8:1234:5678:9abc:def0:1234:5678")
		ip, err := exec.LookPath("ip")
		if err != nil {
			ip = "/usr/sbin/ip"
		}
		// A child forked on the namespace thread starts in its namespace.
		if err := ns.Do(func() error {
			return testnet.RunCmd(exec.Command(ip, "-6", "addr", "add", long6.String()+"/128", "dev", "lo", "nodad"))
		}); err != nil {
			t.Fatalf("adding %s to lo: %v", long6, err)
		}
		// The namespace thread makes every socket of the test process:
		// its name is the comm the kernel reports for them.
		setName := func(name string) {
			t.Helper()
			if err := ns.Do(func() error {
				p, err := unix.BytePtrFromString(name)
				if err != nil {
					return err
				}
				return unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(p)), 0, 0, 0)
			}); err != nil {
				t.Fatalf("prctl(PR_SET_NAME, %q): %v", name, err)
			}
		}
		table := startTrace(t, bin, "--port", strconv.Itoa(int(port)))
		wide := startTrace(t, bin, "-o", "wide", "--port", strconv.Itoa(int(port)))

		names := []struct{ comm, shown string }{
			{"\x1b]0;PWN\x07\x1b[2J", `\x1b]0;PWN\x07\x1b[2J`},
			{"\u009b31mred", `\u009b31mred`},
			{"数据库", "数据库"},
			{"\x9b2J\xffok", `\x9b2J\xffok`},
		}
		setName(names[0].comm)
		connect(t, ns, ns, testnet.Addr(4, port), false)
		// A dual-stack listener: the accepted socket of an IPv4 client is
		// IPv6 with IPv4-mapped addresses.
		setName(names[1].comm)
		any6 := netip.AddrPortFrom(netip.IPv6Unspecified(), port)
		lfd, err := ns.Socket(any6)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.SetsockoptInt(lfd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			t.Fatal(err)
		}
		if err := ns.BindListen(lfd, any6); err != nil {
			t.Fatal(err)
		}
		cfd, err := ns.Connect(testnet.Addr(4, port))
		if err != nil {
			t.Fatal(err)
		}
		afd, err := ns.Accept(lfd)
		if err != nil {
			t.Fatal(err)
		}
		for _, err := range []error{ns.Close(cfd), ns.ReadEOF(afd), ns.Close(afd), ns.Close(lfd)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		setName(names[2].comm)
		connect(t, ns, ns, netip.AddrPortFrom(long6, port), true)
		setName(names[3].comm)
		connect(t, ns, ns, testnet.Addr(6, port), false)

		// 4 connections of 3 sockets, each ending in -> CLOSE.
		deadline := time.Now().Add(5 * time.Second)
		for _, p := range []*traceProc{table, wide} {
			for strings.Count(p.stdout.String(), "-> CLOSE ") < 12 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
		for mode, p := range map[string]*traceProc{"table": table, "wide": wide} {
			if code := p.wait(10 * time.Second); code != 0 {
				t.Fatalf("-o %s: exit status %d after SIGINT, want 0\nstderr:\n%s", mode, code, p.stderr)
			}
			out := p.stdout.String()
			assertTerminalSafe(t, "-o "+mode+" stdout", out)
			assertTerminalSafe(t, "-o "+mode+" stderr", p.stderr.String())
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			checkAlignedToHeaders(t, lines)
			headers := 0
			for _, l := range lines {
				if isHeader(l) {
					headers++
				}
			}
			// At least: the first, the IPv4-mapped address, the long IPv6
			// address and the escaped name that does not fit 16 columns.
			if headers < 4 {
				t.Errorf("-o %s: %d headers, want the columns to have grown at least 3 times:\n%s", mode, headers, out)
			}
			for _, n := range names {
				if !strings.Contains(out, " "+n.shown+" ") {
					t.Errorf("-o %s: no name %s:\n%s", mode, n.shown, out)
				}
			}
			for _, a := range []string{"[::ffff:127.0.0.1]:" + strconv.Itoa(int(port)), "[" + long6.String() + "]:" + strconv.Itoa(int(port))} {
				if !strings.Contains(out, " "+a+" ") {
					t.Errorf("-o %s: no address %s:\n%s", mode, a, out)
				}
			}
			if strings.Contains(out, "!!") {
				t.Errorf("-o %s: anomalies on normal connections:\n%s", mode, out)
			}
		}
	})

	// --count N stops by itself after N events.
	t.Run("count", func(t *testing.T) {
		t.Parallel()
		ns := testnet.New(t)
		port := ns.Port(0)
		summary := filepath.Join(t.TempDir(), "summary.json")
		p := startTrace(t, bin, "-o", "json", "--port", strconv.Itoa(int(port)), "--count", "3", "--summary-json", summary)
		connect(t, ns, ns, testnet.Addr(4, port), false) // 12 transitions
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("--count 3: exit status %d, want 0\nstderr:\n%s", code, p.stderr)
		}
		evs := p.records()
		if len(evs) != 3 {
			t.Errorf("--count 3 printed %d records:\n%s", len(evs), p.stdout)
		}
		for _, e := range evs {
			if e.Netns != ns.Inode() || (e.Sport != port && e.Dport != port) {
				t.Errorf("record not from the test's sockets: %+v", e)
			}
		}
		if _, printed := summaryEvents(t, p.stderr.String()); printed != 3 {
			t.Errorf("summary: %d printed, want 3\n%s", printed, p.stderr)
		}
		if s := readSummary(t, summary); s.Printed != 3 {
			t.Errorf("--summary-json: printed %d, want 3", s.Printed)
		}
	})

	// --duration stops by itself.
	t.Run("duration", func(t *testing.T) {
		t.Parallel()
		ns := testnet.New(t) // only for a port nothing uses
		started := time.Now()
		p := startTrace(t, bin, "--port", strconv.Itoa(int(ns.Port(0))), "--duration", "1s")
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("--duration 1s: exit status %d, want 0\nstderr:\n%s", code, p.stderr)
		}
		if d := time.Since(started); d < time.Second {
			t.Errorf("--duration 1s exited after %v", d)
		}
		// The table: its header, nothing else.
		out := strings.Split(strings.TrimSuffix(p.stdout.String(), "\n"), "\n")
		if len(out) != 1 || !strings.HasPrefix(out[0], "TIME ") {
			t.Errorf("stdout: want only the table header, got:\n%s", p.stdout)
		}
		if events, printed := summaryEvents(t, p.stderr.String()); events != 0 || printed != 0 {
			t.Errorf("summary: events %d (%d printed), want 0", events, printed)
		}
	})
}
