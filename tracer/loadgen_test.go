package tracer_test

// The benchmark's load generator (bench/loadgen) as a test load, and the
// accounting of one run: which of its sockets' transitions the tracer
// delivered, and, for the ones it did not, whether the kernel's own record
// says the program ran for them.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// buildLoadgen builds bench/loadgen into a temporary directory.
func buildLoadgen(t *testing.T) string {
	t.Helper()
	testnet.RequireRoot(t)
	if pre, ok := testnet.Prebuilt("loadgen"); ok {
		return pre
	}
	loadgen := filepath.Join(t.TempDir(), "loadgen")
	cmd := exec.Command("go", "build", "-o", loadgen, "../bench/loadgen")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := testnet.RunCmd(cmd); err != nil {
		t.Fatalf("building the load generator: %v\n%s", err, out.String())
	}
	return loadgen
}

// loadResult is what loadgen prints (bench/loadgen's Result).
type loadResult struct {
	Connections int     `json:"connections"`
	Errors      int     `json:"errors"`
	Expected    uint64  `json:"expected_transitions"`
	Netns       uint32  `json:"netns"`
	Addr        string  `json:"addr"`
	Seconds     float64 `json:"seconds"`
	ConnPerSec  float64 `json:"conn_per_s"`
}

// load is one loadgen run in a network namespace of its own (--new-netns:
// loadgen runs itself again as a child in a new namespace, and that child
// makes every socket, clients and server alike).
type load struct {
	cmd      *exec.Cmd
	out, err bytes.Buffer
	goFile   string // loadgen dials once it exists (Go)
	once     sync.Once
	exited   error
	// Pid is the process that owns every socket of the load.
	Pid uint32
}

// loadPort is the loadgen's server port (its --addr).
const loadPort = 18080

// startLoad starts loadgen and waits until its child listens: from then on
// the child waits for Go before its first dial, so a tracer opened now,
// filtered on Pid, sees every connection but not the listener's birth,
// however long it takes to load (seconds on an emulated CPU).
func startLoad(t *testing.T, p *testnet.Problems, loadgen string, conns, clients int) *load {
	t.Helper()
	l := &load{goFile: filepath.Join(t.TempDir(), "go")}
	l.cmd = exec.Command(loadgen, "--new-netns", "--addr", fmt.Sprintf("127.0.0.1:%d", loadPort),
		"--connections", strconv.Itoa(conns), "--clients", strconv.Itoa(clients),
		"--go-file", l.goFile, "--timeout", testnet.Scaled(60*time.Second).String())
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.err
	if err := testnet.StartCmd(l.cmd); err != nil {
		t.Fatalf("starting the load generator: %v", err)
	}
	t.Cleanup(l.kill)
	parent := l.cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for l.Pid == 0 || !listening(l.Pid, loadPort) {
		if time.Now().After(deadline) {
			l.kill() // not to load the next attempt
			p.Fatalf("the load generator (pid %d, child %d) was not listening on port %d after 5s; stderr: %s", parent, l.Pid, loadPort, l.err.String())
		}
		if l.Pid == 0 {
			l.Pid = childOf(parent)
		}
		time.Sleep(time.Millisecond)
	}
	return l
}

// kill ends loadgen if it still runs (its child has Pdeathsig), and
// waits for it.
func (l *load) kill() {
	l.once.Do(func() {
		l.cmd.Process.Kill()
		l.exited = l.cmd.Wait()
	})
}

// Go lets the load dial: the tracers are open.
func (l *load) Go(p *testnet.Problems) {
	if err := os.WriteFile(l.goFile, nil, 0o600); err != nil {
		p.Fatalf("starting the load: %v", err)
	}
}

// wait waits for loadgen to exit (at most 90 s, Scaled: it gives up itself
// after 60) and returns its report, which it prints once every socket it made
// but its TIME_WAIT ones has closed.
func (l *load) wait(p *testnet.Problems) loadResult {
	done := make(chan struct{})
	go func() {
		l.once.Do(func() { l.exited = l.cmd.Wait() })
		close(done)
	}()
	select {
	case <-done:
		if l.exited != nil {
			p.Fatalf("load generator: %v\n%s", l.exited, l.err.String())
		}
	case <-time.After(testnet.Scaled(90 * time.Second)):
		l.cmd.Process.Kill()
		<-done
		p.Fatalf("load generator still running after %v\n%s", testnet.Scaled(90*time.Second), l.err.String())
	}
	var res loadResult
	if err := json.Unmarshal(l.out.Bytes(), &res); err != nil {
		p.Fatalf("load generator's report %q: %v", l.out.String(), err)
	}
	return res
}

// childOf returns the pid of a child process of parent (0: none yet).
func childOf(parent int) uint32 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, not ')'.
		_, rest, ok := strings.Cut(string(b), ") ")
		if f := strings.Fields(rest); ok && len(f) > 1 && f[1] == strconv.Itoa(parent) {
			return uint32(pid)
		}
	}
	return 0
}

// listening reports whether pid's network namespace has a TCP listener on
// 127.0.0.1:port (/proc/PID/net/tcp is that namespace's table).
func listening(pid uint32, port uint16) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 3 && fs[1] == want && fs[3] == "0A" {
			return true
		}
	}
	return false
}

// The transitions of each socket of the load (bench/loadgen's package
// comment): the client closes first. Its listener was born before the
// tracer opened: only its LISTEN>CLOSE is in the trace.
var (
	loadClient   = slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose)
	loadChild    = slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose)
	loadListener = []string{"LISTEN>CLOSE"}
)

// loadSockets checks the events of the load's namespace socket by socket:
// every socket's delivered transitions must be its role's, in order, some
// perhaps missing. Where some are missing before a delivered event, its
// LastState (the new state of the last transition the program ran for)
// says whether the program ran for them; if it did, the loss must have been
// counted since the socket's previous delivered event (their LossSeq
// differ). It returns the sockets found per role, how many missing
// transitions the program never ran for by this record, and what is wrong.
func loadSockets(evs []model.Event, netns uint32) (roles map[string]int, neverRan int, problems []string) {
	type inc struct {
		role string
		peer uint16 // the client's port, once known
		evs  []*model.Event
	}
	roleOf := func(e *model.Event) (string, uint16) {
		switch {
		case e.Old == model.Listen && e.New == model.Close || e.Old == model.Close && e.New == model.Listen:
			return "listener", 0
		case e.Dport == loadPort:
			return "client", e.Sport
		case e.Sport == loadPort:
			return "child", e.Dport
		}
		return "", 0
	}
	var incs []*inc
	open := map[uint64]*inc{}
	for i := range evs {
		e := &evs[i]
		if e.Netns != netns {
			continue
		}
		role, peer := roleOf(e)
		if role == "" {
			problems = append(problems, "a socket of no role of the load: "+tracetest.FmtEvent(e))
			continue
		}
		if e.Old == model.Close && e.New == model.SynSent {
			peer = 0 // connect() picks the port after this event
		}
		// An incarnation ends at ->CLOSE; where that was lost, the next
		// one at the same address starts at a birth or with other ports.
		cur := open[e.Skaddr]
		birth := e.Old == model.Close || model.IsChildBirth(e.Old, e.New)
		if cur == nil || birth || cur.role != role || cur.peer != 0 && peer != 0 && cur.peer != peer {
			cur = &inc{role: role}
			incs = append(incs, cur)
			open[e.Skaddr] = cur
		}
		if peer != 0 {
			cur.peer = peer
		}
		cur.evs = append(cur.evs, e)
		if e.New == model.Close {
			delete(open, e.Skaddr)
		}
	}
	roles = map[string]int{}
	for _, in := range incs {
		roles[in.role]++
		want := map[string][]string{"client": loadClient, "child": loadChild, "listener": loadListener}[in.role]
		// The index in want of each delivered transition.
		idx := make([]int, len(in.evs))
		j := 0
		for k, e := range in.evs {
			for j < len(want) && want[j] != tracetest.Edge(e.Old, e.New) {
				j++
			}
			if j == len(want) {
				var b strings.Builder
				for _, e := range in.evs {
					fmt.Fprintf(&b, "\n      %s", tracetest.FmtEvent(e))
				}
				problems = append(problems, fmt.Sprintf("%s: transitions not a %s's %v:%s", in.role, in.role, want, b.String()))
				idx = nil
				break
			}
			idx[k] = j
			j++
		}
		for k := range idx {
			prevIdx, before := -1, model.State(0) // a new socket's storage has no state
			if k > 0 {
				prevIdx = idx[k-1]
				_, after, _ := strings.Cut(want[prevIdx], ">")
				before, _ = model.ParseState(after)
			}
			if idx[k] == prevIdx+1 {
				continue
			}
			e := in.evs[k]
			if e.LastState == before {
				neverRan += idx[k] - prevIdx - 1
			} else if k > 0 && e.LossSeq == in.evs[k-1].LossSeq {
				problems = append(problems, fmt.Sprintf("%s: the program ran for some of %v (its last state is %v) and delivered no event of them, yet counted no loss (loss_seq %d on both sides):\n      %s\n      %s",
					in.role, want[prevIdx+1:idx[k]], e.LastState, e.LossSeq, tracetest.FmtEvent(in.evs[k-1]), tracetest.FmtEvent(e)))
			}
		}
	}
	return roles, neverRan, problems
}

// transitionKey identifies one of the load's transitions across tracers:
// the socket address, the edge and the ports (CLOSE>SYN_SENT has no source
// port: count keys, several transitions may share one).
func transitionKey(e *model.Event) string {
	return fmt.Sprintf("%#x %s %d>%d", e.Skaddr, tracetest.Edge(e.Old, e.New), e.Sport, e.Dport)
}

// keyCounts counts transitions by transitionKey.
type keyCounts map[string]int

func (k keyCounts) total() int {
	n := 0
	for _, v := range k {
		n += v
	}
	return n
}

// countKeys counts the transitions of netns by key.
func countKeys(evs []model.Event, netns uint32) keyCounts {
	out := keyCounts{}
	for i := range evs {
		if evs[i].Netns == netns {
			out[transitionKey(&evs[i])]++
		}
	}
	return out
}

// exactAccounting fails the test unless an unfiltered tracer's program
// delivered or counted as ring-full every transition it ran for: with no
// filter, nothing else may keep an event from the ring. What it did not
// deliver, then, it never ran for.
func exactAccounting(t *testing.T, name string, evs []model.Event, c tracer.Counters) {
	t.Helper()
	if got := uint64(len(evs)) + c.RingbufFull; c.Transitions != got {
		t.Errorf("%s: the program ran for %d transitions (host-wide), delivered %d and counted %d ring-full: %d dropped without a count",
			name, c.Transitions, len(evs), c.RingbufFull, int64(c.Transitions)-int64(got))
	}
}
