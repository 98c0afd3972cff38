package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
)

// TestTimeNamespace runs trace and stats in a time namespace whose
// CLOCK_MONOTONIC is a day ahead of the host's (unshare -T --monotonic
// 86400). bpf_ktime_get_ns is the host's clock whatever namespace the
// reader is in: wall-clock times must still be today's, and a socket that
// has been in ESTABLISHED for a second must not be listed as stuck for a
// day (before: trace printed yesterday's dates and stats listed a
// 2-second-old socket at 24 h).
func TestTimeNamespace(t *testing.T) {
	testnet.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) runs tcpstate in a time namespace: %v", err)
	}
	if _, err := os.Stat("/proc/self/timens_offsets"); err != nil {
		t.Fatalf("this kernel has no time namespaces (CONFIG_TIME_NS): %v", err)
	}
	bin := buildBinary(t, t.TempDir())
	ns := testnet.New(t)
	port := ns.Port(0)
	ap := testnet.Addr(4, port)
	// --fork: tcpstate is born in the time namespace. Without it, unshare
	// execs tcpstate in its own process, which on Linux 6.1 may not create
	// threads (clone(CLONE_THREAD) fails with EINVAL while the process's
	// time namespace differs from its children's: the Go runtime died at
	// start in Debian's 6.1 guest), which 6.18 allows.
	// unshare ignores SIGINT and SIGTERM while it waits: signals go to its
	// child, whose exit status it returns.
	inNS := []string{unshare, "-T", "--fork", "--monotonic", "86400", bin}

	summary := filepath.Join(t.TempDir(), "summary.json")
	p := startTcpstate(t, attachedLine, nil, append(inNS, "trace", "-o", "json", "--port", strconv.Itoa(int(port)),
		"--stuck", "ESTABLISHED=300ms", "--summary-json", summary)...)
	lfd, err := ns.Listen(ap)
	if err != nil {
		t.Fatal(err)
	}
	cfd, err := ns.Connect(ap)
	if err != nil {
		t.Fatal(err)
	}
	afd, err := ns.Accept(lfd)
	if err != nil {
		t.Fatal(err)
	}
	established := time.Now()
	defer func() {
		for _, fd := range []int{cfd, afd, lfd} {
			ns.Close(fd)
		}
	}()
	time.Sleep(800 * time.Millisecond)
	if err := syscall.Kill(childOf(t, p.cmd.Process.Pid), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("trace in a time namespace: exit status %d\n%s", code, p.stderr)
	}
	evs := p.records()
	if len(evs) < 5 {
		t.Fatalf("%d records, want the listener's and the connection's:\n%s", len(evs), p.stdout)
	}
	for _, e := range evs {
		if d := time.Since(e.Time); d < -time.Minute || d > time.Minute {
			t.Errorf("%s -> %s at %v: %v away from now", e.Old, e.New, e.Time, d)
		}
	}
	var s struct {
		Stuck []e2eSocket `json:"stuck"`
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("--summary-json: %v\n%s", err, b)
	}
	inState := time.Since(established).Seconds()
	if len(s.Stuck) != 2 {
		t.Errorf("trace: %d stuck sockets, want both ends of the connection: %s", len(s.Stuck), b)
	}
	for _, so := range s.Stuck {
		if so.State != "ESTABLISHED" || so.InStateS > inState+1 || so.InStateS < 0.3 || so.AgeS > inState+1 {
			t.Errorf("trace: stuck %+v: want ESTABLISHED for about %.1fs", so, inState)
		}
	}

	// stats, started while the connection is established: it knows the
	// sockets from its snapshot, their time in state a lower bound.
	p = startTcpstate(t, statsAttachedLine, nil, append(inNS, "stats", "-o", "json", "--port", strconv.Itoa(int(port)),
		"--interval", "0", "--duration", "1s", "--stuck", "ESTABLISHED=100ms")...)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("stats in a time namespace: exit status %d\n%s", code, p.stderr)
	}
	var doc struct {
		Start time.Time   `json:"start"`
		Stuck []e2eSocket `json:"stuck"`
	}
	out := strings.TrimSpace(p.stdout.String())
	if err := json.Unmarshal([]byte(out[strings.LastIndex(out, "\n")+1:]), &doc); err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	if d := time.Since(doc.Start); d < 0 || d > time.Minute {
		t.Errorf("stats: start %v is %v away from now", doc.Start, d)
	}
	if len(doc.Stuck) != 2 {
		t.Errorf("stats: %d stuck sockets, want both ends of the connection:\n%s", len(doc.Stuck), out)
	}
	for _, so := range doc.Stuck {
		if so.State != "ESTABLISHED" || so.InStateS > 5 || so.InStateS < 0.5 || !so.InStateAtLeast {
			t.Errorf("stats: stuck %+v: want ESTABLISHED since before the start, about 1s (a lower bound)", so)
		}
	}
}

// childOf is the only child of process pid (unshare --fork's).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("process %d has children %q, want one", pid, f)
	}
	child, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}

// e2eSocket is the socket form of the JSON documents, as the end-to-end
// tests read it (their own copy: they judge the binary, not its types).
type e2eSocket struct {
	Skaddr         string  `json:"skaddr"`
	State          string  `json:"state"`
	InStateS       float64 `json:"in_state_s"`
	InStateAtLeast bool    `json:"in_state_at_least"`
	AgeS           float64 `json:"age_s"`
	Pid            uint32  `json:"pid"`
	Sport          uint16  `json:"sport"`
	Dport          uint16  `json:"dport"`
}
