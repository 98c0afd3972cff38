package main

import (
	"bufio"
	"encoding/json"
	"net/netip"
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

// stopSummary is what these tests read of --summary-json.
type stopSummary struct {
	Events     *uint64 `json:"events"`
	Printed    uint64  `json:"printed"`
	NotWritten uint64  `json:"not_written"`
	Output     string  `json:"output"`
}

func readStopSummary(t *testing.T, path string) stopSummary {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("--summary-json was not written: %v", err)
	}
	var s stopSummary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("--summary-json: %v\n%s", err, b)
	}
	return s
}

// stopWithin signals p and waits: it must exit with status 0 within 2 s,
// the README's promise. Of those 2 s, 1 is stopGrace, wall-clock time the
// run gives blocked output; the other is work (the reconciliation snapshot,
// detaching, the last drain), which an emulated guest of the kernel matrix
// does testnet.Slowdown times slower: there the bound is 1 s plus 1 s
// scaled (a 6.12 guest, 13 runs stopping at once on 2 emulated CPUs, took
// 2.21 s).
func stopWithin(t *testing.T, p *traceProc, sig syscall.Signal) {
	t.Helper()
	limit := stopGrace + testnet.Scaled(2*time.Second-stopGrace)
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	code := p.wait(20 * time.Second)
	if took := time.Since(start); took > limit {
		t.Errorf("%v: the run ended %v after the signal, want at most %v", sig, took.Round(time.Millisecond), limit)
	}
	if code != 0 {
		t.Errorf("%v: exit status %d, want 0\nstderr:\n%s", sig, code, p.stderr)
	}
}

// connections makes n connections to a listener on port in ns, one after
// the other, each from its own source address (the namespace has only 8
// ephemeral ports, and TIME_WAIT keeps them): 10 transitions each, and
// the listener's 2.
func connections(t *testing.T, ns *testnet.NS, port uint16, n int) {
	connectionsFrom(t, ns, port, 0, n)
}

// connectionsFrom is connections from the source addresses numbered
// first, first+1, ...
func connectionsFrom(t *testing.T, ns *testnet.NS, port uint16, first, n int) {
	t.Helper()
	server := testnet.Addr(4, port)
	lfd, err := ns.Listen(server)
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i < first+n; i++ {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(1 + i/250), byte(1 + i%250)}), 0)
		c, err := ns.ConnectFrom(src, server)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ns.Accept(lfd)
		if err != nil {
			t.Fatal(err)
		}
		for _, err := range []error{ns.Close(c), ns.ReadEOF(a), ns.Close(a)} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ns.Close(lfd); err != nil {
		t.Fatal(err)
	}
}

// TestStops: every way a run is told to end leaves a clean end: within
// 2 s, the summary on stderr, --summary-json written, exit status 0; for
// trace, stats and life.
func TestStops(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())

	// SIGINT, SIGTERM and SIGHUP (a dropped SSH session; before: exit
	// status 129 and no summary), for trace and stats.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run("trace "+sig.String(), func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			summary := filepath.Join(t.TempDir(), "summary.json")
			p := startTrace(t, bin, "-o", "json", "--port", strconv.Itoa(int(ns.Port(0))), "--summary-json", summary)
			connections(t, ns, ns.Port(0), 1)
			time.Sleep(100 * time.Millisecond)
			stopWithin(t, p, sig)
			if !strings.Contains(p.stderr.String(), "\ntcpstate summary\n") {
				t.Errorf("%v: no summary on stderr:\n%s", sig, p.stderr)
			}
			if s := readStopSummary(t, summary); s.Output != "complete" || s.NotWritten != 0 || s.Printed != 12 {
				t.Errorf("%v: --summary-json %+v, want the 12 transitions printed, output complete", sig, s)
			}
		})
	}
	// life, the same (before: SIGTERM and SIGHUP killed it without a
	// summary or --summary-json).
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run("life "+sig.String(), func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			summary := filepath.Join(t.TempDir(), "summary.json")
			p := startTcpstate(t, lifeAttached, nil, bin, "life", "-o", "json", "--port", strconv.Itoa(int(ns.Port(0))), "--summary-json", summary)
			connections(t, ns, ns.Port(0), 1)
			time.Sleep(100 * time.Millisecond)
			stopWithin(t, p, sig)
			if !strings.Contains(p.stderr.String(), "\ntcpstate life summary\n") {
				t.Errorf("%v: no summary on stderr:\n%s", sig, p.stderr)
			}
			// Two connections, and the listener's close, not printed.
			if s := readStopSummary(t, summary); s.Output != "complete" || s.NotWritten != 0 || s.Printed != 2 || s.Events == nil || *s.Events != 3 {
				t.Errorf("%v: --summary-json %+v, want 3 closes, the 2 connections printed, output complete", sig, s)
			}
		})
	}
	// Under nohup (SIGHUP ignored from the start) SIGHUP stays ignored.
	t.Run("nohup", func(t *testing.T) {
		t.Parallel()
		nohup, err := exec.LookPath("nohup")
		if err != nil {
			t.Skipf("no nohup: %v", err)
		}
		ns := testnet.New(t)
		p := startTcpstate(t, attachedLine, nil, nohup, bin, "trace", "--port", strconv.Itoa(int(ns.Port(0))))
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
			t.Fatalf("SIGHUP ended a run started under nohup:\n%s", p.stderr)
		case <-time.After(time.Second):
		}
		stopWithin(t, p, syscall.SIGINT)
	})
	t.Run("stats SIGHUP", func(t *testing.T) {
		t.Parallel()
		ns := testnet.New(t)
		summary := filepath.Join(t.TempDir(), "summary.json")
		p := startTcpstate(t, statsAttachedLine, nil, bin, "stats", "--port", strconv.Itoa(int(ns.Port(0))), "--summary-json", summary)
		connections(t, ns, ns.Port(0), 1)
		stopWithin(t, p, syscall.SIGHUP)
		if !strings.Contains(p.stdout.String(), "=== totals ") {
			t.Errorf("no final report:\n%s", p.stdout)
		}
		if s := readStopSummary(t, summary); s.Output != "complete" {
			t.Errorf("--summary-json %+v, want output complete", s)
		}
	})

	// Standard output is a pipe whose reader stopped reading: the writer
	// must not hold up the stop (before: SIGTERM took 23 s, and the
	// summary was lost).
	t.Run("blocked stdout", func(t *testing.T) {
		t.Parallel()
		ns := testnet.New(t)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close() // never read
		summary := filepath.Join(t.TempDir(), "summary.json")
		p := startTcpstate(t, attachedLine, w, bin, "trace", "-o", "json", "--port", strconv.Itoa(int(ns.Port(0))), "--summary-json", summary)
		w.Close()
		// 40 connections, 402 records of about 400 bytes: more than twice
		// what the pipe holds.
		connections(t, ns, ns.Port(0), 40)
		time.Sleep(200 * time.Millisecond)
		stopWithin(t, p, syscall.SIGTERM)
		if !strings.Contains(p.stderr.String(), "\ntcpstate summary\n") || !strings.Contains(p.stderr.String(), "not written: standard output was blocked") {
			t.Errorf("the summary does not say output was blocked:\n%s", p.stderr)
		}
		s := readStopSummary(t, summary)
		if s.Output != "blocked" || s.NotWritten == 0 || s.Events == nil || *s.Events != 402 {
			t.Errorf("--summary-json %+v: want 402 events, some not written, output blocked", s)
		}
	})

	// life's output blocked the same way (before: life wrote from its
	// read loop, and a stop waited on the reader for ever).
	t.Run("blocked stdout life", func(t *testing.T) {
		t.Parallel()
		ns := testnet.New(t)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close() // never read
		summary := filepath.Join(t.TempDir(), "summary.json")
		p := startTcpstate(t, lifeAttached, w, bin, "life", "-o", "json", "--port", strconv.Itoa(int(ns.Port(0))), "--summary-json", summary)
		w.Close()
		// 150 connections, 300 lines of about 330 bytes: more than the
		// pipe holds.
		connections(t, ns, ns.Port(0), 150)
		time.Sleep(200 * time.Millisecond)
		stopWithin(t, p, syscall.SIGTERM)
		if !strings.Contains(p.stderr.String(), "\ntcpstate life summary\n") || !strings.Contains(p.stderr.String(), "not written: standard output was blocked") {
			t.Errorf("the summary does not say output was blocked:\n%s", p.stderr)
		}
		s := readStopSummary(t, summary)
		if s.Output != "blocked" || s.NotWritten == 0 || s.Events == nil || *s.Events != 301 {
			t.Errorf("--summary-json %+v: want 301 closes, some not written, output blocked", s)
		}
	})

	// Standard output is closed by its reader (| head -n 5): the end of
	// output, a clean stop by itself (before: killed by SIGPIPE, status
	// 141, no summary, no file).
	for _, command := range []string{"trace", "stats", "life"} {
		t.Run("closed stdout "+command, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			summary := filepath.Join(t.TempDir(), "summary.json")
			args := []string{bin, command, "-o", "json", "--port", strconv.Itoa(int(ns.Port(0))), "--summary-json", summary}
			ready := attachedLine
			switch command {
			case "stats":
				args, ready = append(args, "--interval", "100ms"), statsAttachedLine
			case "life":
				ready = lifeAttached
			}
			p := startTcpstate(t, ready, w, args...)
			w.Close()
			// head -n 5 (stats: one report a line).
			go func() {
				sc := bufio.NewScanner(r)
				sc.Buffer(nil, 1<<20)
				for i := 0; i < 5 && sc.Scan(); i++ {
				}
				r.Close()
			}()
			deadline := time.Now().Add(15 * time.Second)
			for i, exited := 0, false; !exited && time.Now().Before(deadline); i++ {
				connectionsFrom(t, ns, ns.Port(0), i, 1)
				select {
				case <-p.done:
					exited = true
				case <-time.After(50 * time.Millisecond):
				}
			}
			if code := p.wait(time.Second); code != 0 {
				t.Errorf("exit status %d after its output was closed, want 0\nstderr:\n%s", code, p.stderr)
			}
			note := "not written: standard output was closed by its reader"
			if heading := map[string]string{"trace": "\ntcpstate summary\n", "life": "\ntcpstate life summary\n"}[command]; heading != "" && !strings.Contains(p.stderr.String(), heading) {
				t.Errorf("no summary on stderr:\n%s", p.stderr)
			}
			if !strings.Contains(p.stderr.String(), note) {
				t.Errorf("stderr does not say %q:\n%s", note, p.stderr)
			}
			if s := readStopSummary(t, summary); s.Output != "closed" || s.NotWritten == 0 {
				t.Errorf("--summary-json %+v, want output closed and lines not written", s)
			}
		})
	}
}
