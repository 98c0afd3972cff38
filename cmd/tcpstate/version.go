package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version and commit are set at build time (make build sets both from
// git):
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=$(git rev-parse HEAD)" ./cmd/tcpstate
//
// Left at devel, a version that go install stamped into the module
// (tcpstate@v1.2.0) is shown instead. The commit Go stamps itself
// (vcs.revision, in a git clone unless -buildvcs=false; not in a git
// worktree) wins over commit.
var (
	version = "devel"
	commit  = ""
)

// versionText is what --version prints: the version, the commit it was
// built from, the Go toolchain, and the cilium/ebpf library, which decides
// much of what loads on which kernel.
func versionText(v, ldCommit string, bi *debug.BuildInfo, ok bool) string {
	if !ok {
		bi = &debug.BuildInfo{GoVersion: runtime.Version()}
	}
	if v == "devel" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	setting := map[string]string{}
	for _, s := range bi.Settings {
		setting[s.Key] = s.Value
	}
	commit := "unknown (not recorded at build time: make build records it)"
	if ldCommit != "" {
		commit = ldCommit
	}
	if rev := setting["vcs.revision"]; rev != "" {
		var notes []string
		if t := setting["vcs.time"]; t != "" {
			notes = append(notes, t)
		}
		if setting["vcs.modified"] == "true" {
			notes = append(notes, "with uncommitted changes")
		}
		commit = rev
		if len(notes) > 0 {
			commit += " (" + strings.Join(notes, ", ") + ")"
		}
	}
	ebpf := "unknown"
	for _, d := range bi.Deps {
		if d.Path != "github.com/cilium/ebpf" {
			continue
		}
		ebpf = d.Version
		if r := d.Replace; r != nil {
			ebpf += " (replaced by " + strings.TrimSpace(r.Path+" "+r.Version) + ")"
		}
	}
	return fmt.Sprintf("tcpstate %s\ncommit       %s\ngo           %s %s/%s\ncilium/ebpf  %s",
		v, commit, bi.GoVersion, runtime.GOOS, runtime.GOARCH, ebpf)
}
