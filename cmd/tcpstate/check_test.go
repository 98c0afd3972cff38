package main

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/model"
)

// rec returns one JSON record line as trace -o json writes it.
func rec(sk uint64, old, nw model.State) string {
	e := model.Event{
		TsNs: 1000, Time: time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC), Skaddr: sk,
		Pid: 77, Comm: model.CommFrom("curl"), Flags: model.FlagOwnerKnown,
		Family: model.AFInet, Saddr: netip.MustParseAddr("127.0.0.1"), Sport: 40312,
		Daddr: netip.MustParseAddr("127.0.0.1"), Dport: 8080, Old: old, New: nw,
	}
	// A verdict from the recording model, which check must ignore.
	return string(model.AppendJSON(nil, &e, &model.Verdict{Kind: model.VerdictOK}))
}

const sk1, sk2 = 0xffff88810a3c0800, 0xffff88810a3c1000

// activeLife is one socket's connect and active close, as Linux reports it.
var activeLife = rec(sk1, model.Close, model.SynSent) +
	rec(sk1, model.SynSent, model.Established) +
	rec(sk1, model.Established, model.FinWait1) +
	rec(sk1, model.FinWait1, model.FinWait2) +
	rec(sk1, model.FinWait2, model.Close)

type cliResult struct {
	stdout, stderr string
	err            error
	code           int
}

// runCLI runs tcpstate with args as main would, stdin given, and returns
// what it printed and its exit status.
func runCLI(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	root := newRootCmd()
	registered := false
	for _, c := range root.Commands() {
		registered = registered || c.Name() == "check"
	}
	if !registered {
		root.AddCommand(newCheckCmd())
	}
	var out, errb bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	err := root.ExecuteContext(context.Background())
	return cliResult{stdout: out.String(), stderr: errb.String(), err: err, code: exitCode(err)}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "capture.jsonl")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// summaryRow finds the summary table row whose "what" cell is what and
// returns its count cell.
func summaryRow(t *testing.T, out, what string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) == 5 && strings.TrimSpace(cells[2]) == what {
			return strings.TrimSpace(cells[3])
		}
	}
	t.Fatalf("no summary row %q in:\n%s", what, out)
	return ""
}

func TestCheckCleanCapture(t *testing.T) {
	path := writeTemp(t, activeLife)
	r := runCLI(t, "", "check", path)
	if r.code != exitOK {
		t.Fatalf("exit %d (%v), stderr %s", r.code, r.err, r.stderr)
	}
	if strings.Contains(r.stdout, "TIME") || strings.Contains(r.stdout, "!!") {
		t.Errorf("a clean capture printed events:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "check of "+path+" against model linux: 5 transitions, 0 anomalies") {
		t.Errorf("no title line:\n%s", r.stdout)
	}
	for what, want := range map[string]string{
		"ok": "5", "total": "5", "illegal (not in model linux)": "0", "gap (events missing)": "0",
		"seen": "1", "closed": "1", "still open at the end": "0", "lines": "5", "records": "5",
		"not records (bad lines)": "0", "evicted (--max-sockets 262144)": "0",
	} {
		if got := summaryRow(t, r.stdout, what); got != want {
			t.Errorf("summary %q = %s, want %s", what, got, want)
		}
	}
	if r.stderr != "" {
		t.Errorf("stderr: %s", r.stderr)
	}
}

func TestCheckModelsAndFailOn(t *testing.T) {
	path := writeTemp(t, activeLife)
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		errMsg   string
		printed  []string // substrings of stdout
		illegalN string
	}{
		{"linux", []string{"--fail-on", "illegal,gap"}, exitOK, "", nil, "0"},
		{"rfc793 reports", []string{"--model", "rfc793"}, exitOK, "",
			[]string{"!! ILLEGAL: FIN_WAIT2 -> CLOSE is not a transition of model rfc793", "illegal FIN_WAIT2 -> CLOSE"}, "1"},
		{"rfc793 fails on illegal", []string{"--model=RFC793", "--fail-on", "illegal"}, exitAnomalies,
			"1 illegal transition seen (--fail-on illegal)", nil, "1"},
		{"rfc793, fail on gaps only", []string{"--model", "rfc793", "--fail-on", "gap"}, exitOK, "", nil, "1"},
		{"repeated --fail-on", []string{"--model", "rfc793", "--fail-on", "gap", "--fail-on", "illegal"}, exitAnomalies,
			"1 illegal transition seen (--fail-on illegal,gap)", nil, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, "", append([]string{"check", path}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d (%v), want %d", r.code, r.err, tc.code)
			}
			if tc.errMsg != "" && (r.err == nil || r.err.Error() != tc.errMsg) {
				t.Errorf("error %v, want %q", r.err, tc.errMsg)
			}
			for _, s := range tc.printed {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
				}
			}
			if got := summaryRow(t, r.stdout, illegalRow(tc.args)); got != tc.illegalN {
				t.Errorf("illegal count %s, want %s", got, tc.illegalN)
			}
		})
	}
}

// illegalRow names the summary row of illegal transitions for the model args select.
func illegalRow(args []string) string {
	for _, a := range args {
		if strings.Contains(strings.ToLower(a), "rfc793") {
			return "illegal (not in model rfc793)"
		}
	}
	return "illegal (not in model linux)"
}

func TestCheckBadLines(t *testing.T) {
	lines := []string{
		rec(sk1, model.Close, model.SynSent),       // 1
		"{\"time\": garbage}\n",                    // 2
		rec(sk1, model.SynSent, model.Established), // 3
		"\n",   // 4: blank, skipped
		"\r\n", // 5: blank (CRLF)
		strings.Replace(rec(sk2, model.Close, model.Listen), `"family":"ipv4",`, "", 1), // 6: missing key
		strings.TrimSuffix(rec(sk1, model.Established, model.FinWait1), "\n") + "\r\n",  // 7: CRLF, fine
		rec(sk1, model.FinWait2, model.Close),                                           // 8: gap (FIN_WAIT1 -> FIN_WAIT2 missing)
		rec(sk2, model.Close, model.SynSent)[:100],                                      // 9: truncated, last line, no newline
	}
	path := writeTemp(t, strings.Join(lines, ""))
	r := runCLI(t, "", "check", path)
	if r.code != exitUsage {
		t.Fatalf("exit %d (%v), want %d", r.code, r.err, exitUsage)
	}
	for _, want := range []string{
		"tcpstate: " + path + ": line 2: not a tcpstate record: invalid character 'g'",
		"tcpstate: " + path + ": line 6: not a tcpstate record: missing family\n",
		"tcpstate: " + path + ": line 9: not a tcpstate record: unexpected end of JSON input (the last line has no newline: truncated?)",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if n := strings.Count(r.stderr, ": line "); n != 3 {
		t.Errorf("%d lines reported, want 3:\n%s", n, r.stderr)
	}
	if want := path + ": 3 of 9 lines are not tcpstate records (reported above)"; r.err == nil || r.err.Error() != want {
		t.Errorf("error %v, want %q", r.err, want)
	}
	// Checking went on past the bad lines: the gap on line 8 was found.
	if !strings.Contains(r.stdout, "!! GAP: expected old state FIN_WAIT1 (last seen), got FIN_WAIT2\n") {
		t.Errorf("gap not reported (or with a loss claim):\n%s", r.stdout)
	}
	for what, want := range map[string]string{
		"lines": "9", "records": "4", "not records (bad lines)": "3", "blank": "2",
		"gap (events missing)": "1", "ok": "3", "gaps in all (--fail-on gap)": "1",
	} {
		if got := summaryRow(t, r.stdout, what); got != want {
			t.Errorf("summary %q = %s, want %s", what, got, want)
		}
	}

	// --fail-on wins over bad lines, and says both.
	r = runCLI(t, "", "check", "--fail-on", "gap", path)
	if want := "1 gap seen (--fail-on gap); also " + path + ": 3 of 9 lines are not tcpstate records (reported above)"; r.code != exitAnomalies || r.err == nil || r.err.Error() != want {
		t.Errorf("exit %d, error %v; want %d, %q", r.code, r.err, exitAnomalies, want)
	}
}

func TestCheckManyBadLinesAreCountedNotFlooded(t *testing.T) {
	path := writeTemp(t, strings.Repeat("garbage\n", 500)+activeLife)
	r := runCLI(t, "", "check", path)
	if r.code != exitUsage {
		t.Fatalf("exit %d", r.code)
	}
	if n := strings.Count(r.stderr, "\n"); n != maxBadLineReports+1 {
		t.Errorf("%d stderr lines, want %d", n, maxBadLineReports+1)
	}
	if got := summaryRow(t, r.stdout, "not records (bad lines)"); got != "500" {
		t.Errorf("bad lines %s, want 500", got)
	}
	if got := summaryRow(t, r.stdout, "ok"); got != "5" {
		t.Errorf("ok %s, want 5", got)
	}
}

func TestCheckLongLines(t *testing.T) {
	// A record longer than bufio's and bufio.Scanner's default buffers
	// (4 KiB, 64 KiB): a long reason is legal.
	long := strings.Replace(rec(sk2, model.Close, model.Listen), `"verdict":"ok"`,
		`"verdict":"gap","reason":"`+strings.Repeat("x", 300<<10)+`"`, 1)
	tooLong := `{"reason":"` + strings.Repeat("y", maxLineBytes) + "\"}\n"
	path := writeTemp(t, long+tooLong+activeLife)
	r := runCLI(t, "", "check", path)
	if !strings.Contains(r.stderr, ": line 2: longer than 16 MiB: not a tcpstate record") {
		t.Errorf("stderr: %.300s", r.stderr)
	}
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d", r.code, exitUsage)
	}
	for what, want := range map[string]string{"records": "6", "not records (bad lines)": "1", "lines": "7", "ok": "6"} {
		if got := summaryRow(t, r.stdout, what); got != want {
			t.Errorf("summary %q = %s, want %s", what, got, want)
		}
	}
}

func TestCheckInputErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing file", []string{"check", filepath.Join(dir, "nope.jsonl")}, exitUsage, "cannot read " + filepath.Join(dir, "nope.jsonl") + ": no such file or directory"},
		{"directory", []string{"check", dir}, exitUsage, "cannot read " + dir + ": it is a directory"},
		{"two files", []string{"check", "a", "b"}, exitUsage, "check reads one FILE (or - for standard input), got 2 arguments"},
		{"bad model", []string{"check", "--model", "bsd", "-"}, exitUsage, `--model "bsd": want linux or rfc793`},
		{"bad fail-on", []string{"check", "--fail-on", "illegal,lost", "-"}, exitUsage, `--fail-on "lost": want illegal or gap (comma-separated)`},
		{"all and anomalies", []string{"check", "--all", "--anomalies", "-"}, exitUsage, "--all and --anomalies exclude each other"},
		{"bad output", []string{"check", "-o", "xml", "-"}, exitUsage, `--output "xml": want table, wide or json`},
		{"bad max-sockets", []string{"check", "--max-sockets", "0", "-"}, exitUsage, "--max-sockets 0: must be at least 1"},
		{"unknown flag", []string{"check", "--modle", "linux"}, exitUsage, "unknown flag: --modle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, "", tc.args...)
			if r.code != tc.code || r.err == nil || r.err.Error() != tc.msg {
				t.Errorf("exit %d, error %v; want %d, %q", r.code, r.err, tc.code, tc.msg)
			}
			if r.stdout != "" {
				t.Errorf("printed %q", r.stdout)
			}
		})
	}
}

func TestCheckStdinAndEmptyInput(t *testing.T) {
	for _, args := range [][]string{{"check"}, {"check", "-"}} {
		r := runCLI(t, activeLife, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "check of standard input against model linux: 5 transitions") {
			t.Errorf("%q: exit %d, stdout %s", args, r.code, r.stdout)
		}
	}
	r := runCLI(t, "", "check")
	if r.code != exitOK || !strings.Contains(r.stderr, "tcpstate: warning: standard input holds no records") {
		t.Errorf("empty input: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCheckAllAndJSON(t *testing.T) {
	input := activeLife + rec(sk2, model.Established, model.CloseWait) // unknown: first seen mid-life
	r := runCLI(t, input, "check", "--all", "-o", "wide")
	if r.code != exitOK {
		t.Fatalf("exit %d: %v", r.code, r.err)
	}
	if strings.Count(r.stdout, "SKADDR") != 1 || strings.Count(r.stdout, "0xffff88810a3c0800") != 5 {
		t.Errorf("--all -o wide:\n%s", r.stdout)
	}
	if got := summaryRow(t, r.stdout, "unknown (socket first seen mid-life, or evicted)"); got != "1" {
		t.Errorf("unknown %s, want 1", got)
	}

	// JSON: standard output is only records, re-checked; the summary is on stderr.
	r = runCLI(t, input, "check", "--all", "-o", "json", "--model", "rfc793")
	if r.code != exitOK {
		t.Fatalf("exit %d: %v", r.code, r.err)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		_, v, err := model.ParseRecord([]byte(line))
		if err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		kinds = append(kinds, v.Kind.String())
	}
	if got := strings.Join(kinds, " "); got != "ok ok ok ok illegal unknown" {
		t.Errorf("verdicts %s", got)
	}
	if !strings.Contains(r.stderr, "check of standard input against model rfc793: 6 transitions, 1 anomaly") {
		t.Errorf("summary not on stderr: %s", r.stderr)
	}

	// Anomalies only, with --anomalies said explicitly: the same as the default.
	a := runCLI(t, input, "check", "--anomalies", "--model", "rfc793")
	b := runCLI(t, input, "check", "--model", "rfc793")
	if a.stdout != b.stdout || strings.Count(a.stdout, "!!") != 1 || strings.Count(a.stdout, "TIME") != 1 {
		t.Errorf("--anomalies:\n%s\ndefault:\n%s", a.stdout, b.stdout)
	}
}

func TestCheckFlagsValidate(t *testing.T) {
	for _, tc := range []struct {
		o     checkOptions
		model string
		fail  failOnSet
		err   string
	}{
		{checkOptions{Model: "linux"}, "linux", failOnSet{}, ""},
		{checkOptions{Model: "rfc793", FailOn: []string{"illegal"}}, "rfc793", failOnSet{illegal: true}, ""},
		{checkOptions{Model: "linux", FailOn: []string{" Gap ", "illegal"}}, "linux", failOnSet{illegal: true, gap: true}, ""},
		{checkOptions{Model: "linux", FailOn: []string{""}}, "linux", failOnSet{}, ""},
		{checkOptions{Model: "", FailOn: nil}, "", failOnSet{}, `--model: unknown transition model ""`},
		{checkOptions{Model: "linux", FailOn: []string{"unknown"}}, "", failOnSet{}, `--fail-on "unknown": want illegal or gap`},
	} {
		m, f, err := tc.o.validate()
		if tc.err != "" {
			var ue *usageError
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.As(err, &ue) {
				t.Errorf("%+v: error %v, want usage error %q", tc.o, err, tc.err)
			}
			continue
		}
		if err != nil || m.Name() != tc.model || f != tc.fail {
			t.Errorf("%+v: %v %+v %v", tc.o, m, f, err)
		}
	}
}

func TestFailOnCheck(t *testing.T) {
	for _, tc := range []struct {
		f    failOnSet
		st   model.TrackerStats
		want string
	}{
		{failOnSet{}, model.TrackerStats{Illegal: 3, Gap: 2}, ""},
		{failOnSet{illegal: true}, model.TrackerStats{Gap: 2}, ""},
		{failOnSet{illegal: true}, model.TrackerStats{Illegal: 3, Gap: 2}, "3 illegal transitions seen (--fail-on illegal)"},
		{failOnSet{gap: true}, model.TrackerStats{Gap: 1}, "1 gap seen (--fail-on gap)"},
		{failOnSet{gap: true}, model.TrackerStats{Illegal: 4, IllegalGap: 2}, "2 gaps seen (--fail-on gap)"},
		{failOnSet{illegal: true, gap: true}, model.TrackerStats{Illegal: 1, Gap: 2, IllegalGap: 1}, "1 illegal transition and 3 gaps seen (--fail-on illegal,gap)"},
	} {
		err := tc.f.check(tc.st)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v %+v: %v", tc.f, tc.st, err)
			}
			continue
		}
		var ae *anomalyError
		if !errors.As(err, &ae) || err.Error() != tc.want || exitCode(err) != exitAnomalies {
			t.Errorf("%+v %+v: %v, want anomaly error %q", tc.f, tc.st, err, tc.want)
		}
	}
}

// A record names its task as JSON can: any character, controls included.
// check's table output shows them escaped, as trace's does.
func TestCheckEscapesNames(t *testing.T) {
	var input strings.Builder
	for i, n := range hostileNames {
		e := model.Event{
			Time: time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC), Skaddr: sk1 + uint64(i)*0x1000,
			Pid: 77, Comm: model.CommFrom(n.comm), CPUPid: 78, CPUComm: model.CommFrom(n.comm),
			Flags: model.FlagOwnerKnown, Family: model.AFInet,
			Saddr: netip.MustParseAddr("127.0.0.1"), Sport: 40312, Daddr: netip.MustParseAddr("127.0.0.1"), Dport: 8080,
			Old: model.Close, New: model.SynSent,
		}
		input.Write(model.AppendJSON(nil, &e, nil))
	}
	for _, mode := range []string{outTable, outWide} {
		r := runCLI(t, input.String(), "check", "--all", "-o", mode)
		if r.code != exitOK {
			t.Fatalf("-o %s: exit %d: %v\n%s", mode, r.code, r.err, r.stderr)
		}
		assertTerminalSafe(t, "check -o "+mode, r.stdout)
		// A JSON string holds no bytes that are not UTF-8: encoding/json
		// reads them as U+FFFD, which is no control.
		for _, shown := range []string{`\x1b]0;PWN\x07\x1b[2J`, `\u009b31mred`, "\ufffd2J\ufffdok", `a\x09b\x0ac\x7f\\`} {
			if !strings.Contains(r.stdout, shown) {
				t.Errorf("-o %s: no %s in\n%s", mode, shown, r.stdout)
			}
		}
	}
}

// A file name is whatever its maker chose, and a glob may hand check one:
// the summary and the messages that name it show it escaped. The summary
// table lines up.
func TestCheckEscapesFileName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cap\x1b]0;PWN\x07\u009b数.jsonl")
	if err := os.WriteFile(path, []byte(activeLife+"not a record\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	shown := filepath.Join(dir, `cap\x1b]0;PWN\x07\u009b数.jsonl`)
	r := runCLI(t, "", "check", path)
	if r.code != exitUsage {
		t.Fatalf("exit %d, want %d (a bad line): %v", r.code, exitUsage, r.err)
	}
	msg := r.err.Error()
	assertTerminalSafe(t, "summary", r.stdout)
	assertTerminalSafe(t, "stderr", r.stderr)
	assertTerminalSafe(t, "error", msg)
	if !strings.Contains(r.stdout, "check of "+shown+" against model linux") {
		t.Errorf("summary does not name %s:\n%s", shown, r.stdout)
	}
	if !strings.Contains(r.stderr, "tcpstate: "+shown+": line 6: ") || !strings.HasPrefix(msg, shown+": 1 of 6 lines") {
		t.Errorf("messages do not name %s:\nstderr: %s\nerror: %s", shown, r.stderr, msg)
	}
	assertTablesAligned(t, "summary", r.stdout)

	missing := runCLI(t, "", "check", filepath.Join(dir, "no\x1b[2Jsuch"))
	if missing.code != exitUsage || !strings.Contains(missing.err.Error(), `no\x1b[2Jsuch: no such file`) {
		t.Errorf("missing file: exit %d, %v", missing.code, missing.err)
	}
	assertTerminalSafe(t, "error", missing.err.Error())
}

// A line that is not a record is reported with what was wrong in it, and
// whatever the line holds reaches stderr escaped: Go's %q everywhere
// (control bytes, DEL, C1 and bytes that are not UTF-8 as \x.. or \u....).
func TestCheckBadLinesAreTerminalSafe(t *testing.T) {
	const hostile = `\u007f\u001b]0;PWN\u0007\u001b[2J\u009b`
	line := strings.TrimSuffix(rec(sk1, model.Close, model.SynSent), "\n")
	var input strings.Builder
	for _, key := range []string{"time", "skaddr", "owner", "family", "saddr", "daddr", "old", "new", "last_state", "verdict"} {
		i := strings.Index(line, `"`+key+`":`)
		if i < 0 {
			line2 := strings.TrimSuffix(line, "}") + `,"` + key + `":"` + hostile + `"}`
			input.WriteString(line2 + "\n")
			continue
		}
		j := i + len(key) + 3
		k := j + 1
		if line[j] == '"' {
			k = j + 1 + strings.IndexByte(line[j+1:], '"') + 1
		} else {
			for line[k] != ',' && line[k] != '}' {
				k++
			}
		}
		input.WriteString(line[:j] + `"` + hostile + `"` + line[k:] + "\n")
	}
	input.WriteString("\x7f\x1b]0;PWN\x07\u009b\xff\n") // not even JSON
	r := runCLI(t, input.String(), "check")
	if r.code != exitUsage {
		t.Fatalf("exit %d, want %d: %v\n%s", r.code, exitUsage, r.err, r.stderr)
	}
	if n := strings.Count(r.stderr, "not a tcpstate record"); n != 11 {
		t.Errorf("%d lines reported, want 11:\n%s", n, r.stderr)
	}
	assertTerminalSafe(t, "stderr", r.stderr)
}

// TestCheckEvictedSocketsAreUnknown: as --max-sockets' help says, a socket
// check evicted is unknown at its next transition, though the record
// carries the kernel's last_state (before: 22 evicted, 0 unknown).
func TestCheckEvictedSocketsAreUnknown(t *testing.T) {
	var b strings.Builder
	const n = 26
	for i := range n {
		b.WriteString(rec(0xffff888100000000+uint64(i)*0x800, model.Close, model.SynSent))
	}
	for i := range n {
		line := rec(0xffff888100000000+uint64(i)*0x800, model.SynSent, model.Established)
		b.WriteString(strings.Replace(line, `"old_state_ns"`, `"last_state":"SYN_SENT","old_state_ns"`, 1))
	}
	r := runCLI(t, "", "check", "--max-sockets", "4", writeTemp(t, b.String()))
	if r.code != exitOK {
		t.Fatalf("exit %d (%v): %s", r.code, r.err, r.stderr)
	}
	// Every socket was evicted before its second transition (the first
	// 22 by the last births, the others by the sockets seen again before
	// them): all 26 second transitions are unknown.
	evicted, unknown := summaryRow(t, r.stdout, "evicted (--max-sockets 4)"), summaryRow(t, r.stdout, "unknown (socket first seen mid-life, or evicted)")
	if evicted == "0" || unknown != "26" {
		t.Errorf("evicted %s, unknown %s: want every evicted socket's next transition (26) unknown\n%s", evicted, unknown, r.stdout)
	}
}

// TestCheckFailOnNoRecords: --fail-on guards a run (trace ... | check
// --fail-on gap -); input that holds no records checked nothing, and must
// not pass the guard (before: a tracer that failed to start gave check an
// empty pipe, and exit status 0).
func TestCheckFailOnNoRecords(t *testing.T) {
	for _, in := range []string{"", "\n\n"} {
		r := runCLI(t, in, "check", "--fail-on", "gap", "-")
		if r.code != exitUsage || r.err == nil || !strings.Contains(r.err.Error(), "standard input holds no records: --fail-on checked nothing") {
			t.Errorf("--fail-on over %q: exit %d, error %v; want %d and why", in, r.code, r.err, exitUsage)
		}
	}
	// Without --fail-on, a warning, as before.
	if r := runCLI(t, "", "check", "-"); r.code != exitOK {
		t.Errorf("no --fail-on, empty input: exit %d, want 0", r.code)
	}
}
