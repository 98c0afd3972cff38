package vmtest

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

func TestProtocolRoundTrip(t *testing.T) {
	e := Event{Ev: EvTest, Pkg: "tracer", Name: "TestX", Result: Skip, Secs: 1.5, Reason: "needs ss\nand \"nsenter\""}
	line := string(Encode(e))
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("not one line: %q", line)
	}
	// Kernel messages and carriage returns around it do not matter.
	got, ok, err := Parse("[   12.3] random: " + strings.TrimSuffix(line, "\n") + "\r")
	if err != nil || !ok || got != e {
		t.Fatalf("Parse = %+v, %v, %v; want %+v", got, ok, err, e)
	}
	if _, ok, err := Parse("[    0.000000] Linux version 6.1.0"); ok || err != nil {
		t.Errorf("a kernel message parsed as an event: %v %v", ok, err)
	}
	if _, ok, err := Parse(Prefix + `{"ev":"test","pkg":"tra`); !ok || err == nil {
		t.Errorf("a cut line: ok %v, err %v; want a protocol error", ok, err)
	}
}

// collected gathers what a Reporter sends.
func collected() (*[]Event, Reporter) {
	var evs []Event
	return &evs, Reporter{W: EventWriter(func(e Event) { evs = append(evs, e) })}
}

func TestParserFollowsVerboseOutput(t *testing.T) {
	out := `=== RUN   TestA
    p_test.go:3: hello
    p_test.go:3: needs ss
        second line
--- SKIP: TestA (0.00s)
=== RUN   TestB
=== PAUSE TestB
=== RUN   TestC
=== PAUSE TestC
=== RUN   TestD
=== PAUSE TestD
=== CONT  TestB
=== CONT  TestD
=== RUN   TestD/sub
    p_test.go:6: subfail
--- FAIL: TestD (0.00s)
    --- FAIL: TestD/sub (0.00s)
=== CONT  TestC
=== RUN   TestC/sub
    p_test.go:5: subskip
=== NAME  TestC
    p_test.go:5: c log
--- PASS: TestC (0.00s)
    --- SKIP: TestC/sub (0.00s)
=== NAME  TestB
    p_test.go:4: bad thing
--- FAIL: TestB (0.01s)
=== RUN   TestE
FAIL
`
	evs, rep := collected()
	p := &testParser{pkg: "p", rep: rep}
	for _, l := range strings.Split(out, "\n") {
		p.line(l)
	}
	p.finish()
	var got []string
	for _, e := range *evs {
		got = append(got, fmt.Sprintf("%s %s %q", e.Name, e.Result, e.Reason))
	}
	want := []string{
		`TestA skip "needs ss"`,
		`TestD fail "subfail"`,
		`TestC pass ""`,
		`TestB fail "bad thing"`,
		`TestE fail "did not finish"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestParserTimeout(t *testing.T) {
	evs, rep := collected()
	p := &testParser{pkg: "p", rep: rep}
	for _, l := range []string{"=== RUN   TestSlow", "panic: test timed out after 1s", "\trunning tests:", "\t\tTestSlow (1s)", ""} {
		p.line(l)
	}
	p.finish()
	if !p.timedOut || p.running != "TestSlow" || len(*evs) != 1 || (*evs)[0].Result != Timeout {
		t.Errorf("timedOut %v running %q events %+v", p.timedOut, p.running, *evs)
	}
}

// readCpio reads a newc archive back: name -> (mode, rdev major, data).
func readCpio(t *testing.T, b []byte) map[string][3]string {
	t.Helper()
	out := map[string][3]string{}
	for off := 0; ; {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, b[off:off+6])
		}
		field := func(i int) int {
			n, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
		mode, size, rdevMajor, nameSize := field(1), field(6), field(9), field(11)
		name := string(b[off+110 : off+110+nameSize-1])
		off = (off + 110 + nameSize + 3) &^ 3
		data := string(b[off : off+size])
		off = (off + size + 3) &^ 3
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out[name] = [3]string{strconv.FormatInt(int64(mode), 8), strconv.Itoa(rdevMajor), data}
	}
}

func TestInitramfs(t *testing.T) {
	var r Initramfs
	r.AddFile("/init", []byte("#!x"), 0o755)
	r.AddFile("tests/a.test", []byte("abcde"), 0o644)
	r.AddCharDev("dev/console", 5, 1, 0o600)
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got := readCpio(t, buf.Bytes())
	want := map[string][3]string{
		"init":         {"100755", "0", "#!x"},
		"tests":        {"40755", "0", ""},
		"tests/a.test": {"100644", "0", "abcde"},
		"dev":          {"40755", "0", ""},
		"dev/console":  {"20600", "5", ""},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("archive\n%v\nwant\n%v", got, want)
	}
}

func TestParseDepends(t *testing.T) {
	info := []byte("license=GPL\x00depends=ip6_udp_tunnel,udp_tunnel\x00retpoline=Y\x00name=vxlan\x00")
	if got := parseDepends(info); fmt.Sprint(got) != "[ip6_udp_tunnel udp_tunnel]" {
		t.Errorf("depends %v", got)
	}
	if got := parseDepends([]byte("depends=\x00name=veth\x00")); len(got) != 0 {
		t.Errorf("depends %v, want none", got)
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	want := "[/lib/x86_64-linux-gnu/libbpf.so.1 /lib/x86_64-linux-gnu/libc.so.6 /lib64/ld-linux-x86-64.so.2]"
	if got := fmt.Sprint(parseLdd(out)); got != want {
		t.Errorf("libs %s, want %s", got, want)
	}
}

func TestKernelPackages(t *testing.T) {
	names := []string{
		"linux-image-6.1.0-9-amd64", "linux-image-6.1.0-57-amd64", "linux-image-6.1.0-57-cloud-amd64",
		"linux-image-6.1.0-57-amd64-dbg", "linux-image-6.1.0-50-amd64", "linux-image-6.12.117+deb12-amd64",
	}
	for series, want := range map[string]string{"6.1": "linux-image-6.1.0-57-amd64", "6.12": "linux-image-6.12.117+deb12-amd64"} {
		re, err := packagePattern(series)
		if err != nil {
			t.Fatal(err)
		}
		var match []string
		for _, n := range names {
			if re.MatchString(n) {
				match = append(match, n)
			}
		}
		if got := newestPackage(match); got != want {
			t.Errorf("%s: %s (of %v), want %s", series, got, match, want)
		}
	}
	if _, err := packagePattern("6"); err == nil {
		t.Error("series 6 accepted")
	}
}

func TestTable(t *testing.T) {
	host := &KernelResult{Label: "host"}
	for _, e := range []Event{
		{Ev: EvBoot, Kernel: "6.18.4"},
		{Ev: EvStart, Pkg: "tracer"},
		{Ev: EvTest, Pkg: "tracer", Name: "TestA", Result: Pass},
		{Ev: EvTest, Pkg: "tracer", Name: "TestB", Result: Skip, Reason: "needs ss"},
		{Ev: EvPkg, Pkg: "tracer", Result: Pass, Secs: 61},
		{Ev: EvDone},
	} {
		host.Add(e)
	}
	old := &KernelResult{Label: "6.1", Wall: 90e9}
	for _, e := range []Event{
		{Ev: EvBoot, Kernel: "6.1.0-57-amd64"},
		{Ev: EvModule, Name: "veth"},
		{Ev: EvTest, Pkg: "tracer", Name: "TestA", Result: Fail, Reason: "verifier"},
		{Ev: EvPkg, Pkg: "tracer", Result: Fail, Secs: 30},
	} {
		old.Add(e)
	}
	var b bytes.Buffer
	WriteTable(&b, []*KernelResult{host, old}, []string{"tracer"})
	out := b.String()
	for _, want := range []string{
		"host (6.18.4)", "PASS 1/0/1 1m1s", "6.1 (6.1.0-57-amd64)", "FAIL 0/1/0 30s",
		"host (6.18.4) tracer SKIP TestB: needs ss", "6.1 (6.1.0-57-amd64) tracer FAIL TestA: verifier",
		"the run ended before the guest reported its end", "modules veth",
		"kernels: 1 passed, 1 failed, 1 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if host.OK([]string{"tracer"}) != true || old.OK([]string{"tracer"}) {
		t.Errorf("OK: host %v, 6.1 %v", host.OK([]string{"tracer"}), old.OK([]string{"tracer"}))
	}
}
