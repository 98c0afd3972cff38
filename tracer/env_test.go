package tracer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// The environment checks run before anything is loaded and must say plainly
// what the kernel lacks. They need no privileges.
func TestCheckKernel(t *testing.T) {
	t.Run("this kernel has BTF and the tracepoint", func(t *testing.T) {
		if err := checkKernel(kernelBTF, btf.LoadKernelSpec); err != nil {
			t.Fatalf("checkKernel on this machine: %v", err)
		}
	})
	t.Run("no BTF", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "vmlinux")
		err := checkKernel(missing, func() (*btf.Spec, error) { t.Fatal("loaded BTF that is not there"); return nil, nil })
		if !errors.Is(err, ErrNoBTF) || !strings.Contains(err.Error(), "CONFIG_DEBUG_INFO_BTF=y") || !strings.Contains(err.Error(), missing) {
			t.Fatalf("got %v, want ErrNoBTF naming %s and CONFIG_DEBUG_INFO_BTF", err, missing)
		}
	})
	t.Run("unreadable BTF", func(t *testing.T) {
		err := checkKernel(kernelBTF, func() (*btf.Spec, error) { return nil, errors.New("bad magic") })
		if !errors.Is(err, ErrNoBTF) || !strings.Contains(err.Error(), "bad magic") {
			t.Fatalf("got %v, want ErrNoBTF with the reader's error", err)
		}
	})
	t.Run("no tracepoint", func(t *testing.T) {
		// tcpstate's own object carries BTF, but not the kernel's
		// btf_trace_inet_sock_set_state typedef: a kernel without the
		// tracepoint looks like this.
		spec, err := btf.LoadSpec("tcpstate_bpfel.o")
		if err != nil {
			t.Fatal(err)
		}
		err = checkKernel(kernelBTF, func() (*btf.Spec, error) { return spec, nil })
		if !errors.Is(err, ErrNoTracepoint) || !strings.Contains(err.Error(), "sock:inet_sock_set_state") {
			t.Fatalf("got %v, want ErrNoTracepoint naming the tracepoint", err)
		}
	})
}

func TestLoadErrorExplainsVerifierRejection(t *testing.T) {
	ve := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"0: (b7) r0 = 0", "1: (95) exit", "R1 unbounded memory access"}}
	short := loadError("handle_set_state", ve, false).Error()
	if !strings.Contains(short, "verifier rejected") || !strings.Contains(short, "--verbose") || strings.Contains(short, "(b7) r0 = 0") {
		t.Errorf("without --verbose: %q; want one line pointing to --verbose, without the whole log", short)
	}
	full := loadError("handle_set_state", ve, true).Error()
	for _, line := range ve.Log {
		if !strings.Contains(full, line) {
			t.Errorf("with --verbose the error lacks log line %q:\n%s", line, full)
		}
	}
	// EPERM: missing capabilities only when some are missing. With them
	// (checkEnvironment checked before loading) the kernel refused for
	// another reason, which must not read as missing privileges: on the
	// project's 6.18 machines fexit is refused to root.
	if err := privilegeHintFor(fmt.Errorf("loading: %w", unix.EPERM), []string{"CAP_PERFMON"}); !errors.Is(err, ErrPrivileges) ||
		!strings.Contains(err.Error(), "CAP_BPF and CAP_PERFMON") || !strings.Contains(err.Error(), "lacks CAP_PERFMON") {
		t.Errorf("EPERM without CAP_PERFMON: %v; want ErrPrivileges naming what is missing", err)
	}
	if err := privilegeHintFor(fmt.Errorf("loading: %w", unix.EPERM), nil); errors.Is(err, ErrPrivileges) || !errors.Is(err, unix.EPERM) ||
		!strings.Contains(err.Error(), "refused although this process has CAP_BPF and CAP_PERFMON") {
		t.Errorf("EPERM with the capabilities: %v; want EPERM, not ErrPrivileges, saying the kernel refused anyway", err)
	}
	if err := privilegeHintFor(unix.ENOENT, []string{"CAP_BPF"}); err != unix.ENOENT {
		t.Errorf("ENOENT: %v; want it unchanged", err)
	}
	// The library's memlock guess is dropped: memlock is not what refuses
	// programs on kernels that account BPF memory to the cgroup.
	memlock := fmt.Errorf("load program: %w (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", unix.EPERM)
	if err := loadError("accept_fexit", memlock, false); strings.Contains(err.Error(), "MEMLOCK") || !errors.Is(err, unix.EPERM) {
		t.Errorf("EPERM with the library's memlock hint: %q; want the hint gone and EPERM kept", err)
	}
}

// asNobody runs f with this thread's filesystem uid set to nobody's, which
// also drops root's power to read what its permissions forbid
// (CAP_DAC_OVERRIDE): file permissions then apply as to any user.
func asNobody(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		f()
		return
	}
	runtime.LockOSThread()
	unix.Setfsuid(65534)
	if cur, _ := unix.SetfsuidRetUid(-1); cur != 65534 {
		t.Fatalf("setfsuid: still %d", cur)
	}
	defer func() {
		unix.Setfsuid(0)
		if cur, _ := unix.SetfsuidRetUid(-1); cur != 0 {
			return // leave the thread locked: it dies with the goroutine
		}
		runtime.UnlockOSThread()
	}()
	f()
}

// A BTF file that this process may not read is a question of privileges,
// not a kernel without BTF.
func TestCheckKernelUnreadableBTF(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(file, []byte("BTF"), 0o400); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(dir, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(closed, "vmlinux"), []byte("BTF"), 0o444); err != nil {
		t.Fatal(err)
	}
	// What cilium/ebpf's LoadKernelSpec answers when it cannot open the
	// file: it looks for vmlinux images elsewhere and finds none.
	load := func(path string) func() (*btf.Spec, error) {
		return func() (*btf.Spec, error) {
			if f, err := os.Open(path); err == nil {
				f.Close()
				return nil, errors.New("bad magic")
			}
			return nil, fmt.Errorf("no BTF found for kernel version 6.18: %w", ebpf.ErrNotSupported)
		}
	}
	for _, path := range []string{file, filepath.Join(closed, "vmlinux")} {
		var err error
		asNobody(t, func() { err = checkKernel(path, load(path)) })
		msg := fmt.Sprint(err)
		if !errors.Is(err, ErrPrivileges) || errors.Is(err, ErrNoBTF) || !strings.Contains(msg, "permission denied") || !strings.Contains(msg, path) ||
			strings.Contains(msg, "is missing") || strings.Contains(msg, "no BTF") {
			t.Errorf("%s unreadable: %v; want ErrPrivileges saying permission denied", path, err)
		}
	}
}

// fakeTracefs is a host for ensure: tracefs mounted at the dirs in
// tracefs (readable or not), others reporting errs.
type fakeTracefs struct {
	mountinfo []string         // what /proc/self/mountinfo lists
	tracefs   map[string]error // dirs that are tracefs, and what stat of their events says
	statfs    map[string]error // statfs errors
	mountErr  error
	mounted   []string
}

func (f *fakeTracefs) env() tracefsEnv {
	return tracefsEnv{
		mounts: func() ([]string, error) { return f.mountinfo, nil },
		fsType: func(dir string) (int64, error) {
			if err := f.statfs[dir]; err != nil {
				return 0, &fs.PathError{Op: "statfs", Path: dir, Err: err}
			}
			if _, ok := f.tracefs[dir]; ok {
				return unix.TRACEFS_MAGIC, nil
			}
			return unix.SYSFS_MAGIC, nil
		},
		stat: func(path string) error {
			dir := strings.TrimSuffix(path, "/events")
			if err, ok := f.tracefs[dir]; ok {
				if err != nil {
					return &fs.PathError{Op: "stat", Path: path, Err: err}
				}
				return nil
			}
			return &fs.PathError{Op: "stat", Path: path, Err: unix.ENOENT}
		},
		mount: func(dir string) error {
			if f.mountErr != nil {
				return f.mountErr
			}
			f.mounted = append(f.mounted, dir)
			return nil
		},
	}
}

func TestEnsureTracefs(t *testing.T) {
	for _, c := range []struct {
		name    string
		host    fakeTracefs
		mounted string
		msg     []string // in the error; none: no error
		notMsg  string
	}{
		{name: "mounted and readable",
			host: fakeTracefs{mountinfo: []string{tracefsMount}, tracefs: map[string]error{tracefsMount: nil}}},
		{name: "mounted elsewhere",
			host: fakeTracefs{mountinfo: []string{"/tracing"}, tracefs: map[string]error{"/tracing": nil}}},
		{name: "found by statfs, not in mountinfo",
			host: fakeTracefs{tracefs: map[string]error{debugTracing: nil}}},
		{name: "mounted but not accessible",
			host: fakeTracefs{mountinfo: []string{tracefsMount}, tracefs: map[string]error{tracefsMount: unix.EACCES}},
			msg:  []string{"tracefs is mounted on /sys/kernel/tracing, but this process may not read it (permission denied): reading it needs root or CAP_DAC_READ_SEARCH"}, notMsg: "not mounted"},
		{name: "not mounted: mounted here",
			host:    fakeTracefs{statfs: map[string]error{debugTracing: unix.ENOENT}},
			mounted: tracefsMount},
		{name: "not mounted and may not mount",
			host: fakeTracefs{statfs: map[string]error{debugTracing: unix.EACCES}, mountErr: unix.EPERM},
			msg:  []string{"tracefs is not mounted (this process may not look into /sys/kernel/debug/tracing: permission denied), and mounting it on /sys/kernel/tracing failed: operation not permitted (mounting needs CAP_SYS_ADMIN)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mounted, err := c.host.env().ensure()
			if len(c.msg) == 0 {
				if err != nil || mounted != c.mounted {
					t.Fatalf("ensure = %q, %v; want %q, nil", mounted, err, c.mounted)
				}
			} else {
				for _, m := range c.msg {
					if err == nil || !strings.Contains(err.Error(), m) {
						t.Errorf("error %v, want %q", err, m)
					}
				}
				if c.notMsg != "" && err != nil && strings.Contains(err.Error(), c.notMsg) {
					t.Errorf("error %q says %q", err, c.notMsg)
				}
			}
			if want := c.mounted != ""; want != (len(c.host.mounted) > 0) {
				t.Errorf("mounted %v", c.host.mounted)
			}
		})
	}
}

func TestParseTracefsMounts(t *testing.T) {
	info := `23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
60 23 0:14 / /sys/kernel/debug rw,relatime shared:7 - debugfs debugfs rw
61 1 0:13 / /my\040tracing rw,relatime - tracefs tracefs rw
`
	got, err := parseTracefsMounts(strings.NewReader(info))
	if err != nil || !slices.Equal(got, []string{"/sys/kernel/tracing", "/my tracing"}) {
		t.Errorf("parseTracefsMounts = %q, %v", got, err)
	}
}

// A tracefs that tcpstate mounted is unmounted by Close, once; if it
// cannot be, the user is told it stays.
func TestCloseUnmountsTracefs(t *testing.T) {
	var warned []string
	calls := 0
	tr := &Tracer{opts: Options{Warn: func(s string) { warned = append(warned, s) }},
		tracefs: tracefsMount, unmountTracefs: func() error { calls++; return nil }}
	tr.Close()
	tr.Close()
	if calls != 1 || len(warned) != 0 {
		t.Errorf("unmounted %d times, warnings %q", calls, warned)
	}
	tr = &Tracer{opts: Options{Warn: func(s string) { warned = append(warned, s) }},
		tracefs: tracefsMount, unmountTracefs: func() error { return unix.EBUSY }}
	tr.Close()
	if len(warned) != 1 || !strings.Contains(warned[0], "tracefs on /sys/kernel/tracing") || !strings.Contains(warned[0], "stays mounted") {
		t.Errorf("warnings %q; want one saying tracefs stays mounted", warned)
	}
}
