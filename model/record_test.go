package model

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// sameEvent compares events, times by instant (a parsed time has a fixed
// zone where the original may have had time.Local).
func sameEvent(a, b Event) bool {
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Time, b.Time = time.Time{}, time.Time{}
	// The cgroup by what it says, not by its pointer.
	if (a.Cgroup == nil) != (b.Cgroup == nil) || a.Cgroup != nil && *a.Cgroup != *b.Cgroup {
		return false
	}
	a.Cgroup, b.Cgroup = nil, nil
	return a == b
}

func sampleEvent() Event {
	return Event{
		TsNs:       123456789012345,
		Time:       time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC),
		Skaddr:     0xffff8881_0a3c_0800,
		Pid:        4242,
		Comm:       CommFrom("nginx"),
		CPUPid:     0,
		CPUComm:    CommFrom("swapper/3"),
		Family:     AFInet,
		Saddr:      netip.MustParseAddr("10.1.2.3"),
		Daddr:      netip.MustParseAddr("192.0.2.77"),
		Sport:      443,
		Dport:      51234,
		Old:        Established,
		New:        CloseWait,
		OldStateNs: 1500000,
		Flags:      FlagOwnerKnown | FlagDurationKnown,
	}
}

func TestRecordRoundTrip(t *testing.T) {
	v6 := sampleEvent()
	v6.Family = AFInet6
	v6.Saddr = netip.MustParseAddr("2001:db8::1")
	v6.Daddr = netip.MustParseAddr("fe80::1")
	v6.Time = time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("", 5*3600+30*60))

	mapped := sampleEvent()
	mapped.Family = AFInet6
	mapped.Saddr = netip.MustParseAddr("::ffff:127.0.0.1")
	mapped.Daddr = netip.MustParseAddr("::")

	noDuration := sampleEvent()
	noDuration.Flags = FlagOwnerKnown | FlagOwnerInherited // null old_state_ns
	noDuration.OldStateNs = 0

	unknownOwner := sampleEvent()
	unknownOwner.Pid, unknownOwner.Comm, unknownOwner.Flags = 0, Comm{}, FlagHeld
	unknownOwner.OldStateNs = 0

	kernelMemory := sampleEvent()
	kernelMemory.LastState, kernelMemory.Netns = FinWait1, 4026531840
	kernelMemory.LossSeq, kernelMemory.PrevLossSeq, kernelMemory.LossKnown = 77, 75, true

	firstSeen := sampleEvent()
	firstSeen.LossSeq, firstSeen.LossKnown = 3, true // no previous event: no prev_loss_seq

	quoted := sampleEvent()
	quoted.Comm = CommFrom("a\"b\\c\td\x01\x7f")
	quoted.CPUComm = CommFrom("0123456789abcdef") // 16 bytes, no NUL
	quoted.Sport, quoted.Dport = 0, 65535

	extremes := sampleEvent()
	extremes.TsNs, extremes.Skaddr, extremes.Pid, extremes.CPUPid = 1<<64-1, 1<<64-1, 1<<32-1, 1<<32-1
	extremes.OldStateNs = 1<<64 - 1
	extremes.Time = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)

	local := sampleEvent()
	local.Time = time.Unix(1700000000, 1).In(time.Local)

	pod := sampleEvent()
	pod.Netns, pod.CgroupID = 4026532290, 18446744073709551615
	pod.Cgroup = &CgroupInfo{
		Path:      "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSlice + ".slice/cri-containerd-" + idA + ".scope",
		Container: Container{ID: idA, Runtime: RuntimeContainerd, PodUID: uid},
	}
	unresolved := sampleEvent()
	unresolved.CgroupID = 7021
	service := sampleEvent()
	service.CgroupID = 1234
	service.Cgroup = &CgroupInfo{Path: "/system.slice/a\"b\x1bc.service", Container: Container{ID: "a\"b\x1bc.service", Runtime: RuntimeSystemd}}
	pathOnly := sampleEvent()
	pathOnly.CgroupID, pathOnly.Cgroup = 1, &CgroupInfo{Path: "/"}

	for _, tc := range []struct {
		name string
		e    Event
		v    *Verdict
	}{
		{"ipv4 with verdict", sampleEvent(), &Verdict{Kind: VerdictOK}},
		{"ipv6", v6, &Verdict{Kind: VerdictGap, Reason: `expected old state "FIN_WAIT1"`}},
		{"ipv4-mapped", mapped, nil},
		{"null old_state_ns, inherited owner", noDuration, &Verdict{Kind: VerdictUnknown}},
		{"unknown owner, held", unknownOwner, &Verdict{Kind: VerdictIllegal, Reason: "X -> Y is not a transition\nof model z"}},
		{"quotes and control characters", quoted, nil},
		{"last_state, netns and loss sequence", kernelMemory, &Verdict{Kind: VerdictGap, Reason: "r"}},
		{"loss sequence of a first event", firstSeen, nil},
		{"extreme numbers", extremes, nil},
		{"local time", local, nil},
		{"verdict none is omitted", sampleEvent(), &Verdict{}},
		{"a kubernetes container's cgroup", pod, nil},
		{"a cgroup id not resolved", unresolved, nil},
		{"a service with quotes and escapes in its name", service, nil},
		{"the root cgroup", pathOnly, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := AppendJSON(nil, &tc.e, tc.v)
			if !strings.HasSuffix(string(line), "}\n") || strings.Count(string(line), "\n") != 1 {
				t.Fatalf("not one line: %q", line)
			}
			got, gotV, err := ParseRecord(line)
			if err != nil {
				t.Fatalf("ParseRecord(%s): %v", line, err)
			}
			if !sameEvent(got, tc.e) {
				t.Errorf("round trip changed the event:\n got %+v\nwant %+v\nline %s", got, tc.e, line)
			}
			wantV := Verdict{}
			if tc.v != nil {
				wantV = *tc.v
			}
			if gotV != wantV {
				t.Errorf("verdict %+v, want %+v", gotV, wantV)
			}
			if wantV.Kind == VerdictNone && strings.Contains(string(line), `"verdict"`) {
				t.Errorf("unchecked event has a verdict key: %s", line)
			}
		})
	}
}

func TestRecordCommBytes(t *testing.T) {
	for _, tc := range []struct {
		comm     string
		wantJSON string // the comm value as written
		wantBack string // the comm read back
	}{
		{"plain", `"plain"`, "plain"},
		{`say "hi"`, `"say \"hi\""`, `say "hi"`},
		{"tab\there", `"tab\u0009here"`, "tab\there"},
		{"bell\x07\x7f", `"bell\u0007\u007f"`, "bell\x07\x7f"},
		{"bad\xffutf8", `"bad` + "\ufffd" + `utf8"`, "bad\ufffdutf8"},
		{"kworker/u8:1ñ", `"kworker/u8:1ñ"`, "kworker/u8:1ñ"},
		{"", `""`, ""},
	} {
		e := sampleEvent()
		e.Comm = CommFrom(tc.comm)
		line := string(AppendJSON(nil, &e, nil))
		if !strings.Contains(line, `"comm":`+tc.wantJSON+`,`) {
			t.Errorf("comm %q written as %s, want %s", tc.comm, line, tc.wantJSON)
		}
		got, _, err := ParseRecord([]byte(line))
		if err != nil {
			t.Fatalf("comm %q: %v", tc.comm, err)
		}
		if got.Comm.String() != tc.wantBack {
			t.Errorf("comm %q read back as %q, want %q", tc.comm, got.Comm.String(), tc.wantBack)
		}
	}
}

// A record as a trace run writes it, kept literally: the format is public.
const goldenRecord = `{"time":"2025-03-14T15:09:26.535897932Z","ts_ns":123456789012345,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"nginx","owner":"known","cpu_pid":0,"cpu_comm":"swapper/3","family":"ipv4","saddr":"10.1.2.3","sport":443,"daddr":"192.0.2.77","dport":51234,"old":"ESTABLISHED","new":"CLOSE_WAIT","old_state_ns":1500000,"verdict":"ok"}` + "\n"

func TestRecordGolden(t *testing.T) {
	e := sampleEvent()
	if got := string(AppendJSON(nil, &e, &Verdict{Kind: VerdictOK})); got != goldenRecord {
		t.Errorf("AppendJSON:\n got %s\nwant %s", got, goldenRecord)
	}
}

// The cgroup keys, literally.
const goldenCgroupRecord = `{"time":"2025-03-14T15:09:26.535897932Z","ts_ns":123456789012345,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"nginx","owner":"known","cpu_pid":0,"cpu_comm":"swapper/3","family":"ipv4","saddr":"10.1.2.3","sport":443,"daddr":"192.0.2.77","dport":51234,"old":"ESTABLISHED","new":"CLOSE_WAIT","old_state_ns":1500000,"netns":4026532290,"cgroup_id":5309,"cgroup":"/kubepods/burstable/pod` + uid + `/` + idA + `","container":"` + idA + `","container_runtime":"cri","pod_uid":"` + uid + `"}` + "\n"

func TestRecordGoldenCgroup(t *testing.T) {
	e := sampleEvent()
	e.Netns, e.CgroupID = 4026532290, 5309
	path := "/kubepods/burstable/pod" + uid + "/" + idA
	e.Cgroup = &CgroupInfo{Path: path, Container: ParseCgroupPath(path)}
	if got := string(AppendJSON(nil, &e, nil)); got != goldenCgroupRecord {
		t.Errorf("AppendJSON:\n got %s\nwant %s", got, goldenCgroupRecord)
	}
	// Encoded once by NewCgroupInfo: the same bytes.
	e.Cgroup = NewCgroupInfo(path)
	if got := string(AppendJSON(nil, &e, nil)); got != goldenCgroupRecord {
		t.Errorf("AppendJSON with NewCgroupInfo's keys:\n got %s\nwant %s", got, goldenCgroupRecord)
	}
	hostile := NewCgroupInfo("/user.slice/a\"b\\\x1b\xff")
	if want := string(appendCgroup(nil, &CgroupInfo{Path: hostile.Path})); hostile.enc != want {
		t.Errorf("NewCgroupInfo's keys %s, want %s", hostile.enc, want)
	}
	// A record of before the cgroup keys reads back without a cgroup.
	old, _, err := ParseRecord([]byte(goldenRecord))
	if err != nil || old.CgroupID != 0 || old.Cgroup != nil {
		t.Errorf("a record without cgroup keys: cgroup id %d, cgroup %+v, err %v", old.CgroupID, old.Cgroup, err)
	}
}

func TestAppendJSONDoesNotAllocate(t *testing.T) {
	e := sampleEvent()
	// A cgroup path longer than 32 bytes: []byte(path) would allocate.
	e.CgroupID = 42
	e.Cgroup = &CgroupInfo{Path: "/system.slice/docker-" + idA + ".scope", Container: Container{ID: idA, Runtime: RuntimeDocker}}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = AppendJSON(buf[:0], &e, nil) }); n != 0 {
		t.Errorf("AppendJSON with a cgroup encoded per event: %v allocations", n)
	}
	e.Cgroup = NewCgroupInfo(e.Cgroup.Path)
	v := Verdict{Kind: VerdictIllegal, Reason: "FIN_WAIT2 -> CLOSE is not a transition of model rfc793"}
	if n := testing.AllocsPerRun(100, func() { buf = AppendJSON(buf[:0], &e, &v) }); n != 0 {
		t.Errorf("AppendJSON: %v allocations", n)
	}
}

func TestParseRecordLenient(t *testing.T) {
	base := strings.TrimSuffix(goldenRecord, "\n")
	for _, tc := range []struct {
		name  string
		line  string
		check func(Event, Verdict) bool
	}{
		{"trailing CRLF and spaces", base + " \r\n", func(e Event, _ Verdict) bool { return e.Pid == 4242 }},
		{"no owner key, pid set: known", strings.Replace(base, `"owner":"known",`, "", 1),
			func(e Event, _ Verdict) bool { return e.OwnerKnown() }},
		{"no owner key, pid 0: unknown", strings.Replace(strings.Replace(base, `"owner":"known",`, "", 1), `"pid":4242`, `"pid":0`, 1),
			func(e Event, _ Verdict) bool { return !e.OwnerKnown() }},
		{"old_state_ns missing", strings.Replace(base, `"old_state_ns":1500000,`, "", 1),
			func(e Event, _ Verdict) bool { return !e.DurationKnown() }},
		{"old_state_ns null", strings.Replace(base, `"old_state_ns":1500000`, `"old_state_ns":null`, 1),
			func(e Event, _ Verdict) bool { return !e.DurationKnown() && e.OldStateNs == 0 }},
		{"unknown keys are ignored (fields are added, never renamed)", strings.Replace(base, `{`, `{"netns":4026531840,"x":[1,{}],`, 1),
			func(e Event, _ Verdict) bool { return e.Skaddr == 0xffff88810a3c0800 }},
		{"RFC state spellings", strings.Replace(strings.Replace(base, `"old":"ESTABLISHED"`, `"old":"tcp_established"`, 1), `"new":"CLOSE_WAIT"`, `"new":"close-wait"`, 1),
			func(e Event, _ Verdict) bool { return e.Old == Established && e.New == CloseWait }},
		{"reason without verdict is dropped", strings.Replace(base, `,"verdict":"ok"`, `,"reason":"x"`, 1),
			func(_ Event, v Verdict) bool { return v == Verdict{} }},
	} {
		e, v, err := ParseRecord([]byte(tc.line))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !tc.check(e, v) {
			t.Errorf("%s: got %+v %+v", tc.name, e, v)
		}
	}
}

func TestParseRecordRejects(t *testing.T) {
	base := strings.TrimSuffix(goldenRecord, "\n")
	for _, tc := range []struct {
		name, line, want string
	}{
		{"empty", "", "unexpected end of JSON input"},
		{"blank", "  \n", "unexpected end of JSON input"},
		{"truncated", base[:len(base)/2], "unexpected end of JSON input"},
		{"not JSON", "tcpstate 1.0 trace", "invalid character"},
		{"two records on a line", base + base, "invalid character '{' after top-level value"},
		{"array", "[1,2]", "a record is one JSON object"},
		{"null", "null", "missing time, ts_ns, skaddr, pid, comm, cpu_pid, cpu_comm, family, saddr, sport, daddr, dport, old, new"},
		{"empty object", "{}", "missing time, ts_ns, skaddr"},
		{"missing keys", strings.Replace(strings.Replace(base, `"sport":443,`, "", 1), `"old":"ESTABLISHED",`, "", 1), "missing sport, old"},
		{"null key counts as missing", strings.Replace(base, `"comm":"nginx"`, `"comm":null`, 1), "missing comm"},
		{"bad time", strings.Replace(base, `2025-03-14T15:09:26.535897932Z`, `yesterday`, 1), `time "yesterday": cannot parse "yesterday" as "2006"`},
		{"time out of range", strings.Replace(base, `2025-03-14`, `2025-13-14`, 1), `time "2025-13-14T15:09:26.535897932Z": month out of range`},
		// What the line held is quoted (%q), DEL and controls escaped: check
		// prints these errors on a terminal.
		{"time with controls", strings.Replace(base, `2025-03-14T15:09:26.535897932Z`, `\u007f\u001b[2J\u009b`, 1),
			`time "\x7f\x1b[2J\u009b": cannot parse "\x7f\x1b[2J\u009b" as "2006"`},
		{"negative ts_ns", strings.Replace(base, `"ts_ns":123456789012345`, `"ts_ns":-1`, 1), `key "ts_ns" holds a JSON number -1`},
		{"port out of range", strings.Replace(base, `"sport":443`, `"sport":70000`, 1), `key "sport" holds a JSON number 70000`},
		{"zoned address", strings.Replace(strings.Replace(base, `"ipv4"`, `"ipv6"`, 1), `"daddr":"192.0.2.77"`, `"daddr":"fe80::1%lo"`, 1), "no IPv6 zone"},
		// The family and the addresses must agree (an IPv4-mapped address
		// is an IPv6 one).
		{"ipv4 family, IPv6 saddr", strings.Replace(base, `"saddr":"10.1.2.3"`, `"saddr":"::1"`, 1), `family "ipv4", but saddr "::1" is not an IPv4 address`},
		{"ipv4 family, mapped daddr", strings.Replace(base, `"daddr":"192.0.2.77"`, `"daddr":"::ffff:192.0.2.77"`, 1), `family "ipv4", but daddr "::ffff:192.0.2.77" is not an IPv4 address`},
		{"ipv6 family, IPv4 addresses", strings.Replace(base, `"ipv4"`, `"ipv6"`, 1), `family "ipv6", but saddr "10.1.2.3" is not an IPv6 address`},
		{"skaddr not hex", strings.Replace(base, `0xffff88810a3c0800`, `0xzz`, 1), `skaddr "0xzz" is not 0x-prefixed hex`},
		{"skaddr without 0x", strings.Replace(base, `0xffff88810a3c0800`, `ffff88810a3c0800`, 1), "not 0x-prefixed hex"},
		{"skaddr as a number", strings.Replace(base, `"0xffff88810a3c0800"`, `1234`, 1), `key "skaddr" holds a JSON number, want a string`},
		{"bad family", strings.Replace(base, `"ipv4"`, `"af(1)"`, 1), `family "af(1)" is not ipv4 or ipv6`},
		{"bad saddr", strings.Replace(base, `"10.1.2.3"`, `"10.1.2"`, 1), "saddr:"},
		{"empty daddr", strings.Replace(base, `"192.0.2.77"`, `""`, 1), "daddr:"},
		{"bad old state", strings.Replace(base, `"old":"ESTABLISHED"`, `"old":"STATE(13)"`, 1), "old: unknown TCP state"},
		{"bad new state", strings.Replace(base, `"new":"CLOSE_WAIT"`, `"new":"TIME-WAITING"`, 1), "new: unknown TCP state"},
		{"bad owner", strings.Replace(base, `"owner":"known"`, `"owner":"mine"`, 1), `owner "mine"`},
		{"bad last_state", strings.Replace(base, `{`, `{"last_state":"NOPE",`, 1), "last_state: unknown TCP state"},
		{"bad verdict", strings.Replace(base, `"verdict":"ok"`, `"verdict":"fine"`, 1), `verdict "fine"`},
	} {
		_, _, err := ParseRecord([]byte(tc.line))
		if err == nil {
			t.Errorf("%s: accepted %q", tc.name, tc.line)
			continue
		}
		if !errors.Is(err, ErrNotRecord) {
			t.Errorf("%s: error %v does not wrap ErrNotRecord", tc.name, err)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "not a tcpstate record: ") || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, msg, tc.want)
		}
	}
}

// The encoder's cached time formatting is RFC 3339 with nanoseconds, exactly
// as time.RFC3339Nano formats it, across seconds, zones and trailing zeros.
func TestRecordEncoderTime(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("CET", 3600), time.FixedZone("odd", -(9*3600 + 30*60))}
	if ny, err := time.LoadLocation("America/New_York"); err == nil {
		zones = append(zones, ny)
	}
	base := time.Date(2026, 3, 8, 6, 59, 58, 0, time.UTC) // around a DST change in New York
	var enc RecordEncoder
	for _, loc := range zones {
		for _, off := range []time.Duration{0, 1, 10, 100 * time.Millisecond, 999999999, time.Second, time.Second + 500, 2*time.Second + 120*time.Microsecond, time.Hour, 24 * time.Hour} {
			tm := base.Add(off).In(loc)
			got := string(enc.appendTime(nil, tm))
			if want := tm.Format(time.RFC3339Nano); got != want {
				t.Errorf("%v in %s: %q, want %q", off, loc, got, want)
			}
		}
	}
}

// Reusing an encoder gives the same records as a fresh one.
func TestRecordEncoderReuse(t *testing.T) {
	var enc RecordEncoder
	quoted := sampleEvent()
	quoted.Comm = CommFrom("a\"b\\c\td\x01\x7f\xff")
	v6 := sampleEvent()
	v6.Family, v6.Saddr, v6.Daddr = AFInet6, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.0.0.1")
	for i, e := range []Event{sampleEvent(), quoted, v6, sampleEvent()} {
		e.Time = time.Unix(1700000000+int64(i/2), int64(i)*123456789%1e9)
		want := AppendJSON(nil, &e, &Verdict{Kind: VerdictOK})
		if got := enc.Append(nil, &e, &Verdict{Kind: VerdictOK}); string(got) != string(want) {
			t.Errorf("event %d: encoder %s, fresh %s", i, got, want)
		}
	}
}
