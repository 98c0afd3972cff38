package main

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/model"
)

// Output modes of trace.
const (
	outTable = "table"
	outWide  = "wide"
	outJSON  = "json"
)

// printer formats events into a reused buffer; the caller writes and flushes.
type printer interface {
	header(buf []byte) []byte
	appendEvent(buf []byte, e *model.Event, v *model.Verdict) []byte
}

// newPrinter makes the printer of an output mode. headers: a table prints
// its header before its first line if the caller has not, and again
// whenever a column grows (see tablePrinter).
func newPrinter(mode string, headers bool) (printer, error) {
	switch mode {
	case outTable:
		return newTablePrinter(false, headers), nil
	case outWide:
		return newTablePrinter(true, headers), nil
	case outJSON:
		return &jsonPrinter{}, nil
	}
	return nil, usagef("unknown output mode %q: want table, wide or json", mode)
}

type jsonPrinter struct{ enc model.RecordEncoder }

func (*jsonPrinter) header(buf []byte) []byte { return buf }

func (p *jsonPrinter) appendEvent(buf []byte, e *model.Event, v *model.Verdict) []byte {
	return p.enc.Append(buf, e, v)
}

// tablePrinter writes aligned columns, one line per event.
//
// Every cell is padded to its column's width in terminal columns, a task
// name by its display width once escaped (termsafe). The columns whose
// cells vary start wide enough for the common case and grow in steps:
//
//	PID, CPU_PID     7: any pid Linux hands out (pid_max is at most 2^22);
//	                 10: any 32-bit number (in a record check reads)
//	COMM, CPU_COMM   16: any name that needs no escape (at most 16 bytes, and
//	                 no character takes more columns than bytes); 32; 64: any
//	                 escaped name (an escape takes at most 4 columns a byte)
//	LOCAL, REMOTE    21: any IPv4 address and port; 30: any IPv4-mapped IPv6
//	                 one; 47: any IPv6 one (the two columns share a width)
//	MS               12: up to 27 hours; 18: any duration
//	CAUSE            16: every cause but the timeouts' (listener_closed,
//	                 fin/simultaneous, timeout/keepalive, ...); 25:
//	                 timeout/zero_window_probe, timeout/retransmission
//	                 (model.CloseCause; "-" on every line that is not a
//	                 ->CLOSE)
//	ERROR (wide)     12: ECONNREFUSED, the longest socket error a close has
//	RST_REASON       20; 40: the kernel's reset reason (Linux 6.10+), escaped
//	(wide)
//	CGROUP           24: a container ("docker:" and 12 hex digits) or a
//	                 systemd service; 48, 96, 192: paths (escaped: a
//	                 cgroup's name is whatever its creator chose)
//
// When a cell does not fit, its column grows to the first step that fits,
// for the rest of the run, and the header is printed again right above
// that line (unless headers are off, --no-header): every line lines up
// with the last header above it. Each column grows at most twice, so a run
// prints the header again a few times at most, and on an IPv4-only host
// with plain names never. Starting at the widest steps instead would make
// every IPv4 line 50 columns wider for the sake of the rare long cell.
type tablePrinter struct {
	wide    bool
	headers bool // print the header before the first line and when a column grows
	headed  bool // the header has been printed
	grew    bool // a column grew while the current line was formatted

	pid, comm, addr, ms, cpuPid, cpuComm, cause, reason, cgroup colWidth
	clock                                                       clockCache
}

// colWidth is the width of a table column that grows.
type colWidth struct {
	w     int
	steps []int // the widths it may take, ascending; the first is where it starts
}

var (
	pidSteps    = []int{7, 10}
	commSteps   = []int{16, 32, 64}
	addrSteps   = []int{21, 30, 47} // 255.255.255.255:65535, [::ffff:255.255.255.255]:65535, [ffff:...:ffff]:65535
	msSteps     = []int{12, 18}     // 99999999.999, 18446744073709.551 (2^64 ns)
	causeSteps  = []int{16, 25}
	reasonSteps = []int{20, 40}
	cgSteps     = []int{24, 48, 96, 192}
)

const errW = 12 // ECONNREFUSED

func newColWidth(steps []int) colWidth { return colWidth{w: steps[0], steps: steps} }

// fit returns the width of column c for a cell n columns wide, growing the
// column first to the first step that fits (n itself past the last step,
// which no cell reaches).
func (p *tablePrinter) fit(c *colWidth, n int) int {
	if n > c.w {
		p.grew = true
		c.w = n
		for _, s := range c.steps {
			if s >= n {
				c.w = s
				break
			}
		}
	}
	return c.w
}

// clockCache formats a time as 15:04:05.000000, keeping the formatted
// second of the last time.
type clockCache struct {
	sec  int64
	loc  *time.Location
	hms  [8]byte
	have bool
}

func (c *clockCache) append(buf []byte, t time.Time) []byte {
	if sec := t.Unix(); !c.have || sec != c.sec || t.Location() != c.loc {
		t.AppendFormat(c.hms[:0], "15:04:05")
		c.sec, c.loc, c.have = sec, t.Location(), true
	}
	buf = append(buf, c.hms[:]...)
	us := t.Nanosecond() / 1000
	var d [7]byte
	d[0] = '.'
	for i := 6; i >= 1; i-- {
		d[i] = byte('0' + us%10)
		us /= 10
	}
	return append(buf, d[:]...)
}

// The columns of fixed width.
const (
	timeW  = 15 // 15:04:05.000000
	stateW = 11 // ESTABLISHED
	skW    = 18 // 0xffff888100000000
	netnsW = 10 // 4294967295
)

func newTablePrinter(wide, headers bool) *tablePrinter {
	return &tablePrinter{
		wide: wide, headers: headers,
		pid: newColWidth(pidSteps), comm: newColWidth(commSteps), addr: newColWidth(addrSteps), ms: newColWidth(msSteps),
		cpuPid: newColWidth(pidSteps), cpuComm: newColWidth(commSteps),
		cause: newColWidth(causeSteps), reason: newColWidth(reasonSteps), cgroup: newColWidth(cgSteps),
	}
}

// header writes the header at the columns' current widths.
func (p *tablePrinter) header(buf []byte) []byte {
	p.headed = true
	buf = pad(buf, "TIME", timeW)
	buf = padLeft(buf, "PID", p.pid.w)
	buf = append(buf, ' ')
	buf = pad(buf, "COMM", p.comm.w)
	buf = pad(buf, "LOCAL", p.addr.w)
	buf = pad(buf, "REMOTE", p.addr.w)
	buf = pad(buf, "OLD", stateW)
	buf = append(buf, "   "...)
	buf = pad(buf, "NEW", stateW)
	buf = padLeft(buf, "MS", p.ms.w)
	buf = append(buf, ' ')
	buf = pad(buf, "CAUSE", p.cause.w)
	if p.wide {
		buf = pad(buf, "ERROR", errW)
		buf = pad(buf, "RST_REASON", p.reason.w)
		buf = pad(buf, "SKADDR", skW)
		buf = padLeft(buf, "CPU_PID", p.cpuPid.w)
		buf = append(buf, ' ')
		buf = pad(buf, "CPU_COMM", p.cpuComm.w)
		buf = pad(buf, "FAMILY", 6)
		buf = pad(buf, "OWNER", 9)
		buf = pad(buf, "NETNS", netnsW)
		buf = pad(buf, "CGROUP", p.cgroup.w)
	}
	buf = append(buf, "VERDICT"...)
	return append(trimRight(buf), '\n')
}

func (p *tablePrinter) appendEvent(buf []byte, e *model.Event, v *model.Verdict) []byte {
	start := len(buf)
	p.grew = false
	buf = p.appendLine(buf, e, v)
	if p.grew || p.headers && !p.headed {
		// A column grew (or no header yet): the header at the widths
		// this line needs, then the line again at them.
		buf = buf[:start]
		if p.headers {
			buf = p.header(buf)
		}
		buf = p.appendLine(buf, e, v)
	}
	return buf
}

func (p *tablePrinter) appendLine(buf []byte, e *model.Event, v *model.Verdict) []byte {
	buf = p.clock.append(buf, e.Time)
	buf = append(buf, ' ')
	if e.OwnerKnown() {
		buf = p.appendNum(buf, &p.pid, uint64(e.Pid))
		buf = append(buf, ' ')
		buf = p.appendName(buf, &p.comm, e.Comm.Bytes())
	} else {
		buf = padLeft(buf, "-", p.pid.w)
		buf = append(buf, ' ')
		buf = pad(buf, "-", p.comm.w)
	}
	buf = p.appendAddr(buf, e.Saddr, e.Sport)
	buf = p.appendAddr(buf, e.Daddr, e.Dport)
	buf = pad(buf, e.Old.String(), stateW)
	buf = append(buf, "-> "...)
	buf = pad(buf, e.New.String(), stateW)
	if e.DurationKnown() {
		start := len(buf)
		buf = strconv.AppendFloat(buf, float64(e.OldStateNs)/1e6, 'f', 3, 64)
		buf = rightAlign(buf, start, p.fit(&p.ms, len(buf)-start))
	} else {
		buf = padLeft(buf, "-", p.ms.w)
	}
	buf = append(buf, ' ')
	var cause model.CloseCause
	if e.New == model.Close {
		cause = e.CloseFacts.Cause()
	}
	if cause.Cause != model.CauseNone {
		start := len(buf)
		buf = append(buf, cause.Cause.String()...)
		if cause.Detail != "" {
			buf = append(buf, '/')
			buf = append(buf, cause.Detail...)
		}
		n := len(buf) - start
		buf = fill(buf, p.fit(&p.cause, n)-n+1)
	} else {
		buf = pad(buf, "-", p.cause.w)
	}
	if p.wide {
		if e.New == model.Close && e.CloseErr != 0 {
			buf = pad(buf, model.ErrnoName(e.CloseErr), errW)
		} else {
			buf = pad(buf, "-", errW)
		}
		if e.ResetReason != "" {
			var n int
			buf, n = termsafe.Append(buf, e.ResetReason)
			buf = fill(buf, p.fit(&p.reason, n)-n+1)
		} else {
			buf = pad(buf, "-", p.reason.w)
		}
		buf = append(buf, '0', 'x')
		start := len(buf)
		buf = strconv.AppendUint(buf, e.Skaddr, 16)
		buf = fill(buf, skW-2-(len(buf)-start)+1)
		buf = p.appendNum(buf, &p.cpuPid, uint64(e.CPUPid))
		buf = append(buf, ' ')
		buf = p.appendName(buf, &p.cpuComm, e.CPUComm.Bytes())
		buf = pad(buf, e.Family.String(), 6)
		buf = pad(buf, ownerWord(e), 9)
		if e.Netns != 0 {
			start := len(buf)
			buf = strconv.AppendUint(buf, uint64(e.Netns), 10)
			buf = fill(buf, netnsW-(len(buf)-start)+1)
		} else {
			buf = pad(buf, "-", netnsW)
		}
		buf = p.appendCgroup(buf, e)
	}
	if v != nil && v.Kind.Anomaly() {
		buf = append(buf, "!! "...)
		buf = append(buf, strings.ToUpper(v.Kind.String())...)
		buf = append(buf, ": "...)
		// The tracker words reasons from state names; escaped all the
		// same, so that every text of a line goes through termsafe.
		buf, _ = termsafe.Append(buf, v.Reason)
	}
	return append(trimRight(buf), '\n')
}

// appendCgroup writes the socket's cgroup (appendCgroupLabel),
// left-aligned in the CGROUP column and one space.
func (p *tablePrinter) appendCgroup(buf []byte, e *model.Event) []byte {
	buf, n := appendCgroupLabel(buf, e.Cgroup, e.CgroupID)
	return fill(buf, p.fit(&p.cgroup, n)-n+1)
}

// appendCgroupLabel writes what a table's CGROUP cell shows of a socket's
// cgroup (cg: what its id resolved to, nil when not) and returns its width
// on a terminal: its container ("docker:4f797c539e6c",
// "systemd:nginx.service"), else its path, else its id ("id:5309") when it
// was not resolved, "-" when the kernel recorded none. Escaped by
// termsafe: a cgroup is named by whoever made it. Built from its parts,
// without a string per event. trace's and ls's tables share it.
func appendCgroupLabel(buf []byte, cg *model.CgroupInfo, id uint64) ([]byte, int) {
	n, w := 0, 0
	switch {
	case cg != nil && cg.Container.ID != "":
		rt := cg.Container.Runtime
		if rt == "" {
			rt = "container"
		}
		buf, n = termsafe.Append(buf, rt)
		buf = append(buf, ':')
		buf, w = termsafe.Append(buf, cg.Container.Short())
		n += 1 + w
	case cg != nil && cg.Container.PodUID != "":
		buf = append(buf, "pod:"...)
		buf, w = termsafe.Append(buf, cg.Container.PodUID)
		n = 4 + w
	case cg != nil && cg.Path != "":
		buf, n = termsafe.Append(buf, cg.Path)
	case id != 0:
		start := len(buf)
		buf = append(buf, "id:"...)
		buf = strconv.AppendUint(buf, id, 10)
		n = len(buf) - start
	default:
		buf = append(buf, '-')
		n = 1
	}
	return buf, n
}

// appendNum writes v right-aligned in column c.
func (p *tablePrinter) appendNum(buf []byte, c *colWidth, v uint64) []byte {
	start := len(buf)
	buf = strconv.AppendUint(buf, v, 10)
	return rightAlign(buf, start, p.fit(c, len(buf)-start))
}

// appendName writes a task name (whatever the task set with prctl)
// escaped by termsafe, left-aligned in column c and one space, padded by
// its display width.
func (p *tablePrinter) appendName(buf []byte, c *colWidth, s []byte) []byte {
	buf, n := termsafe.Append(buf, s)
	return fill(buf, p.fit(c, n)-n+1)
}

// appendAddr writes addr:port ([addr]:port for IPv6) left-aligned in the
// address column and one space.
func (p *tablePrinter) appendAddr(buf []byte, a netip.Addr, port uint16) []byte {
	start := len(buf)
	buf = appendAddrPort(buf, a, port)
	n := len(buf) - start
	return fill(buf, p.fit(&p.addr, n)-n+1)
}

func ownerWord(e *model.Event) string {
	switch {
	case !e.OwnerKnown():
		return "unknown"
	case e.Flags&model.FlagOwnerInherited != 0:
		return "inherited"
	}
	return "known"
}

func appendAddrPort(buf []byte, a netip.Addr, port uint16) []byte {
	if a.Is6() {
		buf = append(buf, '[')
		buf = a.AppendTo(buf)
		buf = append(buf, ']')
	} else {
		buf = a.AppendTo(buf)
	}
	buf = append(buf, ':')
	return strconv.AppendUint(buf, uint64(port), 10)
}

// spaces is what fill copies from: a column's padding in one append.
const spaces = "                                                                "

// fill appends n spaces (none when n <= 0).
func fill(buf []byte, n int) []byte {
	for n > len(spaces) {
		buf = append(buf, spaces...)
		n -= len(spaces)
	}
	if n > 0 {
		buf = append(buf, spaces[:n]...)
	}
	return buf
}

// pad writes s left-aligned in a column of width w and one space.
func pad(buf []byte, s string, w int) []byte {
	buf = append(buf, s...)
	return fill(buf, w-len(s)+1)
}

func padLeft(buf []byte, s string, w int) []byte {
	buf = fill(buf, w-len(s))
	return append(buf, s...)
}

// rightAlign moves buf[start:] right within a column of width w.
func rightAlign(buf []byte, start, w int) []byte {
	n := len(buf) - start
	if n >= w {
		return buf
	}
	buf = fill(buf, w-n)
	copy(buf[start+w-n:], buf[start:start+n])
	for i := start; i < start+w-n; i++ {
		buf[i] = ' '
	}
	return buf
}

func trimRight(buf []byte) []byte {
	for len(buf) > 0 && buf[len(buf)-1] == ' ' {
		buf = buf[:len(buf)-1]
	}
	return buf
}

// writeAll writes buf or says what failed.
func writeAll(w io.Writer, buf []byte) error {
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}
