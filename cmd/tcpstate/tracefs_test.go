package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tcpstate/tcpstate/internal/testnet"
)

// TestTracefsMountedByTcpstateIsUnmounted: where nothing has mounted
// tracefs, trace mounts it for the accept syscall tracepoints and unmounts
// it at exit. Run in a mount namespace of its own (unshare -m, private
// propagation), whose tracefs the script unmounts first: the host's mounts
// are not touched.
func TestTracefsMountedByTcpstateIsUnmounted(t *testing.T) {
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1)")
	}
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	summary := filepath.Join(dir, "summary.json")
	script := `
set -e
for d in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do
	while grep -q " $d " /proc/self/mountinfo; do umount -l "$d"; done
done
if grep -q " - tracefs " /proc/self/mountinfo; then echo "tracefs still mounted"; exit 1; fi
"$0" trace --accept-hook syscalls --port 1 --duration 300ms --summary-json "$1" >/dev/null
echo "after exit:"
grep " - tracefs " /proc/self/mountinfo || echo "no tracefs"
`
	var out bytes.Buffer
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, bin, summary)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := testnet.RunCmd(cmd); err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	if s := readSummary(t, summary); s.AcceptHook != "syscalls" {
		t.Fatalf("accept hook %q: tracefs was not needed\n%s", s.AcceptHook, &out)
	}
	after := out.String()[strings.Index(out.String(), "after exit:"):]
	if !strings.Contains(after, "no tracefs") {
		t.Errorf("tracefs is still mounted after trace exited:\n%s", &out)
	}
	if w := unexpectedWarnings(out.String()); w != "" {
		t.Errorf("warnings:\n%s", w)
	}
}

// TestTracefsNotReadableIsNotNotMounted: with CAP_BPF and CAP_PERFMON but
// not root, trace runs, and says that tracefs (mounted, root's only) may
// not be read, not that it is not mounted.
func TestTracefsNotReadableIsNotNotMounted(t *testing.T) {
	testnet.RequireRoot(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run tcpstate as nobody with capabilities")
	}
	st, err := os.Stat("/sys/kernel/tracing/events")
	if err != nil {
		t.Skipf("no tracefs on /sys/kernel/tracing here: %v", err)
	}
	if root := mustMode(t, "/sys/kernel/tracing"); root&0o005 == 0o005 && st.Mode().Perm()&0o005 == 0o005 {
		t.Skipf("tracefs is readable by every user here (%v)", root)
	}
	bin := buildBinary(t, t.TempDir())
	cmd := exec.Command(bin, "trace", "--accept-hook", "syscalls", "--port", "1", "--duration", "300ms")
	cmd.Dir = "/"
	const capPerfmon, capBPF = 38, 39
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{capBPF, capPerfmon},
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := testnet.RunCmd(cmd); err != nil {
		t.Fatalf("trace as nobody with CAP_BPF and CAP_PERFMON: %v\n%s", err, &stderr)
	}
	msg := stderr.String()
	if !strings.Contains(msg, "tracefs is mounted on /sys/kernel/tracing, but this process may not read it (permission denied)") ||
		strings.Contains(msg, "not mounted") {
		t.Errorf("stderr:\n%s\nwant the warning to say tracefs is mounted but not readable", msg)
	}
}

func mustMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestTracefsMountedWithoutReadAccess: as uid 65534 with CAP_SYS_ADMIN
// (and CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE: the snapshot says nothing) but
// no CAP_DAC_READ_SEARCH, where nothing has
// mounted tracefs, trace mounts it, cannot read the event files of what it
// mounted (they are root's, mode 0440), says so in one warning naming the
// capability, runs without the accept hook, and unmounts it at exit. In a
// mount namespace of its own, as above.
func TestTracefsMountedWithoutReadAccess(t *testing.T) {
	testnet.RequireRoot(t)
	tools := findPrivTools(t)
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	script := `
set -e
for d in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do
	while grep -q " $d " /proc/self/mountinfo; do umount -l "$d"; done
done
"$0" --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all,+bpf,+perfmon,+sys_admin,+sys_ptrace \
	--ambient-caps=-all,+bpf,+perfmon,+sys_admin,+sys_ptrace --bounding-set=-all,+bpf,+perfmon,+sys_admin,+sys_ptrace \
	-- "$1" trace --accept-hook syscalls --port 1 --duration 300ms >/dev/null
echo "after exit:"
grep " - tracefs " /proc/self/mountinfo || echo "no tracefs"
`
	var out bytes.Buffer
	cmd := exec.Command(tools.unshare, "-m", "--propagation", "private", "sh", "-c", script, tools.setpriv, bin)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := testnet.RunCmd(cmd); err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	// Those for what an older kernel lacks (6.1: no bpf_rdonly_cast) are
	// not this test's.
	var warnings []string
	if w := unexpectedWarnings(out.String()); w != "" {
		warnings = strings.Split(w, "\n")
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "keep their listener's owner") ||
		!strings.Contains(warnings[0], "may not read its event files") || !strings.Contains(warnings[0], "reading them needs root or CAP_DAC_READ_SEARCH") {
		t.Errorf("warnings %q; want one saying the event files of tracefs may not be read, naming CAP_DAC_READ_SEARCH\n%s", warnings, &out)
	}
	after := out.String()[strings.Index(out.String(), "after exit:"):]
	if !strings.Contains(after, "no tracefs") {
		t.Errorf("tracefs is still mounted after trace exited:\n%s", &out)
	}
}
