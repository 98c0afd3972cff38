package tracer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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
	if err := loadError("handle_set_state", unix.EPERM, false); !errors.Is(err, ErrPrivileges) || !strings.Contains(err.Error(), "CAP_BPF and CAP_PERFMON") {
		t.Errorf("EPERM: %v; want ErrPrivileges naming CAP_BPF and CAP_PERFMON", err)
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
