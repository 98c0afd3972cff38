package model

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestAggregateSub(t *testing.T) {
	prev := &Aggregate{
		Ports:       map[PortKey]Count{{Port: 80}: {Transitions: 10, Opened: 2}, {Port: 443, Remote: true}: {Transitions: 5, Opened: 1}},
		Owners:      map[uint32]Count{100: {Transitions: 7, Opened: 1, Comm: "nginx"}, 200: {Transitions: 3, Comm: "curl"}},
		Cgroups:     map[uint64]Count{1: {Transitions: 4, Opened: 1}, 7000: {Transitions: 2}},
		PortOther:   4,
		OwnerOther:  1,
		CgroupOther: 3,
	}
	prev.Matrix[Close][SynSent] = 3
	prev.Matrix[SynSent][Established] = 2
	prev.Hists[SynSent][4] = 2
	prev.Hists[HistLifetime][20] = 1
	prev.Outcomes[OutcomeActiveClose] = 1

	cur := &Aggregate{
		Ports: map[PortKey]Count{
			{Port: 80}:                {Transitions: 15, Opened: 3}, // grew
			{Port: 443, Remote: true}: {Transitions: 5, Opened: 1},  // unchanged: left out
			{Port: 8080}:              {Transitions: 2, Opened: 2},  // new
		},
		Owners: map[uint32]Count{
			100: {Transitions: 7, Opened: 1, Comm: "nginx"}, // unchanged
			200: {Transitions: 9, Opened: 2, Comm: "curl"},  // grew
			300: {Transitions: 1, Comm: "sshd"},             // new
		},
		Cgroups:     map[uint64]Count{1: {Transitions: 4, Opened: 1}, 7000: {Transitions: 5, Opened: 1}, 7001: {Transitions: 1}},
		PortOther:   6,
		OwnerOther:  1,
		CgroupOther: 5,
	}
	cur.Matrix[Close][SynSent] = 5
	cur.Matrix[SynSent][Established] = 2
	cur.Matrix[Established][FinWait1] = 4
	cur.Hists[SynSent][4] = 3
	cur.Hists[HistLifetime][20] = 1
	cur.Hists[HistActiveOpen][2] = 7
	cur.Outcomes[OutcomeActiveClose] = 3
	cur.Outcomes[OutcomeReset] = 1

	d := cur.Sub(prev)

	var want Aggregate
	want.Matrix[Close][SynSent] = 2
	want.Matrix[Established][FinWait1] = 4
	want.Hists[SynSent][4] = 1
	want.Hists[HistActiveOpen][2] = 7
	want.Outcomes[OutcomeActiveClose] = 2
	want.Outcomes[OutcomeReset] = 1
	want.Ports = map[PortKey]Count{{Port: 80}: {Transitions: 5, Opened: 1}, {Port: 8080}: {Transitions: 2, Opened: 2}}
	want.Owners = map[uint32]Count{200: {Transitions: 6, Opened: 2, Comm: "curl"}, 300: {Transitions: 1, Comm: "sshd"}}
	want.Cgroups = map[uint64]Count{7000: {Transitions: 3, Opened: 1}, 7001: {Transitions: 1}}
	want.PortOther = 2
	want.OwnerOther = 0
	want.CgroupOther = 2
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Sub:\n got %+v\nwant %+v", d, want)
	}
	if got := d.Transitions(); got != 6 {
		t.Errorf("Transitions of the difference = %d, want 6", got)
	}
	if got := cur.Transitions(); got != 11 {
		t.Errorf("Transitions = %d, want 11", got)
	}

	// Against an empty first reading (nil maps), the difference is the reading.
	first := cur.Sub(&Aggregate{})
	if first.Matrix != cur.Matrix || first.Hists != cur.Hists || first.Outcomes != cur.Outcomes ||
		!reflect.DeepEqual(first.Ports, cur.Ports) || !reflect.DeepEqual(first.Owners, cur.Owners) ||
		first.PortOther != cur.PortOther || first.OwnerOther != cur.OwnerOther {
		t.Errorf("Sub(empty) = %+v, want the reading itself %+v", first, *cur)
	}
	// Nothing happened between two equal readings.
	same := cur.Sub(cur)
	if same.Transitions() != 0 || len(same.Ports) != 0 || len(same.Owners) != 0 || same.Outcomes != ([NumOutcomes]uint64{}) {
		t.Errorf("Sub(itself) = %+v, want empty", same)
	}
	// Sub does not modify its operands.
	if prev.Matrix[Close][SynSent] != 3 || cur.Matrix[Close][SynSent] != 5 || len(cur.Ports) != 3 {
		t.Error("Sub modified its operands")
	}
}

func TestOutcomeAndHistKindNames(t *testing.T) {
	wantOutcomes := []string{"active_close", "passive_close", "simultaneous_close", "reset", "timeout",
		"abort", "connect_refused", "connect_timeout", "connect_aborted", "listener_closed"}
	if int(NumOutcomes) != len(wantOutcomes) {
		t.Fatalf("NumOutcomes = %d, want %d", NumOutcomes, len(wantOutcomes))
	}
	for i, w := range wantOutcomes {
		if got := Outcome(i).String(); got != w {
			t.Errorf("Outcome(%d) = %q, want %q", i, got, w)
		}
	}
	if got := NumOutcomes.String(); got != "outcome(10)" {
		t.Errorf("out-of-range outcome = %q", got)
	}
	for _, c := range []struct {
		k          HistKind
		key, title string
	}{
		{HistKind(Established), "ESTABLISHED", "time in ESTABLISHED"},
		{HistKind(CloseWait), "CLOSE_WAIT", "time in CLOSE_WAIT"},
		{HistActiveOpen, "active_open", "active open (SYN_SENT -> ESTABLISHED)"},
		{HistPassiveOpen, "passive_open", "passive open (SYN_RECV -> ESTABLISHED)"},
		{HistLifetime, "lifetime", "connection lifetime"},
	} {
		if c.k.Key() != c.key || c.k.String() != c.title {
			t.Errorf("HistKind %d: Key %q String %q, want %q %q", c.k, c.k.Key(), c.k.String(), c.key, c.title)
		}
	}
	if NumHistKinds != NumStates+3 {
		t.Errorf("NumHistKinds = %d, want NumStates+3 (the BPF program's HIST_KINDS)", NumHistKinds)
	}
}

func TestStuck(t *testing.T) {
	sock := func(st State, since time.Duration, pid uint32) SocketInfo {
		return SocketInfo{
			State: st, Since: since, Age: since + time.Second, Pid: pid, OwnerKnown: true,
			Family: AFInet, Saddr: netip.MustParseAddr("127.0.0.1"), Daddr: netip.MustParseAddr("127.0.0.1"),
		}
	}
	socks := []SocketInfo{
		sock(CloseWait, 59*time.Second, 1),   // under the threshold
		sock(CloseWait, 60*time.Second, 2),   // exactly at it: stuck
		sock(CloseWait, 10*time.Minute, 3),   // stuck, longest
		sock(Established, time.Hour, 4),      // no threshold for ESTABLISHED by default
		sock(SynSent, 11*time.Second, 5),     // stuck
		sock(SynRecv, 9*time.Second, 6),      // not yet
		sock(FinWait2, 91*time.Second, 7),    // stuck
		sock(LastAck, 29*time.Second, 8),     // not yet
		sock(LastAck, 31*time.Second, 9),     // stuck
		sock(Listen, 1000*time.Hour, 10),     // listeners are never stuck
		sock(FinWait1, 1000*time.Hour, 11),   // no default threshold
		sock(Closing, 1000*time.Hour, 12),    // no default threshold
		sock(CloseWait, 0, 13),               // just entered
		sock(SynSent, 10*time.Second, 14),    // at the threshold: stuck
		sock(FinWait2, 90*time.Second-1, 15), // just under
	}
	got := Stuck(socks, DefaultStuckThresholds())
	var pids []uint32
	for _, s := range got {
		pids = append(pids, s.Pid)
	}
	// Longest in state first.
	want := []uint32{3, 7, 2, 9, 5, 14}
	if !reflect.DeepEqual(pids, want) {
		t.Errorf("Stuck pids = %v, want %v", pids, want)
	}

	// Custom thresholds replace the defaults; a state without one is never stuck.
	got = Stuck(socks, map[State]time.Duration{Established: 30 * time.Minute, CloseWait: 5 * time.Minute})
	pids = pids[:0]
	for _, s := range got {
		pids = append(pids, s.Pid)
	}
	if want := []uint32{4, 3}; !reflect.DeepEqual(pids, want) {
		t.Errorf("Stuck with custom thresholds = %v, want %v", pids, want)
	}
	if got := Stuck(socks, nil); len(got) != 0 {
		t.Errorf("Stuck without thresholds = %v, want none", got)
	}
	if got := Stuck(nil, DefaultStuckThresholds()); len(got) != 0 {
		t.Errorf("Stuck(nil) = %v", got)
	}
}

func TestDefaultStuckThresholds(t *testing.T) {
	d := DefaultStuckThresholds()
	want := map[State]time.Duration{
		CloseWait: time.Minute, SynSent: 10 * time.Second, SynRecv: 10 * time.Second,
		FinWait2: 90 * time.Second, LastAck: 30 * time.Second,
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("DefaultStuckThresholds = %v, want %v", d, want)
	}
	// Each call returns a fresh map: callers may change it.
	d[CloseWait] = 0
	if DefaultStuckThresholds()[CloseWait] != time.Minute {
		t.Error("DefaultStuckThresholds returned a shared map")
	}
}

func TestCgroupRows(t *testing.T) {
	a := &Aggregate{Cgroups: map[uint64]Count{
		0:    {Transitions: 1},
		1:    {Transitions: 9, Opened: 2},
		5000: {Transitions: 9, Opened: 1},
		6000: {Transitions: 20, Opened: 4},
	}}
	docker := &CgroupInfo{Path: "/system.slice/docker-" + idA + ".scope", Container: Container{ID: idA, Runtime: RuntimeDocker}}
	info := func(id uint64) *CgroupInfo {
		switch id {
		case 1:
			return &CgroupInfo{Path: "/"}
		case 6000:
			return docker
		}
		return nil // 5000: removed before it was resolved
	}
	rows := a.CgroupRows(info)
	want := []CgroupRow{
		{ID: 6000, Path: docker.Path, Container: idA, Runtime: RuntimeDocker, Transitions: 20, Opened: 4, Info: docker},
		{ID: 1, Path: "/", Transitions: 9, Opened: 2},
		{ID: 5000, Transitions: 9, Opened: 1},
		{ID: 0, Transitions: 1},
	}
	if len(rows) != len(want) {
		t.Fatalf("CgroupRows = %+v, want %+v", rows, want)
	}
	for i := range want {
		r := rows[i]
		r.Info = nil
		w := want[i]
		w.Info = nil
		if r != w || (i == 0 && rows[i].Info != docker) {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}
	if rows := a.CgroupRows(nil); len(rows) != 4 || rows[0].Path != "" {
		t.Errorf("CgroupRows(nil) = %+v: want the ids alone", rows)
	}
}
