package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/tcpstate/tcpstate/internal/testnet"
)

func TestVersionText(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/tcpstate/tcpstate", Version: "(devel)"},
		Deps:      []*debug.Module{{Path: "github.com/spf13/cobra", Version: "v1.10.2"}, {Path: "github.com/cilium/ebpf", Version: "v0.22.0"}},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "2cef71b3c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6"},
			{Key: "vcs.time", Value: "2026-11-25T21:38:36Z"}, {Key: "vcs.modified", Value: "true"},
		},
	}
	got := versionText("devel", "", bi, true)
	want := "tcpstate devel\n" +
		"commit       2cef71b3c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6 (2026-11-25T21:38:36Z, with uncommitted changes)\n" +
		"go           go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH + "\n" +
		"cilium/ebpf  v0.22.0"
	if got != want {
		t.Errorf("versionText:\n%s\nwant:\n%s", got, want)
	}

	// go install ...@v1.2.3 stamps the module's version; -X wins over it.
	bi.Main.Version = "v1.2.3"
	bi.Settings = nil
	bi.Deps[1].Replace = &debug.Module{Path: "../ebpf"}
	got = versionText("devel", "", bi, true)
	for _, w := range []string{"tcpstate v1.2.3\n", "commit       unknown (not recorded at build time: make build records it)\n", "cilium/ebpf  v0.22.0 (replaced by ../ebpf)"} {
		if !strings.Contains(got, w) {
			t.Errorf("versionText:\n%s\nwant it to contain %q", got, w)
		}
	}
	if got := versionText("v2.0.0", "", bi, true); !strings.HasPrefix(got, "tcpstate v2.0.0\n") {
		t.Errorf("with -X main.version=v2.0.0: %q", got)
	}
	// -X main.commit, where Go stamped no revision (a git worktree,
	// -buildvcs=false).
	if got := versionText("devel", "0123abcd-dirty", bi, true); !strings.Contains(got, "\ncommit       0123abcd-dirty\n") {
		t.Errorf("with -X main.commit: %q", got)
	}
	if got := versionText("devel", "", nil, false); !strings.HasPrefix(got, "tcpstate devel\ncommit       unknown") || !strings.Contains(got, "go           "+runtime.Version()) {
		t.Errorf("without build info: %q", got)
	}
}

// TestVersionFlag: --version prints the version and exits 0.
func TestVersionFlag(t *testing.T) {
	code, stdout, stderr := runMain("--version")
	if code != exitOK || stderr != "" {
		t.Fatalf("--version: exit status %d, stderr %q", code, stderr)
	}
	for _, w := range []string{"tcpstate devel\n", "\ncommit ", "\ngo           go1.", "\ncilium/ebpf  v"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("--version:\n%s\nwant it to contain %q", stdout, w)
		}
	}
}

// TestVersionOfBuiltBinary: make build records the version and the commit
// the binary was built from.
func TestVersionOfBuiltBinary(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git repository to build from: %v", err)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	bin := filepath.Join(t.TempDir(), "tcpstate")
	var out bytes.Buffer
	cmd := exec.Command("make", "-C", "../..", "build", "BIN="+bin, "VERSION=v9.8.7", "GO="+filepath.Join(runtime.GOROOT(), "bin", "go"))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := testnet.RunCmd(cmd); err != nil {
		t.Fatalf("make build: %v\n%s", err, &out)
	}
	out.Reset()
	cmd = exec.Command(bin, "--version")
	cmd.Stdout = &out
	if err := testnet.RunCmd(cmd); err != nil {
		t.Fatalf("tcpstate --version: %v", err)
	}
	for _, w := range []string{"tcpstate v9.8.7\n", "\ncommit       " + strings.TrimSpace(string(head)), "\ngo           go1.", "\ncilium/ebpf  v"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("tcpstate --version:\n%s\nwant it to contain %q", &out, w)
		}
	}
}
