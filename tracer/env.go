package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
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
	capSysPtrace  = 19
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
	if ok, uidMap := initialUserNS(); !ok {
		return fmt.Errorf("%w: tcpstate runs in a user namespace (uid_map %q), where capabilities do not count for BPF: the kernel wants CAP_BPF and CAP_PERFMON in the host's user namespace; run it outside the user namespace",
			ErrPrivileges, uidMap)
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
	eff, ok := effectiveCaps()
	if !ok {
		return nil // let the loader report it
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
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

// effectiveCaps is this thread's effective capability set (capget(2)).
func effectiveCaps() (uint64, bool) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, false
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, true
}

// hasCap reports whether the effective set has capability c (true when it
// cannot be read: the kernel will say).
func hasCap(c uint) bool {
	eff, ok := effectiveCaps()
	return !ok || eff&(1<<c) != 0
}

// tracefsEnv is what finding tracefs looks at and does: the host's, or a
// test's stand-in.
type tracefsEnv struct {
	mounts func() ([]string, error)        // where tracefs is mounted (/proc/self/mountinfo)
	fsType func(dir string) (int64, error) // statfs(2)'s f_type
	stat   func(path string) error
	mount  func(dir string) error
}

var hostTracefs = tracefsEnv{
	mounts: func() ([]string, error) {
		f, err := os.Open("/proc/self/mountinfo")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return parseTracefsMounts(f)
	},
	fsType: func(dir string) (int64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0, &fs.PathError{Op: "statfs", Path: dir, Err: err}
		}
		return int64(st.Type), nil
	},
	stat:  func(path string) error { _, err := os.Stat(path); return err },
	mount: func(dir string) error { return unix.Mount("tracefs", dir, "tracefs", 0, "") },
}

// debugTracing is where debugfs mounts tracefs by itself, when debugfs is
// mounted.
const debugTracing = "/sys/kernel/debug/tracing"

// ensureTracefs finds a tracefs this process can read (the accept
// tracepoints are classic tracepoints, found through it), or mounts one on
// /sys/kernel/tracing. It returns where it mounted one, or "" when tracefs
// was there already. Its errors say which of the two was the problem: not
// mounted, or mounted but not readable by this process.
func (e tracefsEnv) ensure() (mounted string, err error) {
	type place struct {
		dir   string
		known bool // listed as tracefs in mountinfo
	}
	var places []place
	mounts, _ := e.mounts() // unreadable: the well-known places still count
	for _, d := range mounts {
		places = append(places, place{d, true})
	}
	for _, d := range []string{tracefsMount, debugTracing} {
		if !slices.Contains(mounts, d) {
			places = append(places, place{dir: d})
		}
	}
	var unchecked []string
	for _, p := range places {
		if !p.known {
			typ, err := e.fsType(p.dir)
			if errors.Is(err, fs.ErrPermission) {
				unchecked = append(unchecked, p.dir)
			}
			if err != nil || typ != unix.TRACEFS_MAGIC {
				continue
			}
		}
		err := e.stat(p.dir + "/events")
		switch {
		case err == nil:
			return "", nil
		case errors.Is(err, fs.ErrPermission):
			return "", fmt.Errorf("tracefs is mounted on %s, but this process may not read it (permission denied): reading it needs root or CAP_DAC_READ_SEARCH", p.dir)
		default:
			return "", fmt.Errorf("tracefs is mounted on %s, but its events cannot be read: %v", p.dir, err)
		}
	}
	msg := "tracefs is not mounted"
	if len(unchecked) > 0 {
		msg += fmt.Sprintf(" (this process may not look into %s: permission denied)", strings.Join(unchecked, " or "))
	}
	if err := e.mount(tracefsMount); err != nil {
		hint := ""
		if errors.Is(err, unix.EPERM) {
			hint = " (mounting needs CAP_SYS_ADMIN)"
		}
		return "", fmt.Errorf("%s, and mounting it on %s failed: %v%s", msg, tracefsMount, err, hint)
	}
	return tracefsMount, nil
}

// parseTracefsMounts lists the mount points of tracefs in a mountinfo file,
// in its order (the order cilium/ebpf picks one in).
func parseTracefsMounts(r io.Reader) ([]string, error) {
	// Mount points escape space, tab, newline and backslash in octal.
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	var dirs []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) >= 5 && len(rf) >= 1 && rf[0] == "tracefs" {
			dirs = append(dirs, unescape.Replace(lf[4]))
		}
	}
	return dirs, sc.Err()
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
	return privilegeHintFor(err, missingCaps())
}

// privilegeHintFor explains an EPERM or EACCES from the kernel: missing
// capabilities if missing names some, else a refusal that capabilities do
// not lift (checkEnvironment has checked them, and the user namespace,
// before anything was loaded).
func privilegeHintFor(err error, missing []string) error {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %w (tcpstate needs CAP_BPF and CAP_PERFMON, or root; this process lacks %s)", ErrPrivileges, err, strings.Join(missing, " and "))
	}
	return fmt.Errorf("%w (refused although this process has CAP_BPF and CAP_PERFMON: the kernel build, its lockdown mode, a security module or a seccomp filter forbids it)", err)
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
