package tracer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

const (
	kernelBTF     = "/sys/kernel/btf/vmlinux"
	tracefsMount  = "/sys/kernel/tracing"
	capPerfmon    = 38
	capBPF        = 39
	capSysAdmin   = 21
	tracepointBTF = "btf_trace_inet_sock_set_state"
)

// ErrPrivileges, ErrNoBTF and ErrNoTracepoint classify Open's failures
// for callers and tests.
var (
	ErrPrivileges   = errors.New("missing privileges")
	ErrNoBTF        = errors.New("kernel has no BTF")
	ErrNoTracepoint = errors.New("kernel has no sock:inet_sock_set_state tracepoint")
)

// checkEnvironment says plainly what is missing before the loader fails
// with a less helpful errno.
func checkEnvironment() error {
	if missing := missingCaps(); len(missing) > 0 {
		return fmt.Errorf("%w: tcpstate needs CAP_BPF and CAP_PERFMON (or root) to load its eBPF programs; this process lacks %s: run it as root (sudo tcpstate ...) or grant the capabilities",
			ErrPrivileges, strings.Join(missing, " and "))
	}
	return checkKernel(kernelBTF, btf.LoadKernelSpec)
}

// checkKernel checks that the kernel has BTF at btfPath and, in the spec
// load returns, the tracepoint's BTF type (tp_btf attaches by it). It reads
// the file itself first: a BTF that is there but may not be read is a
// question of privileges, not a kernel without BTF (and cilium/ebpf, failing
// to open it, goes on to look for vmlinux files elsewhere and reports that
// it found none).
func checkKernel(btfPath string, load func() (*btf.Spec, error)) error {
	f, err := os.Open(btfPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s is missing; tcpstate needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8 or later)",
			ErrNoBTF, btfPath)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: the kernel's BTF, %s, cannot be read by this process (permission denied); run tcpstate as root or make the file readable",
			ErrPrivileges, btfPath)
	case err != nil:
		return fmt.Errorf("%w: cannot read %s: %v", ErrNoBTF, btfPath, errors.Unwrap(err))
	}
	f.Close()
	spec, err := load()
	if err != nil {
		return fmt.Errorf("%w: reading %s: %v", ErrNoBTF, btfPath, err)
	}
	var td *btf.Typedef
	if err := spec.TypeByName(tracepointBTF, &td); err != nil {
		return fmt.Errorf("%w (added in Linux 4.16): its BTF type %s is not in %s",
			ErrNoTracepoint, tracepointBTF, btfPath)
	}
	return nil
}

// missingCaps names the capabilities the effective set lacks. CAP_SYS_ADMIN
// covers both on any kernel.
func missingCaps() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil // let the loader report it
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) {
		return nil
	}
	var missing []string
	if !has(capBPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) {
		missing = append(missing, "CAP_PERFMON")
	}
	return missing
}

// ensureTracefs mounts tracefs where the kernel expects it if nothing has:
// the accept tracepoints are classic tracepoints, found through tracefs.
func ensureTracefs() error {
	if _, err := os.Stat(tracefsMount + "/events"); err == nil {
		return nil
	}
	if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("tracefs", tracefsMount, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted and mounting it on %s failed: %v", tracefsMount, err)
	}
	return nil
}

// loadError explains why the kernel refused program name: the verifier's
// verdict (its whole log with verbose), or missing privileges.
func loadError(name string, err error, verbose bool) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		if verbose {
			return fmt.Errorf("the kernel's verifier rejected tcpstate's BPF program %s:\n%+v", name, ve)
		}
		return fmt.Errorf("the kernel's verifier rejected tcpstate's BPF program %s: %v (run with --verbose for the full verifier log)", name, ve)
	}
	return privilegeHint(fmt.Errorf("loading BPF program %s: %w", name, cleanKernelError(err)))
}

func privilegeHint(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: %w (tcpstate needs CAP_BPF and CAP_PERFMON, or root)", ErrPrivileges, err)
	}
	return err
}

// cleanKernelError drops the library's guess that a refusal is about the
// locked-memory limit: kernels since 5.11 account BPF memory to the cgroup,
// and tcpstate checks its privileges before loading, so an EPERM here is
// the kernel refusing the program, not memlock.
func cleanKernelError(err error) error {
	msg := err.Error()
	cleaned := strings.ReplaceAll(msg, " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", "")
	if cleaned == msg {
		return err
	}
	return &cleanedError{msg: cleaned, err: err}
}

type cleanedError struct {
	msg string
	err error
}

func (e *cleanedError) Error() string { return e.msg }
func (e *cleanedError) Unwrap() error { return e.err }
