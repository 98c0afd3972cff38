package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/model"
)

// maxLineBytes bounds one input line: a record is a few hundred bytes, so
// anything near this is not a record, and the bound keeps a wrong file (a
// binary without newlines) from filling memory.
const maxLineBytes = 16 << 20

// maxBadLineReports is how many bad lines check reports one by one; the rest
// are only counted, so a wrong file does not flood the terminal.
const maxBadLineReports = 50

type checkCmdOptions struct {
	checkOptions
	all        bool
	output     string
	maxSockets int
}

func newCheckCmd() *cobra.Command {
	o := &checkCmdOptions{}
	var models strings.Builder
	for _, name := range model.ModelNames() {
		m, _ := model.ModelByName(name)
		fmt.Fprintf(&models, "  %-7s %s\n", name, m.Summary())
	}
	cmd := &cobra.Command{
		Use:   "check [FILE|-]",
		Short: "Check recorded transitions (trace -o json) against a TCP state model",
		Long: `Replay the JSON lines written by 'tcpstate trace -o json' through the same
checker trace uses, and report what does not fit the model. Reads FILE, or
standard input when FILE is - or missing. Needs no privileges.

Models (--model):
` + models.String() + `rfc793 leaves out FIN_WAIT2->CLOSE and CLOSING->CLOSE (Linux's hand-over to a
timewait socket, where the RFC goes to TIME_WAIT) and the LISTEN->SYN_RECV that
Linux reports on a new child socket (in the RFC the listener itself moves).

Verdicts:
  ok       the transition is in the model and continues the socket's last state
  illegal  the transition is not in the model (its reason names the edge)
  gap      the socket's old state is not the new state last seen for it, or a
           socket is born at an address whose previous socket never reported
           -> CLOSE: events are missing (lost by the kernel or the capture)
  unknown  first sight of a socket in the middle of its life (born before the
           capture started), or its next transition after --max-sockets
           evicted it (even if its record has last_state); not an anomaly
A transition that is illegal and a gap at once is reported as illegal, with
the gap in its reason, and counts for --fail-on gap too. A socket is one
incarnation of a kernel address: it starts at CLOSE->SYN_SENT, CLOSE->LISTEN
or a child's LISTEN->SYN_RECV and ends at ->CLOSE. Verdicts recorded in the
input are ignored: every transition is checked again.

Output: the anomalies (every transition with --all) in trace's format
(-o table, wide or json; json re-emits each record with its new verdict),
then a summary table: transitions by verdict, illegal transitions by edge,
sockets, and input lines. The summary goes to standard output, or to standard
error with -o json so that standard output stays JSON lines.

A line that is not a record (corrupt, truncated, not JSON) is reported on
standard error with its line number and skipped; checking goes on. Blank lines
are skipped silently.

Exit status: 0 the input was checked; 3 --fail-on saw an anomaly it names
(this wins over bad input); 2 bad flags, an input file that cannot be
opened, lines that are not records (reported after the summary), or, with
--fail-on, input that holds no record at all; 1 a read error.`,
		Example: `  tcpstate check transitions.jsonl
  tcpstate check --model rfc793 --all transitions.jsonl
  set -o pipefail; sudo tcpstate trace -o json --duration 60s | tcpstate check --fail-on illegal,gap -
  tcpstate check -o json --model rfc793 in.jsonl > rechecked.jsonl`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("check reads one FILE (or - for standard input), got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "-"
			if len(args) == 1 {
				path = args[0]
			}
			return runCheck(o, path, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	addCheckFlags(f, &o.checkOptions)
	f.Lookup("anomalies").Usage = "print only anomalies (check's default; kept so that trace and check take the same flags)"
	f.BoolVar(&o.all, "all", false, "print every transition with its verdict, not only the anomalies")
	choiceVarP(f, &o.output, "output", "o", outTable, []string{outTable, outWide, outJSON}, "output: table, wide (adds skaddr, on-CPU task, family, owner source, network namespace, cgroup or container) or json (the records, re-checked)")
	f.IntVar(&o.maxSockets, "max-sockets", model.DefaultMaxSockets, "sockets followed at a time; the least recently seen are evicted (and counted), and their next transition is unknown")
	return cmd
}

// checkRun is one run of check: the input's counters and the tracker.
type checkRun struct {
	name    string // the input, for messages
	tr      *model.Tracker
	lines   uint64
	records uint64
	blank   uint64
	bad     uint64
	illegal [model.NumStates][model.NumStates]uint64
	// outClosed: standard output's reader closed it; nothing more is
	// printed.
	outClosed bool
}

func runCheck(o *checkCmdOptions, path string, stdin io.Reader, stdout, stderr io.Writer) error {
	m, failOn, err := o.validate()
	if err != nil {
		return err
	}
	if o.all && o.Anomalies {
		return usagef("--all and --anomalies exclude each other")
	}
	// The table's header comes with its first line: none when nothing is
	// printed.
	p, err := newPrinter(o.output, true)
	if err != nil {
		return err
	}
	if o.maxSockets < 1 {
		return usagef("--max-sockets %d: must be at least 1", o.maxSockets)
	}

	in, name := stdin, "standard input"
	// Reading a pipe or a terminal, each anomaly is written out as soon
	// as its line is read (trace -o json | check -): the input may never
	// end. A regular file is read to its end quickly: buffered.
	live := !isRegularFile(stdin)
	if path != "-" {
		f, err := openInput(path)
		if err != nil {
			return err
		}
		defer f.Close()
		// The name is printed in messages and the summary: escaped, as a
		// file name is whatever its maker chose (a glob may pick it).
		in, name = f, termsafe.String(path)
		live = !isRegularFile(f)
	}

	c := &checkRun{name: name, tr: model.NewTracker(m, o.maxSockets)}
	// A capture records no loss counts: gap reasons must not claim that
	// nothing was lost.
	c.tr.SetNoLossReports(true)
	out := bufio.NewWriterSize(stdout, 64<<10)
	readErr := c.run(in, out, stderr, p, o.all, live)
	if err := c.outErr(out.Flush()); err != nil {
		return err
	}
	if readErr != nil {
		return readErr
	}

	summary := stdout
	if o.output == outJSON {
		summary = stderr
	}
	if !c.outClosed || summary != stdout {
		if err := c.writeSummary(summary, m, o.maxSockets); err != nil && !errors.Is(err, syscall.EPIPE) {
			return fmt.Errorf("writing summary: %w", err)
		}
	}
	if c.outClosed {
		fmt.Fprintf(stderr, "tcpstate: standard output was closed by its reader; %s checked to its end\n", name)
	}
	if c.records == 0 && c.bad == 0 {
		// A guard (trace | check --fail-on) must not pass on nothing: a
		// tracer that failed to start leaves an empty pipe.
		if failOn.any() {
			return usagef("%s holds no records: --fail-on checked nothing (did the command that wrote it fail? use set -o pipefail)", name)
		}
		fmt.Fprintf(stderr, "tcpstate: warning: %s holds no records\n", name)
	}

	failErr := failOn.check(c.tr.Stats())
	var fail *anomalyError
	if errors.As(failErr, &fail) {
		if c.bad > 0 {
			fail.msg += fmt.Sprintf("; also %s", c.badSummary())
		}
		return fail
	}
	if c.bad > 0 {
		return usagef("%s", c.badSummary())
	}
	return nil
}

// openInput opens a regular file (or a pipe, a device) to read, with errors
// that name the problem: all are usage errors.
func openInput(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, usagef("cannot read %s: %v", termsafe.String(path), pe.Err)
		}
		return nil, usagef("cannot read %s: %v", termsafe.String(path), err)
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		f.Close()
		return nil, usagef("cannot read %s: it is a directory", termsafe.String(path))
	}
	return f, nil
}

func (c *checkRun) badSummary() string {
	what := "lines are not tcpstate records"
	if c.bad == 1 {
		what = "lines is not a tcpstate record"
	}
	return fmt.Sprintf("%s: %d of %d %s (reported above)", c.name, c.bad, c.lines, what)
}

// isRegularFile reports whether r is a regular file (not a pipe, a
// terminal, a socket, or a reader that is no file at all).
func isRegularFile(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode().IsRegular()
}

// run reads and checks every line, printing the events it should print;
// live: each as soon as it is found.
func (c *checkRun) run(in io.Reader, out *bufio.Writer, stderr io.Writer, p printer, all, live bool) error {
	lr := lineReader{r: bufio.NewReaderSize(in, 64<<10)}
	buf := make([]byte, 0, 1024)
	for {
		line, err := lr.next()
		if err == io.EOF {
			return nil
		}
		c.lines++
		if errors.Is(err, errLineTooLong) {
			c.badLine(stderr, lr.n, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", c.name, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			c.blank++
			continue
		}
		e, _, err := model.ParseRecord(line)
		if err != nil {
			if lr.noNewline {
				err = fmt.Errorf("%w (the last line has no newline: truncated?)", err)
			}
			c.badLine(stderr, lr.n, err)
			continue
		}
		c.records++
		v := c.tr.Check(&e)
		if v.Kind == model.VerdictIllegal && e.Old < model.NumStates && e.New < model.NumStates {
			c.illegal[e.Old][e.New]++
		}
		if !all && !v.Kind.Anomaly() {
			continue
		}
		if c.outClosed {
			continue // checking goes on: the exit status is the input's
		}
		buf = p.appendEvent(buf[:0], &e, &v)
		_, err = out.Write(buf)
		if err == nil && live {
			err = out.Flush()
		}
		if err := c.outErr(err); err != nil {
			return err
		}
	}
}

// outErr judges a write error: EPIPE, the reader closed standard output
// (| head), is the end of the output, not of the check.
func (c *checkRun) outErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPIPE):
		c.outClosed = true
		return nil
	}
	return fmt.Errorf("writing output: %w", err)
}

func (c *checkRun) badLine(stderr io.Writer, n uint64, err error) {
	c.bad++
	switch {
	case c.bad <= maxBadLineReports:
		fmt.Fprintf(stderr, "tcpstate: %s: line %d: %v\n", c.name, n, err)
	case c.bad == maxBadLineReports+1:
		fmt.Fprintf(stderr, "tcpstate: %s: line %d: more lines are not records; counting them without reporting each\n", c.name, n)
	}
}

// writeSummary renders the summary table.
func (c *checkRun) writeSummary(w io.Writer, m *model.Model, maxSockets int) error {
	st := c.tr.Stats()
	fmt.Fprintf(w, "\ncheck of %s against model %s: %s, %s\n", c.name, m.Name(),
		plural(st.Events, "transition", "transitions"), plural(st.Anomalies(), "anomaly", "anomalies"))

	table := tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{Symbols: tw.NewSymbols(tw.StyleASCII)})),
		tablewriter.WithRowAlignmentConfig(tw.CellAlignment{PerColumn: []tw.Align{tw.AlignLeft, tw.AlignLeft, tw.AlignRight}}),
		tablewriter.WithHeaderAlignmentConfig(tw.CellAlignment{PerColumn: []tw.Align{tw.AlignLeft, tw.AlignLeft, tw.AlignRight}}),
	)
	table.Header("", "what", "count")
	var rows [][]string
	section := func(name string, items ...[2]string) {
		for i, it := range items {
			s := ""
			if i == 0 {
				s = name
			}
			rows = append(rows, []string{s, it[0], it[1]})
		}
	}
	n := func(v uint64) string { return strconv.FormatUint(v, 10) }

	section("transitions",
		[2]string{"ok", n(st.OK)},
		[2]string{"unknown (socket first seen mid-life, or evicted)", n(st.Unknown)},
		[2]string{"illegal (not in model " + m.Name() + ")", n(st.Illegal)},
		[2]string{"gap (events missing)", n(st.Gap)},
		[2]string{"total", n(st.Events)},
	)
	var anomalies [][2]string
	for _, e := range c.illegalEdges() {
		anomalies = append(anomalies, [2]string{"illegal " + e.edge, n(e.count)})
	}
	anomalies = append(anomalies,
		[2]string{"illegal that were also gaps", n(st.IllegalGap)},
		[2]string{"gaps in all (--fail-on gap)", n(st.Gaps())})
	section("anomalies", anomalies...)
	section("sockets",
		[2]string{"seen", n(st.Sockets)},
		[2]string{"closed", n(st.Closed)},
		[2]string{"still open at the end", strconv.Itoa(st.LiveSockets)},
		[2]string{"address reused without -> CLOSE", n(st.Reborn)},
		[2]string{"evicted (--max-sockets " + strconv.Itoa(maxSockets) + ")", n(st.Evicted)},
	)
	section("input",
		[2]string{"lines", n(c.lines)},
		[2]string{"records", n(c.records)},
		[2]string{"not records (bad lines)", n(c.bad)},
		[2]string{"blank", n(c.blank)},
	)
	if err := table.Bulk(rows); err != nil {
		return err
	}
	return table.Render()
}

type edgeCount struct {
	edge  string
	count uint64
}

// illegalEdges lists the illegal edges seen, most frequent first.
func (c *checkRun) illegalEdges() []edgeCount {
	var out []edgeCount
	for old := range c.illegal {
		for nw, k := range c.illegal[old] {
			if k > 0 {
				out = append(out, edgeCount{model.State(old).String() + " -> " + model.State(nw).String(), k})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].count > out[j].count })
	return out
}

var errLineTooLong = fmt.Errorf("longer than %d MiB: not a tcpstate record", maxLineBytes>>20)

// lineReader returns lines of any length up to maxLineBytes, without their
// "\n" or "\r\n", counting them.
type lineReader struct {
	r         *bufio.Reader
	buf       []byte
	n         uint64 // number of the line last returned
	noNewline bool   // the line last returned ended at EOF without "\n"
}

// next returns the next line (valid until the following call), io.EOF at the
// end, or errLineTooLong for a line whose bytes were skipped.
func (l *lineReader) next() ([]byte, error) {
	chunk, err := l.r.ReadSlice('\n')
	if err == io.EOF && len(chunk) == 0 {
		return nil, io.EOF
	}
	l.n++
	if err != bufio.ErrBufferFull {
		if err != nil && err != io.EOF {
			return nil, err
		}
		l.noNewline = err == io.EOF
		return trimEOL(chunk), nil
	}
	// A line longer than the reader's buffer: gather it.
	l.buf = append(l.buf[:0], chunk...)
	for err == bufio.ErrBufferFull {
		chunk, err = l.r.ReadSlice('\n')
		if len(l.buf) <= maxLineBytes {
			l.buf = append(l.buf, chunk...)
		}
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	l.noNewline = err == io.EOF
	if len(trimEOL(l.buf)) > maxLineBytes {
		return nil, errLineTooLong
	}
	return trimEOL(l.buf), nil
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
