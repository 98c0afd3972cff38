package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The tax on unrelated system calls. A tracer attached to any syscall
// tracepoint (tcpstate's --accept-hook syscalls; auto where the kernel
// refuses fexit) sets SYSCALL_WORK_SYSCALL_TRACEPOINT on every task, and
// every system call of every process then takes the slow path through the
// tracepoint hooks, traced or not. getppid(2) does almost nothing else, so
// the runner's own getppid loop, with the tracer attached and before the
// load, measures that per-call cost; the baseline runs it with no tracer.

// measureGetppid fills r's getppid figures, unless e says not to measure,
// and notes the syscall tracepoints attached meanwhile: tracerPid is the
// tracer's (0: no tracer).
func measureGetppid(e *env, r *runResult, tracerPid int) {
	if e.sysSamples < 1 || e.sysCalls < 1 {
		return
	}
	noteForeignSyscallTracepoints(r, tracerPid)
	defer noteForeignSyscallTracepoints(r, tracerPid)
	self := os.Getpid()
	c0, _ := processCPU(self)
	sys0, _ := readCPUTimes()
	r.GetppidNs = getppidNs(e.sysSamples, e.sysCalls)
	sys1, _ := readCPUTimes()
	c1, _ := processCPU(self)
	if dt := float64(sys1.total - sys0.total); dt > 0 {
		busy := float64((sys1.busy+sys1.irq)-(sys0.busy+sys0.irq)) / userHZ
		r.GetppidOthersPct = max(0, 100*(busy-(c1-c0))/(dt/userHZ))
	}
}

// getppidNs times samples loops of calls getppid(2) each, on one OS thread,
// and returns the fastest loop's ns per call: other work on the machine can
// only slow a loop down, so the best one is the closest to the cost itself.
func getppidNs(samples, calls int) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best := math.Inf(1)
	for range samples {
		t0 := time.Now()
		for range calls {
			unix.Getppid()
		}
		if ns := float64(time.Since(t0).Nanoseconds()) / float64(calls); ns < best {
			best = ns
		}
	}
	return best
}

// syscallTracepoints returns the syscall tracepoints attached on the host,
// split into those of programs in own (the tracer's) and the others'
// ("syscalls:sys_exit_accept4 (prog 3729)"): BPF links on a
// syscalls:sys_{enter,exit}_* or raw_syscalls:sys_{enter,exit} tracepoint,
// and ftrace events enabled in tracefs' set_event. Either kind sets the flag
// on every task, so another process's slows every system call, the
// baseline's and the load's included. Not seen: BPF programs attached with
// the older perf ioctl (no link to list) and tp_btf programs on sys_enter.
func syscallTracepoints(own map[uint64]bool) (mine int, others []string) {
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue
		}
		var name string
		if pe := info.PerfEvent(); pe != nil {
			if tp := pe.Tracepoint(); tp != nil && (strings.HasPrefix(tp.Tracepoint, "sys_enter_") || strings.HasPrefix(tp.Tracepoint, "sys_exit_")) {
				name = "syscalls:" + tp.Tracepoint
			}
		} else if rt := info.RawTracepoint(); rt != nil && (rt.Name == "sys_enter" || rt.Name == "sys_exit") {
			name = "raw_syscalls:" + rt.Name
		}
		if name == "" {
			continue
		}
		if own[uint64(info.Program)] {
			mine++
		} else {
			others = append(others, fmt.Sprintf("%s (prog %d)", name, info.Program))
		}
	}
	for _, mnt := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(mnt + "/set_event")
		if err != nil {
			continue
		}
		for _, ev := range strings.Fields(string(b)) {
			if strings.HasPrefix(ev, "syscalls:") || strings.HasPrefix(ev, "raw_syscalls:") {
				others = append(others, ev+" (ftrace)")
			}
		}
		break
	}
	return mine, others
}

// noteForeignSyscallTracepoints adds to r the syscall tracepoints that
// processes other than tracerPid (0: no tracer) hold now, once each, and
// how many the tracer holds.
func noteForeignSyscallTracepoints(r *runResult, tracerPid int) {
	var own map[uint64]bool
	if tracerPid != 0 {
		own = heldProgIDs(tracerPid)
	}
	mine, others := syscallTracepoints(own)
	r.OwnSyscallTracepoints = max(r.OwnSyscallTracepoints, mine)
	for _, o := range others {
		if !slices.Contains(r.ForeignSyscallTracepoints, o) {
			r.ForeignSyscallTracepoints = append(r.ForeignSyscallTracepoints, o)
		}
	}
}
