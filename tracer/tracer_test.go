package tracer_test

// Privileged tests (tier 3): load and attach the real programs, make TCP
// connections in a private network namespace, and assert the exact
// transitions, addresses, ports, owners and flags tcpstate reports for each
// socket, and that they match the kernel's own record (a tracefs instance
// on the same tracepoint). Every test selects its own events by the
// namespace's inode (the oracle's by the namespace's port block, which no
// other test uses: testnet.PortFilter). The machine may be busy with
// other work meanwhile: the loss the kernel reports is machine-wide, so it
// fails no test by itself (it is reported with any failure), except
// TestCounters, which requires none.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// TestHelperProcess is the helper child of testnet.StartProc.
func TestHelperProcess(t *testing.T) { testnet.HelperProcess() }

// mismatch says why a socket's delivered events do not match the filters
// of o ("" if they do). Port and pid filters are per socket (sticky: one
// event with the port or owner suffices), family and state per event.
func mismatch(o tracer.Options, l *tracetest.Life) string {
	some := func(f func(e *model.Event) bool) bool {
		for i := range l.Evs {
			if f(&l.Evs[i]) {
				return true
			}
		}
		return false
	}
	switch {
	case len(o.Ports) > 0 && !some(func(e *model.Event) bool {
		return slices.Contains(o.Ports, e.Sport) || slices.Contains(o.Ports, e.Dport)
	}):
		return "no port in --port"
	case len(o.LPorts) > 0 && !some(func(e *model.Event) bool { return slices.Contains(o.LPorts, e.Sport) }):
		return "no local port in --lport"
	case len(o.RPorts) > 0 && !some(func(e *model.Event) bool { return slices.Contains(o.RPorts, e.Dport) }):
		return "no remote port in --rport"
	case len(o.Pids) > 0 && !some(func(e *model.Event) bool { return e.OwnerKnown() && slices.Contains(o.Pids, e.Pid) }):
		return "no owner in --pid"
	case o.Family != 0 && some(func(e *model.Event) bool { return e.Family != o.Family }):
		return "another family"
	case len(o.States) > 0 && some(func(e *model.Event) bool {
		return !slices.Contains(o.States, e.Old) && !slices.Contains(o.States, e.New)
	}):
		return "a transition outside --state"
	}
	return ""
}

// blockOpts filters on the namespace's port block: every socket of the
// test, and nothing else on the machine, whatever load others put on it.
// For the test's sockets the filter decides at their first event (a port is
// in the block), so nothing is held and the events are those of an
// unfiltered tracer; TestConnection and TestFilters check the unfiltered
// path.
func blockOpts(ns *testnet.NS) tracer.Options {
	var o tracer.Options
	lo, hi := ns.PortRange()
	for p := lo; p <= hi; p++ {
		o.Ports = append(o.Ports, p)
	}
	return o
}

func loopback(fam int) (netip.Addr, model.Family) {
	if fam == 6 {
		return netip.IPv6Loopback(), model.AFInet6
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1}), model.AFInet
}

type step func() error

func run(t *testing.T, steps ...step) {
	t.Helper()
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("scenario step %d: %v", i, err)
		}
	}
}

// connection makes one full connection: server listens and accepts, client
// connects, then the client (or the server, if serverFirst) closes first
// and the other side closes when it has read the FIN. It returns the
// client's port.
func connection(t *testing.T, server, client testnet.Sockets, ap netip.AddrPort, serverFirst bool) uint16 {
	t.Helper()
	var lfd, cfd, afd int
	var cport uint16
	run(t,
		func() (err error) { lfd, err = server.Listen(ap); return },
		func() (err error) { cfd, err = client.Connect(ap); return },
		func() (err error) { afd, err = server.Accept(lfd); return },
		func() error {
			local, err := client.LocalAddr(cfd)
			cport = local.Port()
			return err
		},
	)
	first, firstFD, second, secondFD := client, cfd, server, afd
	if serverFirst {
		first, firstFD, second, secondFD = server, afd, client, cfd
	}
	run(t,
		func() error { return first.Close(firstFD) },
		func() error { return second.ReadEOF(secondFD) },
		func() error { return second.Close(secondFD) },
		func() error { return server.Close(lfd) },
	)
	return cport
}

// TestConnection: a full connection over IPv4 and IPv6, closed from either
// side, in one process: the exact transitions of the listener, the client
// and the accepted child, their addresses, ports, owner and flags, and the
// same transitions as the kernel's record.
func TestConnection(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, fam := range []int{4, 6} {
		for _, serverFirst := range []bool{false, true} {
			name := fmt.Sprintf("ipv%d/client-closes-first", fam)
			if serverFirst {
				name = fmt.Sprintf("ipv%d/server-closes-first", fam)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ns := testnet.New(t)
				s := tracetest.Start(t, tracer.Options{RingSize: 8 << 20})
				o := ns.Oracle(t)
				addr, family := loopback(fam)
				port := ns.Port(0)
				cport := connection(t, ns, ns, netip.AddrPortFrom(addr, port), serverFirst)
				s.WaitCloses(ns.Inode(), 3)
				ls := tracetest.Lives(s.Stop(), ns.Inode())
				if len(ls) != 3 {
					t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), tracetest.Dump(ls))
				}
				r := tracetest.FindRoles(t, ls, port)
				pid := uint32(os.Getpid())
				clientClose, childClose := tracetest.ActiveClose, tracetest.PassiveClose
				if serverFirst {
					clientClose, childClose = tracetest.PassiveClose, tracetest.ActiveClose
				}
				tracetest.CheckSocket(t, r.Listener, tracetest.SockWant{Name: "listener", Edges: tracetest.ListenerLife,
					Family: family, Local: addr, Lport: port, Owner: pid})
				tracetest.CheckSocket(t, r.Client, tracetest.SockWant{Name: "client", Edges: slices.Concat(tracetest.ActiveOpen, clientClose),
					Family: family, Local: addr, Remote: addr, Lport: cport, Rport: port, Owner: pid})
				tracetest.CheckSocket(t, r.Child, tracetest.SockWant{Name: "accepted", Edges: slices.Concat(tracetest.PassiveOpen, childClose),
					Family: family, Local: addr, Remote: addr, Lport: port, Rport: cport, Owner: pid, Inherited: 2})
				tracetest.CompareOracle(t, o, ls, nil)
			})
		}
	}
}

// TestOwnerAcrossProcesses: the server runs in a helper child process,
// the client in the test process. Transitions that fire in softirq while
// the other process is on the CPU (on loopback the peer's system call
// delivers the packets) must still name the socket's owner.
func TestOwnerAcrossProcesses(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, serverFirst := range []bool{false, true} {
		name := "client-closes-first"
		if serverFirst {
			name = "server-closes-first"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			srv := ns.StartProc(t)
			s := tracetest.Start(t, blockOpts(ns))
			o := ns.Oracle(t)
			addr, family := loopback(4)
			port := ns.Port(0)
			cport := connection(t, srv, ns, netip.AddrPortFrom(addr, port), serverFirst)
			s.WaitCloses(ns.Inode(), 3)
			ls := tracetest.Lives(s.Stop(), ns.Inode())
			if len(ls) != 3 {
				t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), tracetest.Dump(ls))
			}
			r := tracetest.FindRoles(t, ls, port)
			me, them := uint32(os.Getpid()), uint32(srv.Pid())
			clientClose, childClose := tracetest.ActiveClose, tracetest.PassiveClose
			if serverFirst {
				clientClose, childClose = tracetest.PassiveClose, tracetest.ActiveClose
			}
			tracetest.CheckSocket(t, r.Listener, tracetest.SockWant{Name: "server's listener", Edges: tracetest.ListenerLife,
				Family: family, Local: addr, Lport: port, Owner: them})
			tracetest.CheckSocket(t, r.Client, tracetest.SockWant{Name: "client", Edges: slices.Concat(tracetest.ActiveOpen, clientClose),
				Family: family, Local: addr, Remote: addr, Lport: cport, Rport: port, Owner: me})
			tracetest.CheckSocket(t, r.Child, tracetest.SockWant{Name: "server's accepted socket", Edges: slices.Concat(tracetest.PassiveOpen, childClose),
				Family: family, Local: addr, Remote: addr, Lport: port, Rport: cport, Owner: them, Inherited: 2})
			tracetest.CompareOracle(t, o, ls, nil)

			// The test is only meaningful if some of each process's
			// transitions ran while another task was on the CPU: on
			// loopback usually the other process (its system call sends
			// the packets), sometimes ksoftirqd.
			for _, c := range []struct {
				name  string
				l     []*tracetest.Life
				owner uint32
			}{{"server", []*tracetest.Life{r.Listener, r.Child}, them}, {"client", []*tracetest.Life{r.Client}, me}} {
				n := 0
				for _, l := range c.l {
					for _, e := range l.Evs {
						if e.CPUPid != c.owner {
							n++
						}
					}
				}
				if n == 0 {
					t.Errorf("no %s transition fired with another task than its owner (pid %d) on the CPU: owner attribution untested\n%s", c.name, c.owner, tracetest.Dump(ls))
				}
			}
			if t.Failed() {
				return
			}
			// The named case: the server's ESTABLISHED->CLOSE_WAIT (or,
			// server first, the client's) is caused by the other side's FIN.
			for _, e := range slices.Concat(r.Child.Evs, r.Client.Evs) {
				if e.New == model.CloseWait {
					t.Logf("%s (owner %d, on CPU %d %s)", tracetest.Edge(e.Old, e.New), e.Pid, e.CPUPid, e.CPUComm)
				}
			}
		})
	}
}

// TestRefused: connect to a port nothing listens on: CLOSE->SYN_SENT, then
// the RST: SYN_SENT->CLOSE. Blocking connect over IPv4, non-blocking over
// IPv6.
func TestRefused(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, c := range []struct {
		fam      int
		nonblock bool
	}{{4, false}, {6, true}} {
		fam, nonblock := c.fam, c.nonblock
		name := fmt.Sprintf("ipv%d/blocking", fam)
		if nonblock {
			name = fmt.Sprintf("ipv%d/nonblocking", fam)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			s := tracetest.Start(t, blockOpts(ns))
			o := ns.Oracle(t)
			addr, family := loopback(fam)
			ap := netip.AddrPortFrom(addr, ns.Port(0))
			if nonblock {
				fd, err := ns.ConnectNonblock(ap)
				if err != nil {
					t.Fatal(err)
				}
				if err := ns.WaitConnected(fd); !errorsIsRefused(err) {
					t.Fatalf("non-blocking connect to a closed port: %v, want ECONNREFUSED", err)
				}
				if err := ns.Close(fd); err != nil {
					t.Fatal(err)
				}
			} else if _, err := ns.Connect(ap); !errorsIsRefused(err) {
				t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
			}
			s.WaitCloses(ns.Inode(), 1)
			ls := tracetest.Lives(s.Stop(), ns.Inode())
			if len(ls) != 1 {
				t.Fatalf("want exactly 1 socket in the namespace, got %d:\n%s", len(ls), tracetest.Dump(ls))
			}
			// The port was chosen (SYN_SENT->CLOSE carries it) but the
			// test cannot learn it from a closed socket.
			ephemeral := ls[0].Evs[len(ls[0].Evs)-1].Sport
			if lo, hi := ns.EphemeralRange(); ephemeral < lo || ephemeral > hi {
				t.Errorf("client port %d outside the namespace's ephemeral range %d-%d", ephemeral, lo, hi)
			}
			tracetest.CheckSocket(t, ls[0], tracetest.SockWant{Name: "refused client", Edges: []string{"CLOSE>SYN_SENT", "SYN_SENT>CLOSE"},
				Family: family, Local: addr, Remote: addr, Lport: ephemeral, Rport: ap.Port(), Owner: uint32(os.Getpid())})
			tracetest.CompareOracle(t, o, ls, nil)
		})
	}
}

func errorsIsRefused(err error) bool { return errors.Is(err, unix.ECONNREFUSED) }

// TestLinger0Reset: close() with SO_LINGER {1, 0} aborts the connection:
// ESTABLISHED->CLOSE on the closing side, and the RST takes the peer from
// ESTABLISHED to CLOSE. The client resets over IPv4, the server over IPv6.
func TestLinger0Reset(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, c := range []struct {
		fam          int
		serverResets bool
	}{{4, false}, {6, true}} {
		fam, serverResets := c.fam, c.serverResets
		name := fmt.Sprintf("ipv%d/client-resets", fam)
		if serverResets {
			name = fmt.Sprintf("ipv%d/server-resets", fam)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			srv := ns.StartProc(t)
			s := tracetest.Start(t, blockOpts(ns))
			o := ns.Oracle(t)
			addr, family := loopback(fam)
			port := ns.Port(0)
			ap := netip.AddrPortFrom(addr, port)
			var lfd, cfd, afd int
			var cport uint16
			run(t,
				func() (err error) { lfd, err = srv.Listen(ap); return },
				func() (err error) { cfd, err = ns.Connect(ap); return },
				func() (err error) { afd, err = srv.Accept(lfd); return },
				func() error { l, err := ns.LocalAddr(cfd); cport = l.Port(); return err },
			)
			if serverResets {
				run(t,
					func() error { return srv.SetLinger0(afd) },
					func() error { return srv.Close(afd) },
					// The RST arrived: read fails with ECONNRESET.
					func() error {
						if err := ns.ReadEOF(cfd); !errors.Is(err, unix.ECONNRESET) {
							return fmt.Errorf("read after the peer's reset: %v, want ECONNRESET", err)
						}
						return nil
					},
					func() error { return ns.Close(cfd) },
					func() error { return srv.Close(lfd) },
				)
			} else {
				run(t,
					func() error { return ns.SetLinger0(cfd) },
					func() error { return ns.Close(cfd) },
					func() error {
						if err := srv.ReadEOF(afd); !errors.Is(err, unix.ECONNRESET) {
							return fmt.Errorf("read after the peer's reset: %v, want ECONNRESET", err)
						}
						return nil
					},
					func() error { return srv.Close(afd) },
					func() error { return srv.Close(lfd) },
				)
			}
			s.WaitCloses(ns.Inode(), 3)
			ls := tracetest.Lives(s.Stop(), ns.Inode())
			if len(ls) != 3 {
				t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), tracetest.Dump(ls))
			}
			r := tracetest.FindRoles(t, ls, port)
			me, them := uint32(os.Getpid()), uint32(srv.Pid())
			reset := []string{"ESTABLISHED>CLOSE"}
			tracetest.CheckSocket(t, r.Listener, tracetest.SockWant{Name: "listener", Edges: tracetest.ListenerLife,
				Family: family, Local: addr, Lport: port, Owner: them})
			tracetest.CheckSocket(t, r.Client, tracetest.SockWant{Name: "client", Edges: slices.Concat(tracetest.ActiveOpen, reset),
				Family: family, Local: addr, Remote: addr, Lport: cport, Rport: port, Owner: me})
			tracetest.CheckSocket(t, r.Child, tracetest.SockWant{Name: "accepted", Edges: slices.Concat(tracetest.PassiveOpen, reset),
				Family: family, Local: addr, Remote: addr, Lport: port, Rport: cport, Owner: them, Inherited: 2})
			tracetest.CompareOracle(t, o, ls, nil)
		})
	}
}

// TestCounters: after Detach, Summary's SocketsTracked is exactly the
// number of socket incarnations the tracer delivered events for, wherever
// they were (a ->CLOSE of a socket never seen before makes no entry),
// SocketsLive the ones not closed yet, and nothing that passed the filter
// is lost. The family filter drops other families' sockets before the
// program counts them, so the counts are exact while only this test's kind
// of traffic passes: IPv6 (machine-wide, other tests' included). Recursion
// misses are the host's (other tests' loads; a 6.1 guest counted 6 beside
// TestSnapshotRace): logged, and an attempt that lost one of its own
// transitions to one is retried.
func TestCounters(t *testing.T) {
	t.Parallel()
	testnet.Retry(t, func(p *testnet.Problems) {
		ns := testnet.New(t)
		srv := ns.StartProc(t)
		s := tracetest.Start(t, tracer.Options{Filter: model.Filter{Family: model.AFInet6}})
		const conns = 5
		for i := range conns {
			connection(t, srv, ns, testnet.Addr(6, ns.Port(i)), i%2 == 1)
		}
		s.WaitCloses(ns.Inode(), 3*conns)
		evs := s.Stop()
		c := s.Counters

		if n := len(tracetest.Lives(evs, ns.Inode())); n != 3*conns {
			p.Errorf("%d sockets in the namespace, want %d (recursion misses host-wide: %d)", n, 3*conns, c.RecursionMisses)
		}
		open := map[uint64]bool{}
		var tracked, live uint64
		for _, e := range evs {
			if !open[e.Skaddr] && e.New != model.Close {
				tracked++
				open[e.Skaddr] = true
				live++
			}
			if e.New == model.Close && open[e.Skaddr] {
				delete(open, e.Skaddr)
				live--
			}
		}
		if c.Sockets != tracked {
			p.Errorf("Sockets %d, want %d (socket incarnations in the event stream)", c.Sockets, tracked)
		}
		// The start snapshot seeded the sockets that already existed: those of
		// the family that made no event since are live too.
		seen := map[uint64]bool{}
		for _, e := range evs {
			seen[e.Skaddr] = true
		}
		for _, so := range s.Tracer().StartSnapshot().Sockets {
			if so.Family == model.AFInet6 && so.Kind == model.KindFull && so.State != model.Close && !seen[so.Skaddr] {
				live++
			}
		}
		if c.SocketsLive != live {
			p.Errorf("SocketsLive %d, want %d (incarnations not closed yet, and the older sockets the start snapshot seeded)", c.SocketsLive, live)
		}
		if c.Accepts < conns {
			p.Errorf("Accepts %d, want at least the test's %d", c.Accepts, conns)
		}
		if c.ProgRuns != 0 && c.ProgRuns < uint64(len(evs)) { // counted only with kernel.bpf_stats_enabled
			p.Errorf("ProgRuns %d, less than the %d events delivered", c.ProgRuns, len(evs))
		}
		if c.LostFiltered() != 0 || c.AcceptNoSpace != 0 {
			p.Errorf("counters %+v: want no loss and no eviction on this light load", c)
		}
		if c.RecursionMisses != 0 {
			t.Logf("the kernel skipped %d nested runs (recursion misses) host-wide", c.RecursionMisses)
		}
		for _, e := range evs {
			if e.Family != model.AFInet6 {
				t.Fatalf("the IPv6 filter let through %s", tracetest.FmtEvent(&e))
			}
		}
	})
}

// TestAcceptInAnotherProcess: the test process listens, a helper child
// accepts from the same listening socket (nginx's master and workers): the
// accepted socket is the listener's owner's (inherited) until accept()
// names the child, and the child's from then on. If the tracer starts after
// listen(), the snapshot it takes at start names the listener's owner (its
// first holder), and the child inherits it just the same, also when the
// kernel chose the listener's port (listen() without bind()).
func TestAcceptInAnotherProcess(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t)
	for _, c := range []struct {
		name       string
		late, auto bool
	}{
		{"listener-traced", false, false},
		{"listener-older-than-tracer", true, false},
		// listen() without bind(): the kernel picks the port (autobind),
		// which only the snapshot can tell the tracer.
		{"autobound-listener-older-than-tracer", true, true},
	} {
		late := c.late
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ns := testnet.New(t)
			// The oracle starts with the tracer.
			var s *tracetest.Session
			var o *testnet.Oracle
			if !late {
				s, o = tracetest.Start(t, blockOpts(ns)), ns.Oracle(t)
			}
			addr, family := loopback(6)
			port := ns.Port(0)
			ap := netip.AddrPortFrom(addr, port)
			var lfd int
			var err error
			if c.auto {
				if lfd, err = ns.Socket(ap); err == nil {
					err = ns.Do(func() error { return unix.Listen(lfd, 16) })
				}
				var la netip.AddrPort
				if err == nil {
					la, err = ns.LocalAddr(lfd)
				}
				if err == nil {
					port = la.Port()
					ap = netip.AddrPortFrom(addr, port)
					if lo, hi := ns.PortRange(); port < lo || port > hi {
						t.Fatalf("autobound port %d outside the namespace's block %d-%d", port, lo, hi)
					}
				}
			} else {
				lfd, err = ns.Listen(ap)
			}
			if err != nil {
				t.Fatal(err)
			}
			lf, err := ns.SocketFile(lfd)
			if err != nil {
				t.Fatal(err)
			}
			worker := ns.StartProc(t, lf)
			lf.Close()
			if late {
				s, o = tracetest.Start(t, blockOpts(ns)), ns.Oracle(t)
			}
			var cfd, afd int
			var cport uint16
			run(t,
				func() (err error) { cfd, err = ns.Connect(ap); return },
				func() (err error) { afd, err = worker.Accept(testnet.FirstExtraFD); return },
				func() error { l, err := ns.LocalAddr(cfd); cport = l.Port(); return err },
				func() error { return ns.Close(cfd) },
				func() error { return worker.ReadEOF(afd) },
				func() error { return worker.Close(afd) },
				// The worker's copy first: the test's close() is the last
				// one, which closes the listener.
				func() error { return worker.Close(testnet.FirstExtraFD) },
				func() error { return ns.Close(lfd) },
			)
			s.WaitCloses(ns.Inode(), 3)
			ls := tracetest.Lives(s.Stop(), ns.Inode())
			if len(ls) != 3 {
				t.Fatalf("want exactly 3 sockets in the namespace, got %d:\n%s", len(ls), tracetest.Dump(ls))
			}
			me, them := uint32(os.Getpid()), uint32(worker.Pid())
			var listener, client, child *tracetest.Life
			for _, l := range ls {
				switch l.First() {
				case "CLOSE>LISTEN", "LISTEN>CLOSE":
					listener = l
				case "CLOSE>SYN_SENT":
					client = l
				case "LISTEN>SYN_RECV":
					child = l
				}
			}
			if listener == nil || client == nil || child == nil {
				t.Fatalf("listener, client or accepted socket missing:\n%s", tracetest.Dump(ls))
			}
			tracetest.CheckSocket(t, client, tracetest.SockWant{Name: "client", Edges: slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose),
				Family: family, Local: addr, Remote: addr, Lport: cport, Rport: port, Owner: me})
			childWant := tracetest.SockWant{Name: "accepted by the worker", Edges: slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose),
				Family: family, Local: addr, Remote: addr, Lport: port, Rport: cport, Owner: them, Inherited: 2, InheritedOwner: me}
			if !late {
				tracetest.CheckSocket(t, listener, tracetest.SockWant{Name: "listener", Edges: tracetest.ListenerLife,
					Family: family, Local: addr, Lport: port, Owner: me})
				tracetest.CheckSocket(t, child, childWant)
				tracetest.CompareOracle(t, o, ls, nil)
				return
			}
			// Born before the tracer: the listener's only event is its
			// close, by its owner, with no duration.
			if e := listener.Evs[0]; len(listener.Evs) != 1 || e.Pid != me || !e.OwnerKnown() || e.DurationKnown() || e.Sport != port {
				t.Errorf("listener born before the tracer: want one LISTEN>CLOSE owned by %d, without duration:\n%s", me, tracetest.Dump([]*tracetest.Life{listener}))
			}
			// The start snapshot named the listener's owner (its first
			// holder in pid order: the test process, or the worker where
			// pids wrapped between them): the child inherits it until
			// accept() names the worker, as with a traced listener.
			childWant.InheritedOwner = min(me, them)
			tracetest.CheckSocket(t, child, childWant)
			tracetest.CompareOracle(t, o, ls, nil)
		})
	}
}

// TestFilters: one scenario, many tracers with different filters at once.
// Each filter lets through exactly its sockets, WHOLE (events made before
// the socket's port or owner was known are held in the kernel and
// delivered, flagged FlagHeld, when it matches), and nothing of the other
// sockets made at the same time in the same namespace.
//
// The sockets (X is a helper child process, "me" the test process):
//
//	L0 X listens 127.0.0.1:P0   A  me connects from 127.0.0.1:C (bound) to P0   A2 X accepts A
//	L1 me listens [::1]:P1      B  me connects to P1                            B2 me accepts B
//	L2 me listens 127.0.0.1:P2  D  me connects to P2                            D2 X accepts D from L2
//
// A and D close first; B2 (the server side) closes before B.
func TestFilters(t *testing.T) {
	t.Parallel()
	ns := testnet.New(t)
	me := uint32(os.Getpid())
	p0, p1, p2, c := ns.Port(0), ns.Port(1), ns.Port(2), ns.Port(5)
	v4, v6 := netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()

	// X accepts from L2, so it gets L2's socket when it starts; X must
	// start before the tracers (its pid is a filter value) and L2 must
	// listen after them: X gets the bare socket, which listens later.
	l2, err := ns.Socket(netip.AddrPortFrom(v4, p2))
	if err != nil {
		t.Fatal(err)
	}
	l2f, err := ns.SocketFile(l2)
	if err != nil {
		t.Fatal(err)
	}
	x := ns.StartProc(t, l2f)
	l2f.Close()
	them := uint32(x.Pid())

	cases := []struct {
		name  string
		opts  tracer.Options
		socks []string // roles let through
		// held: the events of a role flagged FlagHeld (by index).
		held map[string][]int
		// heldIfPeerLate: more held events, where the kernel had not set
		// the child's peer yet at its LISTEN->SYN_RECV (the oracle shows
		// remote port 0: Linux 6.12 and before, not 6.18), so that a
		// remote port filter could not decide before SYN_RECV->ESTABLISHED.
		heldIfPeerLate map[string][]int
	}{
		// Unfiltered: it sees the whole machine; a large ring absorbs the
		// backlog while the other tracers load.
		{name: "none", opts: tracer.Options{RingSize: 16 << 20}, socks: []string{"L0", "A", "A2", "L1", "B", "B2", "L2", "D", "D2"}},
		{name: "port P0", opts: tracer.Options{Filter: model.Filter{Ports: []uint16{p0}}}, socks: []string{"L0", "A", "A2"}},
		// C is A's local port, chosen by bind(), but CLOSE->SYN_SENT fires
		// before connect() sets it: held until SYN_SENT->ESTABLISHED.
		{name: "lport C", opts: tracer.Options{Filter: model.Filter{LPorts: []uint16{c}}}, socks: []string{"A"},
			held: map[string][]int{"A": {0}}},
		// A2's peer is already set at LISTEN->SYN_RECV on 6.18 (the
		// program holds a child's event only while its remote port is 0),
		// so A2 matches at once; on 6.12 and before it is set just after.
		{name: "rport C", opts: tracer.Options{Filter: model.Filter{RPorts: []uint16{c}}}, socks: []string{"A2"},
			heldIfPeerLate: map[string][]int{"A2": {0}}},
		{name: "port C", opts: tracer.Options{Filter: model.Filter{Ports: []uint16{c}}}, socks: []string{"A", "A2"},
			held: map[string][]int{"A": {0}}, heldIfPeerLate: map[string][]int{"A2": {0}}},
		{name: "lport P1 or P2", opts: tracer.Options{Filter: model.Filter{LPorts: []uint16{p1, p2}}}, socks: []string{"L1", "B2", "L2", "D2"}},
		// Accepted sockets wait for accept() to name their owner: their
		// LISTEN->SYN_RECV and SYN_RECV->ESTABLISHED are held, and name the
		// listener's owner (inherited): for D2 the test process, not X.
		{name: "pid X", opts: tracer.Options{Filter: model.Filter{Pids: []uint32{them}}}, socks: []string{"L0", "A2", "D2"},
			held: map[string][]int{"A2": {0, 1}, "D2": {0, 1}}},
		{name: "port P2 and pid X", opts: tracer.Options{Filter: model.Filter{Ports: []uint16{p2}, Pids: []uint32{them}}}, socks: []string{"D2"},
			held: map[string][]int{"D2": {0, 1}}},
		{name: "port P0 or P1 and pid X or me", opts: tracer.Options{Filter: model.Filter{Ports: []uint16{p0, p1}, Pids: []uint32{them, me}}},
			socks: []string{"L0", "A", "A2", "L1", "B", "B2"}, held: map[string][]int{"A2": {0, 1}, "B2": {0, 1}}},
		{name: "ipv6", opts: tracer.Options{Filter: model.Filter{Family: model.AFInet6}}, socks: []string{"L1", "B", "B2"}},
		// P1 is only IPv6: nothing passes both.
		{name: "ipv4 and port P1", opts: tracer.Options{Filter: model.Filter{Family: model.AFInet, Ports: []uint16{p1}}}},
		{name: "state CLOSE_WAIT", opts: tracer.Options{Filter: model.Filter{States: []model.State{model.CloseWait}}}, socks: []string{"A2", "B", "D2"}},
		{name: "state SYN_SENT or FIN_WAIT2, port P1", opts: tracer.Options{Filter: model.Filter{States: []model.State{model.SynSent, model.FinWait2}, Ports: []uint16{p1}}},
			socks: []string{"B", "B2"}},
	}
	opts := make([]tracer.Options, len(cases))
	for i, c := range cases {
		opts[i] = c.opts
	}
	sessions := tracetest.StartAll(t, opts...)
	o := ns.Oracle(t)

	var l0, l1, a, b, d, a2, b2, d2 int
	var bPort, dPort uint16
	port := func(fd *int, p *uint16) step {
		return func() error { l, err := ns.LocalAddr(*fd); *p = l.Port(); return err }
	}
	run(t,
		func() (err error) { l0, err = x.Listen(netip.AddrPortFrom(v4, p0)); return },
		func() error { return ns.BindListen(l2, netip.AddrPortFrom(v4, p2)) },
		func() (err error) { l1, err = ns.Listen(netip.AddrPortFrom(v6, p1)); return },
		func() (err error) {
			a, err = ns.ConnectFrom(netip.AddrPortFrom(v4, c), netip.AddrPortFrom(v4, p0))
			return
		},
		func() (err error) { b, err = ns.Connect(netip.AddrPortFrom(v6, p1)); return },
		func() (err error) { d, err = ns.Connect(netip.AddrPortFrom(v4, p2)); return },
		func() (err error) { a2, err = x.Accept(l0); return },
		func() (err error) { b2, err = ns.Accept(l1); return },
		func() (err error) { d2, err = x.Accept(testnet.FirstExtraFD); return },
		port(&b, &bPort),
		port(&d, &dPort),
		func() error { return ns.Close(a) },
		func() error { return x.ReadEOF(a2) },
		func() error { return x.Close(a2) },
		func() error { return ns.Close(b2) },
		func() error { return ns.ReadEOF(b) },
		func() error { return ns.Close(b) },
		func() error { return ns.Close(d) },
		func() error { return x.ReadEOF(d2) },
		func() error { return x.Close(d2) },
		func() error { return x.Close(l0) },
		func() error { return ns.Close(l1) },
		// X's copy of L2 first: the test's close() closes the listener.
		func() error { return x.Close(testnet.FirstExtraFD) },
		func() error { return ns.Close(l2) },
	)
	sessions[0].WaitCloses(ns.Inode(), 9)
	tracetest.StopAll(sessions)

	want := map[string]tracetest.SockWant{
		"L0": {Edges: tracetest.ListenerLife, Family: model.AFInet, Local: v4, Lport: p0, Owner: them},
		"A": {Edges: slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), Family: model.AFInet, Local: v4, Remote: v4,
			Lport: c, Rport: p0, Owner: me, Bound: true},
		"A2": {Edges: slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), Family: model.AFInet, Local: v4, Remote: v4,
			Lport: p0, Rport: c, Owner: them, Inherited: 2},
		"L1": {Edges: tracetest.ListenerLife, Family: model.AFInet6, Local: v6, Lport: p1, Owner: me},
		"B": {Edges: slices.Concat(tracetest.ActiveOpen, tracetest.PassiveClose), Family: model.AFInet6, Local: v6, Remote: v6,
			Lport: bPort, Rport: p1, Owner: me},
		"B2": {Edges: slices.Concat(tracetest.PassiveOpen, tracetest.ActiveClose), Family: model.AFInet6, Local: v6, Remote: v6,
			Lport: p1, Rport: bPort, Owner: me, Inherited: 2},
		"L2": {Edges: tracetest.ListenerLife, Family: model.AFInet, Local: v4, Lport: p2, Owner: me},
		"D": {Edges: slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), Family: model.AFInet, Local: v4, Remote: v4,
			Lport: dPort, Rport: p2, Owner: me},
		"D2": {Edges: slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), Family: model.AFInet, Local: v4, Remote: v4,
			Lport: p2, Rport: dPort, Owner: them, Inherited: 2, InheritedOwner: me},
	}
	// roleOf names a socket by its ports (any of its events will do but a
	// child's first, whose peer may not be set yet).
	roleOf := func(ports [][2]uint16) string {
		for _, p := range []struct {
			port uint16
			n    string
		}{{p0, "0"}, {p1, "1"}, {p2, "2"}} {
			var local, remote, peer bool
			for _, sp := range ports {
				local = local || sp[0] == p.port
				remote = remote || sp[1] == p.port
				peer = peer || sp[0] == p.port && sp[1] != 0
			}
			switch {
			case remote:
				return map[string]string{"0": "A", "1": "B", "2": "D"}[p.n]
			case peer:
				return map[string]string{"0": "A2", "1": "B2", "2": "D2"}[p.n]
			case local:
				return "L" + p.n
			}
		}
		return "?"
	}
	lifeRole := func(l *tracetest.Life) string {
		var ports [][2]uint16
		for _, e := range l.Evs {
			ports = append(ports, [2]uint16{e.Sport, e.Dport})
		}
		return roleOf(ports)
	}

	// The kernel's record, grouped by socket and named by role.
	oevs, err := o.Events()
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	oracleRole := map[string]string{} // skaddr/incarnation -> role
	{
		n := map[uint64]int{}
		ports := map[string][][2]uint16{}
		for _, e := range oevs {
			k := fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])
			ports[k] = append(ports[k], [2]uint16{e.Sport, e.Dport})
			if e.New == model.Close {
				n[e.Skaddr]++
			}
		}
		for k, p := range ports {
			oracleRole[k] = roleOf(p)
		}
	}
	// The children whose peer the kernel set only after their
	// LISTEN->SYN_RECV, by the kernel's own record.
	peerLate := map[string]bool{}
	{
		seen := map[string]bool{}
		n := map[uint64]int{}
		for _, e := range oevs {
			k := fmt.Sprintf("%#x/%d", e.Skaddr, n[e.Skaddr])
			if !seen[k] && e.Old == model.Listen && e.New == model.SynRecv && e.Dport == 0 {
				peerLate[oracleRole[k]] = true
			}
			seen[k] = true
			if e.New == model.Close {
				n[e.Skaddr]++
			}
		}
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs := sessions[i].Stop() // stopped already: the events it kept
			only := func(old, nw model.State) bool {
				return len(tc.opts.States) == 0 || slices.Contains(tc.opts.States, old) || slices.Contains(tc.opts.States, nw)
			}
			// Sockets of other namespaces (other tests, other programs)
			// may pass too, but only if they match the filter.
			for _, l := range tracetest.ForeignLives(evs, ns.Inode()) {
				if why := mismatch(tc.opts, l); why != "" {
					t.Errorf("a socket that does not match the filter passed (%s):\n%s", why, tracetest.Dump([]*tracetest.Life{l}))
				}
			}
			ls := tracetest.Lives(evs, ns.Inode())
			got := map[string]*tracetest.Life{}
			for _, l := range ls {
				r := lifeRole(l)
				if got[r] != nil {
					t.Fatalf("two sockets as %s:\n%s", r, tracetest.Dump(ls))
				}
				got[r] = l
			}
			roles := slices.Sorted(func(yield func(string) bool) {
				for r := range got {
					if !yield(r) {
						return
					}
				}
			})
			if wantRoles := slices.Sorted(slices.Values(tc.socks)); !slices.Equal(roles, wantRoles) {
				t.Errorf("sockets let through: %v, want %v\n%s", roles, wantRoles, tracetest.Dump(ls))
			}
			for r, l := range got {
				w, ok := want[r]
				if !ok {
					continue
				}
				w.Name, w.Held, w.Only = r, tc.held[r], only
				if peerLate[r] && len(tc.heldIfPeerLate[r]) > 0 {
					// Released at SYN_RECV->ESTABLISHED, before accept():
					// with the listener's owner, inherited.
					w.Held = slices.Compact(slices.Sorted(slices.Values(slices.Concat(w.Held, tc.heldIfPeerLate[r]))))
					w.HeldInherited = true
				}
				tracetest.CheckSocket(t, l, w)
			}
			tracetest.CompareOracle(t, o, ls, func(e testnet.OracleEvent, key string) bool {
				return slices.Contains(tc.socks, oracleRole[key]) && only(e.Old, e.New)
			})
		})
	}
}
