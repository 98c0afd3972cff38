package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Kinds of configuration; each is measured differently.
const (
	kindNone     = "none"     // the load alone: the baseline
	kindTcpstate = "tcpstate" // a tcpstate command; --summary-json gives the counts
	kindBpftrace = "bpftrace" // bench/bpftrace/tcpstates.bt; count its output lines
	kindLibbpf   = "libbpf"   // bcc's libbpf-tools tcpstates; count its output lines
)

// tcpstateReady is the stderr line tcpstate prints once its programs are
// attached; any live tcpstate command is expected to print it.
const tcpstateReady = "Ctrl-C to stop"

// config is one way of running the load: with no tracer, or with one tracer
// command whose output goes where a user would send it.
type config struct {
	ID      string   `json:"id"`    // the name --only takes
	Label   string   `json:"label"` // shown in the table
	Kind    string   `json:"kind"`
	Argv    []string `json:"argv,omitempty"`
	Summary bool     `json:"summary_json"` // pass --summary-json FILE (tcpstate)
	// Aggregates: the mode does not send every transition to user space
	// (in-kernel checking or counting), so what it received is counted by
	// its BPF program, not by the events it printed.
	Aggregates bool `json:"aggregates,omitempty"`
	// PidFilter: the tracer is given --pid with the load generator's pid
	// (the process in the namespace that makes the connections). It is
	// started after the load generator listens, so the listener's
	// CLOSE->LISTEN is not expected.
	PidFilter bool `json:"pid_filter,omitempty"`
	// ReadyLine, when set, is a substring of the stderr line that says the
	// tracer is attached. Canary asks for proof instead: a probe connection
	// must run one of the tracer's BPF programs.
	ReadyLine string `json:"-"`
	Canary    bool   `json:"-"`
	// Grace is waited after readiness (a perf buffer opened after attach).
	Grace time.Duration `json:"-"`
	// Scrape: the command serves /metrics (tcpstate serve); it is given a
	// free loopback --listen and scraped every second during the run.
	Scrape bool `json:"scrape,omitempty"`
}

// discoverTcpstate finds the tcpstate configurations from the binary's own
// help, so that modes added later join the benchmark by themselves:
//
//   - trace with each output mode its -o flag lists (json and table first);
//   - trace with each known processing flag its help lists (--anomalies, ...);
//   - trace -o json with --accept-hook off, --rescue-nested and --pid (the
//     load generator's), when it has them;
//   - every other command that runs live: its usage takes no arguments and
//     it has a --duration flag (stats, ...).
//
// Each is run with --summary-json when its help lists that flag.
func discoverTcpstate(ctx context.Context, bin string) ([]config, []string, error) {
	rootHelp, err := helpText(ctx, bin, "--help")
	if err != nil {
		return nil, nil, fmt.Errorf("running %s --help: %w", bin, err)
	}
	var (
		out   []config
		notes []string
	)
	cmds := availableCommands(rootHelp)
	if !slices.Contains(cmds, "trace") {
		return nil, nil, fmt.Errorf("%s has no trace command", bin)
	}
	traceHelp, err := helpText(ctx, bin, "trace", "--help")
	if err != nil {
		return nil, nil, fmt.Errorf("running %s trace --help: %w", bin, err)
	}
	summary := hasFlag(traceHelp, "summary-json")
	if !summary {
		notes = append(notes, "tcpstate trace has no --summary-json: its received and recursion misses come from its BPF program's statistics; ring buffer losses are not known")
	}
	modes := outputModes(traceHelp)
	// json and table first: the two the issue asks for.
	ordered := []string{"json", "table"}
	for _, m := range modes {
		if !slices.Contains(ordered, m) {
			ordered = append(ordered, m)
		}
	}
	for _, m := range ordered {
		if len(modes) > 0 && !slices.Contains(modes, m) {
			continue
		}
		argv := []string{bin, "trace"}
		label := "tcpstate trace"
		if m != "table" {
			argv = append(argv, "-o", m)
			label += " -o " + m
		}
		out = append(out, config{ID: "trace-" + m, Label: label, Kind: kindTcpstate, Argv: argv,
			Summary: summary, ReadyLine: tcpstateReady})
	}
	// Flags that add work to every event; more join here as they appear.
	for _, f := range []string{"anomalies", "check", "verdicts", "follow"} {
		if hasFlag(traceHelp, f) {
			out = append(out, config{ID: "trace-" + f, Label: "tcpstate trace --" + f, Kind: kindTcpstate,
				Argv: []string{bin, "trace", "--" + f}, Summary: summary, ReadyLine: tcpstateReady,
				Aggregates: f == "anomalies"})
		}
	}
	// Variants of trace -o json that change what the kernel side costs.
	for _, v := range []struct{ flag, id string }{
		{"--accept-hook off", "accept-off"},
		{"--rescue-nested", "rescue"},
	} {
		name := strings.TrimPrefix(strings.Fields(v.flag)[0], "--")
		if hasFlag(traceHelp, name) && slices.Contains(modes, "json") {
			out = append(out, config{ID: "trace-json-" + v.id, Label: "tcpstate trace -o json " + v.flag, Kind: kindTcpstate,
				Argv: append([]string{bin, "trace", "-o", "json"}, strings.Fields(v.flag)...), Summary: summary, ReadyLine: tcpstateReady})
		}
	}
	// A pid filter: the per-socket decision and the held events cost the
	// kernel side more, and user space sees only the load's transitions.
	if hasFlag(traceHelp, "pid") && slices.Contains(modes, "json") {
		out = append(out, config{ID: "trace-json-pid", Label: "tcpstate trace -o json --pid LOADGEN", Kind: kindTcpstate,
			Argv: []string{bin, "trace", "-o", "json"}, Summary: summary, ReadyLine: tcpstateReady, PidFilter: true})
	}
	for _, c := range cmds {
		if c == "trace" || c == "help" || c == "completion" {
			continue
		}
		h, err := helpText(ctx, bin, c, "--help")
		if err != nil {
			continue
		}
		if !liveCommand(h, c) {
			notes = append(notes, fmt.Sprintf("tcpstate %s: not a live command (takes arguments or has no --duration); not benchmarked", c))
			continue
		}
		s := hasFlag(h, "summary-json")
		if !s {
			notes = append(notes, fmt.Sprintf("tcpstate %s has no --summary-json: its received and recursion misses come from its BPF program's statistics; ring buffer losses are not known", c))
		}
		cfg := config{ID: c, Label: "tcpstate " + c, Kind: kindTcpstate,
			Argv: []string{bin, c}, Summary: s, ReadyLine: tcpstateReady, Aggregates: true}
		// An exporter: scraped every second, as Prometheus would.
		if hasFlag(h, "listen") {
			cfg.Scrape = true
			cfg.Label += " (scraped every 1 s)"
		}
		out = append(out, cfg)
		// Counting by container costs the kernel side a hash lookup per
		// transition: measured apart.
		if cfg.Scrape && hasFlag(h, "label-container") {
			lc := cfg
			lc.ID, lc.Label = c+"-label-container", "tcpstate "+c+" --label-container (scraped every 1 s)"
			lc.Argv = append([]string{bin, c}, "--label-container")
			out = append(out, lc)
		}
	}
	return out, notes, nil
}

func helpText(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(b), err
}

// availableCommands reads cobra's "Available Commands:" block.
func availableCommands(help string) []string {
	var out []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Available Commands:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			return out
		case in:
			if f := strings.Fields(line); len(f) > 0 {
				out = append(out, f[0])
			}
		}
	}
	return out
}

func hasFlag(help, name string) bool {
	return regexp.MustCompile(`(^|\s)--` + regexp.QuoteMeta(name) + `(\s|=|$)`).MatchString(help)
}

// outputModes reads the modes the -o/--output flag lists, e.g. from
// "output: table, wide (adds ...) or json (one object per line)".
func outputModes(help string) []string {
	for _, line := range strings.Split(help, "\n") {
		if !strings.Contains(line, "--output") {
			continue
		}
		_, desc, ok := strings.Cut(line, "output:")
		if !ok {
			return nil
		}
		desc = regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(desc, "")
		var modes []string
		for _, part := range regexp.MustCompile(`,|\bor\b`).Split(desc, -1) {
			w := strings.TrimSpace(part)
			if regexp.MustCompile(`^[a-z][a-z0-9-]*$`).MatchString(w) {
				modes = append(modes, w)
			}
		}
		return modes
	}
	return nil
}

// liveCommand: the usage line takes no positional arguments and the command
// has --duration, as trace does.
func liveCommand(help, name string) bool {
	usage := regexp.MustCompile(`(?m)^\s+\S*tcpstate ` + regexp.QuoteMeta(name) + `( \[flags\])?\s*$`)
	return usage.MatchString(help) && hasFlag(help, "duration")
}

// peerConfigs returns the other tracers that are present.
func peerConfigs(bpftrace, script, libbpf string) []config {
	var out []config
	if bpftrace != "" {
		out = append(out, config{ID: "bpftrace", Label: "bpftrace tcpstates.bt", Kind: kindBpftrace,
			Argv: []string{bpftrace, script}, Canary: true})
	}
	if libbpf != "" {
		out = append(out, config{ID: "libbpf-tcpstates", Label: "libbpf-tools tcpstates", Kind: kindLibbpf,
			Argv: []string{libbpf}, Canary: true, Grace: time.Second})
	}
	return out
}
