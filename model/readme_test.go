package model

import (
	"encoding/json"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// readmeRecordKeys returns the keys the README's "The JSON record" table
// documents: the backquoted names in each row's first cell.
func readmeRecordKeys(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## The JSON record\n")
	if !ok {
		t.Fatal(`README.md has no "## The JSON record" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	name := regexp.MustCompile("`([a-z0-9_]+)`")
	keys := map[string]bool{}
	for _, line := range strings.Split(sec, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue // not a row of keys (the header, the rule, prose)
		}
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			keys[m[1]] = true
		}
	}
	if len(keys) == 0 {
		t.Fatal("no keys in the README's JSON record table")
	}
	return keys
}

// readmeEvents are records of every kind AppendJSON writes different keys
// for: a ->CLOSE with counts (a keepalive timeout, which sends its reset
// before the close, of a socket older than the trace), a listener's close
// (no counts), a held event, a gap with its reason, a socket in a
// Kubernetes container.
func readmeEvents() []struct {
	name string
	e    Event
	v    *Verdict
} {
	base := Event{
		TsNs: 5_000_000_123, Time: time.Date(2026, 12, 1, 10, 0, 0, 1, time.UTC), Skaddr: 0xffff888102c640c0,
		Pid: 42, Comm: CommFrom("nginx"), CPUPid: 42, CPUComm: CommFrom("nginx"), Family: AFInet,
		Saddr: netip.MustParseAddr("10.0.0.1"), Sport: 443, Daddr: netip.MustParseAddr("10.0.0.2"), Dport: 40000,
		Flags: FlagOwnerKnown | FlagCPUTask | FlagDurationKnown, OldStateNs: 1000, LossKnown: true, LossSeq: 7,
		Netns: 4026531833,
	}
	keepalive := base
	keepalive.Old, keepalive.New, keepalive.LastState, keepalive.PrevLossSeq = Established, Close, Established, 5
	keepalive.CloseFacts = CloseFacts(Established) | CloseFacts(ErrTimedOut)<<FactErrShift | FactRstSent |
		CloseFacts(TimerKeepalive)<<FactTimerShift | FactLive
	keepalive.CloseErr, keepalive.ResetReason = 110, "TCP_KEEPALIVE_TIMEOUT"
	keepalive.Flags |= FlagCounts | FlagAgeAtLeast
	keepalive.BytesAcked, keepalive.BytesReceived, keepalive.TotalRetrans, keepalive.SrttUs, keepalive.AgeNs = 100, 200, 3, 150, 9e9

	listener := base
	listener.Old, listener.New, listener.LastState, listener.CloseFacts = Listen, Close, Listen, CloseFacts(Listen)

	held := base
	held.Old, held.New, held.Sport, held.Flags = Close, SynSent, 0, FlagOwnerKnown|FlagHeld

	gap := base
	gap.Old, gap.New, gap.LastState, gap.PrevLossSeq = FinWait2, Close, Established, 6
	gap.CloseFacts, gap.Flags = CloseFacts(FinWait2), gap.Flags|FlagCounts

	pod := base
	pod.Old, pod.New, pod.LastState, pod.CgroupID = SynRecv, Established, SynRecv, 3008
	pod.Cgroup = NewCgroupInfo("/kubepods/besteffort/pod0b5e6e2c-7f3e-4a36-9d6b-6a0e6d2b8c11/" + strings.Repeat("ab", 32))

	ok := &Verdict{Kind: VerdictOK}
	return []struct {
		name string
		e    Event
		v    *Verdict
	}{
		{"keepalive timeout", keepalive, ok},
		{"listener closed", listener, ok},
		{"held", held, nil},
		{"gap", gap, &Verdict{Kind: VerdictGap, Reason: "old state FIN_WAIT2, but the socket was last seen in ESTABLISHED"}},
		{"in a pod", pod, ok},
	}
}

// TestREADMERecordKeys: the README's table of the JSON record documents
// every key AppendJSON writes, and no key it never writes.
func TestREADMERecordKeys(t *testing.T) {
	documented := readmeRecordKeys(t)
	written := map[string]bool{}
	for _, c := range readmeEvents() {
		line := AppendJSON(nil, &c.e, c.v)
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v: %s", c.name, err, line)
		}
		for k := range m {
			written[k] = true
			if !documented[k] {
				t.Errorf("%s: AppendJSON writes %q, which the README's JSON record table does not document: %s", c.name, k, line)
			}
		}
	}
	var never []string
	for k := range documented {
		if !written[k] {
			never = append(never, k)
		}
	}
	slices.Sort(never)
	if len(never) > 0 {
		t.Errorf("the README's JSON record table documents keys no record here has: %v (written: %v)", never, written)
	}
}
