package tracer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// keepAll is a Handler that keeps every event of one namespace.
type keepAll struct {
	mu    sync.Mutex
	netns uint32
	evs   []model.Event
}

func (k *keepAll) Event(e *model.Event) error {
	k.mu.Lock()
	if k.netns == 0 || e.Netns == k.netns {
		k.evs = append(k.evs, *e)
	}
	k.mu.Unlock()
	return nil
}
func (k *keepAll) Flush() error { return nil }

// traceLoad opens a tracer with opts, runs start (which starts the load
// and returns how to wait for its result), and returns the events of the
// load's namespace and the kernel's counters after Detach.
func traceLoad(t *testing.T, p *testnet.Problems, opts tracer.Options, start func() (wait func() ([]byte, error))) ([]model.Event, tracer.Counters, loadResult) {
	t.Helper()
	opts.Warn = func(msg string) { t.Logf("tracer warning: %s", msg) }
	tr, err := tracer.Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer tr.Close()
	if !tr.ExactLoss() {
		// Linux 6.1 and before: recursion misses are not in LossSeq, and
		// this test checks LossSeq exactly.
		for _, f := range tr.Features() {
			if f.Name == "exact loss attribution" {
				t.Skipf("this kernel has no exact loss attribution, which the test checks: %s", f.Detail)
			}
		}
		t.Fatalf("the kernel's recursion misses are not in the loss sequence (features %+v)", tr.Features())
	}
	k := &keepAll{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, k) }()
	wait := start()
	out, err := wait()
	cancel()
	if rerr := <-done; rerr != nil {
		t.Fatalf("Run: %v", rerr)
	}
	if err != nil {
		p.Fatalf("load generator: %v\n%s", err, out)
	}
	var res loadResult
	if err := json.Unmarshal(out, &res); err != nil {
		p.Fatalf("load generator's report %q: %v", out, err)
	}
	if res.Errors != 0 {
		p.Fatalf("load generator: %+v", res)
	}
	if err := tr.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Drain(k); err != nil {
		t.Fatal(err)
	}
	c, err := tr.Summary()
	if err != nil {
		t.Fatal(err)
	}
	var evs []model.Event
	for _, e := range k.evs {
		if e.Netns == res.Netns {
			evs = append(evs, e)
		}
	}
	return evs, c, res
}

// TestLossSequenceExplainsEveryGap: with a ring buffer of one page the
// ring overflows under load; every event carries the kernel's loss
// sequence, so every gap a socket shows says exactly whether a loss was
// counted between its two events (before, the loss counter was read every
// 100 ms: with --ring-size 4096, 2,649 of 3,011 gaps said "no events
// reported lost" while 85,544 ring-full losses were reported). And the
// sequence holds every counted loss, recursion misses included.
func TestLossSequenceExplainsEveryGap(t *testing.T) {
	testnet.RequireRoot(t)
	loadgen := buildLoadgen(t)
	m, _ := model.ModelByName("linux")
	testnet.Retry(t, func(p *testnet.Problems) {
		opts := tracer.Options{RingSize: os.Getpagesize(), Filter: model.Filter{Ports: []uint16{18080}}}
		evs, c, res := traceLoad(t, p, opts, func() func() ([]byte, error) {
			cmd := exec.Command(loadgen, "--new-netns", "--connections", "3000", "--clients", "4", "--timeout", testnet.Scaled(60*time.Second).String())
			return cmd.Output
		})
		if c.RingbufFull == 0 {
			p.Fatalf("a one-page ring did not overflow (counters %+v): the test proves nothing", c)
		}
		// A skip in the last instant of a run, after its last read of the
		// miss counter, joins the sequence at the start of that CPU's next
		// run (bpf/tcpstate.bpf.c, miss_seen); after a CPU's very last run
		// there is none. Seen in a 6.12 guest: 2 to 6 of 44 before the
		// next run caught them up.
		if c.LossSeq > c.Lost() || c.Lost()-c.LossSeq > uint64(runtime.NumCPU()) {
			p.Errorf("loss sequence %d, counted losses %d (%+v): a counted loss is missing from the sequence, or the reverse", c.LossSeq, c.Lost(), c)
		} else if c.LossSeq != c.Lost() {
			t.Logf("loss sequence %d, counted losses %d: %d skipped after a CPU's last run", c.LossSeq, c.Lost(), c.Lost()-c.LossSeq)
		}
		tr := model.NewTracker(m, 0)
		tr.SetNoLossReports(true) // exact: every counted loss is in LossSeq
		var uncounted []string
		for i := range evs {
			v := tr.Check(&evs[i])
			if v.Kind.Anomaly() && len(uncounted) < 5 && !strings.Contains(v.Reason, "counted lost meanwhile") {
				uncounted = append(uncounted, v.Reason)
			}
		}
		st := tr.Stats()
		t.Logf("%d of %d transitions delivered; %d ring-full, %d recursion misses; %d gaps, %d after counted loss, %d transitions missing without a count",
			len(evs), res.Expected, c.RingbufFull, c.RecursionMisses, st.Gaps(), st.GapAfterLoss, st.MissingUncounted)
		if st.Illegal != 0 {
			p.Errorf("%d illegal transitions under the linux model", st.Illegal)
		}
		if st.MissingUncounted != 0 {
			// The kernel also skips programs without a count on these
			// machines (docs/kernel.md, "Loss no counter sees"):
			// retried, never accepted as normal.
			p.Errorf("%d gaps with no loss counted between the socket's events: %q", st.Gaps()-st.GapAfterLoss, uncounted)
		}
	})
}

// TestPidFilterDeliversHeldEventsInOrder: a pid filter holds a child
// socket's first events until the pid's accept() names the owner (the
// listener is older than the tracer, so the children inherit no owner),
// and the accept hook delivers them while the peer may already be closing
// the socket in softirq. They must reach user space in the socket's own
// order, whole, with the owner that made the socket match (before: a held
// SYN_RECV->ESTABLISHED arrived after the socket's ESTABLISHED->CLOSE_WAIT
// in 2 of 3 runs, and held events came out with pid 0 and owner unknown).
// Sixteen clients, and --max-sockets 16 so that queues run out: what cannot
// be held is counted, never dropped silently.
func TestPidFilterDeliversHeldEventsInOrder(t *testing.T) {
	testnet.RequireRoot(t)
	loadgen := buildLoadgen(t)
	m, _ := model.ModelByName("linux")
	for _, maxSockets := range []int{tracer.DefaultMaxSockets, 16} {
		t.Run(fmt.Sprintf("max-sockets %d", maxSockets), func(t *testing.T) {
			testnet.Retry(t, func(p *testnet.Problems) {
				dir := t.TempDir()
				pidFile, goFile := filepath.Join(dir, "pid"), filepath.Join(dir, "go")
				cmd := exec.Command(loadgen, "--new-netns", "--connections", "3000", "--clients", "16",
					"--timeout", testnet.Scaled(60*time.Second).String(), "--go-file", goFile, "--pid-file", pidFile)
				var stdout bytes.Buffer
				cmd.Stdout = &stdout
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				pid := waitPidFile(t, pidFile)
				opts := tracer.Options{MaxSockets: maxSockets, Filter: model.Filter{Pids: []uint32{pid}}}
				evs, c, res := traceLoad(t, p, opts, func() func() ([]byte, error) {
					if err := os.WriteFile(goFile, nil, 0o600); err != nil { // the tracer is open: dial
						t.Fatal(err)
					}
					return func() ([]byte, error) { err := cmd.Wait(); return stdout.Bytes(), err }
				})
				tr := model.NewTracker(m, 0)
				tr.SetNoLossReports(true)
				var problems []string
				for i := range evs {
					e := &evs[i]
					v := tr.Check(e)
					if v.Kind.Anomaly() && !strings.Contains(v.Reason, "counted lost meanwhile") && len(problems) < 5 {
						problems = append(problems, fmt.Sprintf("%s -> %s on %#x: %s %s", e.Old, e.New, e.Skaddr, v.Kind, v.Reason))
					}
					if e.Flags&model.FlagHeld != 0 && (!e.OwnerKnown() || e.Pid != pid || e.Flags&model.FlagOwnerInherited != 0) && len(problems) < 5 {
						problems = append(problems, fmt.Sprintf("held %s -> %s on %#x carries owner %d (flags %#x), want the acceptor %d", e.Old, e.New, e.Skaddr, e.Pid, e.Flags, pid))
					}
				}
				st := tr.Stats()
				held := 0
				for i := range evs {
					if evs[i].Flags&model.FlagHeld != 0 {
						held++
					}
				}
				// The listener was born before the tracer: its
				// CLOSE->LISTEN is not seen.
				expected := res.Expected - 1
				t.Logf("%d of %d transitions delivered (%d held); counted lost: held-back queue full %d, no queue %d, owner never learnt %d, ring full %d, recursion %d; %d gaps, %d without a count",
					len(evs), expected, held, c.HeldOverflow, c.HeldNoSpace, c.UndecidedClosed, c.RingbufFull, c.RecursionMisses, st.Gaps(), st.Gaps()-st.GapAfterLoss)
				if uint64(len(evs)) > expected {
					p.Errorf("delivered %d transitions, more than the %d the load made", len(evs), expected)
				}
				if missing := expected - min(uint64(len(evs)), expected); missing > c.Lost() {
					p.Errorf("%d transitions of the pid's sockets missing, only %d counted lost (%+v)", missing, c.Lost(), c)
				}
				if maxSockets == tracer.DefaultMaxSockets && held == 0 {
					p.Errorf("no event was held: the test does not exercise the accept hook's delivery")
				}
				if len(problems) > 0 {
					p.Errorf("%d problems, the first: %s", len(problems), strings.Join(problems, "\n    "))
				}
			})
		})
	}
}

func waitPidFile(t *testing.T, path string) uint32 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 1 && b[len(b)-1] == '\n' {
			n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
			if err == nil {
				return uint32(n)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the load generator wrote no pid to %s within 10s", path)
	return 0
}
