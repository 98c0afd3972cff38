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
	Notes     []string     `json:"notes"`
}

type hostInfo struct {
	Kernel   string `json:"kernel"`
	CPUs     int    `json:"cpus"`
	Go       string `json:"go"`
	Bpftrace string `json:"bpftrace,omitempty"`
}

type settings struct {
	Connections int     `json:"connections"`
	Clients     int     `json:"clients"`
	Rounds      int     `json:"rounds"`
	Drain       string  `json:"drain"`
	Namespace   string  `json:"namespace"`
	Order       string  `json:"order"`
	Medians     string  `json:"medians"`
	NoisyPct    float64 `json:"noisy_threshold_pct"`
	Retries     int     `json:"retries"`
}

// summaryRow holds the medians over the rounds of one configuration. A nil
// pointer means not measured (no tracer, or the tracer does not say).
type summaryRow struct {
	ID            string   `json:"id"`
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
			Namespace: "each run in a fresh network namespace: its TIME_WAIT sockets die with it",
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

func (d *document) summarize(configs []config) {
	var base float64 // the baseline's median conn/s
	for _, c := range configs {
		row := summaryRow{ID: c.ID, Label: c.Label}
		var rate, recv, ring, rec, other, cpu, bpf, bpfAll, rss, others []float64
		// Medians over the undisturbed runs when there are any.
		var ok, clean []*runResult
		for _, r := range d.Runs {
			if r.Config != c.ID {
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
			if c.Kind == kindNone {
				base = row.ConnPerSec
			}
			if base > 0 && row.ConnPerSec > 0 {
				s := base / row.ConnPerSec
				row.Slowdown = &s
			}
		}
		row.Received, row.LostRingbuf, row.LostRecursion, row.LostOther = medianPtr(recv), medianPtr(ring), medianPtr(rec), medianPtr(other)
		row.CPUPerM, row.BPFNsPerEv, row.BPFAllNsPerT, row.MaxRSSMiB = medianPtr(cpu), medianPtr(bpf), medianPtr(bpfAll), medianPtr(rss)
		d.Summary = append(d.Summary, row)
	}
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
	return ""
}

func (d *document) failed() bool {
	for _, r := range d.Runs {
		if r.Error != "" {
			return true
		}
	}
	return false
}

var tableHeader = []string{
	"configuration", "conn/s", "slowdown", "transitions expected", "received",
	"lost: ring full", "lost: recursion", "lost: other",
	"tracer CPU s / M transitions", "BPF ns / event", "BPF ns / transition (all progs)", "peak RSS MiB", "others' CPU %",
}

func (d *document) printTable(w io.Writer, markdown bool) {
	opts := []tablewriter.Option{
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithRowAlignmentConfig(tw.CellAlignment{PerColumn: []tw.Align{tw.AlignLeft,
			tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight,
			tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight}}),
	}
	if markdown {
		opts = append(opts, tablewriter.WithRenderer(renderer.NewMarkdown()))
	}
	t := tablewriter.NewTable(w, opts...)
	t.Header(tableHeader)
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
		if s.Failed == s.Runs {
			t.Append([]string{label, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"})
			continue
		}
		t.Append([]string{
			label,
			fmt.Sprintf("%.0f", s.ConnPerSec),
			fmtPtr(s.Slowdown, "%.2fx"),
			fmt.Sprintf("%d", s.Expected),
			fmtPtr(s.Received, "%.0f") + receivedMark(s.ReceivedFrom),
			fmtPtr(s.LostRingbuf, "%.0f"),
			fmtPtr(s.LostRecursion, "%.0f"),
			fmtPtr(s.LostOther, "%.0f"),
			fmtPtr(s.CPUPerM, "%.2f"),
			fmtPtr(s.BPFNsPerEv, "%.0f"),
			fmtPtr(s.BPFAllNsPerT, "%.0f"),
			fmtPtr(s.MaxRSSMiB, "%.1f"),
			fmt.Sprintf("%.0f", s.OthersCPUPct),
		})
	}
	t.Render()
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
	fmt.Fprintf(w, "%d rounds of %d connections (%d clients); %s; %s; %s.\n",
		s.Rounds, s.Connections, s.Clients, s.Namespace, s.Order, s.Medians)
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
		fmt.Fprintf(w, "note: other work on the machine (others using >%.0f%% of the CPUs, or another BPF program on the hot path) disturbed %d runs, which were run again, and %d of the %d kept; medians leave disturbed runs out when a configuration has undisturbed ones ((n/m runs) after its name).\n",
			d.Settings.NoisyPct, len(d.Discarded), noisy, len(d.Runs))
	}
	for _, s := range d.Summary {
		if s.ReceivedFrom == "kernel" {
			fmt.Fprintln(w, "(k): this mode checks or counts in the kernel and does not send every transition to user space; received is the number of transitions its BPF program ran for.")
			break
		}
	}
	fmt.Fprintln(w, "received: tcpstate counts every namespace's transitions (it has no namespace filter); bpftrace and libbpf-tools lines are counted for the load's namespace or port only.")
	for _, n := range d.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, r := range d.Runs {
		if r.Error != "" {
			fmt.Fprintf(w, "failed: round %d %s: %s\n", r.Round, r.Config, firstLine(r.Error))
		}
	}
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
