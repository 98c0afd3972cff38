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

	"github.com/tcpstate/tcpstate/model"
)

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

func render(t *testing.T, mode string, header bool, evs []model.Event, vs []*model.Verdict) []string {
	t.Helper()
	p, err := newPrinter(mode)
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

	for _, c := range []struct {
		mode string
		evs  []model.Event
		vs   []*model.Verdict
		want []string
	}{
		{outTable, []model.Event{e, e, unknown}, []*model.Verdict{ok, gap, nil}, []string{
			"TIME                PID COMM             LOCAL                 REMOTE                OLD            NEW                   MS VERDICT",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 !! GAP: old state ESTABLISHED, last seen SYN_SENT",
			"15:09:26.123456       - -                127.0.0.1:0           10.0.0.2:443          CLOSE       -> SYN_SENT               -",
		}},
		{outWide, []model.Event{e, e, unknown}, []*model.Verdict{ok, gap, nil}, []string{
			"TIME                PID COMM             LOCAL                 REMOTE                OLD            NEW                   MS SKADDR             CPU_PID CPU_COMM         FAMILY OWNER     VERDICT",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 0xffff88810a3c0800      17 ksoftirqd/1      ipv4   known",
			"15:09:26.123456    4242 curl             127.0.0.1:40312       10.0.0.2:443          ESTABLISHED -> FIN_WAIT1          1.235 0xffff88810a3c0800      17 ksoftirqd/1      ipv4   known     !! GAP: old state ESTABLISHED, last seen SYN_SENT",
			"15:09:26.123456       - -                127.0.0.1:0           10.0.0.2:443          CLOSE       -> SYN_SENT               - 0xffff88810a3c0800      17 ksoftirqd/1      ipv4   unknown",
		}},
		{outJSON, []model.Event{e, e, unknown}, []*model.Verdict{ok, gap, nil}, []string{
			`{"time":"2025-03-14T15:09:26.123456789Z","ts_ns":5000000123,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"curl","owner":"known","cpu_pid":17,"cpu_comm":"ksoftirqd/1","family":"ipv4","saddr":"127.0.0.1","sport":40312,"daddr":"10.0.0.2","dport":443,"old":"ESTABLISHED","new":"FIN_WAIT1","old_state_ns":1234567,"last_state":"ESTABLISHED","netns":4026531840,"verdict":"ok"}`,
			`{"time":"2025-03-14T15:09:26.123456789Z","ts_ns":5000000123,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"curl","owner":"known","cpu_pid":17,"cpu_comm":"ksoftirqd/1","family":"ipv4","saddr":"127.0.0.1","sport":40312,"daddr":"10.0.0.2","dport":443,"old":"ESTABLISHED","new":"FIN_WAIT1","old_state_ns":1234567,"last_state":"ESTABLISHED","netns":4026531840,"verdict":"gap","reason":"old state ESTABLISHED, last seen SYN_SENT"}`,
			`{"time":"2025-03-14T15:09:26.123456789Z","ts_ns":5000000123,"skaddr":"0xffff88810a3c0800","pid":4242,"comm":"curl","owner":"unknown","cpu_pid":17,"cpu_comm":"ksoftirqd/1","family":"ipv4","saddr":"127.0.0.1","sport":0,"daddr":"10.0.0.2","dport":443,"old":"CLOSE","new":"SYN_SENT","old_state_ns":null,"last_state":"ESTABLISHED","netns":4026531840}`,
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
			back.Old != e.Old || back.New != e.New || back.Sport != e.Sport || back.Daddr != e.Daddr {
			t.Errorf("JSON round trip:\n got %+v\nwant %+v", back, e)
		}
	}
}

// column is a field of a table line: where it starts and ends.
type column struct{ start, end int }

// columns splits a line into space-separated fields. The "->" between the
// states is dropped, so a line's fields match the header's names.
func columns(line string) []column {
	var cols []column
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
			cols = append(cols, column{i, j})
		}
		i = j
	}
	return cols
}

// checkAligned asserts that every line's fields line up with the header's
// names: left-aligned columns start where their name starts, right-aligned
// ones (PID, MS, CPU_PID) end where it ends. The comm values, verdict
// reasons and "-" cells have no spaces, so fields split cleanly.
func checkAligned(t *testing.T, header string, lines []string) {
	t.Helper()
	names := columns(header)
	right := map[string]bool{"PID": true, "MS": true, "CPU_PID": true}
	for _, line := range lines {
		cols := columns(line)
		for k, name := range names {
			n := header[name.start:name.end]
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
				t.Errorf("column %s misaligned (%v, name at %v):\n%s\n%s", n, cols[k], name, header, line)
			}
		}
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
			e.OldStateNs = 999_999_999_000 // 999999.999 ms: the widest that fits
		}),
		vary(func(e *model.Event) { e.OldStateNs = 0; e.Flags |= model.FlagOwnerInherited }),
	}
	v6 := vary(func(e *model.Event) {
		e.Family = model.AFInet6
		e.Saddr, e.Daddr = netip.MustParseAddr("2001:db8:1234:5678:9abc:def0:1234:5678"), netip.MustParseAddr("::1")
	})
	mapped := vary(func(e *model.Event) {
		e.Family = model.AFInet6
		e.Saddr, e.Daddr = netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("fe80::1")
	})
	gap := &model.Verdict{Kind: model.VerdictGap, Reason: "gap-reason"}

	for _, mode := range []string{outTable, outWide} {
		t.Run(mode, func(t *testing.T) {
			// IPv4 only: every line lines up with the header.
			evs := append([]model.Event(nil), v4...)
			vs := make([]*model.Verdict, len(evs))
			vs[1] = gap
			lines := render(t, mode, true, evs, vs)
			checkAligned(t, lines[0], lines[1:])

			// An IPv6 line widens the address columns for good: it and
			// every later line (IPv4 too) line up with each other, as
			// with a header printed at that width.
			evs = slices.Concat(v4[:2], []model.Event{v6}, v4, []model.Event{mapped, base})
			vs = make([]*model.Verdict, len(evs))
			vs[len(evs)-1] = gap
			p, err := newPrinter(mode)
			if err != nil {
				t.Fatal(err)
			}
			tp := p.(*tablePrinter)
			var out []string
			var wideHeader string
			for i := range evs {
				line := strings.TrimSuffix(string(tp.appendEvent(nil, &evs[i], vs[i])), "\n")
				out = append(out, line)
				if i == 2 {
					wideHeader = strings.TrimSuffix(string(tp.header(nil)), "\n")
				}
			}
			if !strings.Contains(out[2], "[2001:db8:1234:5678:9abc:def0:1234:5678]:40312") {
				t.Errorf("IPv6 local address not bracketed with its port:\n%s", out[2])
			}
			if !strings.Contains(out[len(out)-2], "[::ffff:10.0.0.1]:40312") {
				t.Errorf("IPv4-mapped address:\n%s", out[len(out)-2])
			}
			checkAligned(t, wideHeader, out[2:])
			// Lines before the IPv6 one keep the narrow columns.
			checkAligned(t, lines[0], out[:2])
		})
	}
}

// A socket that stayed in a state for over 999999.999 ms (16 min 40 s,
// common for ESTABLISHED) overflows the MS column and shifts the rest of
// the line.
func TestOutputLongDuration(t *testing.T) {
	long := outputEvent()
	long.OldStateNs = uint64(3 * time.Hour)
	for _, mode := range []string{outTable, outWide} {
		lines := render(t, mode, true, []model.Event{long}, nil)
		checkAligned(t, lines[0], lines[1:])
	}
}

func TestNewPrinterRejectsUnknownMode(t *testing.T) {
	for _, mode := range []string{"", "bogus", "JSON", "tables"} {
		if _, err := newPrinter(mode); err == nil || exitCode(err) != exitUsage {
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
