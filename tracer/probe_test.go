package tracer

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// version parses "6.1.0-57-amd64" or "6.10" into comparable numbers.
func version(t *testing.T, s string) [2]int {
	t.Helper()
	var v [2]int
	if _, err := fmt.Sscanf(s, "%d.%d", &v[0], &v[1]); err != nil {
		t.Fatalf("version %q: %v", s, err)
	}
	return v
}

func before(a, b [2]int) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// TestProbesMatchKernelVersions: each probe finds its feature in the
// running kernel's BTF exactly when the kernel's version says it has it
// (run on every kernel of make test-kernels, this checks the names the
// probes look for).
func TestProbesMatchKernelVersions(t *testing.T) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	k := version(t, kernelRelease())
	for _, n := range []need{needRdonlyCast, needLoop, needPercpuElem, needIterProg, needIterTCP, needIterFile,
		needSockFile, needIterStore, needResetWhy, needResetV1, needRecvReset, needAcceptFunc} {
		want := !before(k, version(t, n.since)) && (n.until == "" || before(k, version(t, n.until)))
		if got := n.has(spec); got != want {
			t.Errorf("%s: found %v on %s, want %v (%s)", n.what, got, kernelRelease(), want, n.versions())
		}
	}
}

func TestLacksErrorNamesTheVersion(t *testing.T) {
	e := &LacksError{Program: "handle_send_reset_v1", Need: needResetV1}
	for _, want := range []string{"handle_send_reset_v1 needs the tcp:tcp_send_reset tracepoint without a reason argument", "Linux 4.16 to 6.9", "this kernel is " + kernelRelease()} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("%q lacks %q", e.Error(), want)
		}
	}
	if got := (&LacksError{Program: "find_self", Need: needRdonlyCast}).Error(); !strings.Contains(got, "(Linux 6.2; this kernel is ") {
		t.Errorf("%q", got)
	}
}
