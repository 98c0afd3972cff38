package main

// End to end, as a user runs them: trace and stats with --cgroup,
// --container and --netns, the cgroup and netns in -o json and -o wide,
// and the counts by cgroup. The cgroups are made under the cgroup2 mount
// (testnet.NewCgroup) and hold a helper process that owns the sockets.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// interrupt stops p as Ctrl-C does and waits for it.
func (p *traceProc) interrupt() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		p.t.Fatal(err)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		p.t.Fatalf("exit status %d after SIGINT, want 0\nstderr:\n%s", code, p.stderr)
	}
}

func TestCLICgroups(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())
	id := fmt.Sprintf("%08x%08x", os.Getpid(), uint32(time.Now().UnixNano())) + strings.Repeat("d0cce7", 8)
	statsReady := "tcpstate: counting TCP state transitions in the kernel; Ctrl-C to stop"

	// A container's process serves; the test process (another cgroup)
	// connects to it. Only the container's sockets pass: its listener and
	// the accepted one, whole, with the container's cgroup and the
	// namespace; the test's client does not.
	for _, c := range []struct {
		name  string
		flags func(cg *testnet.Cgroup, ns *testnet.NS) []string
	}{
		{"--cgroup path, --netns path, -o json", func(cg *testnet.Cgroup, ns *testnet.NS) []string {
			return []string{"-o", "json", "--cgroup", cg.Path, "--netns", ns.Path()}
		}},
		{"--cgroup directory, -o json", func(cg *testnet.Cgroup, ns *testnet.NS) []string {
			return []string{"-o", "json", "--cgroup", cg.Dir}
		}},
		{"--container short id, --netns inode, -o json", func(cg *testnet.Cgroup, ns *testnet.NS) []string {
			return []string{"-o", "json", "--container", id[:12], "--netns", strconv.FormatUint(uint64(ns.Inode()), 10)}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := testnet.New(t)
			top := testnet.NewCgroup(t)
			cg := top.Sub("system.slice").Sub("docker-" + id + ".scope")
			srv := ns.StartProc(t)
			if err := cg.Add(srv.Pid()); err != nil {
				t.Fatal(err)
			}
			p := startTrace(t, bin, c.flags(cg, ns)...)
			port := ns.Port(0)
			cport := connect(t, srv, ns, testnet.Addr(4, port), false)
			deadline := time.Now().Add(5 * time.Second)
			for strings.Count(p.stdout.String(), `"new":"CLOSE"`) < 2 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // nothing more should come
			p.interrupt()
			evs := p.records()
			edges := map[string][]string{}
			for _, e := range evs {
				if e.CgroupID != cg.ID || e.Cgroup == nil || e.Cgroup.Path != cg.Path || e.Netns != ns.Inode() {
					t.Errorf("record of cgroup %d %+v netns %d, want %s (%d) in %d", e.CgroupID, e.Cgroup, e.Netns, cg.Path, cg.ID, ns.Inode())
					continue
				}
				if e.Cgroup.Container != (model.Container{ID: id, Runtime: model.RuntimeDocker}) {
					t.Errorf("container %+v, want docker %s", e.Cgroup.Container, id)
				}
				role := "listener"
				if e.Dport == cport || e.Old == model.Listen && e.New == model.SynRecv {
					role = "accepted"
				}
				if e.Sport == cport {
					role = "the test's client: not the container's"
				}
				edges[role] = append(edges[role], e.Old.String()+">"+e.New.String())
			}
			want := map[string][]string{
				"listener": {"CLOSE>LISTEN", "LISTEN>CLOSE"},
				"accepted": {"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED", "ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"},
			}
			if fmt.Sprint(edges) != fmt.Sprint(want) {
				t.Errorf("sockets let through: %v, want %v\n%s", edges, want, p.stdout)
			}
		})
	}

	// -o wide: the container and the namespace in their columns.
	t.Run("-o wide", func(t *testing.T) {
		ns := testnet.New(t)
		top := testnet.NewCgroup(t)
		cg := top.Sub("machine.slice").Sub("libpod-" + id + ".scope")
		srv := ns.StartProc(t)
		if err := cg.Add(srv.Pid()); err != nil {
			t.Fatal(err)
		}
		p := startTrace(t, bin, "-o", "wide", "--container", id)
		connect(t, srv, srv, testnet.Addr(4, ns.Port(0)), false)
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(p.stdout.String(), "-> CLOSE") < 3 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		p.interrupt()
		// A column that grows prints the header again (none should here:
		// CAUSE's first step holds listener_closed); every record line is
		// checked under its header.
		lines := strings.Split(strings.TrimSuffix(p.stdout.String(), "\n"), "\n")
		var records int
		for _, l := range lines {
			if strings.HasPrefix(l, "TIME ") {
				if !strings.Contains(l, " NETNS ") || !strings.Contains(l, " CGROUP ") {
					t.Errorf("header without NETNS and CGROUP: %s", l)
				}
				continue
			}
			records++
			if !strings.Contains(l, fmt.Sprintf(" %d podman:%s", ns.Inode(), id[:12])) {
				t.Errorf("line without the namespace and the container:\n%s", l)
			}
		}
		if records != 12 || !strings.HasPrefix(lines[0], "TIME ") {
			t.Fatalf("want a header and 12 records:\n%s", p.stdout)
		}
		checkAlignedToHeaders(t, lines)
	})

	// A host without cgroup2, as a private mount namespace with the cgroup2
	// mount unmounted shows it to tcpstate: --cgroup is refused (exit
	// status 1) with the reason, and a trace that would show cgroups says
	// it cannot.
	t.Run("v1-only view", func(t *testing.T) {
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("no unshare(1) to make a mount namespace without cgroup2")
		}
		mount := testnet.Cgroup2Mount()
		script := `umount ` + mount + ` || exit 9
` + bin + ` trace --cgroup /system.slice; echo "status $?"
` + bin + ` stats --interval 0 --duration 1ms --port 9 -o json >/dev/null; echo "status $?"`
		cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", script)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := testnet.RunCmd(cmd); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		got := out.String()
		for _, w := range []string{
			"tcpstate: --cgroup: no cgroup2 file system is mounted (a cgroup v1-only host)", "status 1",
			"tcpstate: warning: no cgroup2 file system is mounted", "status 0",
		} {
			if !strings.Contains(got, w) {
				t.Errorf("output lacks %q:\n%s", w, got)
			}
		}
		if testnet.Cgroup2Mount() != mount {
			t.Fatalf("the host's cgroup2 mount changed: %q, was %q", testnet.Cgroup2Mount(), mount)
		}
	})

	// stats: counts by cgroup, named; --cgroup a parent counts both.
	t.Run("stats by cgroup", func(t *testing.T) {
		ns := testnet.New(t)
		top := testnet.NewCgroup(t)
		srvCg, cliCg := top.Sub("server"), top.Sub("client")
		srv, cli := ns.StartProc(t), ns.StartProc(t)
		if err := srvCg.Add(srv.Pid()); err != nil {
			t.Fatal(err)
		}
		if err := cliCg.Add(cli.Pid()); err != nil {
			t.Fatal(err)
		}
		p := startTcpstate(t, statsReady, nil, bin, "stats", "-o", "json", "--interval", "0", "--cgroup", top.Path)
		connect(t, srv, cli, testnet.Addr(4, ns.Port(0)), false)
		time.Sleep(200 * time.Millisecond)
		p.interrupt()
		var doc struct {
			Final       bool              `json:"final"`
			Counted     uint64            `json:"counted"`
			Cgroups     []model.CgroupRow `json:"cgroups"`
			CgroupOther uint64            `json:"cgroup_other"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(p.stdout.String())), &doc); err != nil {
			t.Fatalf("%v\n%s", err, p.stdout)
		}
		got := map[string]uint64{}
		for _, r := range doc.Cgroups {
			got[r.Path] = r.Transitions
		}
		if want := map[string]uint64{srvCg.Path: 7, cliCg.Path: 5}; fmt.Sprint(got) != fmt.Sprint(want) || doc.CgroupOther != 0 || doc.Counted != 12 {
			t.Errorf("stats by cgroup %v (other %d, %d counted), want %v and 12\n%s", got, doc.CgroupOther, doc.Counted, want, p.stdout)
		}
	})
}
