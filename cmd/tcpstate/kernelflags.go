package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tcpstate/tcpstate/internal/termsafe"
	"github.com/tcpstate/tcpstate/tracer"
)

// kernelFlags are the flags that shape the kernel side, shared by every
// command that loads the tracing programs.
type kernelFlags struct {
	maxSockets   int
	acceptHook   string
	rescueNested bool
	verbose      bool
	// allowLargeMaps lets map sizes above the defaults take more than
	// mapMemoryPercent of the host's memory.
	allowLargeMaps bool
}

// mapMemoryPercent is the share of the host's memory (MemTotal) that map
// sizes above the defaults may take without --allow-large-maps. A tracer
// that takes more is more likely to hurt the host than to help watch it:
// measured, --max-sockets 16777216 --ring-size 1073741824 took 3.5 GiB and
// 8.5 s to start.
const mapMemoryPercent = 10

// hostMemTotal is the host's memory in bytes (a variable for tests).
var hostMemTotal = tracer.HostMemTotal

const maxMaxSockets = 1 << 24

func (k *kernelFlags) register(f *pflag.FlagSet) {
	hooks := make([]string, len(tracer.AcceptHooks))
	for i, h := range tracer.AcceptHooks {
		hooks[i] = string(h)
	}
	atStart, held := tracer.SocketMemory()
	f.IntVar(&k.maxSockets, "max-sockets", tracer.DefaultMaxSockets,
		"sockets that may wait at once for a filter decision (their held events, up to 4 each) or for their first event after accept(); "+
			"past it their events are counted as lost (no held-back queue) or they keep their listener's owner (accept records not kept). "+
			"Kernel memory: "+fmtBytes(atStart)+" each from the start ("+fmtBytes(atStart*tracer.DefaultMaxSockets)+" at the default; the accept map is preallocated), "+
			"and "+fmtBytes(held)+" more for each socket whose events are held back (--port, --lport, --rport, --pid) while it waits; "+
			"sizes that would take more than "+fmt.Sprint(mapMemoryPercent)+"% of the host's memory need --allow-large-maps. "+
			"Owners, states and durations live in each socket and are not bounded by it")
	f.BoolVar(&k.allowLargeMaps, "allow-large-maps", false,
		fmt.Sprintf("start even if the map sizes asked for (--max-sockets, and trace's --ring-size) would take more than %d%% of the host's memory (MemTotal)", mapMemoryPercent))
	f.StringVar(&k.acceptHook, "accept-hook", string(tracer.AcceptAuto),
		"how accepted sockets get their owner: "+strings.Join(hooks, ", ")+
			"; auto takes fexit/inet_csk_accept where the kernel loads it, else the accept syscall tracepoints, which cost every system call on the host; "+
			"off: accepted sockets keep their listener's owner until their owner shuts them down or closes them")
	f.BoolVar(&k.rescueNested, "rescue-nested", false,
		"attach a second program that handles transitions the kernel skips while the first runs on the same CPU (recursion misses); costs every transition")
	f.BoolVar(&k.verbose, "verbose", false, "print the verifier's full log if the kernel rejects a program, and which optional programs are in use")
}

// apply validates the flags into t; a bad value is a usage error.
func (k *kernelFlags) apply(t *tracer.Options) error {
	if k.maxSockets < 16 || k.maxSockets > maxMaxSockets {
		return usagef("--max-sockets %d: must be from 16 to %d", k.maxSockets, maxMaxSockets)
	}
	hook, err := tracer.ParseAcceptHook(k.acceptHook)
	if err != nil {
		return usagef("--accept-hook: %v", err)
	}
	t.MaxSockets, t.Accept, t.RescueNested, t.Verbose = k.maxSockets, hook, k.rescueNested, k.verbose
	if k.allowLargeMaps {
		return nil
	}
	return checkMapMemory(t)
}

// checkMapMemory refuses map sizes above the defaults whose memory is more
// than mapMemoryPercent of the host's, with the figures. t has its map
// sizes and filters set (a ring size of 0 is the default).
func checkMapMemory(t *tracer.Options) error {
	ringFlag := t.Mode != tracer.ModeAggregate // stats has no ring to size
	if t.MaxSockets <= tracer.DefaultMaxSockets && (!ringFlag || t.RingSize <= tracer.DefaultRingSize) {
		return nil // the defaults are for every host
	}
	total, err := hostMemTotal()
	if err != nil {
		return nil // nothing to compare with: the kernel will say if it runs out
	}
	limit := total / 100 * mapMemoryPercent
	m := t.Memory()
	if m.AtMost() <= limit {
		return nil
	}
	flags := fmt.Sprintf("--max-sockets %d", t.MaxSockets)
	if ringFlag {
		flags += fmt.Sprintf(" and --ring-size %d", t.RingSize)
	}
	most := ""
	if m.Held > 0 {
		most = fmt.Sprintf(" and up to %s with every held-back queue in use", fmtBytes(m.AtMost()))
	}
	return usagef("%s would take %s of kernel memory from the start (ring buffer %s, accept map %s, held-back index %s)%s: "+
		"more than %d%% of this host's memory (MemTotal %s: at most %s); choose smaller sizes, or add --allow-large-maps to start anyway",
		flags, fmtBytes(m.AtStart()), fmtBytes(m.Ring), fmtBytes(m.Accepted), fmtBytes(m.HeldIndex), most,
		mapMemoryPercent, fmtBytes(total), fmtBytes(limit))
}

// fmtBytes prints a size in bytes as 568 B, 7.5 MiB, 2.9 GiB.
func fmtBytes(n uint64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// printFeatures writes, for --verbose, each optional part of the tracer:
// in use and how, or why not and what that costs.
func printFeatures(w io.Writer, t *tracer.Tracer) {
	for _, f := range t.Features() {
		state := "in use"
		if !f.Active {
			state = "not in use"
		}
		line := fmt.Sprintf("tcpstate: %s: %s: %s", f.Name, state, f.Detail)
		if !f.Active && f.Without != "" {
			line += "; without it: " + f.Without
		}
		fmt.Fprintln(w, termsafe.String(line))
	}
}
