package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
)

const lifeAttached = "tcpstate: printing one line per connection as it closes; Ctrl-C to stop"

// lifeRecord is life's JSON line, every field its help names.
type lifeRecord struct {
	Time            time.Time `json:"time"`
	Pid             uint32    `json:"pid"`
	Comm            string    `json:"comm"`
	Family          string    `json:"family"`
	Saddr           string    `json:"saddr"`
	Sport           uint16    `json:"sport"`
	Daddr           string    `json:"daddr"`
	Dport           uint16    `json:"dport"`
	Netns           uint32    `json:"netns"`
	CgroupID        uint64    `json:"cgroup_id"`
	Cgroup          string    `json:"cgroup"`
	Container       string    `json:"container"`
	Runtime         string    `json:"container_runtime"`
	PodUID          string    `json:"pod_uid"`
	DurationNs      *uint64   `json:"duration_ns"`
	DurationAtLeast bool      `json:"duration_at_least"`
	BytesAcked      *uint64   `json:"bytes_acked"`
	BytesReceived   *uint64   `json:"bytes_received"`
	Retransmits     *uint32   `json:"retransmits"`
	SrttUs          *uint32   `json:"srtt_us"`
	Cause           string    `json:"cause"`
	CauseDetail     string    `json:"cause_detail"`
	Error           string    `json:"error"`
	ResetReason     string    `json:"reset_reason"`
}

// TestLife runs `tcpstate life -o json` over connections of a namespace of
// its own: one open before life started (its duration a lower bound, its
// SYN told from its data by the snapshot's seeding), one
// that moves a known number of bytes each way and ends with FINs, one the
// client aborts. Each side of each must be one line with the exact data
// byte counts, owner and cause.
func TestLife(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())
	ns := testnet.New(t)
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	ok := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must := func(fd int, err error) int {
		t.Helper()
		ok(err)
		return fd
	}
	srv := netip.AddrPortFrom(lo, ns.Port(0))
	lfd := must(ns.Listen(srv))
	oldC := must(ns.Connect(srv))
	oldA := must(ns.Accept(lfd))
	ok(ns.Write(oldC, 3000))
	ok(ns.ReadFull(oldA, 3000))
	ok(ns.Write(oldA, 2000))
	ok(ns.ReadFull(oldC, 2000))
	time.Sleep(20 * time.Millisecond)

	port := strconv.Itoa(int(srv.Port()))
	summary := filepath.Join(t.TempDir(), "summary.json")
	p := startTcpstate(t, lifeAttached, nil, bin, "life", "-o", "json", "--port", port, "--summary-json", summary)
	began := time.Now()

	// Data each way, then FINs: the client closes first.
	c := must(ns.Connect(srv))
	a := must(ns.Accept(lfd))
	ok(ns.Write(c, 100000))
	ok(ns.ReadFull(a, 100000))
	ok(ns.Write(a, 50000))
	ok(ns.ReadFull(c, 50000))
	cport := mustLocalPort(t, ns, c)
	ok(ns.Close(c))
	ok(ns.ReadEOF(a))
	ok(ns.Close(a))
	// An abort: SO_LINGER 0 sends a reset, its peer receives it.
	r := must(ns.Connect(srv))
	ra := must(ns.Accept(lfd))
	ok(ns.Write(r, 1000))
	ok(ns.ReadFull(ra, 1000))
	rport := mustLocalPort(t, ns, r)
	ok(ns.SetLinger0(r))
	ok(ns.Close(r))
	ok(ns.Close(ra))
	// The old connection moves more and ends now: its counts are the
	// kernel's, from its start.
	ok(ns.Write(oldC, 500))
	ok(ns.ReadFull(oldA, 500))
	oport := mustLocalPort(t, ns, oldC)
	ok(ns.Close(oldC))
	ok(ns.ReadEOF(oldA))
	ok(ns.Close(oldA))

	// Six lines (TIME_WAIT's end is not a socket's: the client's ->CLOSE
	// came at FIN_WAIT2 -> TIME_WAIT's handover).
	deadline := time.Now().Add(testnet.Scaled(10 * time.Second))
	for strings.Count(p.stdout.String(), "\n") < 6 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ok(p.cmd.Process.Signal(os.Interrupt))
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGINT\nstderr:\n%s", code, p.stderr)
	}
	lines := map[string]lifeRecord{} // "local-port>remote-port"
	for _, line := range strings.Split(strings.TrimSpace(p.stdout.String()), "\n") {
		var l lifeRecord
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("life line %q: %v", line, err)
		}
		if l.Netns != ns.Inode() {
			continue
		}
		key := strconv.Itoa(int(l.Sport)) + ">" + strconv.Itoa(int(l.Dport))
		if _, dup := lines[key]; dup {
			t.Errorf("two lines for %s:\n%s", key, p.stdout)
		}
		lines[key] = l
	}
	sp := srv.Port()
	type want struct {
		key              string
		acked, received  uint64
		cause, detail    string
		err              string
		atLeast, minTime bool
	}
	k := func(a, b uint16) string { return strconv.Itoa(int(a)) + ">" + strconv.Itoa(int(b)) }
	for _, w := range []want{
		{key: k(cport, sp), acked: 100000, received: 50000, cause: "fin", detail: "active", minTime: true},
		{key: k(sp, cport), acked: 50000, received: 100000, cause: "fin", detail: "passive", minTime: true},
		{key: k(rport, sp), acked: 1000, cause: "reset_sent", minTime: true},
		{key: k(sp, rport), received: 1000, cause: "reset_received", err: "ECONNRESET", minTime: true},
		{key: k(oport, sp), acked: 3500, received: 2000, cause: "fin", detail: "active", atLeast: true},
		{key: k(sp, oport), acked: 2000, received: 3500, cause: "fin", detail: "passive", atLeast: true},
	} {
		l, found := lines[w.key]
		if !found {
			t.Errorf("no line for %s\nstdout:\n%s\nstderr:\n%s", w.key, p.stdout, p.stderr)
			continue
		}
		if l.Pid != uint32(os.Getpid()) {
			t.Errorf("%s: pid %d, want this test's %d", w.key, l.Pid, os.Getpid())
		}
		if l.Family != "ipv4" || l.Saddr != "127.0.0.1" || l.Daddr != "127.0.0.1" {
			t.Errorf("%s: %s %s -> %s", w.key, l.Family, l.Saddr, l.Daddr)
		}
		if l.BytesAcked == nil || l.BytesReceived == nil || l.Retransmits == nil || l.SrttUs == nil {
			t.Errorf("%s: counts not read on this kernel (%s)", w.key, p.stdout)
			continue
		}
		if *l.BytesAcked != w.acked || *l.BytesReceived != w.received {
			t.Errorf("%s: bytes acked %d received %d, want %d and %d (data only)", w.key, *l.BytesAcked, *l.BytesReceived, w.acked, w.received)
		}
		if *l.Retransmits != 0 {
			t.Errorf("%s: %d retransmits on loopback", w.key, *l.Retransmits)
		}
		if l.Cause != w.cause || l.CauseDetail != w.detail || l.Error != w.err {
			t.Errorf("%s: cause %q/%q error %q, want %q/%q %q", w.key, l.Cause, l.CauseDetail, l.Error, w.cause, w.detail, w.err)
		}
		if l.DurationNs == nil || *l.DurationNs == 0 {
			t.Errorf("%s: no duration", w.key)
			continue
		}
		if l.DurationAtLeast != w.atLeast {
			t.Errorf("%s: duration_at_least %v, want %v", w.key, l.DurationAtLeast, w.atLeast)
		}
		// A connection born while life ran lived less than life did.
		if lived := time.Duration(*l.DurationNs); w.minTime && lived > time.Since(began) {
			t.Errorf("%s: lived %v, longer than life ran (%v)", w.key, lived, time.Since(began))
		}
	}
	// The summary: delivered, lost by cause, missing, as trace's; the
	// two connections open at the start were followed to their close.
	// (Recursion misses and silent skips are the host's: not asserted.)
	for _, w := range []string{"\ntcpstate life summary\n", "  delivered:       6 closes (6 printed)\n",
		"  lost, counted:   0 of the events that passed the filters", "host-wide, filters or not",
		"  missing:         ", "  closes missing:  0 of the 2 connections open at the start are gone"} {
		if !strings.Contains(p.stderr.String(), w) {
			t.Errorf("summary lacks %q:\n%s", w, p.stderr)
		}
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatalf("--summary-json: %v", err)
	}
	var s struct {
		Events         uint64 `json:"events"`
		Printed        uint64 `json:"printed"`
		NotWritten     uint64 `json:"not_written"`
		Output         string `json:"output"`
		LostFiltered   uint64 `json:"lost_filtered"`
		OpenAtStart    int    `json:"open_at_start"`
		ClosesMissing  uint64 `json:"closes_missing"`
		Reconciliation struct {
			Done        bool `json:"done"`
			TrackerSide bool `json:"tracker_side"`
		} `json:"reconciliation"`
		Check struct {
			Events uint64 `json:"events"`
		} `json:"check"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("--summary-json: %v\n%s", err, b)
	}
	if s.Events != 6 || s.Printed != 6 || s.NotWritten != 0 || s.Output != "complete" || s.LostFiltered != 0 ||
		s.OpenAtStart != 2 || s.ClosesMissing != 0 || !s.Reconciliation.Done || !s.Reconciliation.TrackerSide || s.Check.Events != 6 {
		t.Errorf("--summary-json %+v, want 6 closes delivered and printed, the 2 open at the start followed\n%s", s, b)
	}
}

func mustLocalPort(t *testing.T, ns testnet.Sockets, fd int) uint16 {
	t.Helper()
	ap, err := ns.LocalAddr(fd)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}
