package main

// trace's output modes, without a kernel: exact lines for fixed events, and
// column alignment.

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/clipperhouse/displaywidth"
	"github.com/olekukonko/tablewriter/pkg/twwidth"

	"github.com/tcpstate/tcpstate/model"
)

const dockerID = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"

// outputEvent is a fixed IPv4 event with every field set.
func outputEvent() model.Event {
	return model.Event{
		TsNs:       5_000_000_123,
		Time:       time.Date(2025, 3, 14, 15, 9, 26, 123456789, time.UTC),
		Skaddr:     0xffff88810a3c0800,
		Pid:        4242,
		Comm:       model.CommFrom("curl"),
		CPUPid:     17,
		CPUComm:    model.CommFrom("ksoftirqd/1"),
		Family:     model.AFInet,
		Saddr:      netip.MustParseAddr("127.0.0.1"),
		Daddr:      netip.MustParseAddr("10.0.0.2"),
		Sport:      40312,
		Dport:      443,
		Old:        model.Established,
		New:        model.FinWait1,
		OldStateNs: 1_234_567, // 1.235 ms
		Flags:      model.FlagOwnerKnown | model.FlagDurationKnown,
		LastState:  model.Established,
		Netns:      4026531840,
	}
}

// render formats evs as trace does: the header first when header (trace
// without --no-header), then a line per event.
func render(t *testing.T, mode string, header bool, evs []model.Event, vs []*model.Verdict) []string {
	t.Helper()
	p, err := newPrinter(mode, header)
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	if header {
		buf = p.header(buf)
	}
	for i := range evs {
		var v *model.Verdict
		if vs != nil {
			v = vs[i]
		}
		buf = p.appendEvent(buf, &evs[i], v)
	}
	if len(buf) == 0 || buf[len(buf)-1] != '\n' {
		t.Fatalf("%s output does not end with a newline: %q", mode, buf)
	}
	return strings.Split(strings.TrimSuffix(string(buf), "\n"), "\n")
}

func TestOutputExact(t *testing.T) {
	e := outputEvent()
	ok := &model.Verdict{Kind: model.VerdictOK}
	gap := &model.Verdict{Kind: model.VerdictGap, Reason: "old state ESTABLISHED, last seen SYN_SENT"}

	unknown := outputEvent()
	unknown.Flags = 0 // owner and duration unknown
	unknown.Old, unknown.New = model.Close, model.SynSent
	unknown.Sport = 0
	unknown.CgroupID = 7021 // not resolved

	// A docker container's socket.
	e.CgroupID = 5309
	e.Cgroup = &model.CgroupInfo{Path: "/system.slice/docker-" + dockerID + ".scope", Container: model.Container{ID: dockerID, Runtime: model.RuntimeDocker}}

	// A close after the peer's reset, and one we aborted (its reason
	// decoded from BTF: Linux 6.10+).
	rst := outputEvent()
	rst.Old, rst.New = model.Established, model.Close
	rst.CloseFacts = closeFactsOf(model.Established, model.ErrReset) | model.FactRstReceived
	rst.CloseErr = 104
	abort := rst
	abort.CloseFacts = closeFactsOf(model.Established, model.ErrNone) | model.FactRstSent
	abort.CloseErr, abort.ResetReason = 0, "TCP_ABORT_ON_CLOSE"

	for _, c := range []struct {
		mode string
		evs  []model.Event
		vs   []*model.Verdict
		want []string
	}{
		{outTable, []model.Event{e, e, unknown, rst, abort}, []*model.Verdict{ok, gap, nil, ok, ok}, []string{
			"TIME                PID COMM             LOCAL                 REMOTE                OLD            NEW                   MS CAUSE            VERDICT",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 -",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 -                !! GAP: old state ESTABLISHED, last seen SYN_SENT",
			"15:09:26.123456       - -                127.0.0.1:0           10.0.0.2:443          CLOSE       -> SYN_SENT               - -",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> CLOSE              1.235 reset_received",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> CLOSE              1.235 reset_sent",
		}},
		{outWide, []model.Event{e, e, unknown, rst, abort}, []*model.Verdict{ok, gap, nil, ok, ok}, []string{
			"TIME                PID COMM             LOCAL                 REMOTE                OLD            NEW                   MS CAUSE            ERROR        RST_REASON           SKADDR             CPU_PID CPU_COMM         FAMILY OWNER     NETNS      CGROUP                   VERDICT",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 -                -            -                    0xffff88810a3c0800      17 ksoftirqd/1      ipv4   known     4026531840 docker:4f797c539e6c",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 -                -            -                    0xffff88810a3c0800      17 ksoftirqd/1      ipv4   known     4026531840 docker:4f797c539e6c      !! GAP: old state ESTABLISHED, last seen SYN_SENT",
			"15:09:26.123456       - -                127.0.0.1:0           10.0.0.2:443          CLOSE       -> SYN_SENT               - -                -            -                    0xffff88810a3c0800      17 ksoftirqd/1      ipv4   unknown   4026531840 id:7021",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> CLOSE              1.235 reset_received   ECONNRESET   -                    0xffff88810a3c0800      17 ksoftirqd/1      ipv4   known     4026531840 -",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> CLOSE              1.235 reset_sent       -            TCP_ABORT_ON_CLOSE   0xffff88810a3c0800      17 ksoftirqd/1      ipv4   known     4026531840 -",
		}},
		{outJSON, []model.Event{e, e, unknown}, []*model.Verdict{ok, gap, nil}, []string{
			`{"time":"2025-03-14T15:09:26.123456789Z","ts_ns":5000000123,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"curl","owner":"known","cpu_pid":17,"cpu_comm":"ksoftirqd/1","family":"ipv4","saddr":"127.0.0.1","sport":40312,"daddr":"10.0.0.2","dport":443,"old":"ESTABLISHED","new":"FIN_WAIT1","old_state_ns":1234567,"last_state":"ESTABLISHED","netns":4026531840,"cgroup_id":5309,"cgroup":"/system.slice/docker-4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970.scope","container":"4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970","container_runtime":"docker","verdict":"ok"}`,
			`{"time":"2025-03-14T15:09:26.123456789Z","ts_ns":5000000123,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"curl","owner":"known","cpu_pid":17,"cpu_comm":"ksoftirqd/1","family":"ipv4","saddr":"127.0.0.1","sport":40312,"daddr":"10.0.0.2","dport":443,"old":"ESTABLISHED","new":"FIN_WAIT1","old_state_ns":1234567,"last_state":"ESTABLISHED","netns":4026531840,"cgroup_id":5309,"cgroup":"/system.slice/docker-4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970.scope","container":"4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970","container_runtime":"docker","verdict":"gap","reason":"old state ESTABLISHED, last seen SYN_SENT"}`,
			`{"time":"2025-03-14T15:09:26.123456789Z","ts_ns":5000000123,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"curl","owner":"unknown","cpu_pid":17,"cpu_comm":"ksoftirqd/1","family":"ipv4","saddr":"127.0.0.1","sport":0,"daddr":"10.0.0.2","dport":443,"old":"CLOSE","new":"SYN_SENT","old_state_ns":null,"last_state":"ESTABLISHED","netns":4026531840,"cgroup_id":7021}`,
		}},
	} {
		got := render(t, c.mode, c.mode != outJSON, c.evs, c.vs)
		if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("-o %s:\ngot:\n%s\nwant:\n%s", c.mode, strings.Join(got, "\n"), strings.Join(c.want, "\n"))
		}
	}

	// A JSON line reads back as the event it was made from.
	for _, e := range []model.Event{e, unknown} {
		line := render(t, outJSON, false, []model.Event{e}, nil)[0]
		back, _, err := model.ParseRecord([]byte(line))
		if err != nil {
			t.Fatalf("ParseRecord(%s): %v", line, err)
		}
		if !back.Time.Equal(e.Time) || back.Skaddr != e.Skaddr || back.Pid != e.Pid || back.Flags != e.Flags ||
			back.Old != e.Old || back.New != e.New || back.Sport != e.Sport || back.Daddr != e.Daddr ||
			back.CgroupID != e.CgroupID || (e.Cgroup != nil) != (back.Cgroup != nil) || e.Cgroup != nil && *back.Cgroup != *e.Cgroup {
			t.Errorf("JSON round trip:\n got %+v\nwant %+v", back, e)
		}
	}
}

// displayWidth is the test's own measure of terminal columns: displaywidth
// per grapheme (not termsafe's per-character sum), with East Asian
// ambiguous characters as wide as tablewriter takes them in this
// environment (RUNEWIDTH_EASTASIAN, a CJK locale).
var displayWidth = displaywidth.Options{EastAsianWidth: twwidth.IsEastAsian()}.String

// field is a space-separated field of a table line: the terminal columns
// it spans and its text.
type field struct {
	start, end int
	text       string
}

// fields splits a line into space-separated fields; the "->" between the
// states is dropped, so a line's fields match the header's names.
// Positions are terminal columns, counted by displayWidth: a CJK character
// takes two.
func fields(line string) []field {
	var fs []field
	for i := 0; i < len(line); {
		if line[i] == ' ' {
			i++
			continue
		}
		j := i
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if line[i:j] != "->" {
			start := displayWidth(line[:i])
			fs = append(fs, field{start, start + displayWidth(line[i:j]), line[i:j]})
		}
		i = j
	}
	return fs
}

// checkAligned asserts that every line's fields line up with the header's
// names: left-aligned columns start where their name starts, right-aligned
// ones (PID, MS, CPU_PID) end where it ends. The comm values, verdict
// reasons and "-" cells have no spaces, so fields split cleanly.
func checkAligned(t *testing.T, header string, lines []string) {
	t.Helper()
	checkColumns(t, header, lines, map[string]bool{"PID": true, "MS": true, "CPU_PID": true})
}

// checkColumns is checkAligned for a table whose right-aligned columns are
// right (ls's).
func checkColumns(t *testing.T, header string, lines []string, right map[string]bool) {
	t.Helper()
	names := fields(header)
	for _, line := range lines {
		cols := fields(line)
		for k, name := range names {
			n := name.text
			if n == "VERDICT" {
				if k < len(cols) && cols[k].start != name.start {
					t.Errorf("VERDICT starts at %d, the verdict at %d:\n%s\n%s", name.start, cols[k].start, header, line)
				}
				continue
			}
			if k >= len(cols) {
				t.Errorf("no %s column:\n%s\n%s", n, header, line)
				break
			}
			if right[n] && cols[k].end != name.end || !right[n] && cols[k].start != name.start {
				t.Errorf("column %s misaligned (%s at %d-%d, name at %d-%d):\n%s\n%s", n, cols[k].text, cols[k].start, cols[k].end, name.start, name.end, header, line)
			}
		}
	}
}

func isHeader(line string) bool { return strings.HasPrefix(line, "TIME ") }

// checkAlignedToHeaders asserts that lines start with a header and that
// every other line lines up with the last header above it.
func checkAlignedToHeaders(t *testing.T, lines []string) {
	t.Helper()
	if len(lines) == 0 || !isHeader(lines[0]) {
		t.Fatalf("output does not start with the header:\n%s", strings.Join(lines, "\n"))
	}
	header := lines[0]
	for _, line := range lines[1:] {
		if isHeader(line) {
			header = line
			continue
		}
		checkAligned(t, header, []string{line})
	}
}

func TestOutputAlignment(t *testing.T) {
	base := outputEvent()
	vary := func(f func(e *model.Event)) model.Event {
		e := base
		f(&e)
		return e
	}
	v4 := []model.Event{
		base,
		vary(func(e *model.Event) { e.Pid, e.Comm, e.CPUPid = 1, model.CommFrom("sixteen-chars-16"), 4194304 }),
		vary(func(e *model.Event) {
			e.Pid = 4194304
			e.Old, e.New = model.Close, model.SynSent
			e.Flags = model.FlagOwnerKnown
		}),
		vary(func(e *model.Event) { e.Flags = 0; e.Old, e.New = model.Listen, model.SynRecv }),
		vary(func(e *model.Event) {
			e.Saddr, e.Daddr = netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("1.1.1.1")
			e.Sport, e.Dport = 65535, 1
			e.OldStateNs = 99_999_999_999_000 // 99999999.999 ms: the widest that fits
		}),
		vary(func(e *model.Event) { e.OldStateNs = 0; e.Flags |= model.FlagOwnerInherited }),
		// Names padded by display width: two columns a CJK character.
		vary(func(e *model.Event) {
			e.Comm, e.CPUComm = model.CommFrom("日本語テス"), model.CommFrom("数据库")
		}),
		vary(func(e *model.Event) { e.Comm, e.CPUComm = model.CommFrom("café-ü"), model.CommFrom("e\u0301e\u0301") }),
		vary(func(e *model.Event) { e.Comm = model.CommFrom("\x9b2J\xffok") }), // escaped, 14 columns
	}
	v6 := func(local, remote string) func(e *model.Event) {
		return func(e *model.Event) {
			e.Family = model.AFInet6
			e.Saddr, e.Daddr = netip.MustParseAddr(local), netip.MustParseAddr(remote)
		}
	}
	gap := &model.Verdict{Kind: model.VerdictGap, Reason: "gap-reason"}

	// Events whose cells need wider columns, in order, and whether each
	// must grow a column: in -o table, in -o wide.
	type step struct {
		e                model.Event
		growsT, growsW   bool
		local, remoteSub string
	}
	steps := []step{
		{e: vary(v6("::1", "::1"))}, // [::1]:40312 fits IPv4's width
		{e: vary(v6("::ffff:10.0.0.1", "::1")), growsT: true, growsW: true, local: "[::ffff:10.0.0.1]:40312"},
		{e: base},
		{e: vary(v6("2001:db8:1234:5678:9abc:def0:1234:5678", "fe80::1")), growsT: true, growsW: true,
			local: "[2001:db8:1234:5678:9abc:def0:1234:5678]:40312"},
		{e: vary(v6("::ffff:255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), local: "[::ffff:255.255.255.255]:40312"},
		{e: vary(func(e *model.Event) { e.Comm = model.CommFrom("\x1b]0;PWN\x07\x1b[2J") }), growsT: true, growsW: true},
		{e: vary(func(e *model.Event) { e.Comm = model.CommFrom("\u009b31mred") })},
		{e: vary(func(e *model.Event) { e.Comm = model.CommFrom(strings.Repeat("\x1b", 15)) }), growsT: true, growsW: true},
		{e: vary(func(e *model.Event) { e.CPUComm = model.CommFrom("\x1b]0;PWN\x07\x1b[2J") }), growsW: true},
		{e: vary(func(e *model.Event) { e.OldStateNs = uint64(30 * 24 * time.Hour) }), growsT: true, growsW: true},
		{e: vary(func(e *model.Event) { e.Pid, e.CPUPid = 4294967295, 4294967295 }), growsT: true, growsW: true},
		{e: vary(func(e *model.Event) { e.OldStateNs = 1<<64 - 1 })},
		// Cgroups: a container fits; paths grow the column, -o wide only.
		{e: vary(func(e *model.Event) {
			e.CgroupID, e.Cgroup = 77, &model.CgroupInfo{Path: "/system.slice/docker-" + dockerID + ".scope", Container: model.ParseCgroupPath("/docker/" + dockerID)}
		})},
		{e: vary(func(e *model.Event) {
			e.CgroupID, e.Cgroup = 78, &model.CgroupInfo{Path: "/user.slice/user-1000.slice/session-3.scope"}
		}), growsW: true},
		{e: vary(func(e *model.Event) { e.CgroupID = 1<<64 - 1 })}, // not resolved: id:18446744073709551615 fits
		{e: vary(func(e *model.Event) {
			e.CgroupID, e.Cgroup = 79, &model.CgroupInfo{Path: "/" + strings.Repeat("\x1b", 30)}
		}), growsW: true},
	}
	for _, mode := range []string{outTable, outWide} {
		t.Run(mode, func(t *testing.T) {
			// IPv4 and names that fit: one header, every line under it.
			vs := make([]*model.Verdict, len(v4))
			vs[1] = gap
			lines := render(t, mode, true, v4, vs)
			checkAlignedToHeaders(t, lines)
			if n := len(slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return !isHeader(l) })); n != 1 {
				t.Errorf("%d headers, want 1:\n%s", n, strings.Join(lines, "\n"))
			}

			// Then the long cells, with plain lines between them: the
			// header is printed again right above each line that grew a
			// column, and only there.
			evs := slices.Clone(v4)
			want := []bool{true} // for each line of output: is it a header
			for range v4 {
				want = append(want, false)
			}
			for _, s := range steps {
				evs = append(evs, s.e, base)
				grows := s.growsT
				if mode == outWide {
					grows = s.growsW
				}
				if grows {
					want = append(want, true)
				}
				want = append(want, false, false)
			}
			vs = make([]*model.Verdict, len(evs))
			vs[len(evs)-1] = gap
			lines = render(t, mode, true, evs, vs)
			checkAlignedToHeaders(t, lines)
			got := make([]bool, len(lines))
			for i, l := range lines {
				got[i] = isHeader(l)
			}
			if !slices.Equal(got, want) {
				t.Errorf("headers at %v, want at %v:\n%s", got, want, strings.Join(lines, "\n"))
			}
			out := strings.Join(lines, "\n")
			for _, s := range steps {
				if s.local != "" && !strings.Contains(out, " "+s.local+" ") {
					t.Errorf("no address %s (bracketed, with its port):\n%s", s.local, out)
				}
			}

			// --no-header: the same lines, no header at all.
			noHeader := render(t, mode, false, evs, vs)
			if withHeaders := slices.DeleteFunc(lines, isHeader); !slices.Equal(noHeader, withHeaders) {
				t.Errorf("--no-header:\n%s\nwant the lines without their headers:\n%s", strings.Join(noHeader, "\n"), strings.Join(withHeaders, "\n"))
			}
		})
	}
}

// check prints the header with the first line it shows (none when there
// is none): at the widths that line needs, once.
func TestOutputHeaderWithFirstLine(t *testing.T) {
	e := outputEvent()
	e.Family = model.AFInet6
	e.Saddr, e.Daddr = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:192.168.100.200")
	e.Comm = model.CommFrom("\x1b]0;PWN\x07\x1b[2J")
	for _, mode := range []string{outTable, outWide} {
		p, err := newPrinter(mode, true)
		if err != nil {
			t.Fatal(err)
		}
		var buf []byte
		for range 3 {
			buf = p.appendEvent(buf, &e, nil)
		}
		lines := strings.Split(strings.TrimSuffix(string(buf), "\n"), "\n")
		if len(lines) != 4 || !isHeader(lines[0]) {
			t.Errorf("-o %s: want one header and 3 lines:\n%s", mode, buf)
		}
		checkAlignedToHeaders(t, lines)
	}
}

func TestNewPrinterRejectsUnknownMode(t *testing.T) {
	for _, mode := range []string{"", "bogus", "JSON", "tables"} {
		if _, err := newPrinter(mode, true); err == nil || exitCode(err) != exitUsage {
			t.Errorf("newPrinter(%q): %v, want a usage error", mode, err)
		}
	}
}

// hostileNames are task names any local user can give a process with
// prctl(PR_SET_NAME) (at most 15 bytes), or that check reads from a file,
// and how every text output must show them.
var hostileNames = []struct{ comm, shown string }{
	{"\x1b]0;PWN\x07\x1b[2J", `\x1b]0;PWN\x07\x1b[2J`}, // retitle, clear the screen
	{"\u009b31mred", `\u009b31mred`},                   // C1 CSI, UTF-8 encoded (C2 9B)
	{"\x9b2J\xffok", `\x9b2J\xffok`},                   // C1 CSI as a raw byte; not UTF-8
	{"a\tb\nc\x7f\\", `a\x09b\x0ac\x7f\\`},
}

// assertTerminalSafe fails when out holds what a terminal could take for a
// control: a C0 byte other than the newline, DEL, a C1 control, a byte that
// is not UTF-8.
func assertTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s is not UTF-8: %q", what, out)
	}
	for i, r := range out {
		if r < 0x20 && r != '\n' || r >= 0x7f && r <= 0x9f {
			t.Errorf("%s holds the control %U at byte %d: %q", what, r, i, out)
			return
		}
	}
}

// No byte of a task name reaches the terminal raw: trace's and check's
// table lines show every name escaped (termsafe's form), on-CPU names of
// -o wide too. JSON keeps the names exact: it is model.AppendJSON's.
func TestOutputEscapesNames(t *testing.T) {
	for _, n := range hostileNames {
		e := outputEvent()
		e.Comm, e.CPUComm = model.CommFrom(n.comm), model.CommFrom(n.comm)
		gap := &model.Verdict{Kind: model.VerdictGap, Reason: "old state ESTABLISHED, last seen SYN_SENT"}
		for _, mode := range []string{outTable, outWide} {
			lines := render(t, mode, true, []model.Event{e}, []*model.Verdict{gap})
			out := strings.Join(lines, "\n")
			assertTerminalSafe(t, "-o "+mode, out)
			want := 1
			if mode == outWide {
				want = 2
			}
			if got := strings.Count(out, n.shown); got != want {
				t.Errorf("-o %s: name %q shown %d times as %s, want %d:\n%s", mode, n.comm, got, n.shown, want, out)
			}
		}
		json := render(t, outJSON, false, []model.Event{e}, []*model.Verdict{gap})[0] + "\n"
		if want := string(model.AppendJSON(nil, &e, gap)); json != want {
			t.Errorf("-o json changed the record:\n got %s\nwant %s", json, want)
		}
	}
}

// closeFactsOf builds the facts of a close from its old state and error class.
func closeFactsOf(old model.State, err model.ErrClass) model.CloseFacts {
	return model.CloseFacts(old) | model.CloseFacts(err)<<model.FactErrShift
}

// TestCauseColumnGrows: the first step holds every cause but the longest
// timeouts (a listener's close does not print the header again); a wider
// one widens it and prints the header again, as every growing column does.
func TestCauseColumnGrows(t *testing.T) {
	e := outputEvent()
	e.Old, e.New = model.Closing, model.Close
	e.CloseFacts = model.CloseFacts(model.Closing) | model.FactClosing
	l := outputEvent()
	l.Old, l.New = model.Listen, model.Close
	l.CloseFacts = model.CloseFacts(model.Listen)
	z := outputEvent()
	z.Old, z.New = model.Established, model.Close
	z.CloseFacts = closeFactsOf(model.Established, model.ErrTimedOut) | model.CloseFacts(model.TimerProbe0)<<model.FactTimerShift
	got := render(t, outTable, true, []model.Event{outputEvent(), e, l, z}, nil)
	want := []string{
		"TIME                PID COMM             LOCAL                 REMOTE                OLD            NEW                   MS CAUSE            VERDICT",
		"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 -",
		"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          CLOSING     -> CLOSE              1.235 fin/simultaneous",
		"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          LISTEN      -> CLOSE              1.235 listener_closed",
		"TIME                PID COMM             LOCAL                 REMOTE                OLD            NEW                   MS CAUSE                     VERDICT",
		"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> CLOSE              1.235 timeout/zero_window_probe",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A cgroup's name is its creator's choice (a delegated subtree, a
// container's own cgroups): -o wide escapes it like a task name.
func TestOutputEscapesCgroups(t *testing.T) {
	for _, n := range hostileNames {
		e := outputEvent()
		e.CgroupID = 9
		e.Cgroup = &model.CgroupInfo{Path: "/user.slice/" + n.comm}
		lines := render(t, outWide, true, []model.Event{e}, nil)
		out := strings.Join(lines, "\n")
		assertTerminalSafe(t, "-o wide", out)
		if !strings.Contains(out, "/user.slice/"+n.shown) {
			t.Errorf("cgroup %q not shown as %s:\n%s", n.comm, n.shown, out)
		}
		// A service with such a name, and a pod.
		e.Cgroup = &model.CgroupInfo{Container: model.Container{ID: n.comm, Runtime: model.RuntimeSystemd}}
		if out := strings.Join(render(t, outWide, true, []model.Event{e}, nil), "\n"); !strings.Contains(out, "systemd:"+n.shown) {
			t.Errorf("service %q not shown as systemd:%s:\n%s", n.comm, n.shown, out)
		}
		e.Cgroup = &model.CgroupInfo{Container: model.Container{PodUID: n.comm}}
		if out := strings.Join(render(t, outWide, true, []model.Event{e}, nil), "\n"); !strings.Contains(out, "pod:"+n.shown) {
			t.Errorf("pod %q not shown as pod:%s:\n%s", n.comm, n.shown, out)
		}
	}
}
