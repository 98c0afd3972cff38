package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
)

// TestLifeCgroups runs life as a user picks one container in one network
// namespace: a podman container (machine.slice/libpod-<id>.scope) serves
// in the chosen namespace, and a process of the same container serves in
// another namespace; the test process, in neither, connects. Exactly the
// container's connections of the chosen namespace come out, each naming
// the container and the namespace: the one it accepted before life
// started, the one after, and with --listeners its two listeners; none of
// the other namespace, none of the test's clients.
func TestLifeCgroups(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())
	id := fmt.Sprintf("%08x%08x", os.Getpid(), uint32(time.Now().UnixNano())) + strings.Repeat("11fe0c", 8)

	for _, c := range []struct {
		name      string
		flags     func(cg *testnet.Cgroup, ns *testnet.NS) []string
		listeners bool
	}{
		{"--container short id, --netns path", func(cg *testnet.Cgroup, ns *testnet.NS) []string {
			return []string{"--container", id[:12], "--netns", ns.Path()}
		}, false},
		{"--cgroup path, --netns inode, --listeners", func(cg *testnet.Cgroup, ns *testnet.NS) []string {
			return []string{"--cgroup", cg.Path, "--netns", strconv.FormatUint(uint64(ns.Inode()), 10), "--listeners"}
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns, other := testnet.New(t), testnet.New(t)
			top := testnet.NewCgroup(t)
			cg := top.Sub("machine.slice").Sub("libpod-" + id + ".scope")
			srv, away := ns.StartProc(t), other.StartProc(t)
			for _, p := range []*testnet.Proc{srv, away} {
				if err := cg.Add(p.Pid()); err != nil {
					t.Fatal(err)
				}
			}
			ok := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must := func(fd int, err error) int {
				t.Helper()
				ok(err)
				return fd
			}
			// Open before life starts: the container's listener and the
			// connection it accepted from the test.
			oldAddr := testnet.Addr(4, ns.Port(0))
			oldL := must(srv.Listen(oldAddr))
			oldC := must(ns.Connect(oldAddr))
			oldA := must(srv.Accept(oldL))
			oldPort := mustLocalPort(t, ns, oldC)

			summary := filepath.Join(t.TempDir(), "summary.json")
			p := startTcpstate(t, lifeAttached, nil, append([]string{bin, "life", "-o", "json", "--summary-json", summary}, c.flags(cg, ns)...)...)
			ok(ns.Close(oldC))
			ok(srv.ReadEOF(oldA))
			ok(srv.Close(oldA))
			ok(srv.Close(oldL))
			// The container serves the test in the chosen namespace, and
			// itself in the other; the test serves itself.
			newPort := connect(t, srv, ns, testnet.Addr(4, ns.Port(1)), false)
			connect(t, away, away, testnet.Addr(4, other.Port(0)), false)
			connect(t, ns, ns, testnet.Addr(4, ns.Port(2)), false)

			want := []string{
				fmt.Sprintf("%d>%d at least", ns.Port(0), oldPort),
				fmt.Sprintf("%d>%d", ns.Port(1), newPort),
			}
			if c.listeners {
				want = append(want, fmt.Sprintf("%d>0 at least", ns.Port(0)), fmt.Sprintf("%d>0", ns.Port(1)))
			}
			sort.Strings(want)
			deadline := time.Now().Add(testnet.Scaled(5 * time.Second))
			for strings.Count(p.stdout.String(), "\n") < len(want) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // nothing more should come
			p.interrupt()

			var got []string
			for _, line := range strings.Split(strings.TrimSpace(p.stdout.String()), "\n") {
				var l lifeRecord
				dec := json.NewDecoder(strings.NewReader(line))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&l); err != nil {
					t.Fatalf("life line %q: %v", line, err)
				}
				key := fmt.Sprintf("%d>%d", l.Sport, l.Dport)
				if l.DurationAtLeast {
					key += " at least"
				}
				got = append(got, key)
				if l.CgroupID != cg.ID || l.Cgroup != cg.Path || l.Container != id || l.Runtime != "podman" || l.PodUID != "" || l.Netns != ns.Inode() {
					t.Errorf("%s: cgroup %d %q container %q %q pod %q netns %d, want %d %q podman %s in %d",
						key, l.CgroupID, l.Cgroup, l.Runtime, l.Container, l.PodUID, l.Netns, cg.ID, cg.Path, id, ns.Inode())
				}
				if l.Pid != uint32(srv.Pid()) {
					t.Errorf("%s: pid %d, want the container's server %d", key, l.Pid, srv.Pid())
				}
			}
			sort.Strings(got)
			if strings.Join(got, ", ") != strings.Join(want, ", ") {
				t.Errorf("connections %v, want exactly %v\nstdout:\n%s\nstderr:\n%s", got, want, p.stdout, p.stderr)
			}

			// The connections open at the start are the container's
			// there: followed to their close, none missing.
			b, err := os.ReadFile(summary)
			if err != nil {
				t.Fatal(err)
			}
			var s struct {
				Events        uint64 `json:"events"`
				OpenAtStart   int    `json:"open_at_start"`
				ClosesMissing uint64 `json:"closes_missing"`
			}
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatal(err)
			}
			wantOpen := 1
			if c.listeners {
				wantOpen = 2
			}
			if s.Events != 4 || s.OpenAtStart != wantOpen || s.ClosesMissing != 0 {
				t.Errorf("--summary-json: %d closes, %d open at the start, %d missing; want 4 (listeners' too), %d, 0\n%s",
					s.Events, s.OpenAtStart, s.ClosesMissing, wantOpen, b)
			}
		})
	}

	// -o wide: the namespace and the container in their columns, under
	// the header.
	t.Run("-o wide", func(t *testing.T) {
		ns := testnet.New(t)
		top := testnet.NewCgroup(t)
		cg := top.Sub("machine.slice").Sub("libpod-" + id + ".scope")
		srv := ns.StartProc(t)
		if err := cg.Add(srv.Pid()); err != nil {
			t.Fatal(err)
		}
		p := startTcpstate(t, lifeAttached, nil, bin, "life", "-o", "wide", "--container", id, "--netns", ns.Path())
		connect(t, srv, srv, testnet.Addr(4, ns.Port(0)), false)
		deadline := time.Now().Add(testnet.Scaled(5 * time.Second))
		for strings.Count(p.stdout.String(), "\n") < 3 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		p.interrupt()
		lines := strings.Split(strings.TrimSuffix(p.stdout.String(), "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("want a header and 2 connections:\n%s", p.stdout)
		}
		head := lines[0]
		for _, l := range lines[1:] {
			cell := fmt.Sprintf("%d podman:%s", ns.Inode(), id[:12])
			if strings.Index(l, cell) != strings.Index(head, "NETNS") || strings.Index(l, "podman:") != strings.Index(head, "CGROUP") {
				t.Errorf("NETNS and CGROUP not under their headers:\n%s\n%s", head, l)
			}
		}
	})
}
