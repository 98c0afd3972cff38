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

func newPrinter(mode string) (printer, error) {
	switch mode {
	case outTable:
		return newTablePrinter(false), nil
	case outWide:
		return newTablePrinter(true), nil
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

// tablePrinter writes aligned columns. The address columns start wide enough
// for any IPv4 address and port and widen for good at the first longer one
// (IPv6), so lines stay aligned from then on.
type tablePrinter struct {
	wide  bool
	addrW int
	clock clockCache
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

const (
	timeW  = 15 // 15:04:05.000000
	pidW   = 7
	commW  = 16
	stateW = 11 // ESTABLISHED
	msW    = 12 // 99999999.999 ms: 27 hours
	skW    = 18 // 0xffff888100000000
)

func newTablePrinter(wide bool) *tablePrinter {
	return &tablePrinter{wide: wide, addrW: len("255.255.255.255:65535")}
}

func (p *tablePrinter) header(buf []byte) []byte {
	buf = pad(buf, "TIME", timeW)
	buf = padLeft(buf, "PID", pidW)
	buf = append(buf, ' ')
	buf = pad(buf, "COMM", commW)
	buf = pad(buf, "LOCAL", p.addrW)
	buf = pad(buf, "REMOTE", p.addrW)
	buf = pad(buf, "OLD", stateW)
	buf = append(buf, "   "...)
	buf = pad(buf, "NEW", stateW)
	buf = padLeft(buf, "MS", msW)
	buf = append(buf, ' ')
	if p.wide {
		buf = pad(buf, "SKADDR", skW)
		buf = padLeft(buf, "CPU_PID", pidW)
		buf = append(buf, ' ')
		buf = pad(buf, "CPU_COMM", commW)
		buf = pad(buf, "FAMILY", 6)
		buf = pad(buf, "OWNER", 9)
	}
	buf = append(buf, "VERDICT"...)
	return append(trimRight(buf), '\n')
}

func (p *tablePrinter) appendEvent(buf []byte, e *model.Event, v *model.Verdict) []byte {
	buf = p.clock.append(buf, e.Time)
	buf = append(buf, ' ')
	if e.OwnerKnown() {
		buf = padLeftNum(buf, uint64(e.Pid), pidW)
		buf = append(buf, ' ')
		buf = padName(buf, e.Comm.Bytes(), commW)
	} else {
		buf = padLeft(buf, "-", pidW)
		buf = append(buf, ' ')
		buf = pad(buf, "-", commW)
	}
	start := len(buf)
	buf = appendAddrPort(buf, e.Saddr, e.Sport)
	buf = p.addrPad(buf, start)
	start = len(buf)
	buf = appendAddrPort(buf, e.Daddr, e.Dport)
	buf = p.addrPad(buf, start)
	buf = pad(buf, e.Old.String(), stateW)
	buf = append(buf, "-> "...)
	buf = pad(buf, e.New.String(), stateW)
	if e.DurationKnown() {
		start = len(buf)
		buf = strconv.AppendFloat(buf, float64(e.OldStateNs)/1e6, 'f', 3, 64)
		buf = rightAlign(buf, start, msW)
	} else {
		buf = padLeft(buf, "-", msW)
	}
	if p.wide {
		buf = append(buf, ' ', '0', 'x')
		start = len(buf)
		buf = strconv.AppendUint(buf, e.Skaddr, 16)
		buf = fill(buf, skW-2-(len(buf)-start)+1)
		buf = padLeftNum(buf, uint64(e.CPUPid), pidW)
		buf = append(buf, ' ')
		buf = padName(buf, e.CPUComm.Bytes(), commW)
		buf = pad(buf, e.Family.String(), 6)
		buf = pad(buf, ownerWord(e), 9)
	} else {
		buf = append(buf, ' ')
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

func ownerWord(e *model.Event) string {
	switch {
	case !e.OwnerKnown():
		return "unknown"
	case e.Flags&model.FlagOwnerInherited != 0:
		return "inherited"
	}
	return "known"
}

// addrPad pads the column that starts at start, widening it for good if the
// address did not fit.
func (p *tablePrinter) addrPad(buf []byte, start int) []byte {
	if n := len(buf) - start; n > p.addrW {
		p.addrW = n
	}
	return fill(buf, p.addrW-(len(buf)-start)+1)
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

func fill(buf []byte, n int) []byte {
	for ; n > 0; n-- {
		buf = append(buf, ' ')
	}
	return buf
}

// pad writes s left-aligned in a column of width w and one space.
func pad(buf []byte, s string, w int) []byte {
	buf = append(buf, s...)
	return fill(buf, w-len(s)+1)
}

// padName writes a task name (whatever the task set with prctl) escaped by
// termsafe, left-aligned in a column of w terminal columns and one space:
// padded by its display width, not its bytes.
func padName(buf []byte, s []byte, w int) []byte {
	buf, n := termsafe.Append(buf, s)
	return fill(buf, w-n+1)
}

func padLeft(buf []byte, s string, w int) []byte {
	buf = fill(buf, w-len(s))
	return append(buf, s...)
}

func padLeftNum(buf []byte, v uint64, w int) []byte {
	start := len(buf)
	buf = strconv.AppendUint(buf, v, 10)
	return rightAlign(buf, start, w)
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
