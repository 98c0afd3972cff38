package vmtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Package is one compiled test binary and how to run it.
type Package struct {
	Name    string        `json:"name"`    // as the table shows it: tracer, internal/scenario, cmd/tcpstate
	Binary  string        `json:"binary"`  // the `go test -c` output
	Dir     string        `json:"dir"`     // working directory (tests read paths relative to their package)
	Timeout time.Duration `json:"timeout"` // -test.timeout; the binary is killed a little after
	Args    []string      `json:"args,omitempty"`
}

// RunPackage runs one test binary with -test.v, copies its output to log,
// and reports each top-level test and then the package through rep. It
// returns the package's result.
func RunPackage(ctx context.Context, p Package, env []string, log io.Writer, rep Reporter) string {
	rep.Send(Event{Ev: EvStart, Pkg: p.Name})
	start := time.Now()
	grace := 30 * time.Second
	ctx, cancel := context.WithTimeout(ctx, p.Timeout+grace)
	defer cancel()
	args := append([]string{"-test.v", "-test.count=1", fmt.Sprintf("-test.timeout=%s", p.Timeout)}, p.Args...)
	cmd := exec.CommandContext(ctx, p.Binary, args...)
	cmd.Dir = p.Dir
	cmd.Env = env
	// Its own process group, so that a kill at the deadline also ends the
	// helper processes a test started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	tp := &testParser{pkg: p.Name, rep: rep}
	split := &lineSplitter{f: tp.line}
	out := io.MultiWriter(log, split)
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	split.flush()
	result, detail := Pass, ""
	var ee *exec.ExitError
	switch {
	case tp.timedOut || ctx.Err() != nil:
		result, detail = Timeout, fmt.Sprintf("ran past its %s deadline", p.Timeout)
		if tp.running != "" {
			detail += "; running " + tp.running
		}
	case errors.As(err, &ee):
		result, detail = Fail, ee.String()
	case err != nil:
		result, detail = Fail, err.Error()
	}
	tp.finish()
	rep.Send(Event{Ev: EvPkg, Pkg: p.Name, Result: result, Secs: time.Since(start).Seconds(), Detail: detail})
	return result
}

var (
	reHeader = regexp.MustCompile(`^=== (?:RUN|CONT|NAME|PAUSE)\s+(\S+)`)
	reResult = regexp.MustCompile(`^(\s*)--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)
	reLog    = regexp.MustCompile(`^    +\S+\.go:\d+: (.*)$`)
)

// testParser follows `go test -v` output: which test each log line belongs
// to (the last === header), and the result of each top-level test.
type testParser struct {
	pkg      string
	rep      Reporter
	current  string            // the test the output is about now
	last     map[string]string // a top-level test's last log message
	started  map[string]bool   // top-level tests that ran and have no result yet
	running  string            // a test still running at a timeout
	timedOut bool
}

func topLevel(name string) string {
	top, _, _ := strings.Cut(name, "/")
	return top
}

func (p *testParser) line(l string) {
	if p.last == nil {
		p.last, p.started = map[string]string{}, map[string]bool{}
	}
	if m := reHeader.FindStringSubmatch(l); m != nil {
		p.current = m[1]
		p.started[topLevel(m[1])] = true
		return
	}
	if strings.HasPrefix(l, "panic: test timed out after") {
		p.timedOut = true
		return
	}
	if p.timedOut && p.running == "" && strings.HasPrefix(l, "\t") && strings.HasPrefix(strings.TrimSpace(l), "Test") {
		// "running tests:" lists what was still running.
		p.running = strings.Fields(strings.TrimSpace(l))[0]
		return
	}
	if m := reResult.FindStringSubmatch(l); m != nil {
		if m[1] != "" { // a subtest's result; its parent reports
			return
		}
		name := m[3]
		var secs float64
		fmt.Sscanf(m[4], "%g", &secs)
		res := map[string]string{"PASS": Pass, "FAIL": Fail, "SKIP": Skip}[m[2]]
		e := Event{Ev: EvTest, Pkg: p.pkg, Name: name, Result: res, Secs: secs}
		if res != Pass {
			e.Reason = p.last[name]
		}
		p.rep.Send(e)
		delete(p.started, name)
		return
	}
	if m := reLog.FindStringSubmatch(l); m != nil && p.current != "" {
		p.last[topLevel(p.current)] = m[1]
	}
}

// finish reports the tests that started and never ended (a timeout, a
// crash) as failed.
func (p *testParser) finish() {
	for name := range p.started {
		res := Fail
		if p.timedOut {
			res = Timeout
		}
		p.rep.Send(Event{Ev: EvTest, Pkg: p.pkg, Name: name, Result: res, Reason: "did not finish"})
	}
	p.started = nil
}

// Env is the environment test binaries run with: the caller's, without
// variables that would change what the tests do, plus extra.
func Env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "GOTRACEBACK":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}
