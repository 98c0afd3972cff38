package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)

// document is the JSON the benchmark writes.
type document struct {
	Date     time.Time    `json:"date"`
	Host     hostInfo     `json:"host"`
	Settings settings     `json:"settings"`
	Configs  []config     `json:"configs"`
	Summary  []summaryRow `json:"summary"`
	Runs     []*runResult `json:"runs"`
	// Discarded: runs that other work on the machine disturbed, replaced.
	Discarded []*runResult `json:"discarded_runs,omitempty"`
	// Long: the one long run of trace -o json (--long), if any.
	Long      *runResult `json:"long_run,omitempty"`
	LongLabel string     `json:"long_run_label,omitempty"`
	Notes     []string   `json:"notes"`
}

type hostInfo struct {
	Kernel   string `json:"kernel"`
	CPUs     int    `json:"cpus"`
	Go       string `json:"go"`
	Bpftrace string `json:"bpftrace,omitempty"`
}

type settings struct {
	Connections int     `json:"connections"`
	Clients     []int   `json:"clients"` // one load per count, each with its own baseline
	Rounds      int     `json:"rounds"`
	Getppid     string  `json:"getppid"`
	PidDelay    string  `json:"pid_start_delay"`
	Long        int     `json:"long_connections"`
	Drain       string  `json:"drain"`
	Namespace   string  `json:"namespace"`
	Close       string  `json:"close"`
	Order       string  `json:"order"`
	Medians     string  `json:"medians"`
	NoisyPct    float64 `json:"noisy_threshold_pct"`
	Retries     int     `json:"retries"`
}

// summaryRow holds the medians over the rounds of one configuration. A nil
// pointer means not measured (no tracer, or the tracer does not say).
type summaryRow struct {
	ID            string   `json:"id"`
	Clients       int      `json:"clients"`
	Label         string   `json:"label"`
	Runs          int      `json:"runs"`
	Failed        int      `json:"failed"`
	ConnPerSec    float64  `json:"conn_per_s"`
	Slowdown      *float64 `json:"slowdown"` // the baseline's median conn/s over this one's
	Expected      uint64   `json:"expected"`
	Received      *float64 `json:"received"`
	ReceivedFrom  string   `json:"received_from,omitempty"`
	LostRingbuf   *float64 `json:"lost_ringbuf"`
	LostRecursion *float64 `json:"lost_recursion"`
	LostOther     *float64 `json:"lost_other"`
	CPUPerM       *float64 `json:"tracer_cpu_s_per_m"`
	BPFNsPerEv    *float64 `json:"bpf_ns_per_event"`
	BPFAllNsPerT  *float64 `json:"bpf_all_ns_per_transition"`
	MaxRSSMiB     *float64 `json:"max_rss_mib"`
	OthersCPUPct  float64  `json:"others_cpu_pct"`
	// GetppidNs: ns per getppid(2) with this configuration attached;
	// SyscallTax: that less the same load's baseline's.
	GetppidNs  *float64 `json:"getppid_ns"`
	SyscallTax *float64 `json:"syscall_tax_ns"`
	// Missing: what tcpstate's summary reported as "missing", when it does.
	Missing *float64 `json:"missing"`
	// Used: the runs the medians are taken over: the undisturbed ones
	// (Clean) when there are any, else every run that did not fail.
	Used  int `json:"runs_used"`
	Clean int `json:"runs_clean"`
}

func newDocument(o *options, configs []config, notes []string) *document {
	d := &document{
		Date: time.Now(),
		Host: hostInfo{Kernel: kernelRelease(), CPUs: runtime.NumCPU(), Go: runtime.Version()},
		Settings: settings{
			Connections: o.connections, Clients: o.clients, Rounds: o.rounds, Drain: o.drain.String(),
			Getppid: fmt.Sprintf("before each load, with the tracer attached (none: the baseline), the runner times %d loops of %d getppid(2) calls and keeps the fastest",
				o.sysSamples, o.sysCalls),
			PidDelay:  o.pidDelay.String(),
			Long:      o.long,
			Namespace: "each run in a fresh network namespace: its TIME_WAIT sockets die with it",
			Close:     closeMode(o.abort),
			Order:     "interleaved: every round runs each configuration once, the order rotated by one each round",
			Medians:   "each column is the median over the rounds; slowdown is the baseline's median conn/s over this configuration's",
			NoisyPct:  o.noisyPct,
			Retries:   o.retries,
		},
		Configs: configs,
		Notes:   notes,
	}
	if o.bpftrace != "" {
		if b, err := exec.Command(o.bpftrace, "--version").Output(); err == nil {
			d.Host.Bpftrace = strings.TrimSpace(string(b))
		}
	}
	return d
}

func closeMode(abort bool) string {
	if abort {
		return "the clients abort with SO_LINGER 0: each connection ends with a reset, 6 transitions"
	}
	return "FINs from both sides: 10 transitions a connection"
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func medianPtr(xs []float64) *float64 {
	if len(xs) == 0 {
		return nil
	}
	m := median(xs)
	return &m
}

// summarize takes the medians of every configuration under every load, the
// loads in the order of clients, each configuration against its own load's
// baseline (configs[0]).
func (d *document) summarize(configs []config, clients []int) {
	for _, n := range clients {
		var base *summaryRow
		for _, c := range configs {
			row := d.summarizeOne(c, n, clients)
			if c.Kind == kindNone {
				base = &row
			}
			if base != nil && base.ConnPerSec > 0 && row.ConnPerSec > 0 {
				s := base.ConnPerSec / row.ConnPerSec
				row.Slowdown = &s
			}
			if base != nil && base.GetppidNs != nil && row.GetppidNs != nil {
				t := *row.GetppidNs - *base.GetppidNs
				row.SyscallTax = &t
			}
			d.Summary = append(d.Summary, row)
		}
	}
}

func (d *document) summarizeOne(c config, clients int, all []int) summaryRow {
	row := summaryRow{ID: c.ID, Clients: clients, Label: rowLabel(c.Label, clients, all)}
	var rate, recv, ring, rec, other, missing, cpu, bpf, bpfAll, rss, others, getppid []float64
	// Medians over the undisturbed runs when there are any.
	var ok, clean []*runResult
	for _, r := range d.Runs {
		if r.Config != c.ID || r.Clients != clients {
			continue
		}
		row.Runs++
		if r.Error != "" {
			row.Failed++
			continue
		}
		ok = append(ok, r)
		if d.noisy(r) == "" {
			clean = append(clean, r)
		}
	}
	use := ok
	if len(clean) > 0 {
		use = clean
	}
	row.Used, row.Clean = len(use), len(clean)
	for _, r := range use {
		rate = append(rate, r.Load.ConnPerSec)
		others = append(others, r.OthersCPUPct)
		row.Expected = r.Expected
		if r.GetppidNs > 0 {
			getppid = append(getppid, r.GetppidNs)
		}
		if c.Kind == kindNone {
			continue
		}
		if r.ReceivedKnown {
			row.ReceivedFrom = r.ReceivedFrom
			recv = append(recv, float64(r.Received))
			ring = append(ring, float64(r.LostRingbuf))
			rec = append(rec, float64(r.LostRecursion))
			other = append(other, float64(r.LostOther))
		}
		if r.MissingKnown {
			missing = append(missing, float64(r.Missing))
		}
		cpu = append(cpu, r.CPUPerM)
		rss = append(rss, r.MaxRSSMiB)
		if r.BPFNsPerEv > 0 {
			bpf = append(bpf, r.BPFNsPerEv)
		}
		if r.BPFAllNsPerT > 0 {
			bpfAll = append(bpfAll, r.BPFAllNsPerT)
		}
	}
	if len(rate) > 0 {
		row.ConnPerSec = median(rate)
		row.OthersCPUPct = median(others)
	}
	row.Received, row.LostRingbuf, row.LostRecursion, row.LostOther = medianPtr(recv), medianPtr(ring), medianPtr(rec), medianPtr(other)
	row.CPUPerM, row.BPFNsPerEv, row.BPFAllNsPerT, row.MaxRSSMiB = medianPtr(cpu), medianPtr(bpf), medianPtr(bpfAll), medianPtr(rss)
	row.GetppidNs, row.Missing = medianPtr(getppid), medianPtr(missing)
	return row
}

// noisy says why other work on the machine disturbed r, or "".
func (d *document) noisy(r *runResult) string { return disturbance(r, d.Settings.NoisyPct) }

// disturbance says why other work on the machine disturbed r, or "": others
// used more than noisyPct of the CPUs, or another BPF program ran on the hot
// path (someone else tracing the same tracepoint slows the load too).
func disturbance(r *runResult, noisyPct float64) string {
	if r.OthersCPUPct > noisyPct {
		return fmt.Sprintf("others used %.0f%% of the CPUs during the load", r.OthersCPUPct)
	}
	if r.ForeignBPFRuns > r.Expected/100 {
		return fmt.Sprintf("other BPF programs ran %d times during the load (someone else is tracing)", r.ForeignBPFRuns)
	}
	if n := len(r.ForeignSyscallTracepoints); n > 0 {
		return fmt.Sprintf("another process held %d syscall tracepoints (%s), which slow every system call", n, r.ForeignSyscallTracepoints[0])
	}
	return ""
}

func (d *document) failed() bool {
	for _, r := range d.Runs {
		if r.Error != "" {
			return true
		}
	}
	return d.Long != nil && d.Long.Error != ""
}

// A column of the table: its header and its cell for a row.
type column struct {
	head string
	cell func(s summaryRow) string
}

// columns are the table's columns; "missing" only when some tcpstate
// reported it.
func (d *document) columns() []column {
	cols := []column{
		{"configuration", nil},
		{"conn/s", func(s summaryRow) string { return fmt.Sprintf("%.0f", s.ConnPerSec) }},
		{"slowdown", func(s summaryRow) string { return fmtPtr(s.Slowdown, "%.2fx") }},
		{"transitions expected", func(s summaryRow) string { return fmt.Sprintf("%d", s.Expected) }},
		{"received", func(s summaryRow) string { return fmtPtr(s.Received, "%.0f") + receivedMark(s.ReceivedFrom) }},
		{"lost: ring full", func(s summaryRow) string { return fmtPtr(s.LostRingbuf, "%.0f") }},
		{"lost: recursion", func(s summaryRow) string { return fmtPtr(s.LostRecursion, "%.0f") }},
		{"lost: other", func(s summaryRow) string { return fmtPtr(s.LostOther, "%.0f") }},
	}
	if slices.ContainsFunc(d.Summary, func(s summaryRow) bool { return s.Missing != nil }) {
		cols = append(cols, column{"missing (tcpstate's)", func(s summaryRow) string { return fmtPtr(s.Missing, "%.0f") }})
	}
	return append(cols,
		column{"tracer CPU s / M transitions", func(s summaryRow) string { return fmtPtr(s.CPUPerM, "%.2f") }},
		column{"BPF ns / event", func(s summaryRow) string { return fmtPtr(s.BPFNsPerEv, "%.0f") }},
		column{"BPF ns / transition (all progs)", func(s summaryRow) string { return fmtPtr(s.BPFAllNsPerT, "%.0f") }},
		column{"peak RSS MiB", func(s summaryRow) string { return fmtPtr(s.MaxRSSMiB, "%.1f") }},
		column{"getppid ns", func(s summaryRow) string { return fmtPtr(s.GetppidNs, "%.1f") }},
		column{"syscall tax ns", func(s summaryRow) string { return fmtPtr(s.SyscallTax, "%+.1f") }},
		column{"others' CPU %", func(s summaryRow) string { return fmt.Sprintf("%.0f", s.OthersCPUPct) }},
	)
}

func (d *document) printTable(w io.Writer, markdown bool) {
	cols := d.columns()
	header := make([]string, len(cols))
	align := make([]tw.Align, len(cols))
	for i, c := range cols {
		header[i], align[i] = c.head, tw.AlignRight
	}
	align[0] = tw.AlignLeft
	opts := []tablewriter.Option{
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithRowAlignmentConfig(tw.CellAlignment{PerColumn: align}),
	}
	if markdown {
		opts = append(opts, tablewriter.WithRenderer(renderer.NewMarkdown()))
	}
	t := tablewriter.NewTable(w, opts...)
	t.Header(header)
	for _, s := range d.Summary {
		label := s.Label
		switch ok := s.Runs - s.Failed; {
		case s.Failed > 0:
			label += fmt.Sprintf(" (%d/%d runs failed)", s.Failed, s.Runs)
		case s.Clean == 0:
			label += " (all runs disturbed)"
		case s.Used < ok:
			label += fmt.Sprintf(" (%d/%d runs)", s.Used, ok)
		}
		row := make([]string, len(cols))
		row[0] = label
		for i, c := range cols[1:] {
			if s.Failed == s.Runs {
				row[i+1] = "-"
			} else {
				row[i+1] = c.cell(s)
			}
		}
		t.Append(row)
	}
	t.Render()
}

// printLong prints the long run's figures, below the table.
func (d *document) printLong(w io.Writer) {
	r := d.Long
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\nLong run: %s, %d connections (%d clients)", d.LongLabel, d.Settings.Long, r.Clients)
	if r.Error != "" {
		fmt.Fprintf(w, ": FAILED: %s\n", firstLine(r.Error))
		return
	}
	fmt.Fprintf(w, ", %d transitions expected, in %.0f s (%.0f conn/s):\n", r.Expected, r.Load.Seconds, r.Load.ConnPerSec)
	fmt.Fprintf(w, "  peak RSS %.1f MiB; tracer CPU %.2f s / M transitions (%.1f s after attach, %.2f s to start)\n",
		r.MaxRSSMiB, r.CPUPerM, r.TracerCPUTotal-r.TracerCPUStartup, r.TracerCPUStartup)
	if r.ReceivedKnown {
		fmt.Fprintf(w, "  received %d%s", r.Received, receivedMark(r.ReceivedFrom))
		if r.ExtraEvents > 0 {
			fmt.Fprintf(w, " (%d more than expected: other namespaces' transitions)", r.ExtraEvents)
		}
		fmt.Fprintf(w, "; lost: ring full %d, recursion %d, other %d", r.LostRingbuf, r.LostRecursion, r.LostOther)
		if r.MissingKnown {
			fmt.Fprintf(w, ", missing (tcpstate's) %d", r.Missing)
		}
		fmt.Fprintln(w)
	}
	if why := d.noisy(r); why != "" {
		fmt.Fprintf(w, "  disturbed: %s (not run again)\n", why)
	}
}

// receivedMark flags figures counted by the tracer's BPF program rather than
// delivered to user space (printNotes explains it).
func receivedMark(from string) string {
	if from == "kernel" {
		return " (k)"
	}
	return ""
}

func fmtPtr(p *float64, format string) string {
	if p == nil || math.IsNaN(*p) {
		return "-"
	}
	return fmt.Sprintf(format, *p)
}

func (d *document) printNotes(w io.Writer) {
	s := d.Settings
	loads := make([]string, len(s.Clients))
	for i, n := range s.Clients {
		loads[i] = fmt.Sprintf("%d clients", n)
	}
	fmt.Fprintf(w, "%d rounds of %d connections under each load (%s, each against its own baseline; rows of a load other than the first are marked with its clients); closes: %s; %s; %s; %s.\n",
		s.Rounds, s.Connections, strings.Join(loads, ", "), s.Close, s.Namespace, s.Order, s.Medians)
	fmt.Fprintf(w, "getppid: %s; syscall tax: its ns per call less the baseline's (attaching any syscall tracepoint slows every system call on the host).\n", s.Getppid)
	fmt.Fprintf(w, "kernel %s, %d CPUs, %s", d.Host.Kernel, d.Host.CPUs, d.Host.Go)
	if d.Host.Bpftrace != "" {
		fmt.Fprintf(w, ", %s", d.Host.Bpftrace)
	}
	fmt.Fprintln(w, ".")
	noisy := 0
	for _, r := range d.Runs {
		if r.Error == "" && d.noisy(r) != "" {
			noisy++
		}
	}
	if len(d.Discarded) > 0 || noisy > 0 {
		fmt.Fprintf(w, "note: other work on the machine (others using >%.0f%% of the CPUs, another BPF program on the hot path, or another process's syscall tracepoints) disturbed %d runs, which were run again, and %d of the %d kept; medians leave disturbed runs out when a configuration has undisturbed ones ((n/m runs) after its name).\n",
			d.Settings.NoisyPct, len(d.Discarded), noisy, len(d.Runs))
	}
	for _, s := range d.Summary {
		if s.ReceivedFrom == "kernel" {
			fmt.Fprintln(w, "(k): this mode checks or counts in the kernel and does not send every transition to user space; received is the number of transitions its BPF program ran for.")
			break
		}
	}
	fmt.Fprintln(w, "received: tcpstate counts every namespace's transitions (it has no namespace filter); bpftrace and libbpf-tools lines are counted for the load's namespace or port only.")
	for _, c := range d.Configs {
		if c.PidFilter {
			fmt.Fprintf(w, "%s: traces only the load generator's process, started once it listens (%s before its first dial): its listener's CLOSE->LISTEN is not expected.\n", c.Label, s.PidDelay)
			break
		}
	}
	if hooks := d.acceptHooks(); hooks != "" {
		fmt.Fprintf(w, "accept hook in use (tcpstate's summary): %s.\n", hooks)
	}
	for _, n := range d.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, r := range d.Runs {
		if r.Error != "" {
			fmt.Fprintf(w, "failed: round %d %s (%d clients): %s\n", r.Round, r.Config, r.Clients, firstLine(r.Error))
		}
	}
}

// acceptHooks says which accept hook the tcpstate configurations used, from
// their summaries, e.g. "syscalls (trace-json, stats), off (trace-json-accept-off)".
func (d *document) acceptHooks() string {
	var hooks []string
	by := map[string][]string{}
	for _, r := range d.Runs {
		h, _ := r.Summary["accept_hook"].(string)
		if h == "" || slices.Contains(by[h], r.Config) {
			continue
		}
		if by[h] == nil {
			hooks = append(hooks, h)
		}
		by[h] = append(by[h], r.Config)
	}
	var out []string
	for _, h := range hooks {
		out = append(out, fmt.Sprintf("%s (%s)", h, strings.Join(by[h], ", ")))
	}
	return strings.Join(out, ", ")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func (d *document) write(path string) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}
