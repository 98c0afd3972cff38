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
` + bin + ` stats --interval 0 --duration 1ms --port 9 -o json >/dev/null; echo "status $?"
` + bin + ` serve --label-container --listen 127.0.0.1:1; echo "status $?"`
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
			"tcpstate: --label-container: no cgroup2 file system is mounted (a cgroup v1-only host)",
		} {
			if !strings.Contains(got, w) {
				t.Errorf("output lacks %q:\n%s", w, got)
			}
		}
		if strings.Count(got, "status 1") != 2 {
			t.Errorf("want trace --cgroup and serve --label-container to exit with status 1:\n%s", got)
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

// serve --label-container, as a user runs it: the connections of
// processes in two containers' cgroups, counted exactly under each
// container's label; with --label-container-max 1, the second container
// folds into container="other".
func TestServeLabelContainer(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())
	base := fmt.Sprintf("%08x%08x", os.Getpid(), uint32(time.Now().UnixNano()))
	podmanID, dockerID := base+strings.Repeat("5e7e", 12), base+strings.Repeat("ba11", 12)
	podman, docker := "podman:"+podmanID[:12], "docker:"+dockerID[:12]
	series := func(metric, container string) string {
		return metric + `{container="` + container + `",pod_uid=""}`
	}
	scrape := func(p *serveProc) string {
		t.Helper()
		code, body := httpGet("http://" + p.addr + "/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d %s", code, body)
		}
		return body
	}
	// waitFor scrapes until every series has its value (the last ACKs may
	// come after the calls return), then once more a little later: the
	// counts must be exact and stay so.
	waitFor := func(p *serveProc, want map[string]float64) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			body := scrape(p)
			done := true
			for s, v := range want {
				if got, _ := metricValue(body, s); got != v {
					done = false
				}
			}
			if done || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		body := scrape(p)
		for s, v := range want {
			if got, ok := metricValue(body, s); !ok || got != v {
				t.Errorf("%s = %v (present %v), want %v\n%s", s, got, ok, v, grepLines(body, "tcpstate_container_"))
			}
		}
		return body
	}
	setup := func(t *testing.T) (ns *testnet.NS, srv, cli *testnet.Proc) {
		ns = testnet.New(t)
		top := testnet.NewCgroup(t)
		srvCg := top.Sub("machine.slice").Sub("libpod-" + podmanID + ".scope")
		cliCg := top.Sub("system.slice").Sub("docker-" + dockerID + ".scope")
		srv, cli = ns.StartProc(t), ns.StartProc(t)
		if err := srvCg.Add(srv.Pid()); err != nil {
			t.Fatal(err)
		}
		if err := cliCg.Add(cli.Pid()); err != nil {
			t.Fatal(err)
		}
		return ns, srv, cli
	}

	t.Run("exact counts", func(t *testing.T) {
		ns, srv, cli := setup(t)
		p := startServe(t, bin, "--label-container")
		// Each connection: the server's listener (CLOSE>LISTEN,
		// LISTEN>CLOSE) and child (5 transitions, 1 opened) in the podman
		// container, the client (5, 1 opened) in the docker one.
		const n = 3
		for i := range n {
			connect(t, srv, cli, testnet.Addr(4, ns.Port(i)), false)
		}
		body := waitFor(p, map[string]float64{
			series("tcpstate_container_transitions_total", podman):    7 * n,
			series("tcpstate_container_sockets_opened_total", podman): n,
			series("tcpstate_container_transitions_total", docker):    5 * n,
			series("tcpstate_container_sockets_opened_total", docker): n,
		})
		for _, s := range []string{series("tcpstate_container_transitions_total", "host"), series("tcpstate_container_transitions_total", "other"),
			series("tcpstate_container_transitions_total", "unknown"), "tcpstate_container_uncounted_transitions_total"} {
			if _, ok := metricValue(body, s); !ok {
				t.Errorf("no %s", s)
			}
		}
		// The existing series keep their labels.
		if !strings.Contains(body, `tcpstate_transitions_total{new_state="SYN_SENT",old_state="CLOSE"}`) {
			t.Errorf("tcpstate_transitions_total changed its labels:\n%s", grepLines(body, "tcpstate_transitions_total{"))
		}
		promtoolCheckMetrics(t, body)
	})

	t.Run("bound folds into other", func(t *testing.T) {
		ns, srv, cli := setup(t)
		p := startServe(t, bin, "--label-container", "--label-container-max", "1")
		before := scrape(p)
		if n, _ := metricValue(before, "tcpstate_container_labels"); n != 0 {
			t.Skipf("another container's sockets took the only label first:\n%s", grepLines(before, "tcpstate_container_"))
		}
		// The server alone first (a connection to a port nobody listens
		// on, refused: CLOSE>SYN_SENT>CLOSE), scraped: the podman
		// container takes the only label.
		if _, err := srv.Connect(testnet.Addr(4, ns.Port(1))); err == nil {
			t.Fatal("a connect to a port nobody listens on succeeded")
		}
		waitFor(p, map[string]float64{series("tcpstate_container_transitions_total", podman): 2, "tcpstate_container_labels": 1})
		other0, _ := metricValue(scrape(p), series("tcpstate_container_transitions_total", "other"))
		connect(t, srv, cli, testnet.Addr(4, ns.Port(0)), false)
		body := waitFor(p, map[string]float64{series("tcpstate_container_transitions_total", podman): 2 + 7, "tcpstate_container_labels": 1})
		if strings.Contains(body, docker) {
			t.Errorf("a second container has a label of its own past --label-container-max 1:\n%s", grepLines(body, "tcpstate_container_"))
		}
		// Other holds the docker container's 5, and whatever other
		// containers on the host did meanwhile.
		if other, _ := metricValue(body, series("tcpstate_container_transitions_total", "other")); other-other0 < 5 {
			t.Errorf("other went from %v to %v: want the docker container's 5 in it", other0, other)
		}
	})
}
