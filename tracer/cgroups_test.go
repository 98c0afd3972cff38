package tracer_test

// Privileged tests of the socket's cgroup and network namespace: what each
// event says of them, what the snapshot and the socket listing say, the
// kernel's filters on them, and the counts by cgroup. The cgroups are made
// by the tests under the cgroup2 mount (on a hybrid host,
// /sys/fs/cgroup/unified) and removed at their end; the helper processes
// that own the sockets are moved into them.

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// uniqueID makes a container id (64 hex digits) whose first 12 are this
// process's and this moment's: no other test's cgroup has that prefix.
func uniqueID(fill string) string {
	return fmt.Sprintf("%08x%08x", os.Getpid(), uint32(time.Now().UnixNano())) + strings.Repeat(fill, 6)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustFD(t *testing.T) func(int, error) int {
	return func(fd int, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
}

// ourLives groups the events of the namespaces given, over all of them at
// once (a socket address may be reused across namespaces), as the oracle
// numbers incarnations.
func ourLives(evs []model.Event, nss ...*testnet.NS) []*tracetest.Life {
	var out []*tracetest.Life
	for _, l := range tracetest.ForeignLives(evs, 0) {
		if slices.ContainsFunc(nss, func(ns *testnet.NS) bool { return ns.Inode() == l.Evs[0].Netns }) {
			out = append(out, l)
		}
	}
	return out
}

// TestCgroupAndNetnsPerSocket: two network namespaces with the same
// addresses and ports, a server and a client process in each, each
// process in a cgroup of its own. Every event of every socket names its
// own creator's cgroup and its namespace, also the transitions that fire
// in softirq while the peer (of another cgroup) is on the CPU; so do the
// snapshot (ls) and the listing of followed sockets (stuck lists).
func TestCgroupAndNetnsPerSocket(t *testing.T) {
	t.Parallel()
	ns1, ns2 := testnet.New(t), testnet.New(t)
	top := testnet.NewCgroup(t)
	port, cport := ns1.Port(0), ns1.Port(5) // the same numbers in both namespaces
	v4, family := loopback(4)
	type side struct {
		ns           *testnet.NS
		srv, cli     *testnet.Proc
		srvCg, cliCg *testnet.Cgroup
	}
	var sides []side
	for i, ns := range []*testnet.NS{ns1, ns2} {
		s := side{ns: ns, srvCg: top.Sub(fmt.Sprintf("server%d", i+1)), cliCg: top.Sub(fmt.Sprintf("client%d", i+1))}
		s.srv, s.cli = ns.StartProc(t), ns.StartProc(t)
		must(t, s.srvCg.Add(s.srv.Pid()))
		must(t, s.cliCg.Add(s.cli.Pid()))
		sides = append(sides, s)
	}
	opts := blockOpts(ns1) // ns1's ports, which ns2's sockets use too
	opts.CPUTask = true
	sess := tracetest.Start(t, opts)
	o := ns1.Oracle(t)

	fd := mustFD(t)
	type open struct{ l, c, a int }
	var fds []open
	for _, s := range sides {
		l := fd(s.srv.Listen(netip.AddrPortFrom(v4, port)))
		c := fd(s.cli.ConnectFrom(netip.AddrPortFrom(v4, cport), netip.AddrPortFrom(v4, port)))
		a := fd(s.srv.Accept(l))
		fds = append(fds, open{l, c, a})
	}
	// Every socket is live: what the snapshot and the listing say.
	snap, err := sess.Tracer().Snapshot(tracer.SnapshotOptions{Netns: []uint32{ns1.Inode(), ns2.Inode()}})
	must(t, err)
	listed, err := sess.Tracer().Sockets()
	must(t, err)
	for i, s := range sides {
		must(t, s.cli.Close(fds[i].c))
		must(t, s.srv.ReadEOF(fds[i].a))
		must(t, s.srv.Close(fds[i].a))
		must(t, s.srv.Close(fds[i].l))
	}
	sess.WaitCloses(ns1.Inode(), 3)
	sess.WaitCloses(ns2.Inode(), 3)
	evs := sess.Stop()

	bySk := func(socks []model.SocketInfo) map[uint64]model.SocketInfo {
		m := map[uint64]model.SocketInfo{}
		for _, s := range socks {
			m[s.Skaddr] = s
		}
		return m
	}
	snapped, followed := bySk(snap.Sockets), bySk(listed)
	for _, s := range sides {
		ls := tracetest.Lives(evs, s.ns.Inode())
		if len(ls) != 3 {
			t.Fatalf("want exactly 3 sockets in namespace %d, got %d:\n%s", s.ns.Inode(), len(ls), tracetest.Dump(ls))
		}
		r := tracetest.FindRoles(t, ls, port)
		srv, cli := uint32(s.srv.Pid()), uint32(s.cli.Pid())
		tracetest.CheckSocket(t, r.Listener, tracetest.SockWant{Name: "listener", Edges: tracetest.ListenerLife,
			Family: family, Local: v4, Lport: port, Owner: srv})
		tracetest.CheckSocket(t, r.Client, tracetest.SockWant{Name: "client", Edges: slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose),
			Family: family, Local: v4, Remote: v4, Lport: cport, Rport: port, Owner: cli, Bound: true})
		tracetest.CheckSocket(t, r.Child, tracetest.SockWant{Name: "accepted", Edges: slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose),
			Family: family, Local: v4, Remote: v4, Lport: port, Rport: cport, Owner: srv, Inherited: 2})
		peerOnCPU := 0
		for _, c := range []struct {
			name        string
			l           *tracetest.Life
			cg          *testnet.Cgroup
			owner, peer uint32
		}{{"listener", r.Listener, s.srvCg, srv, cli}, {"accepted", r.Child, s.srvCg, srv, cli}, {"client", r.Client, s.cliCg, cli, srv}} {
			for i := range c.l.Evs {
				e := &c.l.Evs[i]
				if e.CgroupID != c.cg.ID || e.Netns != s.ns.Inode() {
					t.Errorf("netns %d %s: %s: cgroup %d, netns %d; want %s (%d) and %d",
						s.ns.Inode(), c.name, tracetest.FmtEvent(e), e.CgroupID, e.Netns, c.cg.Path, c.cg.ID, s.ns.Inode())
				}
				if e.CPUPid == c.peer {
					peerOnCPU++
				}
			}
			// The snapshot and the listing, taken while it was live.
			for what, m := range map[string]map[uint64]model.SocketInfo{"snapshot": snapped, "listing": followed} {
				si, ok := m[c.l.Skaddr]
				if !ok {
					t.Errorf("netns %d %s: not in the %s", s.ns.Inode(), c.name, what)
					continue
				}
				if si.CgroupID != c.cg.ID || si.Cgroup == nil || si.Cgroup.Path != c.cg.Path || si.Netns != s.ns.Inode() {
					t.Errorf("netns %d %s in the %s: cgroup %d %+v netns %d, want %d %s and %d", s.ns.Inode(), c.name, what,
						si.CgroupID, si.Cgroup, si.Netns, c.cg.ID, c.cg.Path, s.ns.Inode())
				}
			}
		}
		// The test means something only if transitions fired while the
		// other process, of another cgroup, was on the CPU.
		if peerOnCPU == 0 {
			t.Errorf("netns %d: no transition fired with the peer on the CPU: softirq attribution untested\n%s", s.ns.Inode(), tracetest.Dump(ls))
		}
		t.Logf("netns %d: %d transitions fired with the peer process on the CPU", s.ns.Inode(), peerOnCPU)
	}
	tracetest.CompareOracle(t, o, ourLives(evs, ns1, ns2), nil)
}

// TestSocketKeepsCreatorsCgroup: a process makes a listener and a
// connection in cgroup A, then moves to cgroup B and goes on using them
// (accepts, closes). Every event of the sockets made before the move names
// A, also a child accepted after it (a child copies its listener's
// cgroup); a socket made after the move names B. This is what the kernel
// records: the cgroup of the task that created the socket
// (cgroup_sk_alloc), not of the one that uses it.
func TestSocketKeepsCreatorsCgroup(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	top := testnet.NewCgroup(t)
	a, b := top.Sub("a"), top.Sub("b")
	p := ns.StartProc(t)
	must(t, a.Add(p.Pid()))
	sess := tracetest.Start(t, blockOpts(ns))
	o := ns.Oracle(t)
	v4, _ := loopback(4)
	port := ns.Port(0)
	srv := netip.AddrPortFrom(v4, port)
	fd := mustFD(t)

	lfd := fd(p.Listen(srv))
	cfd := fd(p.Connect(srv))
	afd := fd(p.Accept(lfd))
	must(t, b.Add(p.Pid()))
	if !slices.Contains(b.Procs(), p.Pid()) {
		t.Fatalf("process %d did not move to %s", p.Pid(), b.Path)
	}
	dfd := fd(p.Connect(srv)) // made in B
	d2 := fd(p.Accept(lfd))   // a child of the listener made in A
	cAddr, err := p.LocalAddr(cfd)
	must(t, err)
	dAddr, err := p.LocalAddr(dfd)
	must(t, err)
	for _, f := range []func() error{
		func() error { return p.Close(cfd) }, func() error { return p.ReadEOF(afd) }, func() error { return p.Close(afd) },
		func() error { return p.Close(dfd) }, func() error { return p.ReadEOF(d2) }, func() error { return p.Close(d2) },
		func() error { return p.Close(lfd) },
	} {
		must(t, f())
	}
	sess.WaitCloses(ns.Inode(), 5)
	ls := tracetest.Lives(sess.Stop(), ns.Inode())
	if len(ls) != 5 {
		t.Fatalf("want 5 sockets, got %d:\n%s", len(ls), tracetest.Dump(ls))
	}
	for _, l := range ls {
		want, role := a, ""
		switch e := l.Evs[len(l.Evs)-1]; {
		case l.First() == "CLOSE>LISTEN":
			role = "listener (made in A)"
		case e.Sport == dAddr.Port():
			role, want = "client made after the move", b
		case e.Dport == dAddr.Port():
			role = "child accepted after the move, of the listener made in A"
		case e.Sport == cAddr.Port():
			role = "client made before the move, closed after it"
		default:
			role = "child accepted before the move, closed after it"
		}
		for i := range l.Evs {
			if e := &l.Evs[i]; e.CgroupID != want.ID {
				t.Errorf("%s: %s: cgroup %d, want %s (%d)", role, tracetest.FmtEvent(e), e.CgroupID, want.Path, want.ID)
			}
		}
	}
	tracetest.CompareOracle(t, o, ls, nil)
}

// filterWorld is the sockets of TestCgroupFilters: in ns1, three servers
// each connected to by a process of another cgroup; in ns2, the same ports
// as the first of them, in one process.
//
//	ns1  pa  in T/a                      listens P0 (LA); connects to LB from C1 (cB)
//	     psub in T/a/sub                 connects to LA from C0 (cA)
//	     pb  in T/b                      listens P1 (LB); connects to LC from C2 (cC)
//	     pc  in T/b/docker-ID.scope      listens P2 (LC)
//	ns2  pn  in T/b                      listens P0 (L2), connects to it from C0 (c2)
//
// The accepted children kA, kB, kC, k2 are their listeners' (and their
// cgroups'). Roles are named by the namespace and the ports.
type filterWorld struct {
	ns1, ns2                *testnet.NS
	t, a, sub, b, container *testnet.Cgroup
	containerID             string
	p0, p1, p2              uint16
	c0, c1, c2              uint16
}

func (w *filterWorld) role(l *tracetest.Life) string {
	e := l.Evs[len(l.Evs)-1]
	prefix := ""
	if e.Netns == w.ns2.Inode() {
		prefix = "2"
	} else if e.Netns != w.ns1.Inode() {
		return "foreign"
	}
	names := map[uint16]string{w.p0: "A", w.p1: "B", w.p2: "C"}
	switch l.First() {
	case "CLOSE>LISTEN":
		return "L" + names[e.Sport] + prefix
	case "CLOSE>SYN_SENT":
		return "c" + names[e.Dport] + prefix
	case "LISTEN>SYN_RECV":
		return "k" + names[e.Sport] + prefix
	}
	return "?"
}

// TestCgroupFilters: --cgroup (a subtree), --container and --netns, alone
// and together, let through exactly the sockets they select, each one
// whole (every transition, as the kernel's record has it), and nothing
// else of the test.
func TestCgroupFilters(t *testing.T) {
	t.Parallel()
	w := &filterWorld{ns1: testnet.New(t), ns2: testnet.New(t)}
	w.t = testnet.NewCgroup(t)
	w.a, w.b = w.t.Sub("a"), w.t.Sub("b")
	w.sub = w.a.Sub("sub")
	w.containerID = uniqueID("c0ffee00")
	w.container = w.b.Sub("docker-" + w.containerID + ".scope")
	w.p0, w.p1, w.p2 = w.ns1.Port(0), w.ns1.Port(1), w.ns1.Port(2)
	w.c0, w.c1, w.c2 = w.ns1.Port(4), w.ns1.Port(5), w.ns1.Port(6)
	procs := map[string]*testnet.Proc{}
	for name, cg := range map[string]*testnet.Cgroup{"pa": w.a, "psub": w.sub, "pb": w.b, "pc": w.container} {
		procs[name] = w.ns1.StartProc(t)
		must(t, cg.Add(procs[name].Pid()))
	}
	procs["pn"] = w.ns2.StartProc(t)
	must(t, w.b.Add(procs["pn"].Pid()))

	fs, err := tracer.FindCgroupFS()
	must(t, err)
	want := func(c *testnet.Cgroup) model.CgroupWant {
		cw, err := fs.ResolveCgroup(c.Path)
		must(t, err)
		if cw.ID != c.ID || cw.Level != c.Level || cw.Path != c.Path {
			t.Fatalf("ResolveCgroup(%s) = %+v, want id %d level %d", c.Path, cw, c.ID, c.Level)
		}
		return cw
	}
	// --container resolves as the command resolves it: the cgroups whose
	// path names the container.
	cgs, err := fs.Walk()
	must(t, err)
	containerWants, _, err := tracer.ContainerCgroups(cgs, []string{w.containerID[:12]}, nil)
	must(t, err)
	if len(containerWants) != 1 || containerWants[0].ID != w.container.ID {
		t.Fatalf("--container %s resolved to %+v, want %s", w.containerID[:12], containerWants, w.container.Path)
	}
	if none, _, err := tracer.ContainerCgroups(cgs, []string{w.containerID[:12]}, []model.CgroupWant{want(w.a)}); err != nil || len(none) != 0 {
		t.Fatalf("--container %s inside --cgroup %s resolved to %+v, %v: want none", w.containerID[:12], w.a.Path, none, err)
	}

	everything := []string{"LA", "cA", "kA", "LB", "cB", "kB", "LC", "cC", "kC", "LA2", "cA2", "kA2"}
	cases := []struct {
		name  string
		f     model.Filter
		socks []string
	}{
		{"reference: the port block", blockOpts(w.ns1).Filter, everything},
		{"--cgroup T/a: it and below", model.Filter{Cgroups: []model.CgroupWant{want(w.a)}}, []string{"LA", "kA", "cA", "cB"}},
		{"--cgroup T/a/sub", model.Filter{Cgroups: []model.CgroupWant{want(w.sub)}}, []string{"cA"}},
		{"--cgroup T/b, in both namespaces", model.Filter{Cgroups: []model.CgroupWant{want(w.b)}}, []string{"LB", "kB", "cC", "LC", "kC", "LA2", "cA2", "kA2"}},
		{"--cgroup T/a/sub --cgroup the container", model.Filter{Cgroups: []model.CgroupWant{want(w.sub), want(w.container)}}, []string{"cA", "LC", "kC"}},
		{"--container ID", model.Filter{Containers: []string{w.containerID[:12]}}, []string{"LC", "kC"}},
		{"--container ID --cgroup T/a: none", model.Filter{Containers: []string{w.containerID}, Cgroups: []model.CgroupWant{want(w.a)}}, nil},
		{"--container ID --cgroup T/b", model.Filter{Containers: []string{w.containerID}, Cgroups: []model.CgroupWant{want(w.b)}}, []string{"LC", "kC"}},
		{"--netns ns2", model.Filter{Netns: []uint32{w.ns2.Inode()}}, []string{"LA2", "cA2", "kA2"}},
		{"--netns ns1 --cgroup T/b", model.Filter{Netns: []uint32{w.ns1.Inode()}, Cgroups: []model.CgroupWant{want(w.b)}}, []string{"LB", "kB", "cC", "LC", "kC"}},
		{"--netns both --port P0", model.Filter{Netns: []uint32{w.ns1.Inode(), w.ns2.Inode()}, Ports: []uint16{w.p0}}, []string{"LA", "cA", "kA", "LA2", "cA2", "kA2"}},
	}
	opts := make([]tracer.Options, len(cases))
	for i, c := range cases {
		opts[i] = tracer.Options{Filter: c.f}
	}
	sessions := tracetest.StartAll(t, opts...)
	o := w.ns1.Oracle(t)

	v4, _ := loopback(4)
	ap := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(v4, p) }
	fd := mustFD(t)
	pa, psub, pb, pc, pn := procs["pa"], procs["psub"], procs["pb"], procs["pc"], procs["pn"]
	la, lb, lc, l2 := fd(pa.Listen(ap(w.p0))), fd(pb.Listen(ap(w.p1))), fd(pc.Listen(ap(w.p2))), fd(pn.Listen(ap(w.p0)))
	ca, cb, cc, c2 := fd(psub.ConnectFrom(ap(w.c0), ap(w.p0))), fd(pa.ConnectFrom(ap(w.c1), ap(w.p1))),
		fd(pb.ConnectFrom(ap(w.c2), ap(w.p2))), fd(pn.ConnectFrom(ap(w.c0), ap(w.p0)))
	ka, kb, kc, k2 := fd(pa.Accept(la)), fd(pb.Accept(lb)), fd(pc.Accept(lc)), fd(pn.Accept(l2))
	for _, c := range []struct {
		cli      *testnet.Proc
		cfd      int
		srv      *testnet.Proc
		kfd, lfd int
	}{{psub, ca, pa, ka, la}, {pa, cb, pb, kb, lb}, {pb, cc, pc, kc, lc}, {pn, c2, pn, k2, l2}} {
		must(t, c.cli.Close(c.cfd))
		must(t, c.srv.ReadEOF(c.kfd))
		must(t, c.srv.Close(c.kfd))
		must(t, c.srv.Close(c.lfd))
	}
	sessions[0].WaitCloses(w.ns1.Inode(), 9)
	sessions[0].WaitCloses(w.ns2.Inode(), 3)
	tracetest.StopAll(sessions)

	// Roles of the kernel's record, by the reference tracer's lives.
	ref := ourLives(sessions[0].Stop(), w.ns1, w.ns2)
	roleOfKey := map[string]string{}
	for _, l := range ref {
		roleOfKey[l.Key()] = w.role(l)
	}
	var refRoles []string
	for _, l := range ref {
		refRoles = append(refRoles, w.role(l))
	}
	if slices.Sort(refRoles); !slices.Equal(refRoles, slices.Sorted(slices.Values(everything))) {
		t.Fatalf("the reference tracer saw %v, want %v\n%s", refRoles, everything, tracetest.Dump(ref))
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs := sessions[i].Stop()
			var got []string
			var ls []*tracetest.Life
			for _, l := range tracetest.ForeignLives(evs, 0) {
				r := w.role(l)
				if r == "foreign" {
					// Another test's socket: only a filter that
					// selects nothing of ours by cgroup or netns lets
					// those through.
					if len(c.f.Cgroups) > 0 || len(c.f.Netns) > 0 || c.f.CgroupFilter() {
						t.Errorf("a socket of another namespace passed:\n%s", tracetest.Dump([]*tracetest.Life{l}))
					}
					continue
				}
				got = append(got, r)
				ls = append(ls, l)
			}
			slices.Sort(got)
			if wantRoles := slices.Sorted(slices.Values(c.socks)); !slices.Equal(got, wantRoles) {
				t.Errorf("sockets let through: %v, want %v\n%s", got, wantRoles, tracetest.Dump(ls))
			}
			// Whole: every transition of each, as the kernel recorded them.
			tracetest.CompareOracle(t, o, ls, func(e testnet.OracleEvent, key string) bool {
				return slices.Contains(c.socks, roleOfKey[key])
			})
			// User space agrees (FilterSockets: ls, the stuck lists): it
			// selects the same sockets, by their cgroup path, namespace
			// and ports.
			paths := map[uint64]string{w.a.ID: w.a.Path, w.sub.ID: w.sub.Path, w.b.ID: w.b.Path, w.container.ID: w.container.Path}
			for _, l := range ref {
				e := l.Evs[len(l.Evs)-1]
				si := model.SocketInfo{Family: e.Family, Sport: e.Sport, Dport: e.Dport, Netns: e.Netns, CgroupID: e.CgroupID,
					Cgroup: &model.CgroupInfo{Path: paths[e.CgroupID]}}
				if got, want := c.f.MatchSocket(si.Facts()), slices.Contains(c.socks, w.role(l)); got != want {
					t.Errorf("%s (cgroup %s, netns %d): MatchSocket = %v, the kernel said %v", w.role(l), paths[e.CgroupID], e.Netns, got, want)
				}
			}
		})
	}
}

// TestContainerRescan: --container for a container whose cgroup appears
// after tracing started (a container started, or restarted, later). The
// rescan adds its cgroup to the kernel's filter; sockets it made before
// are not traced at all (not even their later transitions: a socket is
// traced whole or not), sockets it makes after are traced whole.
func TestContainerRescan(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	top := testnet.NewCgroup(t)
	id := uniqueID("5ca1ab1e")
	// The test scans itself (CgroupRescan < 0), at the moments it chooses.
	sess := tracetest.Start(t, tracer.Options{Filter: model.Filter{Containers: []string{id[:12]}}, CgroupRescan: -1})
	watch := sess.Tracer().ContainerWatch()
	if added, err := watch.Scan(); err != nil || len(added) != 0 {
		t.Fatalf("a scan before the container exists: added %+v, %v", added, err)
	}
	o := ns.Oracle(t)
	v4, _ := loopback(4)
	ap := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(v4, p) }
	fd := mustFD(t)

	// The container starts: its cgroup, a process in it, sockets.
	cg := top.Sub("system.slice").Sub("docker-" + id + ".scope")
	p := ns.StartProc(t)
	must(t, cg.Add(p.Pid()))
	early := fd(p.Listen(ap(ns.Port(0))))
	earlyC := fd(p.Connect(ap(ns.Port(0))))
	earlyK := fd(p.Accept(early))

	added, err := watch.Scan()
	must(t, err)
	if len(added) != 1 || added[0].ID != cg.ID || added[0].Path != cg.Path {
		t.Fatalf("the rescan added %+v, want %s (%d)", added, cg.Path, cg.ID)
	}
	if again, err := watch.Scan(); err != nil || len(again) != 0 {
		t.Errorf("a second rescan added %+v, %v: want nothing new", again, err)
	}
	// Born after the rescan: traced whole.
	late := fd(p.Listen(ap(ns.Port(1))))
	lateC := fd(p.Connect(ap(ns.Port(1))))
	lateK := fd(p.Accept(late))
	for _, f := range []func() error{
		func() error { return p.Close(earlyC) }, func() error { return p.ReadEOF(earlyK) }, func() error { return p.Close(earlyK) },
		func() error { return p.Close(early) },
		func() error { return p.Close(lateC) }, func() error { return p.ReadEOF(lateK) }, func() error { return p.Close(lateK) },
		func() error { return p.Close(late) },
	} {
		must(t, f())
	}
	sess.WaitCloses(ns.Inode(), 3)
	ls := tracetest.Lives(sess.Stop(), ns.Inode())
	var got []string
	for _, l := range ls {
		e := l.Evs[len(l.Evs)-1]
		if e.Sport == ns.Port(0) || e.Dport == ns.Port(0) {
			t.Errorf("a socket born before its cgroup joined the filter was traced:\n%s", tracetest.Dump([]*tracetest.Life{l}))
		}
		got = append(got, l.First())
	}
	slices.Sort(got)
	if want := []string{"CLOSE>LISTEN", "CLOSE>SYN_SENT", "LISTEN>SYN_RECV"}; !slices.Equal(got, want) {
		t.Errorf("sockets traced: %v, want the three made after the rescan\n%s", got, tracetest.Dump(ls))
	}
	tracetest.CompareOracle(t, o, ls, func(e testnet.OracleEvent, _ string) bool {
		return e.Sport == ns.Port(1) || e.Dport == ns.Port(1)
	})
}

// TestCountsByCgroup: stats counts each transition under its socket's own
// cgroup, and, past the map's bound, as not counted.
func TestCountsByCgroup(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	top := testnet.NewCgroup(t)
	srvCg, cliCg, third := top.Sub("server"), top.Sub("client"), top.Sub("third")
	srv, cli, other := ns.StartProc(t), ns.StartProc(t), ns.StartProc(t)
	must(t, srvCg.Add(srv.Pid()))
	must(t, cliCg.Add(cli.Pid()))
	must(t, third.Add(other.Pid()))
	topWant := model.CgroupWant{ID: top.ID, Level: top.Level, Path: top.Path}
	ss := tracetest.StartAll(t,
		tracer.Options{Mode: tracer.ModeAggregate, Filter: model.Filter{Cgroups: []model.CgroupWant{topWant}}},
		tracer.Options{Mode: tracer.ModeAggregate, Filter: model.Filter{Cgroups: []model.CgroupWant{topWant}}, MaxCgroups: 2})
	v4, _ := loopback(4)
	ap := netip.AddrPortFrom(v4, ns.Port(0))
	fd := mustFD(t)
	l := fd(srv.Listen(ap))
	c := fd(cli.Connect(ap))
	k := fd(srv.Accept(l))
	must(t, cli.Close(c))
	must(t, srv.ReadEOF(k))
	must(t, srv.Close(k))
	must(t, srv.Close(l))
	// A socket of the third cgroup: connect refused (CLOSE>SYN_SENT>CLOSE).
	if _, err := other.Connect(netip.AddrPortFrom(v4, ns.Port(1))); err == nil {
		t.Fatal("a connect to a port nobody listens on succeeded")
	}
	// The last transitions may fire just after the calls return (the
	// peer's ACK): wait for all 14, then detach, so the counts stay still.
	total := func(a *model.Aggregate) (n uint64) {
		for _, c := range a.Cgroups {
			n += c.Transitions
		}
		return n + a.CgroupOther
	}
	aggs := make([]*model.Aggregate, len(ss))
	for i, s := range ss {
		deadline := time.Now().Add(5 * time.Second)
		for {
			a, err := s.Tracer().Aggregate()
			must(t, err)
			if total(a) >= 14 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		must(t, s.Tracer().Detach())
		a, err := s.Tracer().Aggregate()
		must(t, err)
		aggs[i] = a
	}
	tracetest.StopAll(ss)
	for i, s := range ss {
		a := aggs[i]
		// Listener 2 + child 5 (LISTEN>SYN_RECV ... LAST_ACK>CLOSE) for
		// the server, 5 for the client, 2 for the refused one.
		want := map[uint64]uint64{srvCg.ID: 7, cliCg.ID: 5, third.ID: 2}
		if i == 0 {
			got := map[uint64]uint64{}
			for id, c := range a.Cgroups {
				got[id] = c.Transitions
			}
			if !maps.Equal(got, want) || a.CgroupOther != 0 {
				t.Errorf("counts by cgroup %v (other %d), want %v", got, a.CgroupOther, want)
			}
			// Births: the child, the client, the refused one (a
			// listener is not "opened").
			if a.Cgroups[srvCg.ID].Opened != 1 || a.Cgroups[cliCg.ID].Opened != 1 || a.Cgroups[third.ID].Opened != 1 {
				t.Errorf("sockets opened %+v: want one in each cgroup", a.Cgroups)
			}
			rows := a.CgroupRows(s.Tracer().Cgroups().Lookup)
			if len(rows) != 3 || rows[0].ID != srvCg.ID || rows[0].Path != srvCg.Path {
				t.Errorf("rows %+v: want the server's cgroup first, by its path", rows)
			}
			continue
		}
		// Room for two: the third cgroup met counts as not counted.
		var counted uint64
		for id, c := range a.Cgroups {
			if _, ok := want[id]; !ok {
				t.Errorf("cgroup %d counted: not the test's", id)
			}
			counted += c.Transitions
		}
		if len(a.Cgroups) != 2 || counted+a.CgroupOther != 14 || a.CgroupOther == 0 {
			t.Errorf("bounded to 2: %d cgroups counting %d, other %d; want 2, and 14 in all", len(a.Cgroups), counted, a.CgroupOther)
		}
	}
}

// TestContainerRescanRuns: the tracer rescans by itself, every
// CgroupRescan, and says what it added.
func TestContainerRescanRuns(t *testing.T) {
	t.Parallel()
	top := testnet.NewCgroup(t)
	id := uniqueID("feedface")
	var mu sync.Mutex
	var notes []string
	sess := tracetest.Start(t, tracer.Options{Filter: model.Filter{Containers: []string{id}}, CgroupRescan: 20 * time.Millisecond,
		Info: func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() }})
	if slots := sess.Tracer().CgroupSlots(); len(slots) != 0 {
		t.Fatalf("slots %+v before the container exists", slots)
	}
	cg := top.Sub("libpod-" + id + ".scope")
	deadline := time.Now().Add(5 * time.Second)
	for !slices.ContainsFunc(sess.Tracer().CgroupSlots(), func(w model.CgroupWant) bool { return w.ID == cg.ID }) {
		if time.Now().After(deadline) {
			t.Fatalf("the rescan did not add %s within 5s: slots %+v", cg.Path, sess.Tracer().CgroupSlots())
		}
		time.Sleep(10 * time.Millisecond)
	}
	sess.Stop()
	mu.Lock()
	defer mu.Unlock()
	// First that the container has no cgroup yet, then that its cgroup
	// joined.
	if len(notes) != 2 || !strings.Contains(notes[0], "no cgroup names it now") || !strings.Contains(notes[1], "following the new cgroup "+cg.Path) {
		t.Errorf("notes %q: want one saying the container has no cgroup yet, then one naming %s", notes, cg.Path)
	}
}

// TestTotalsCountCgroups: serve's totals count per cgroup only when asked
// (--label-container); TakeCgroupCount empties a cgroup's entry, which the
// next transition makes again from 0; Alive sees a removed cgroup gone.
func TestTotalsCountCgroups(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	top := testnet.NewCgroup(t)
	srvCg, cliCg := top.Sub("server"), top.Sub("client")
	srv, cli := ns.StartProc(t), ns.StartProc(t)
	must(t, srvCg.Add(srv.Pid()))
	must(t, cliCg.Add(cli.Pid()))
	ss := tracetest.StartAll(t,
		tracer.Options{Mode: tracer.ModeAggregate, Totals: true, CountCgroups: true},
		tracer.Options{Mode: tracer.ModeAggregate, Totals: true})
	v4, _ := loopback(4)
	fd := mustFD(t)
	conn := func(port uint16) {
		ap := netip.AddrPortFrom(v4, port)
		l := fd(srv.Listen(ap))
		c := fd(cli.Connect(ap))
		k := fd(srv.Accept(l))
		must(t, cli.Close(c))
		must(t, srv.ReadEOF(k))
		must(t, srv.Close(k))
		must(t, srv.Close(l))
	}
	read := func(tr *tracer.Tracer) map[uint64]model.Count {
		got := map[uint64]model.Count{}
		uncounted, err := tr.ReadCgroupCounts(func(id uint64, c model.Count) { got[id] = c })
		must(t, err)
		if uncounted != 0 {
			t.Errorf("%d transitions not counted per cgroup", uncounted)
		}
		return got
	}
	// Wait for the 12 (the peer's last ACK may come after the calls).
	wait := func(tr *tracer.Tracer, srvWant, cliWant uint64) map[uint64]model.Count {
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := read(tr)
			if got[srvCg.ID].Transitions >= srvWant && got[cliCg.ID].Transitions >= cliWant || time.Now().After(deadline) {
				return got
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	conn(ns.Port(0))
	counting, plain := ss[0].Tracer(), ss[1].Tracer()
	got := wait(counting, 7, 5)
	if got[srvCg.ID] != (model.Count{Transitions: 7, Opened: 1}) || got[cliCg.ID] != (model.Count{Transitions: 5, Opened: 1}) {
		t.Errorf("counts %+v: want server 7 (1 opened), client 5 (1 opened)", got)
	}
	if n := len(read(plain)); n != 0 {
		t.Errorf("totals without CountCgroups counted %d cgroups", n)
	}
	c, ok, err := counting.TakeCgroupCount(srvCg.ID)
	must(t, err)
	if !ok || c != (model.Count{Transitions: 7, Opened: 1}) {
		t.Errorf("taken %+v, %v: want the server's 7", c, ok)
	}
	if _, ok := read(counting)[srvCg.ID]; ok {
		t.Error("a taken entry is still there")
	}
	if _, ok, _ := counting.TakeCgroupCount(srvCg.ID); ok {
		t.Error("an entry was taken twice")
	}
	// Counted again from 0.
	conn(ns.Port(1))
	got = wait(counting, 7, 10)
	if got[srvCg.ID] != (model.Count{Transitions: 7, Opened: 1}) || got[cliCg.ID] != (model.Count{Transitions: 10, Opened: 2}) {
		t.Errorf("counts %+v: want server 7 again, client 10", got)
	}

	// Alive, by file handle (root): a cgroup there, then removed.
	r := counting.Cgroups()
	if !r.Stats().ByHandle {
		t.Error("root resolves no cgroup ids by handle")
	}
	dir := top.Dir + "/gone"
	must(t, os.Mkdir(dir, 0o755))
	var st syscall.Stat_t
	must(t, syscall.Stat(dir, &st))
	if !r.Alive(st.Ino) || !r.Alive(srvCg.ID) {
		t.Error("a cgroup that is there is not alive")
	}
	must(t, os.Remove(dir))
	if r.Alive(st.Ino) {
		t.Error("a removed cgroup is alive")
	}
	tracetest.StopAll(ss)
}
