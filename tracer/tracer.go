// Package tracer owns every kernel resource tcpstate uses: it checks the
// environment, loads the BPF objects (only the programs a command needs),
// fills the filter maps, attaches the programs, reads the ring buffer and
// the maps, and closes it all again, in reverse order.
package tracer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Detach stops new events: it closes the links but keeps maps and the
// ring, so the ring can be drained and the counters read.
func (t *Tracer) Detach() error {
	if t.stopWatch != nil {
		t.stopWatch()
		t.stopWatch = nil
	}
	var errs []error
	for _, l := range slices.Backward(t.links) {
		errs = append(errs, l.Close())
	}
	t.links = nil
	return errors.Join(errs...)
}

// Close detaches and releases everything, in reverse order of acquisition:
// the links, a tracefs that tcpstate mounted for them, the ring, the
// programs, the maps.
func (t *Tracer) Close() error {
	errs := []error{t.Detach()}
	if t.unmountTracefs != nil {
		// Not an error of the run: the user is told it stays.
		if err := t.unmountTracefs(); err != nil && t.opts.Warn != nil {
			t.opts.Warn(fmt.Sprintf("tcpstate mounted tracefs on %s and could not unmount it at exit (%v): it stays mounted", t.tracefs, err))
		}
		t.unmountTracefs = nil
	}
	if t.ring != nil {
		errs = append(errs, t.ring.Close())
		t.ring = nil
	}
	for _, p := range slices.Backward(t.progs) {
		errs = append(errs, p.Close())
	}
	t.progs, t.names = nil, nil
	errs = append(errs, t.maps.Close())
	if t.ownCgroups {
		t.cgroups.Close()
		t.ownCgroups = false
	}
	if t.coll != nil {
		t.coll.Close()
		t.coll = nil
	}
	return errors.Join(errs...)
}

// Counters is what the kernel side counted, host-wide.
type Counters struct {
	// Transitions the programs handled, before any filter (the rescued
	// ones included, the lost ones not).
	Transitions uint64 `json:"transitions"`
	// Sockets counts socket incarnations: births, and sockets first seen
	// in the middle of their life.
	Sockets uint64 `json:"sockets"`
	// SocketsLive counts the sockets followed now (not closed): Summary
	// sets it.
	SocketsLive uint64 `json:"sockets_live"`

	// Events lost, by cause.
	RingbufFull     uint64 `json:"ringbuf_full"`     // the ring buffer had no room
	RecursionMisses uint64 `json:"recursion_misses"` // the kernel skipped the program (nested run), not rescued
	HeldOverflow    uint64 `json:"held_overflow"`    // a socket's held-back queue was full
	HeldNoSpace     uint64 `json:"held_no_space"`    // no held-back queue could be made (--max-sockets)
	UndecidedClosed uint64 `json:"undecided_closed"` // held for an owner or port never learnt, dropped at -> CLOSE

	// Rescued counts nested transitions the main program missed and the
	// rescue program handled (not lost).
	Rescued uint64 `json:"rescued"`
	// NoState counts transitions of sockets whose storage the kernel could
	// not make (their option memory was exhausted): delivered without
	// owner, duration or continuity.
	NoState uint64 `json:"no_state"`

	Accepts       uint64 `json:"accepts"`         // owners named by accept()
	AcceptNoSpace uint64 `json:"accept_no_space"` // accept() owners not recorded (--max-sockets)
	AcceptStale   uint64 `json:"accept_stale"`    // accept() records of sockets freed before their next event

	// Kernel run-time statistics of the main program; ProgRunNs is 0
	// unless kernel.bpf_stats_enabled is set.
	ProgRuns  uint64 `json:"prog_runs"`
	ProgRunNs uint64 `json:"prog_run_ns"`

	// Gaps counts the counted transitions (ModeAggregate) whose old state
	// is not the socket's last one; GapsAfterLoss those of them with a loss
	// counted since the socket's previous event; GapMissing the fewest
	// transitions the other gaps prove missing, which no counter saw.
	Gaps          uint64 `json:"gaps"`
	GapsAfterLoss uint64 `json:"gaps_after_loss"`
	GapMissing    uint64 `json:"gap_missing"`

	// ResetsNoSocket counts the resets the kernel sent, host-wide, for
	// packets that matched no socket (a SYN to a port nothing listens on,
	// a segment of a connection long gone): there is no socket to give
	// them to, so they are no close's cause. nil where the kernel cannot
	// count them (JSON: the key is absent): before Linux 6.10
	// tcp:tcp_send_reset fires only for full sockets.
	ResetsNoSocket *uint64 `json:"resets_no_socket,omitempty"`

	// LossSeq is the kernel's loss sequence: every event counted lost, the
	// recursion misses included where Tracer.ExactLoss says so (without
	// them otherwise). Every event carries the value it saw.
	LossSeq uint64 `json:"loss_seq"`
}

// Lost sums the events lost by every cause.
func (c Counters) Lost() uint64 {
	return c.LostFiltered() + c.LostHostWide()
}

// LostFiltered sums the losses of events that had passed the filters: the
// ring buffer was full, or held-back events could not be kept. They belong
// to the sockets a filtered run is about.
func (c Counters) LostFiltered() uint64 {
	return c.RingbufFull + c.HeldOverflow + c.HeldNoSpace + c.UndecidedClosed
}

// LostHostWide is the loss the kernel cannot attribute: recursion misses
// (the program did not run, so no filter looked at the transition). It is
// the whole host's, whatever the filters.
func (c Counters) LostHostWide() uint64 { return c.RecursionMisses }

// Counters reads the kernel's counters: a few system calls.
func (t *Tracer) Counters() (Counters, error) {
	var c Counters
	per, err := t.allCounters()
	if err != nil {
		return c, err
	}
	c.Transitions = per[tcpstateCounterCNT_SEEN]
	c.Sockets = per[tcpstateCounterCNT_SOCKETS]
	c.RingbufFull = per[tcpstateCounterCNT_RINGBUF_FULL]
	c.HeldOverflow = per[tcpstateCounterCNT_HELD_OVERFLOW]
	c.HeldNoSpace = per[tcpstateCounterCNT_HELD_NOSPACE]
	c.UndecidedClosed = per[tcpstateCounterCNT_UNDECIDED_CLOSED]
	c.NoState = per[tcpstateCounterCNT_NO_STATE]
	c.Accepts = per[tcpstateCounterCNT_ACCEPT]
	c.AcceptNoSpace = per[tcpstateCounterCNT_ACCEPT_NOSPACE]
	c.AcceptStale = per[tcpstateCounterCNT_ACCEPT_STALE]
	c.Rescued = per[tcpstateCounterCNT_RESCUED]
	c.Gaps = per[tcpstateCounterCNT_GAP]
	c.GapsAfterLoss = per[tcpstateCounterCNT_GAP_AFTER_LOSS]
	c.GapMissing = per[tcpstateCounterCNT_GAP_MISSING]
	if t.resetsNoSocket {
		n := per[tcpstateCounterCNT_RST_NO_SOCKET]
		c.ResetsNoSocket = &n
	}
	if err := t.vars.LossSeq.Get(&c.LossSeq); err != nil {
		return c, fmt.Errorf("reading the loss sequence: %w", err)
	}
	st, err := t.setState.Stats()
	if err != nil {
		return c, fmt.Errorf("reading program stats: %w", err)
	}
	c.ProgRuns, c.ProgRunNs = st.RunCount, uint64(st.Runtime)
	if st.RecursionMisses > c.Rescued {
		c.RecursionMisses = st.RecursionMisses - c.Rescued
	}
	return c, nil
}

// Summary is Counters with the live sockets counted too (a walk of every
// socket's storage): call it after Detach for exact figures.
func (t *Tracer) Summary() (Counters, error) {
	c, err := t.Counters()
	if err != nil {
		return c, err
	}
	if t.dump != nil {
		socks, err := t.Sockets()
		if err != nil {
			return c, err
		}
		c.SocketsLive = uint64(len(socks))
	}
	return c, nil
}

func (t *Tracer) allCounters() ([tcpstateCounterCNT_MAX]uint64, error) {
	var per [tcpstateCounterCNT_MAX]uint64
	var vals []uint64
	for i := range tcpstateCounterCNT_MAX {
		if err := t.maps.Counters.Lookup(uint32(i), &vals); err != nil {
			return per, fmt.Errorf("reading counters: %w", err)
		}
		per[i] = sumAll(vals)
	}
	return per, nil
}

// ProgramStats is the kernel's run-time statistics of one program. Runs and
// RunNs stay 0 unless kernel.bpf_stats_enabled is set (BPF_ENABLE_STATS).
type ProgramStats struct {
	Name            string `json:"name"`
	Runs            uint64 `json:"runs"`
	RunNs           uint64 `json:"run_ns"`
	RecursionMisses uint64 `json:"recursion_misses"`
}

// ProgramStats reads the statistics of every loaded program.
func (t *Tracer) ProgramStats() ([]ProgramStats, error) {
	var out []ProgramStats
	for _, p := range t.progs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("reading program stats: %w", err)
		}
		info, err := p.Info()
		name := ""
		if err == nil {
			name = info.Name
		}
		out = append(out, ProgramStats{Name: name, Runs: st.RunCount, RunNs: uint64(st.Runtime), RecursionMisses: st.RecursionMisses})
	}
	return out, nil
}

func sumAll(vals []uint64) uint64 {
	var n uint64
	for _, v := range vals {
		n += v
	}
	return n
}

// monotonicNow is the host's CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns and of every kernel timestamp tcpstate reads: this
// process's CLOCK_MONOTONIC less its time namespace's offset.
func monotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() - timensOffset()
}

// timensOffset is the monotonic offset of this process's time namespace
// (/proc/self/timens_offsets, Linux 5.6; 0 outside one, or without
// CONFIG_TIME_NS). A process cannot change it once it runs in the
// namespace, so it is read once.
var timensOffset = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/self/timens_offsets")
	if err != nil {
		return 0
	}
	off, _ := parseTimensOffsets(b)
	return off
})

// parseTimensOffsets reads the monotonic line of /proc/PID/timens_offsets:
// "monotonic <seconds> <nanoseconds>" (the clock is named by its number,
// 1, on kernels that print no names).
func parseTimensOffsets(b []byte) (int64, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || (f[0] != "monotonic" && f[0] != "1") {
			continue
		}
		sec, err1 := strconv.ParseInt(f[1], 10, 64)
		nsec, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return sec*1e9 + nsec, true
	}
	return 0, false
}
