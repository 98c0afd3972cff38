package tracer

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// role says when a program is loaded.
type role int

const (
	required  role = iota // every tracing command; Load fails without it
	optional              // loaded where the kernel allows; without it, Without applies
	onRequest             // only when an option asks for it
	testOnly              // only in tests (Options.Replay)
)

// progInfo describes one program of bpf/tcpstate.bpf.c.
type progInfo struct {
	Name    string
	role    role
	What    string // what it does
	Needs   string // the kernel feature it needs, and since when
	Without string // what the user loses without it
	needs   []need // probed in the kernel's BTF before loading (probe.go)
}

// programs is every program of the object, in load order. The messages
// shown when the kernel lacks one come from here.
var programs = []progInfo{
	{Name: "handle_set_state", role: required,
		What:  "every TCP state transition (tp_btf/inet_sock_set_state)",
		Needs: "BTF, tp_btf programs and socket storage in tracing programs (Linux 5.11 or later)"},
	{Name: "dump_sock_states", role: optional,
		What:    "lists the sockets the kernel follows (stuck-socket lists)",
		Needs:   "the bpf_sk_storage_map iterator (Linux 5.9 or later)",
		Without: "no stuck-socket lists", needs: []need{needIterStore}},
	{Name: "snap_tcp", role: optional,
		What:    "reads every TCP socket of a network namespace, timewait and request sockets included (iter/tcp)",
		Needs:   "iter/tcp (Linux 5.9)",
		Without: "sockets older than the tracer are known only from their next transition", needs: []need{needIterTCP}},
	{Name: "snap_files", role: optional,
		What:    "reads the sockets every process holds open, in every namespace (iter/task_file)",
		Needs:   "iter/task_file with bpf_sock_from_file (Linux 5.11)",
		Without: "sockets older than the tracer are known only from their next transition", needs: []need{needIterFile, needSockFile}},
	{Name: "accept_fexit", role: optional,
		What:    "names the owner of an accepted socket at accept() (fexit/inet_csk_accept)",
		Needs:   "BPF trampolines (fexit, Linux 5.5 or later; some kernel builds refuse them)",
		Without: "the accept syscall tracepoints name accepted sockets' owners instead, at a cost to every system call", needs: []need{needAcceptFunc}},
	{Name: "accept4_exit", role: optional,
		What:    "names the owner of a socket accepted with accept4() (tracepoint syscalls:sys_exit_accept4)",
		Needs:   "tracefs and syscall tracepoints (CONFIG_FTRACE_SYSCALLS)",
		Without: "accepted sockets keep their listener's owner until their owner shuts them down or closes them"},
	{Name: "accept_exit", role: optional,
		What:    "names the owner of a socket accepted with accept() (tracepoint syscalls:sys_exit_accept)",
		Needs:   "tracefs and syscall tracepoints (CONFIG_FTRACE_SYSCALLS)",
		Without: "sockets accepted with accept() keep their listener's owner until their owner shuts them down or closes them"},
	{Name: "find_self", role: optional,
		What:    "counts recursion misses into the loss sequence exactly (iter/bpf_prog, run once)",
		Needs:   "iter/bpf_prog (Linux 5.9), bpf_loop (5.17), bpf_map_lookup_percpu_elem (5.19) and bpf_rdonly_cast (6.2)",
		Without: "recursion misses are matched to gaps by when they were read (every poll interval), not exactly",
		needs:   []need{needIterProg, needLoop, needPercpuElem, needRdonlyCast}},
	{Name: "handle_send_reset", role: optional,
		What:    "marks a socket that sends a reset, with the reason, and counts the resets sent for packets that matched no socket (tp_btf/tcp_send_reset)",
		Needs:   "the tcp:tcp_send_reset tracepoint with its reason argument (Linux 6.10)",
		Without: "resets sent have no reason (the older tracepoint marks them), and those for packets that matched no socket are not counted", needs: []need{needResetWhy}},
	{Name: "handle_send_reset_v1", role: optional,
		What:    "marks a socket that sends a reset (tp_btf/tcp_send_reset before Linux 6.10)",
		Needs:   "the tcp:tcp_send_reset tracepoint (Linux 4.16)",
		Without: "resets sent are inferred from how a socket closed, and have no reason; those for packets that matched no socket are not counted", needs: []need{needResetV1}},
	{Name: "handle_receive_reset", role: optional,
		What:    "marks a socket that receives a reset (tp_btf/tcp_receive_reset)",
		Needs:   "the tcp:tcp_receive_reset tracepoint (Linux 4.16)",
		Without: "resets received are known from the socket error alone", needs: []need{needRecvReset}},
	{Name: "rescue_set_state", role: onRequest,
		What:  "handles transitions the kernel skipped as nested runs (--rescue-nested)",
		Needs: "a second tp_btf program on the same tracepoint"},
	{Name: "replay_set_state", role: testOnly,
		What:  "replays transitions the kernel never makes, for tests",
		Needs: "iter/tcp (Linux 5.9 or later)", needs: []need{needIterTCP}},
}

func programInfo(name string) progInfo {
	for _, p := range programs {
		if p.Name == name {
			return p
		}
	}
	panic("tracer: no program " + name)
}

// Feature is one optional part of the tracer and whether this run has it.
type Feature struct {
	Name    string `json:"name"`
	Active  bool   `json:"active"`
	Detail  string `json:"detail"`            // what is in use, or why not
	Without string `json:"without,omitempty"` // what is lost when inactive
}

// loadProgram loads one program into the collection's maps.
func (t *Tracer) loadProgram(name string) (*ebpf.Program, error) {
	ps, ok := t.spec.Programs[name]
	if !ok {
		return nil, fmt.Errorf("BPF object has no program %s", name)
	}
	one := &ebpf.CollectionSpec{
		Maps:      t.spec.Maps,
		Programs:  map[string]*ebpf.ProgramSpec{name: ps},
		Variables: t.spec.Variables,
		Types:     t.spec.Types,
		ByteOrder: t.spec.ByteOrder,
	}
	opts := ebpf.CollectionOptions{MapReplacements: t.all}
	if t.opts.Verbose {
		opts.Programs.LogLevel = ebpf.LogLevelInstruction
	}
	coll, err := ebpf.NewCollectionWithOptions(one, opts)
	if err != nil {
		return nil, loadError(name, err, t.opts.Verbose)
	}
	defer coll.Close()
	p := coll.DetachProgram(name)
	t.progs = append(t.progs, p)
	t.names = append(t.names, name)
	return p, nil
}

// loadOptional loads a program the tracer can do without, and says why
// not when the kernel refuses it.
func (t *Tracer) loadOptional(name string) (*ebpf.Program, error) {
	info := programInfo(name)
	// What the kernel's BTF shows it lacks is not even tried: the message
	// names what and since when, not a verifier error.
	if err := probe(t.kspec, name, info.needs); err != nil {
		return nil, err
	}
	p, err := t.loadProgram(name)
	if err != nil {
		return nil, fmt.Errorf("%s needs %s (this kernel is %s): %w", info.Name, info.Needs, kernelRelease(), err)
	}
	return p, nil
}

// attachSetState attaches the main program (and, asked for, the rescue
// program after it: probes run in attach order).
func (t *Tracer) attachSetState() error {
	l, err := link.AttachTracing(link.TracingOptions{Program: t.setState})
	if err != nil {
		return privilegeHint(fmt.Errorf("attaching tp_btf/inet_sock_set_state: %w", err))
	}
	t.links = append(t.links, l)
	if t.rescue != nil {
		l, err := link.AttachTracing(link.TracingOptions{Program: t.rescue})
		if err != nil {
			return privilegeHint(fmt.Errorf("attaching the rescue program to tp_btf/inet_sock_set_state: %w", err))
		}
		t.links = append(t.links, l)
		if err := t.vars.RescueNested.Set(uint8(1)); err != nil {
			return fmt.Errorf("enabling the rescue program: %w", err)
		}
	}
	return nil
}

// attachAccept attaches the cheapest accept hook the kernel and the options
// allow, and records which in t.features.
func (t *Tracer) attachAccept() {
	const name = "accept owner"
	var tried []string
	if t.opts.Accept == AcceptOff {
		t.accept = AcceptOff
		t.features = append(t.features, Feature{Name: name, Detail: "off (--accept-hook off)", Without: programInfo("accept4_exit").Without})
		return
	}
	if t.opts.Accept == AcceptAuto || t.opts.Accept == AcceptFexit {
		err := t.attachFexit()
		if err == nil {
			t.accept = AcceptFexit
			t.features = append(t.features, Feature{Name: name, Active: true, Detail: "fexit/inet_csk_accept (runs only on accept)"})
			t.setAcceptOwner()
			return
		}
		tried = append(tried, "fexit: "+err.Error())
	}
	if t.opts.Accept == AcceptAuto || t.opts.Accept == AcceptSyscalls {
		err := t.attachSyscalls()
		if err == nil {
			t.accept = AcceptSyscalls
			detail := "syscalls:sys_exit_accept4 and sys_exit_accept tracepoints (a cost to every system call on the host; see --accept-hook)"
			if t.tracefs != "" {
				detail += "; tcpstate mounted tracefs on " + t.tracefs + " to find them and unmounts it at exit"
			}
			if len(tried) > 0 {
				detail += "; " + strings.Join(tried, "; ")
			}
			t.features = append(t.features, Feature{Name: name, Active: true, Detail: detail})
			t.setAcceptOwner()
			return
		}
		tried = append(tried, "syscall tracepoints: "+err.Error())
	}
	t.accept = AcceptOff
	f := Feature{Name: name, Detail: strings.Join(tried, "; "), Without: programInfo("accept4_exit").Without}
	t.features = append(t.features, f)
	t.opts.Warn(fmt.Sprintf("%s: %s", f.Without, f.Detail))
}

func (t *Tracer) setAcceptOwner() {
	if err := t.vars.AcceptOwner.Set(uint8(1)); err != nil {
		t.opts.Warn(fmt.Sprintf("enabling accept owners: %v", err))
	}
}

func (t *Tracer) attachFexit() error {
	p, err := t.loadOptional("accept_fexit")
	if err != nil {
		return err
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: p})
	if err != nil {
		return fmt.Errorf("attaching fexit/inet_csk_accept: %w", err)
	}
	t.links = append(t.links, l)
	return nil
}

func (t *Tracer) attachSyscalls() error {
	mounted, err := hostTracefs.ensure()
	if err != nil {
		return err
	}
	if mounted != "" {
		// Ours to unmount: Close does, whether or not the attach below
		// works.
		t.tracefs = mounted
		t.unmountTracefs = func() error { return unix.Unmount(mounted, 0) }
	}
	var attached []link.Link
	for _, tp := range []struct{ prog, event string }{
		{"accept4_exit", "sys_exit_accept4"},
		{"accept_exit", "sys_exit_accept"},
	} {
		p, err := t.loadOptional(tp.prog)
		if err == nil {
			var l link.Link
			if l, err = link.Tracepoint("syscalls", tp.event, p, nil); err == nil {
				attached = append(attached, l)
				continue
			}
			var pe *fs.PathError
			if errors.As(err, &pe) && errors.Is(pe, fs.ErrPermission) {
				// A tracefs that tcpstate mounted itself (with
				// CAP_SYS_ADMIN) keeps its files root's.
				err = fmt.Errorf("attaching tracepoint syscalls/%s: tracefs is mounted, but this process may not read its event files (%w): reading them needs root or CAP_DAC_READ_SEARCH", tp.event, pe)
			} else {
				err = fmt.Errorf("attaching tracepoint syscalls/%s: %w", tp.event, err)
			}
		}
		for _, l := range attached {
			l.Close()
		}
		return err
	}
	t.links = append(t.links, attached...)
	return nil
}

// attachResets attaches the reset tracepoints that mark sockets for their
// close cause: the send hook of the kernel's signature (with a reason, and
// a NULL socket for a reset that answers no socket, from 6.10), and the
// receive hook.
func (t *Tracer) attachResets() {
	const name = "reset marks"
	var active []string
	type loss struct {
		msg string
		err error
	}
	var missing []loss
	attach := func(prog string) error {
		p, err := t.loadOptional(prog)
		if err != nil {
			return err
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("attaching %s: %w", prog, err)
		}
		t.links = append(t.links, l)
		active = append(active, prog)
		return nil
	}
	err := attach("handle_send_reset")
	t.resetsNoSocket = err == nil
	if err != nil {
		if err1 := attach("handle_send_reset_v1"); err1 != nil {
			missing = append(missing, loss{programInfo("handle_send_reset_v1").Without + ": " + err.Error(), err1})
		} else {
			missing = append(missing, loss{programInfo("handle_send_reset").Without + ": " + err.Error(), err})
		}
	}
	if err := attach("handle_receive_reset"); err != nil {
		missing = append(missing, loss{programInfo("handle_receive_reset").Without + ": " + err.Error(), err})
	}
	var without []string
	for _, m := range missing {
		t.warnLoss(m.msg, m.err)
		without = append(without, m.msg)
	}
	f := Feature{Name: name, Active: len(active) > 0, Detail: strings.Join(active, ", ")}
	if len(missing) > 0 {
		f.Without = strings.Join(without, "; ")
	}
	t.features = append(t.features, f)
}

// errNoIterator is returned by the listing functions when the kernel lacks
// the iterator they need.
var errNoIterator = errors.New("the kernel lacks the bpf_sk_storage_map iterator")
