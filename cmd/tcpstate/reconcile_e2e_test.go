package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// TestReconciliationFindsUndelivered: transitions that were never
// delivered, and that no gap can reveal because their sockets made no
// later transition, are reported by the end-of-run reconciliation. trace
// runs with a one-page ring (about 30 events); it is stopped (SIGSTOP)
// while a burst of connections fills the ring and five known connections,
// whose opening was delivered, close: their closing transitions are lost
// to the full ring. At the end, every socket whose last delivered
// transition is not its -> CLOSE is listed as out of step, believed in the
// state of that transition and now gone, and no other socket is (before:
// the summary said nothing of them).
func TestReconciliationFindsUndelivered(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())
	ns := testnet.New(t)
	srv := ns.StartProc(t)
	known, burst := ns.Port(0), ns.Port(1)
	summary := filepath.Join(t.TempDir(), "summary.json")
	p := startTrace(t, bin, "-o", "json", "--port", strconv.Itoa(int(known)), "--port", strconv.Itoa(int(burst)),
		"--ring-size", strconv.Itoa(os.Getpagesize()), "--summary-json", summary)

	const conns = 5
	lfd, err := ns.Listen(testnet.Addr(4, known))
	if err != nil {
		t.Fatal(err)
	}
	var cfds, afds []int
	for range conns {
		c, err := ns.Connect(testnet.Addr(4, known))
		if err != nil {
			t.Fatal(err)
		}
		a, err := ns.Accept(lfd)
		if err != nil {
			t.Fatal(err)
		}
		cfds, afds = append(cfds, c), append(afds, a)
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(p.stdout.String(), `"new":"ESTABLISHED"`) < 2*conns && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(p.stdout.String(), `"new":"ESTABLISHED"`); n < 2*conns {
		t.Fatalf("%d ESTABLISHED records, want the %d of the known connections before the burst", n, 2*conns)
	}

	// The reader stops; the burst fills the ring; the known sockets close.
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	blfd, err := srv.ListenBacklog(testnet.Addr(4, burst), 1024)
	if err != nil {
		t.Fatal(err)
	}
	// Rounds of as many connections as the namespace has ephemeral ports
	// (8), reset (no TIME_WAIT holds the ports): 48 transitions a round.
	lo, hi := ns.EphemeralRange()
	for range 5 {
		n := int(hi - lo + 1)
		if err := srv.ConnectMany(testnet.Addr(4, burst), n); err != nil {
			t.Fatal(err)
		}
		if err := srv.AcceptMany(blfd, n); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.ResetAll(); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Close(blfd); err != nil {
		t.Fatal(err)
	}
	for i := range conns {
		for _, err := range []error{ns.Close(cfds[i]), ns.ReadEOF(afds[i]), ns.Close(afds[i])} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ns.Close(lfd); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // every socket of the test is gone
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	time.Sleep(200 * time.Millisecond)
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d\n%s", code, p.stderr)
	}

	// The last delivered transition of every socket (incarnations end at
	// -> CLOSE; an address reused later starts again).
	last := map[string]model.Event{}
	for i, line := range strings.Split(strings.TrimSuffix(p.stdout.String(), "\n"), "\n") {
		e, _, err := model.ParseRecord([]byte(line))
		if err != nil {
			t.Fatalf("line %d is not a record: %v\n%s", i+1, err, line)
		}
		last["0x"+strconv.FormatUint(e.Skaddr, 16)] = e
	}
	var want []string
	knownLeft := 0
	for sk, e := range last {
		if e.New != model.Close {
			want = append(want, sk)
			if e.Sport == known || e.Dport == known {
				knownLeft++
			}
		}
	}
	slices.Sort(want)
	if knownLeft < 2*conns {
		t.Fatalf("only %d known sockets lack their -> CLOSE in the output: the full ring did not hide their closing\n%s", knownLeft, p.stdout)
	}

	var s struct {
		Lost           uint64 `json:"lost"`
		Missing        *uint64
		Reconciliation *struct {
			Done        bool   `json:"done"`
			Error       string `json:"error"`
			TrackerSide bool   `json:"tracker_side"`
			Sockets     int    `json:"sockets"`
			OutOfStep   []struct {
				Skaddr      string     `json:"skaddr"`
				Believed    string     `json:"believed"`
				Actual      string     `json:"actual"`
				Missing     uint64     `json:"missing"`
				LossCounted bool       `json:"loss_counted"`
				Socket      *e2eSocket `json:"socket"`
			} `json:"out_of_step"`
		} `json:"reconciliation"`
		Kernel struct {
			RingbufFull uint64 `json:"ringbuf_full"`
		} `json:"kernel"`
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("--summary-json: %v\n%s", err, b)
	}
	if s.Kernel.RingbufFull == 0 {
		t.Fatalf("no ring-full loss counted: the test proves nothing\n%s", b)
	}
	r := s.Reconciliation
	if r == nil || !r.Done || !r.TrackerSide {
		t.Fatalf("no reconciliation in --summary-json:\n%s", b)
	}
	var got []string
	for _, o := range r.OutOfStep {
		got = append(got, o.Skaddr)
		e, ok := last[o.Skaddr]
		switch {
		case !ok:
			t.Errorf("out of step %+v: not a socket of the output", o)
		case o.Believed != e.New.String() || o.Actual != "CLOSE" || o.Socket != nil || !o.LossCounted ||
			o.Missing != statsLinux(t).Missing(e.New, model.Close):
			t.Errorf("out of step %+v: want believed %s (its last record), gone, %d missing, after a counted loss", o, e.New, statsLinux(t).Missing(e.New, model.Close))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) || r.Sockets != len(want) {
		t.Errorf("out of step: %d sockets %v\nwant the %d whose -> CLOSE was not delivered: %v", r.Sockets, got, len(want), want)
	}
	if !strings.Contains(p.stderr.String(), "  reconciliation:  "+strconv.Itoa(len(want))+" sockets out of step at the end") {
		t.Errorf("the stderr summary does not report %d sockets out of step:\n%s", len(want), p.stderr)
	}
}
