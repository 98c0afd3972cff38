package main

// What the command line says when it is used wrongly, and the flags that
// name states, output modes and models: no kernel needed.

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// usageErr runs args through the root command and returns the usage
// error's message, failing the test when args are accepted or the error is
// not a usage error (exit status 2) on one line.
func usageErr(t *testing.T, args ...string) string {
	t.Helper()
	root := statsRoot()
	root.SetArgs(args)
	var out, errb strings.Builder
	root.SetOut(&out)
	root.SetErr(&errb)
	// A done context: args accepted by mistake end at once (after
	// loading, as root) instead of tracing until the test times out.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := root.ExecuteContext(ctx)
	if err == nil {
		t.Fatalf("tcpstate %s: accepted", strings.Join(args, " "))
	}
	if code := exitCode(err); code != exitUsage {
		t.Errorf("tcpstate %s: exit status %d, want %d (%v)", strings.Join(args, " "), code, exitUsage, err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("tcpstate %s: error on more than one line: %q", strings.Join(args, " "), err)
	}
	if out.Len()+errb.Len() != 0 {
		t.Errorf("tcpstate %s printed %q %q", strings.Join(args, " "), out.String(), errb.String())
	}
	return err.Error()
}

func TestStateFlagSpellings(t *testing.T) {
	o := traceOptionsFrom(t, "--state", "ESTAB,fin-wait-1", "--state", "UNCONN", "--state", "SYN-RECV,last-ack,TCP_CLOSE_WAIT")
	got, err := o.tracerOptions()
	if err != nil {
		t.Fatal(err)
	}
	want := []model.State{model.Established, model.FinWait1, model.Close, model.SynRecv, model.LastAck, model.CloseWait}
	if !slices.Equal(got.States, want) {
		t.Errorf("--state: %v, want %v", got.States, want)
	}
}

// TestStateFlagRefusesUnreportedStates: a state the tracepoint never
// reports would match nothing; trace and stats say so and what to use.
func TestStateFlagRefusesUnreportedStates(t *testing.T) {
	for _, cmd := range []string{"trace", "stats"} {
		for _, c := range []struct {
			arg  string
			want []string
		}{
			{"TIME_WAIT", []string{"--state TIME_WAIT would match nothing", "timewait socket", "FIN_WAIT2 or CLOSING", "-> CLOSE"}},
			{"time-wait", []string{"--state TIME_WAIT would match nothing"}},
			{"ESTABLISHED,TIME-WAIT", []string{"--state TIME_WAIT would match nothing"}},
			{"NEW_SYN_RECV", []string{"--state NEW_SYN_RECV would match nothing", "request socket", "select SYN_RECV"}},
		} {
			msg := usageErr(t, cmd, "--state", c.arg)
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%s --state %s: %q, want it to contain %q", cmd, c.arg, msg, w)
				}
			}
		}
	}
}

// goInternals are what Go's parsers put in their errors: none belongs in a
// message to the user.
var goInternals = []string{"strconv", "Parse", "invalid syntax", "time: ", "invalid argument", "out of range", "flag needs an argument"}

func plainMessage(t *testing.T, what, msg string) {
	t.Helper()
	for _, g := range goInternals {
		if strings.Contains(msg, g) {
			t.Errorf("%s: %q has Go's %q in it", what, msg, g)
		}
	}
}

// TestFlagErrorsArePlain: every flag of every command, given a value it
// cannot take, answers with one sentence that names the flag and the value
// and says what is wanted, in words rather than Go's parser errors.
func TestFlagErrorsArePlain(t *testing.T) {
	for _, cmd := range []string{"trace", "stats", "check"} {
		c, _, err := statsRoot().Find([]string{cmd})
		if err != nil {
			t.Fatal(err)
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			switch f.Name {
			case "summary-json": // any file name will do
				return
			}
			arg := "--" + f.Name + "=x!"
			msg := usageErr(t, cmd, arg)
			if !strings.Contains(msg, "--"+f.Name) || !strings.Contains(msg, `"x!"`) {
				t.Errorf("%s %s: %q does not name the flag and the value", cmd, arg, msg)
			}
			plainMessage(t, cmd+" "+arg, msg)
		})
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"trace", "--count", "-1"}, `--count "-1": want a whole number, 0 or more`},
		{[]string{"trace", "--count", "99999999999999999999999"}, `--count "99999999999999999999999": want a whole number, 0 or more, below 2^64`},
		{[]string{"trace", "--duration", "soon"}, `--duration "soon": want a duration such as 500ms, 30s, 5m or 1h30m`},
		{[]string{"trace", "--duration", "5"}, `--duration "5": want a duration such as 500ms, 30s, 5m or 1h30m`},
		{[]string{"stats", "--interval", "soon"}, `--interval "soon": want a duration`},
		{[]string{"stats", "--top", "many"}, `--top "many": want a whole number`},
		{[]string{"trace", "--ring-size", "2M"}, `--ring-size "2M": want a whole number`},
		{[]string{"trace", "--ipv4=maybe"}, `--ipv4 "maybe": want true or false`},
		{[]string{"trace", "--port"}, `--port needs a value`},
		{[]string{"trace", "-o"}, `-o needs a value`},
		{[]string{"stats", "--stuck", "CLOSE_WAIT"}, `--stuck "CLOSE_WAIT": want STATE=DURATION`},
		{[]string{"stats", "--stuck", "CLOSE_WAIT=soon"}, `--stuck "CLOSE_WAIT=soon": "soon" is not a duration`},
		{[]string{"stats", "--stuck", "WAITING=5s"}, `--stuck "WAITING=5s": unknown TCP state "WAITING"`},
	} {
		msg := usageErr(t, c.args...)
		if !strings.HasPrefix(msg, c.msg) {
			t.Errorf("tcpstate %s: %q, want %q...", strings.Join(c.args, " "), msg, c.msg)
		}
		plainMessage(t, strings.Join(c.args, " "), msg)
	}
}

// TestOutputAndModelIgnoreCase: -o and --model take their words in any
// case, in every command that has them, and hand on the canonical word.
func TestOutputAndModelIgnoreCase(t *testing.T) {
	for _, c := range []struct {
		cmd         string
		args        []string
		output, mdl string
	}{
		{"trace", []string{"-o", "JSON", "--model", "RFC793"}, "json", "rfc793"},
		{"trace", []string{"--output", "Wide", "--model", "Linux"}, "wide", "linux"},
		{"stats", []string{"-o", "Json", "--model", "RFC793"}, "json", "rfc793"},
		{"stats", []string{"-o", "TABLE"}, "table", "linux"},
		{"check", []string{"-o", "JSON", "--model", "rfc793"}, "json", "rfc793"},
		{"check", []string{"-o", "WIDE", "--model", "LINUX"}, "wide", "linux"},
	} {
		cmd, _, err := statsRoot().Find([]string{c.cmd})
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Errorf("%s %v: %v", c.cmd, c.args, err)
			continue
		}
		out, _ := cmd.Flags().GetString("output")
		mdl, _ := cmd.Flags().GetString("model")
		if out != c.output || mdl != c.mdl {
			t.Errorf("%s %v: output %q model %q, want %q %q", c.cmd, c.args, out, mdl, c.output, c.mdl)
		}
	}
	// The whole way through, where no kernel is needed.
	in := writeTemp(t, rec(1, model.Close, model.SynSent)+rec(1, model.SynSent, model.Close))
	r := runCLI(t, "", "check", "-o", "JSON", "--model", "RFC793", "--all", in)
	if r.err != nil || !strings.HasPrefix(r.stdout, "{") {
		t.Errorf("check -o JSON --model RFC793: %v\nstdout: %s", r.err, r.stdout)
	}
	// Refusals name the flag and the words it takes.
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"trace", "-o", "yaml"}, `--output "yaml": want table, wide or json`},
		{[]string{"check", "-o", "yaml"}, `--output "yaml": want table, wide or json`},
		{[]string{"stats", "-o", "wide"}, `--output "wide": want table or json`},
		{[]string{"trace", "--model", "bsd"}, `--model "bsd": want linux or rfc793`},
		{[]string{"stats", "--model", "bsd"}, `--model "bsd": want linux or rfc793`},
		{[]string{"check", "--model", "bsd"}, `--model "bsd": want linux or rfc793`},
	} {
		if msg := usageErr(t, c.args...); msg != c.msg {
			t.Errorf("tcpstate %s: %q, want %q", strings.Join(c.args, " "), msg, c.msg)
		}
	}
}

// runMain runs args as main does: the exit status and what is printed.
func runMain(args ...string) (code int, stdout, stderr string) {
	root := statsRoot()
	root.SetArgs(args)
	var out, errb strings.Builder
	root.SetOut(&out)
	root.SetErr(&errb)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code = run(ctx, root, &errb)
	return code, out.String(), errb.String()
}

// TestUsageErrorsPointAtTheirCommandsHelp: a usage error is one line, then
// the pointer to the help of the command that was run; a mistyped command
// gets a suggestion. Exit status 2 for all.
func TestUsageErrorsPointAtTheirCommandsHelp(t *testing.T) {
	for _, c := range []struct {
		args      []string
		msg, help string
	}{
		{[]string{"trace", "--port", "0"}, `--port "0": a port is a number from 1 to 65535`, "tcpstate trace"},
		{[]string{"trace", "--bogus"}, "unknown flag: --bogus", "tcpstate trace"},
		{[]string{"stats", "--interval", "soon"}, `--interval "soon": want a duration`, "tcpstate stats"},
		{[]string{"check", "--model", "bsd"}, `--model "bsd": want linux or rfc793`, "tcpstate check"},
		{[]string{"check", "a", "b"}, "check reads one FILE", "tcpstate check"},
		{[]string{"--bogus"}, "unknown flag: --bogus", "tcpstate"},
		{[]string{"trce"}, `unknown command "trce" for "tcpstate"; did you mean trace?`, "tcpstate"},
		{[]string{"stat"}, `unknown command "stat" for "tcpstate"; did you mean stats?`, "tcpstate"},
		{[]string{"chek", "file"}, `unknown command "chek" for "tcpstate"; did you mean check?`, "tcpstate"},
		{[]string{"version"}, `unknown command "version" for "tcpstate"; did you mean --version?`, "tcpstate"},
		{[]string{"bogus"}, `unknown command "bogus" for "tcpstate" (its commands: check, life, ls, serve, stats, trace)`, "tcpstate"},
		{[]string{"trace", "extra"}, `trace takes no arguments, got "extra"`, "tcpstate trace"},
		{[]string{"trace", "443"}, `trace takes no arguments, got "443"; did you mean --port 443?`, "tcpstate trace"},
		{[]string{"stats", "CLOSE_WAIT"}, `stats takes no arguments, got "CLOSE_WAIT"; did you mean --state CLOSE_WAIT?`, "tcpstate stats"},
		{[]string{"trace", "json"}, `trace takes no arguments, got "json"; did you mean -o json?`, "tcpstate trace"},
	} {
		code, stdout, stderr := runMain(c.args...)
		what := "tcpstate " + strings.Join(c.args, " ")
		if code != exitUsage {
			t.Errorf("%s: exit status %d, want %d\n%s", what, code, exitUsage, stderr)
		}
		want := "tcpstate: " + c.msg
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], want) || lines[1] != "Run '"+c.help+" --help' for usage." {
			t.Errorf("%s: stderr\n%s\nwant %q... and \"Run '%s --help' for usage.\"", what, stderr, want, c.help)
		}
		if stdout != "" {
			t.Errorf("%s: stdout %q", what, stdout)
		}
	}
}

// withHostMemory makes the host's memory size n bytes for the test.
func withHostMemory(t *testing.T, n uint64) {
	t.Helper()
	saved := hostMemTotal
	hostMemTotal = func() (uint64, error) { return n, nil }
	t.Cleanup(func() { hostMemTotal = saved })
}

// TestMapMemoryLimit: map sizes whose memory is absurd for the host are
// refused with the figures, unless --allow-large-maps; the defaults always
// pass.
func TestMapMemoryLimit(t *testing.T) {
	const gib = 1 << 30
	withHostMemory(t, 24684084<<10) // this project's machine: 23.5 GiB
	// The measured case: 3.5 GiB and 8.5 s to start.
	msg := usageErr(t, "trace", "--max-sockets", "16777216", "--ring-size", "1073741824")
	for _, w := range []string{
		"--max-sockets 16777216 and --ring-size 1073741824 would take 2.9 GiB of kernel memory from the start",
		"ring buffer 1.0 GiB", "accept map 1.6 GiB", "held-back index 256.0 MiB",
		"more than 10% of this host's memory (MemTotal 23.5 GiB: at most 2.4 GiB)",
		"--allow-large-maps",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("refusal %q lacks %q", msg, w)
		}
	}
	// With a filter that holds events back, their queues count too.
	msg = usageErr(t, "stats", "--max-sockets", "4194304", "--pid", "1")
	heldOpts := tracer.Options{MaxSockets: 4194304, Filter: model.Filter{Pids: []uint32{1}}}
	held := heldOpts.Memory()
	for _, w := range []string{"--max-sockets 4194304 would take", "and up to " + fmtBytes(held.AtMost()) + " with every held-back queue in use"} {
		if !strings.Contains(msg, w) {
			t.Errorf("refusal %q lacks %q", msg, w)
		}
	}
	for _, ok := range [][]string{
		{"--max-sockets", "16777216", "--ring-size", "1073741824", "--allow-large-maps"},
		{"--max-sockets", "1048576", "--ring-size", "268435456"},
		{"--max-sockets", "4194304"}, // no filter: no held-back queues
	} {
		o := traceOptionsFrom(t, ok...)
		if _, err := o.tracerOptions(); err != nil {
			t.Errorf("trace %v: %v", ok, err)
		}
	}
	// The defaults pass on any host, however small.
	withHostMemory(t, gib/8)
	o := traceOptionsFrom(t, "--pid", "1")
	if _, err := o.tracerOptions(); err != nil {
		t.Errorf("defaults on a 128 MiB host: %v", err)
	}
	if msg := usageErr(t, "trace", "--ring-size", "16777216"); !strings.Contains(msg, "--ring-size 16777216 would take") {
		t.Errorf("16 MiB ring on a 128 MiB host: %q", msg)
	}
}

// TestMapFlagsSayTheirCost: the help of --max-sockets and --ring-size says
// what they cost.
func TestMapFlagsSayTheirCost(t *testing.T) {
	for _, cmd := range []string{"trace", "stats"} {
		c, _, err := statsRoot().Find([]string{cmd})
		if err != nil {
			t.Fatal(err)
		}
		u := c.Flags().Lookup("max-sockets").Usage
		_, heldEntry := tracer.SocketMemory()
		for _, w := range []string{"120 B each from the start", "7.5 MiB at the default", fmtBytes(heldEntry), "--allow-large-maps"} {
			if !strings.Contains(u, w) {
				t.Errorf("%s --max-sockets: %q lacks %q", cmd, u, w)
			}
		}
		if c.Flags().Lookup("allow-large-maps") == nil {
			t.Errorf("%s has no --allow-large-maps", cmd)
		}
	}
	u := newTraceCmd().Flags().Lookup("ring-size").Usage
	for _, w := range []string{"locked kernel memory", "mapped into tcpstate", strconv.FormatUint(tracer.DefaultRingSize/tracer.RingRecordBytes, 10) + " events"} {
		if !strings.Contains(u, w) {
			t.Errorf("--ring-size: %q lacks %q", u, w)
		}
	}
}
