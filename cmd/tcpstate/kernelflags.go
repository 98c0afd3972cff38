package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/tcpstate/tcpstate/tracer"
)

// kernelFlags are the flags that shape the kernel side, shared by every
// command that loads the tracing programs.
type kernelFlags struct {
	maxSockets   int
	acceptHook   string
	rescueNested bool
	verbose      bool
}

const maxMaxSockets = 1 << 24

func (k *kernelFlags) register(f *pflag.FlagSet) {
	hooks := make([]string, len(tracer.AcceptHooks))
	for i, h := range tracer.AcceptHooks {
		hooks[i] = string(h)
	}
	f.IntVar(&k.maxSockets, "max-sockets", tracer.DefaultMaxSockets,
		"sockets that may wait at once for a filter decision (their held events, up to 4 each, ~0.5 KiB) or for their first event after accept() (~0.1 KiB); "+
			"memory is taken only while they wait; past it their events are counted as lost (no held-back queue) or they keep their listener's owner (accept records not kept). "+
			"Owners, states and durations live in each socket and are not bounded by it")
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
	return nil
}
