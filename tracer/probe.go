package tracer

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// The kernel's features, probed from its BTF before a program is loaded:
// a program whose attach point, helper or kfunc the kernel lacks is not
// loaded at all, and the message names what is missing and the Linux
// version that brought it, rather than a verifier error.

// need is one thing a program needs from the kernel.
type need struct {
	what  string // as the message says it: "the bpf_rdonly_cast kfunc"
	since string // the Linux version that brought it: "6.2"
	until string // the version that changed it again ("" while it is there)
	has   func(*btf.Spec) bool
}

// versions says which kernels have it, for messages.
func (n need) versions() string {
	if n.until != "" {
		return fmt.Sprintf("Linux %s to %s", n.since, prevVersion(n.until))
	}
	return "Linux " + n.since
}

// prevVersion: the release before "6.10" is "6.9" (no 6.0 before 6.1: 5.19).
func prevVersion(v string) string {
	var maj, min int
	if _, err := fmt.Sscanf(v, "%d.%d", &maj, &min); err != nil {
		return "before " + v
	}
	if min == 0 {
		return fmt.Sprintf("before %d.0", maj)
	}
	return fmt.Sprintf("%d.%d", maj, min-1)
}

// btfFunc: a kernel function (a helper's or a kfunc's implementation, or
// an iterator's bpf_iter_NAME) is in the kernel's BTF.
func btfFunc(name string) func(*btf.Spec) bool {
	return func(s *btf.Spec) bool {
		var fn *btf.Func
		return s.TypeByName(name, &fn) == nil
	}
}

// tracepointArgs: the raw tracepoint's BTF (typedef btf_trace_NAME, a
// pointer to a function whose first argument is the context) takes n
// arguments after the context.
func tracepointArgs(name string, n int) func(*btf.Spec) bool {
	return func(s *btf.Spec) bool {
		var td *btf.Typedef
		if s.TypeByName("btf_trace_"+name, &td) != nil {
			return false
		}
		ptr, ok := td.Type.(*btf.Pointer)
		if !ok {
			return false
		}
		proto, ok := ptr.Target.(*btf.FuncProto)
		return ok && len(proto.Params) == n+1
	}
}

func tracepointExists(name string) func(*btf.Spec) bool {
	return func(s *btf.Spec) bool {
		var td *btf.Typedef
		return s.TypeByName("btf_trace_"+name, &td) == nil
	}
}

var (
	needRdonlyCast = need{"the bpf_rdonly_cast kfunc", "6.2", "", btfFunc("bpf_rdonly_cast")}
	needLoop       = need{"the bpf_loop helper", "5.17", "", btfFunc("bpf_loop")}
	needPercpuElem = need{"the bpf_map_lookup_percpu_elem helper", "5.19", "", btfFunc("bpf_map_lookup_percpu_elem")}
	needIterProg   = need{"the bpf_prog iterator", "5.9", "", btfFunc("bpf_iter_bpf_prog")}
	needIterTCP    = need{"the tcp iterator", "5.9", "", btfFunc("bpf_iter_tcp")}
	needIterFile   = need{"the task_file iterator", "5.8", "", btfFunc("bpf_iter_task_file")}
	needSockFile   = need{"the bpf_sock_from_file helper", "5.11", "", btfFunc("bpf_sock_from_file")}
	needIterStore  = need{"the bpf_sk_storage_map iterator", "5.9", "", btfFunc("bpf_iter_bpf_sk_storage_map")}
	needResetWhy   = need{"the tcp:tcp_send_reset tracepoint with its reason argument", "6.10", "", tracepointArgs("tcp_send_reset", 3)}
	needResetV1    = need{"the tcp:tcp_send_reset tracepoint without a reason argument", "4.16", "6.10", tracepointArgs("tcp_send_reset", 2)}
	needRecvReset  = need{"the tcp:tcp_receive_reset tracepoint", "4.16", "", tracepointExists("tcp_receive_reset")}
	needAcceptFunc = need{"the inet_csk_accept function in BTF", "5.5", "", btfFunc("inet_csk_accept")}
)

// kernelRelease is uname -r.
var kernelRelease = sync.OnceValue(func() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
})

// LacksError is a program the running kernel cannot load: it lacks
// something the program needs. Its message names it and the Linux version
// that has it.
type LacksError struct {
	Program string
	Need    need
}

func (e *LacksError) Error() string {
	return fmt.Sprintf("%s needs %s (%s; this kernel is %s)", e.Program, e.Need.what, e.Need.versions(), kernelRelease())
}

// warnLoss says that an optional part is lost (msg), to Lacks where err
// says the kernel lacks what it needs, else to Warn.
func (t *Tracer) warnLoss(msg string, err error) {
	if _, ok := errors.AsType[*LacksError](err); ok {
		t.opts.Lacks(msg)
		return
	}
	t.opts.Warn(msg)
}

// probe returns a *LacksError for the first need of program the kernel
// lacks, nil when it has them all (or its BTF cannot be read: then loading
// tells).
func probe(spec *btf.Spec, program string, needs []need) error {
	if spec == nil {
		return nil
	}
	for _, n := range needs {
		if !n.has(spec) {
			return &LacksError{Program: program, Need: n}
		}
	}
	return nil
}
