package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// statsReport is one report of stats: what the kernel counted in one
// interval (Final false), or over the whole run (Final true).
type statsReport struct {
	Seq        int // 1, 2, ... for intervals; the number of intervals for the final report
	Final      bool
	Start, End time.Time
	Agg        *model.Aggregate
	// Transitions the programs handled in the report's span, host-wide,
	// before the filters; LostFiltered the transitions that passed the
	// filters and were lost (held-back events dropped); LostHostWide the
	// recursion misses, anyone's.
	Transitions, LostFiltered, LostHostWide uint64
	Kernel                                  *tracer.Counters // the final report's kernel counters
	// The final report's reconciliation, and the size of its snapshot;
	// MissingEstimate: the loss sequence lacks the recursion misses.
	Reconciliation  *reconcileDoc
	SnapshotSockets int
	MissingEstimate bool
	// Rescuing: the rescue program ran (--rescue-nested).
	Rescuing   bool
	Stuck      []model.SocketInfo
	Thresholds map[model.State]time.Duration
	Model      *model.Model
	// Cgroups resolves the per-cgroup counts' ids (nil: shown as ids).
	Cgroups func(id uint64) *model.CgroupInfo
}

// ---- tables ----

// newStatsTable makes the one table style stats uses: ASCII borders, no
// reformatting of headers, nothing wrapped, the given column alignment.
// Cells that hold a task name get it through termsafe.String: escaped, and
// measured by tablewriter with the same per-character widths termsafe
// counts, so the borders line up whatever the name holds.
func newStatsTable(w io.Writer, align ...tw.Align) *tablewriter.Table {
	return tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{Symbols: tw.NewSymbols(tw.StyleASCII)})),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithFooterAutoFormat(tw.Off),
		tablewriter.WithRowAutoWrap(tw.WrapNone),
		tablewriter.WithHeaderAutoWrap(tw.WrapNone),
		tablewriter.WithTrimSpace(tw.Off),
		tablewriter.WithAlignment(tw.Alignment(align)),
	)
}

func renderTable(t *tablewriter.Table) error {
	if err := t.Render(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// writeStatsTable writes one report as tables and histograms.
func writeStatsTable(w io.Writer, r *statsReport, top int) error {
	a := r.Agg
	total := a.Transitions()
	ill := a.Illegal(r.Model)
	span := r.End.Sub(r.Start)
	// What passed the filters is counted; recursion misses are the
	// host's, never theirs.
	if r.Final {
		fmt.Fprintf(w, "=== totals %s -> %s (%s): %d transitions counted, %d illegal under model %s ===\n",
			r.Start.Format("15:04:05"), r.End.Format("15:04:05"), fmtSeconds(span), total, ill, r.Model.Name())
		if c := r.Kernel; c != nil {
			rescued := "no rescue program: --rescue-nested"
			if r.Rescuing {
				rescued = fmt.Sprintf("%d nested transitions rescued", c.Rescued)
			}
			fmt.Fprintf(w, "lost, counted:  %d of the transitions that passed the filters (held-back queue full %d, no held-back queue %d, owner never learnt %d)\n"+
				"                recursion misses %d host-wide, filters or not: the kernel does not say whose (%s)\n",
				c.LostFiltered(), c.HeldOverflow, c.HeldNoSpace, c.UndecidedClosed, c.RecursionMisses, rescued)
		}
		if rec := r.Reconciliation; rec != nil {
			est := ""
			if r.MissingEstimate {
				est = "; an estimate: this kernel's loss sequence lacks the recursion misses"
			}
			fmt.Fprintf(w, "missing:        %s without any kernel count, found by the reconciliation (stats checks no gaps: it counts in the kernel%s)\n",
				plural(rec.MissingUncounted, "transition", "transitions"), est)
			fmt.Fprintf(w, "reconciliation: %s\n", fmtReconciliation(rec, r.SnapshotSockets, ""))
			writeOutOfStep(w, rec)
		}
		if c := r.Kernel; c != nil {
			fmt.Fprintf(w, "resets:         %s\n", fmtResetsNoSocket(c))
		}
	} else {
		fmt.Fprintf(w, "--- interval %d %s -> %s (%s): %d transitions counted, %d illegal under model %s; lost %d of them; recursion misses %d host-wide ---\n",
			r.Seq, r.Start.Format("15:04:05"), r.End.Format("15:04:05"), fmtSeconds(span), total, ill, r.Model.Name(), r.LostFiltered, r.LostHostWide)
	}
	if total == 0 && a.Outcomes == ([model.NumOutcomes]uint64{}) {
		fmt.Fprintln(w, "\nno transitions")
	} else {
		if err := writeMatrix(w, a, r.Model); err != nil {
			return err
		}
		if err := writeCauses(w, a); err != nil {
			return err
		}
		if err := writePorts(w, a, top); err != nil {
			return err
		}
		if err := writeOwners(w, a, top); err != nil {
			return err
		}
		if err := writeCgroups(w, a, r.Cgroups, top); err != nil {
			return err
		}
		writeHists(w, a)
	}
	fmt.Fprintln(w)
	if err := writeStuck(w, r.Stuck, r.Thresholds); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w)
	if err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// writeMatrix writes the old x new transition counts: only the rows and
// columns with counts, a TOTAL column (transitions out of a state) and row
// (transitions into a state). Cells the model calls illegal end in "!".
func writeMatrix(w io.Writer, a *model.Aggregate, m *model.Model) error {
	var rows, cols []model.State
	for _, s := range model.LifeOrder {
		var out, in uint64
		for _, t := range model.LifeOrder {
			out += a.Matrix[s][t]
			in += a.Matrix[t][s]
		}
		if out > 0 {
			rows = append(rows, s)
		}
		if in > 0 {
			cols = append(cols, s)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\ntransitions (row: old state, column: new state):\n")
	align := []tw.Align{tw.AlignLeft}
	header := []any{`OLD \ NEW`}
	for _, c := range cols {
		header = append(header, c.String()+" ")
		align = append(align, tw.AlignRight)
	}
	header = append(header, "TOTAL ")
	align = append(align, tw.AlignRight)
	t := newStatsTable(w, align...)
	t.Header(header...)
	colSum := make([]uint64, len(cols))
	var ill uint64
	for _, r := range rows {
		line := []any{r.String()}
		var sum uint64
		for i, c := range cols {
			v := a.Matrix[r][c]
			sum += v
			colSum[i] += v
			line = append(line, matrixCell(v, m.Allowed(r, c)))
			if v > 0 && !m.Allowed(r, c) {
				ill += v
			}
		}
		line = append(line, strconv.FormatUint(sum, 10)+" ")
		if err := t.Append(line...); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	footer := []any{"TOTAL"}
	var all uint64
	for _, v := range colSum {
		footer = append(footer, strconv.FormatUint(v, 10)+" ")
		all += v
	}
	footer = append(footer, strconv.FormatUint(all, 10)+" ")
	t.Footer(footer...)
	if err := renderTable(t); err != nil {
		return err
	}
	if ill > 0 {
		fmt.Fprintf(w, "! = not a transition of model %s (%d transitions)\n", m.Name(), ill)
	} else {
		fmt.Fprintf(w, "every transition is in model %s (illegal ones would end in !)\n", m.Name())
	}
	return nil
}

// matrixCell formats one count: empty for 0, a trailing "!" when the model
// does not have the edge, a trailing space otherwise (so digits align).
func matrixCell(v uint64, allowed bool) string {
	if v == 0 {
		return ""
	}
	if !allowed {
		return strconv.FormatUint(v, 10) + "!"
	}
	return strconv.FormatUint(v, 10) + " "
}

// writeCauses writes why sockets ended: the causes trace's CAUSE column
// and life print, from the same facts (model.CloseFacts.Cause).
func writeCauses(w io.Writer, a *model.Aggregate) error {
	causes := a.Causes()
	if len(causes) == 0 {
		fmt.Fprintf(w, "\ncauses: no socket closed\n")
		return nil
	}
	fmt.Fprintf(w, "\ncauses (why sockets ended, at -> CLOSE):\n")
	t := newStatsTable(w, tw.AlignLeft, tw.AlignRight, tw.AlignLeft)
	t.Header("CAUSE", "SOCKETS", "MEANING")
	var sum uint64
	for _, c := range causes {
		sum += c.Count
		if err := t.Append(c.Cause.String(), strconv.FormatUint(c.Count, 10), c.Cause.Meaning()); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	t.Footer("TOTAL", strconv.FormatUint(sum, 10), "")
	return renderTable(t)
}

func fmtU(v uint64) string { return strconv.FormatUint(v, 10) }

func writePorts(w io.Writer, a *model.Aggregate, top int) error {
	rows := a.PortRows()
	if len(rows) == 0 && a.PortOther == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nby service port (a listener's or accepted socket's local port, a connecting socket's remote port):\n")
	cells := make([]countCells, len(rows))
	for i, r := range rows {
		cells[i] = countCells{fmtU(uint64(r.Port)), r.Side, r.Transitions, r.Opened}
	}
	var extra [][]string
	if a.PortOther > 0 {
		extra = append(extra, []string{"not counted (map full)", "", fmtU(a.PortOther), "-"})
	}
	return writeCountTable(w, []string{"PORT", "SIDE"}, tw.AlignRight, cells, top,
		func(n int) []string { return []string{fmt.Sprintf("other (%d ports)", n), ""} }, extra)
}

func writeOwners(w io.Writer, a *model.Aggregate, top int) error {
	rows := a.OwnerRows()
	unknown := a.OwnerUnknown()
	if len(rows) == 0 && a.OwnerOther == 0 && unknown == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nby owner:\n")
	cells := make([]countCells, len(rows))
	for i, r := range rows {
		cells[i] = countCells{fmtU(uint64(r.Pid)), termsafe.String(r.Comm), r.Transitions, r.Opened}
	}
	var extra [][]string
	if a.OwnerOther > 0 {
		extra = append(extra, []string{"-", "not counted (map full)", fmtU(a.OwnerOther), "-"})
	}
	if unknown > 0 {
		extra = append(extra, []string{"-", "owner unknown", fmtU(unknown), "-"})
	}
	return writeCountTable(w, []string{"PID", "COMM"}, tw.AlignRight, cells, top,
		func(n int) []string { return []string{"other", fmt.Sprintf("(%d owners)", n)} }, extra)
}

// writeCgroups writes the counts by the sockets' own cgroup: its path (or
// its id, when it could not be resolved) and the container the path names.
// Names are escaped: a cgroup is named by whoever made it.
func writeCgroups(w io.Writer, a *model.Aggregate, info func(uint64) *model.CgroupInfo, top int) error {
	rows := a.CgroupRows(info)
	if len(rows) == 0 && a.CgroupOther == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nby cgroup (the socket's own: its creator's):\n")
	cells := make([]countCells, len(rows))
	for i, r := range rows {
		key := r.Path
		switch {
		case r.ID == 0:
			key = "(none recorded)"
		case key == "":
			key = "id:" + fmtU(r.ID) // removed before it was resolved
		}
		detail := ""
		if r.Info != nil {
			c := r.Info.Container
			detail = c.Label()
			if c.ID != "" && c.PodUID != "" {
				detail += " (pod " + c.PodUID + ")"
			}
		}
		cells[i] = countCells{termsafe.String(key), termsafe.String(detail), r.Transitions, r.Opened}
	}
	var extra [][]string
	if a.CgroupOther > 0 {
		extra = append(extra, []string{"not counted (map full)", "", fmtU(a.CgroupOther), "-"})
	}
	return writeCountTable(w, []string{"CGROUP", "CONTAINER"}, tw.AlignLeft, cells, top,
		func(n int) []string { return []string{fmt.Sprintf("other (%d cgroups)", n), ""} }, extra)
}

// countCells is one row of the per-port or per-owner table: two key cells
// and the counts.
type countCells struct {
	key, detail         string
	transitions, opened uint64
}

// writeCountTable prints rows (already sorted) under keys, the first top of
// them (all when top is 0) and the rest summed in one row labelled by
// restLabel, then the extra rows: nothing counted is left out.
func writeCountTable(w io.Writer, keys []string, keyAlign tw.Align, rows []countCells, top int, restLabel func(n int) []string, extra [][]string) error {
	t := newStatsTable(w, keyAlign, tw.AlignLeft, tw.AlignRight, tw.AlignRight)
	t.Header(keys[0], keys[1], "TRANSITIONS", "OPENED")
	var rest countCells
	nrest := 0
	for i, r := range rows {
		if top > 0 && i >= top {
			rest.transitions += r.transitions
			rest.opened += r.opened
			nrest++
			continue
		}
		if err := t.Append(r.key, r.detail, fmtU(r.transitions), fmtU(r.opened)); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	if nrest > 0 {
		extra = append([][]string{append(restLabel(nrest), fmtU(rest.transitions), fmtU(rest.opened))}, extra...)
	}
	for _, e := range extra {
		if err := t.Append(e); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	return renderTable(t)
}

// writeHists draws every histogram that has data.
func writeHists(w io.Writer, a *model.Aggregate) {
	for _, k := range model.HistOrder() {
		vals := a.Hists[k][:]
		n := model.HistCount(vals)
		if n == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s, count %d:\n", k, n)
		writeLog2Hist(w, vals, "usecs")
	}
}

// writeLog2Hist draws a log2 histogram the way bcc's tools do
// (print_log2_hist): one row per bucket from the first to the last
// non-empty one, 40 stars for the largest count (20 in the wide form used
// when values reach past 2^33). Bucket i holds [2^i, 2^(i+1)) in unit,
// bucket 0 holds 0 and 1.
func writeLog2Hist(w io.Writer, vals []uint64, unit string) {
	idxMax := -1
	var valMax uint64
	for i, v := range vals {
		if v > 0 {
			idxMax = i
		}
		valMax = max(valMax, v)
	}
	if idxMax < 0 {
		return
	}
	stars, width := 40, 10
	header := "     %-19s : count     distribution\n"
	if idxMax > 32 {
		stars, width = 20, 20
		header = "               %-29s : count     distribution\n"
	}
	fmt.Fprintf(w, header, unit)
	for i := 0; i <= idxMax; i++ {
		low := (uint64(1) << (i + 1)) >> 1
		high := (uint64(1) << (i + 1)) - 1
		if low == high {
			low--
		}
		fmt.Fprintf(w, "%*d -> %-*d : %-8d |%-*s|\n", width, low, width, high, vals[i], stars, starBar(vals[i], valMax, stars))
	}
}

func starBar(v, vmax uint64, width int) string {
	if vmax == 0 {
		return ""
	}
	n := int(min(v, vmax) * uint64(width) / vmax)
	return strings.Repeat("*", n)
}

// fmtThresholds lists thresholds as "CLOSE_WAIT 1m0s, ..." in life order.
func fmtThresholds(th map[model.State]time.Duration) string {
	var parts []string
	for _, s := range model.LifeOrder {
		if d, ok := th[s]; ok && d > 0 {
			parts = append(parts, s.String()+" "+d.String())
		}
	}
	if len(parts) == 0 {
		return "no thresholds"
	}
	return strings.Join(parts, ", ")
}

// writeStuck lists stuck sockets (model.Stuck's result, longest first) under
// a heading that names the thresholds; "none" when there are none. trace can
// call it for its end-of-run summary.
func writeStuck(w io.Writer, stuck []model.SocketInfo, th map[model.State]time.Duration) error {
	if len(stuck) == 0 {
		_, err := fmt.Fprintf(w, "stuck sockets (in a state longer than %s): none\n", fmtThresholds(th))
		if err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		return nil
	}
	fmt.Fprintf(w, "stuck sockets (in a state longer than %s): %d\n", fmtThresholds(th), len(stuck))
	t := newStatsTable(w, tw.AlignLeft, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignLeft, tw.AlignLeft, tw.AlignLeft)
	t.Header("STATE", "IN STATE", "AGE", "PID", "COMM", "LOCAL", "REMOTE")
	for _, s := range stuck {
		// A socket older than the tracer was seeded by the start
		// snapshot: its times count from then, lower bounds.
		in := fmtDuration(s.Since)
		if s.SinceAtLeast {
			in = ">=" + in
		}
		age := "-"
		if s.Age > 0 {
			age = fmtDuration(s.Age)
			if s.AgeAtLeast {
				age = ">=" + age
			}
		}
		pid, comm := "-", "-"
		if s.OwnerKnown {
			pid, comm = fmtU(uint64(s.Pid)), termsafe.String(s.Comm)
		}
		if err := t.Append(s.State.String(), in, age, pid, comm,
			fmtAddrPort(s.Saddr, s.Sport), fmtAddrPort(s.Daddr, s.Dport)); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	return renderTable(t)
}

// fmtAddrPort prints addr:port, [v6]:port, or "-" when neither is known
// (a child socket's peer before the handshake's end).
func fmtAddrPort(a netip.Addr, port uint16) string {
	if !a.IsValid() || (a.IsUnspecified() && port == 0) {
		return "-"
	}
	return netip.AddrPortFrom(a, port).String()
}

// fmtDuration prints a duration short and readable: 0.21ms, 850ms, 12.3s,
// 5m03s, 2h05m.
func fmtDuration(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

func fmtSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}

// ---- JSON ----

// statsDoc is one report as JSON: one document per line. Its keys are
// documented in stats' help; like the event record, they are added, never
// renamed.
type statsDoc struct {
	Final   bool      `json:"final"`
	Seq     int       `json:"seq"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"seconds"`
	Model   string    `json:"model"`
	// Transitions the programs handled in the span, host-wide, before the
	// filters, as in every document; Counted passed them and is in the
	// tables (the matrix's total).
	Transitions uint64 `json:"transitions"`
	Counted     uint64 `json:"counted"`
	Illegal     uint64 `json:"illegal"`
	// Lost counted by the kernel in the span: LostFiltered of transitions
	// that passed the filters, LostHostWide the recursion misses, anyone's.
	Lost         uint64             `json:"lost"`
	LostFiltered uint64             `json:"lost_filtered"`
	LostHostWide uint64             `json:"lost_host_wide"`
	Matrix       []matrixDoc        `json:"matrix"`
	Outcomes     map[string]uint64  `json:"outcomes"`
	Causes       []causeDoc         `json:"causes"`
	Ports        []model.PortRow    `json:"ports"`
	PortOther    uint64             `json:"port_other"`
	Owners       []model.OwnerRow   `json:"owners"`
	OwnerOther   uint64             `json:"owner_other"`
	OwnerUnkn    uint64             `json:"owner_unknown"`
	Cgroups      []model.CgroupRow  `json:"cgroups"`
	CgroupOther  uint64             `json:"cgroup_other"`
	Histograms   []histDoc          `json:"histograms"`
	Stuck        []socketDoc        `json:"stuck"`
	Thresholds   map[string]float64 `json:"stuck_thresholds_s"`
	Kernel       *tracer.Counters   `json:"kernel,omitempty"`
	// The final document's: transitions missing without any kernel count,
	// and the reconciliation that found them.
	Missing         *uint64       `json:"missing,omitempty"`
	MissingEstimate *bool         `json:"missing_estimate,omitempty"`
	Reconciliation  *reconcileDoc `json:"reconciliation,omitempty"`
}

type causeDoc struct {
	Cause  string `json:"cause"`
	Detail string `json:"detail"`
	Count  uint64 `json:"count"`
}

type matrixDoc struct {
	Old     string `json:"old"`
	New     string `json:"new"`
	Count   uint64 `json:"count"`
	Illegal bool   `json:"illegal"`
}

type histDoc struct {
	Kind    string      `json:"kind"`
	Title   string      `json:"title"`
	Unit    string      `json:"unit"`
	Count   uint64      `json:"count"`
	Buckets []bucketDoc `json:"buckets"`
}

type bucketDoc struct {
	Low   uint64 `json:"low"`
	High  uint64 `json:"high"`
	Count uint64 `json:"count"`
}

func newStatsDoc(r *statsReport) statsDoc {
	a := r.Agg
	d := statsDoc{
		Final:        r.Final,
		Seq:          r.Seq,
		Start:        r.Start,
		End:          r.End,
		Seconds:      r.End.Sub(r.Start).Seconds(),
		Model:        r.Model.Name(),
		Transitions:  r.Transitions,
		Counted:      a.Transitions(),
		Illegal:      a.Illegal(r.Model),
		Lost:         r.LostFiltered + r.LostHostWide,
		LostFiltered: r.LostFiltered,
		LostHostWide: r.LostHostWide,
		Matrix:       []matrixDoc{},
		Outcomes:     map[string]uint64{},
		Causes:       []causeDoc{},
		Ports:        a.PortRows(),
		PortOther:    a.PortOther,
		Owners:       a.OwnerRows(),
		OwnerOther:   a.OwnerOther,
		OwnerUnkn:    a.OwnerUnknown(),
		Cgroups:      a.CgroupRows(r.Cgroups),
		CgroupOther:  a.CgroupOther,
		Histograms:   []histDoc{},
		Stuck:        socketDocs(r.Stuck),
		Thresholds:   map[string]float64{},
		Kernel:       r.Kernel,
	}
	if rec := r.Reconciliation; rec != nil {
		est := r.MissingEstimate
		d.Reconciliation, d.Missing, d.MissingEstimate = rec, &rec.MissingUncounted, &est
	}
	for _, old := range model.LifeOrder {
		for _, nw := range model.LifeOrder {
			if v := a.Matrix[old][nw]; v > 0 {
				d.Matrix = append(d.Matrix, matrixDoc{Old: old.String(), New: nw.String(), Count: v, Illegal: !r.Model.Allowed(old, nw)})
			}
		}
	}
	for o := range model.NumOutcomes {
		d.Outcomes[o.String()] = a.Outcomes[o]
	}
	for _, c := range a.Causes() {
		d.Causes = append(d.Causes, causeDoc{Cause: c.Cause.Cause.String(), Detail: c.Cause.Detail, Count: c.Count})
	}
	for _, k := range model.HistOrder() {
		vals := a.Hists[k][:]
		n := model.HistCount(vals)
		if n == 0 {
			continue
		}
		h := histDoc{Kind: k.Key(), Title: k.String(), Unit: "usecs", Count: n, Buckets: []bucketDoc{}}
		for i, v := range vals {
			if v > 0 {
				lo, hi := model.BucketBounds(i)
				h.Buckets = append(h.Buckets, bucketDoc{Low: lo, High: hi, Count: v})
			}
		}
		d.Histograms = append(d.Histograms, h)
	}
	for s, th := range r.Thresholds {
		if th > 0 {
			d.Thresholds[s.String()] = th.Seconds()
		}
	}
	return d
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// writeStatsJSON writes one report as one line of JSON.
func writeStatsJSON(w io.Writer, r *statsReport) error {
	b, err := json.Marshal(newStatsDoc(r))
	if err != nil {
		return fmt.Errorf("encoding stats: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}
