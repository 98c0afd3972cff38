// Package scenario_test makes the kernel go through every TCP state
// transition it really emits (issue 3), each scenario in its own network
// namespace with tcpstate's tracer open, and checks what tcpstate reports:
//
//	(a) the exact transitions of every socket, in order, against a list
//	    written here, and how its ->CLOSE says the connection ended: the
//	    cause model/cause.go decides from the facts the kernel gathered,
//	    the socket error, the reason of a reset it sent, and its age; and
//	    which resets the kernel's own record (tcp:tcp_send_reset) shows
//	    each socket sending;
//	(b) the same transitions, ports and addresses as the kernel's own
//	    record (a private tracefs instance on sock:inet_sock_set_state);
//	(c) the linux model: no illegal edge, no gap, no socket of unknown
//	    history (every socket is born inside the trace);
//	(d) the rfc793 model: illegal exactly at the scenario's Linux-specific
//	    edges, listed per scenario;
//
// and that every event names this process as the socket's owner.
//
// The scenarios need root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN,
// CAP_SYS_ADMIN) and tracefs; they skip without them, and fail instead when
// CI=true. They need no packet filter: where a scenario must lose a SYN or
// keep a FIN from being acknowledged, it makes the kernel do it (a full
// accept queue; a closed receive window); where a peer must vanish, it
// sits in a namespace of its own behind a veth pair whose far end goes
// down (iproute2's ip makes the pair). TestSocketDestroyed runs
// iproute2's ss -K.
package scenario_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/internal/tracetest"
	"github.com/tcpstate/tcpstate/model"
)

// Scenarios 1 and 12: a connection opened and closed from either side,
// over 127.0.0.1 and ::1.
func TestOpenClose(t *testing.T) {
	t.Parallel()
	for _, fam := range []int{4, 6} {
		for _, serverFirst := range []bool{false, true} {
			name := fmt.Sprintf("ipv%d/client-closes-first", fam)
			if serverFirst {
				name = fmt.Sprintf("ipv%d/server-closes-first", fam)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				scenario(t, func(e *env) error {
					ap := e.addr(fam, 0)
					lfd := e.listen(ap, 16)
					cfd := e.connect(ap)
					afd := e.accept(lfd)
					cport := e.port(cfd)
					e.ok(e.ns.Write(cfd, 1000))
					e.ok(e.ns.ReadFull(afd, 1000))
					e.ok(e.ns.Write(afd, 1000))
					e.ok(e.ns.ReadFull(cfd, 1000))
					first, second := cfd, afd
					if serverFirst {
						first, second = afd, cfd
					}
					e.close(first)
					e.ok(e.ns.ReadEOF(second))
					e.close(second)
					e.close(lfd)

					f, p := family(fam), ap.Port()
					w := want{
						socks: []sock{
							{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
							{"client", f, cport, p, slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), finActive},
							{"child", f, p, cport, slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), finPassive},
						},
						rfc793Illegal: []string{"child LISTEN>SYN_RECV", "client FIN_WAIT2>CLOSE"},
					}
					if serverFirst {
						w.socks[1].edges = slices.Concat(tracetest.ActiveOpen, tracetest.PassiveClose)
						w.socks[1].end = finPassive
						w.socks[2].edges = slices.Concat(tracetest.PassiveOpen, tracetest.ActiveClose)
						w.socks[2].end = finActive
						w.rfc793Illegal = []string{"child LISTEN>SYN_RECV", "child FIN_WAIT2>CLOSE"}
					}
					_, err := e.finish(w)
					return err
				})
			})
		}
	}
}

// Scenario 2, with two sockets: A and B are bound to fixed ports and
// connect to each other. A's SYN is lost (B's port also has a listener
// whose accept queue is full, and B is not connecting yet), so A waits in
// SYN_SENT; B's SYN then finds A in SYN_SENT, and A takes the
// simultaneous-open path: SYN_SENT>SYN_RECV, SYN-ACK, ESTABLISHED. B gets a
// SYN-ACK for its SYN and goes SYN_SENT>ESTABLISHED. On loopback a packet
// is processed before its sender's system call returns, so two SYNs never
// cross in flight: only one of the two sockets can see the peer's SYN
// while in SYN_SENT. TestSelfConnect has the symmetric case, in one socket.
func TestSimultaneousOpen(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		pa, pb := e.addr(4, 0), e.addr(4, 1)
		reuseport := func(fd int) { e.setInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }
		lfd, filler, fport := e.fullListener(pb, reuseport)

		a := e.socket(4)
		e.ok(testnet.Bind(a, pa))
		e.startConnect(a, pb)
		e.requireState("A (its SYN dropped by the full listener)", a, model.SynSent)

		b := e.socket(4)
		reuseport(b)
		e.ok(testnet.Bind(b, pb))
		e.startConnect(b, pa)
		e.ok(e.finishConnect(b))
		e.ok(e.finishConnect(a))
		e.requireState("A", a, model.Established)
		e.requireState("B", b, model.Established)

		e.ok(e.ns.Write(a, 100))
		e.ok(e.ns.ReadFull(b, 100))
		e.ok(e.ns.Write(b, 100))
		e.ok(e.ns.ReadFull(a, 100))
		e.close(a)
		e.ok(e.ns.ReadEOF(b))
		e.close(b)

		fchild := e.accept(lfd)
		e.close(filler)
		e.ok(e.ns.ReadEOF(fchild))
		e.close(fchild)
		e.close(lfd)

		f := model.AFInet
		_, err := e.finish(want{
			socks: []sock{
				{"listener", f, pb.Port(), 0, tracetest.ListenerLife, listenerClosed},
				{"filler", f, fport, pb.Port(), slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), finActive},
				{"filler-child", f, pb.Port(), fport, slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), finPassive},
				{"A", f, pa.Port(), pb.Port(), slices.Concat(
					[]string{"CLOSE>SYN_SENT", "SYN_SENT>SYN_RECV", "SYN_RECV>ESTABLISHED"}, tracetest.ActiveClose), finActive},
				{"B", f, pb.Port(), pa.Port(), slices.Concat(tracetest.ActiveOpen, tracetest.PassiveClose), finPassive},
			},
			rfc793Illegal: []string{
				"filler-child LISTEN>SYN_RECV",
				"filler FIN_WAIT2>CLOSE",
				"A FIN_WAIT2>CLOSE",
			},
		})
		return err
	})
}

// Scenario 2, self-connect: a socket bound to port P connects to
// 127.0.0.1:P. Its own SYN arrives while it is in SYN_SENT (SYN_RECV), its
// own SYN-ACK completes the handshake. Its close is a simultaneous close
// with itself: its FIN arrives before the FIN is acknowledged (CLOSING).
func TestSelfConnect(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		ap := e.addr(4, 0)
		s := e.socket(4)
		e.ok(testnet.Bind(s, ap))
		e.ok(unix.Connect(s, sockaddr(ap)))
		e.requireState("self-connected socket", s, model.Established)
		e.ok(e.ns.Write(s, 100))
		e.ok(e.ns.ReadFull(s, 100))
		e.close(s)

		_, err := e.finish(want{
			socks: []sock{
				{"self", model.AFInet, ap.Port(), ap.Port(), []string{
					"CLOSE>SYN_SENT", "SYN_SENT>SYN_RECV", "SYN_RECV>ESTABLISHED",
					"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>CLOSING", "CLOSING>CLOSE"}, finSimultaneous},
			},
			rfc793Illegal: []string{"self CLOSING>CLOSE"},
		})
		return err
	})
}

// Scenario 3: simultaneous close. The client's FIN is queued behind data
// the server's closed receive window keeps unsent, so the client is in
// FIN_WAIT1 with its FIN neither sent nor acknowledged when the server's
// FIN arrives: FIN_WAIT1>CLOSING. The server's FIN was acknowledged at
// once (FIN_WAIT2); once it reads, the client's data and FIN follow.
func TestSimultaneousClose(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error { return simultaneousClose(e, false) })
}

func simultaneousClose(e *env, closeInClosing bool) error {
	t := e.t
	ap := e.addr(4, 0)
	lfd := e.listen(ap, 16, e.smallRcvbuf) // the child inherits it
	c := e.socket(4)
	e.smallSndbuf(c)
	e.startConnect(c, ap)
	e.ok(e.finishConnect(c))
	s := e.accept(lfd)
	cport := e.port(c)

	e.fill("client", c)
	e.ok(e.ns.Shutdown(c, unix.SHUT_WR))
	e.requireState("client after shutdown(SHUT_WR) with its FIN queued", c, model.FinWait1)
	e.ok(e.ns.Shutdown(s, unix.SHUT_WR))
	e.requireState("client after the server's FIN", c, model.Closing)
	e.waitState("server", s, model.FinWait2)
	if e.unsent(c) == 0 {
		t.Fatal("the client's data and FIN went out before the server read: no simultaneous close")
	}
	if closeInClosing {
		e.close(c) // CLOSING>CLOSING
	}
	e.ok(e.ns.ReadEOF(s)) // the window opens: the client's data, then its FIN
	if !closeInClosing {
		e.waitState("client", c, model.Close)
		e.close(c)
	}
	e.close(s)
	e.close(lfd)

	client := slices.Concat(tracetest.ActiveOpen, []string{"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>CLOSING", "CLOSING>CLOSE"})
	illegal := []string{"child LISTEN>SYN_RECV", "child FIN_WAIT2>CLOSE", "client CLOSING>CLOSE"}
	if closeInClosing {
		client = slices.Concat(tracetest.ActiveOpen, []string{"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>CLOSING", "CLOSING>CLOSING", "CLOSING>CLOSE"})
		illegal = append(illegal, "client CLOSING>CLOSING")
	}
	f, p := model.AFInet, ap.Port()
	_, err := e.finish(want{
		socks: []sock{
			{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
			// The client had queued its FIN when the server's came:
			// simultaneous. The server's FIN went first and was
			// acknowledged at once: it closed actively.
			{"client", f, cport, p, client, finSimultaneous},
			{"child", f, p, cport, slices.Concat(tracetest.PassiveOpen, tracetest.ActiveClose), finActive},
		},
		rfc793Illegal: illegal,
	})
	return err
}

// Scenario 4: connect() to a port nothing listens on: the RST ends
// SYN_SENT (IPv4 and IPv6).
func TestRefused(t *testing.T) {
	t.Parallel()
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			t.Parallel()
			scenario(t, func(e *env) error {
				ap := e.addr(fam, 1)
				c := e.socket(fam)
				e.startConnect(c, ap)
				if err := e.finishConnect(c); !errors.Is(err, unix.ECONNREFUSED) {
					t.Fatalf("connect to a port nothing listens on: %v, want ECONNREFUSED", err)
				}
				e.close(c)
				_, err := e.finish(want{
					// The port connect() chose is released with the RST, before
					// getsockname could read it: any local port.
					socks: []sock{{"client", family(fam), 0, ap.Port(), []string{"CLOSE>SYN_SENT", "SYN_SENT>CLOSE"},
						end{cause: "refused", err: "ECONNREFUSED"}}},
				})
				return err
			})
		})
	}
}

// Scenario 5: SYN timeout. Every SYN to the listener is dropped (its
// accept queue is full); with net.ipv4.tcp_syn_retries=1 in the namespace
// the connect gives up after the first SYN and one retransmission: 1 s + 2
// s of RTO.
func TestSynTimeout(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		e.ok(e.ns.SetSysctl("net.ipv4.tcp_syn_retries", "1"))
		ap := e.addr(4, 0)
		lfd, filler, fport := e.fullListener(ap)

		v := e.socket(4)
		start := time.Now()
		e.startConnect(v, ap)
		vport := e.port(v)
		e.requireState("connecting socket", v, model.SynSent)
		err := e.finishConnect(v)
		took := time.Since(start)
		if !errors.Is(err, unix.ETIMEDOUT) {
			t.Fatalf("connect to a listener dropping SYNs: %v after %v, want ETIMEDOUT", err, took)
		}
		if took < 2500*time.Millisecond || took > 4500*time.Millisecond {
			t.Errorf("the SYN timeout took %v, want about 3s (1 retry)", took)
		}
		t.Logf("connect timed out after %v", took.Round(time.Millisecond))
		e.close(v)

		fchild := e.accept(lfd)
		e.close(filler)
		e.ok(e.ns.ReadEOF(fchild))
		e.close(fchild)
		e.close(lfd)

		f, p := model.AFInet, ap.Port()
		_, err = e.finish(want{
			socks: []sock{
				{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
				{"filler", f, fport, p, slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), finActive},
				{"filler-child", f, p, fport, slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), finPassive},
				{"timed-out", f, vport, p, []string{"CLOSE>SYN_SENT", "SYN_SENT>CLOSE"}, end{cause: "timeout/connect", err: "ETIMEDOUT"}},
			},
			rfc793Illegal: []string{"filler-child LISTEN>SYN_RECV", "filler FIN_WAIT2>CLOSE"},
		})
		return err
	})
}

// established makes a listener on port 0 of the block, a client connected
// to it and the accepted child.
func (e *env) established(fam int) (lfd, c, a int, lport, cport uint16) {
	e.t.Helper()
	ap := e.addr(fam, 0)
	lfd = e.listen(ap, 16)
	c = e.connect(ap)
	a = e.accept(lfd)
	return lfd, c, a, ap.Port(), e.port(c)
}

// Scenario 6: close() with SO_LINGER {on, 0} resets the connection: both
// sides go ESTABLISHED>CLOSE.
func TestLinger0Reset(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		lfd, c, a, p, cport := e.established(4)
		e.ok(e.ns.SetLinger0(c))
		e.close(c)
		e.waitState("child after the RST", a, model.Close)
		e.close(a)
		e.close(lfd)
		f := model.AFInet
		_, err := e.finish(want{
			socks: []sock{
				{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
				{"client", f, cport, p, slices.Concat(tracetest.ActiveOpen, []string{"ESTABLISHED>CLOSE"}), aborted("TCP_STATE")},
				{"child", f, p, cport, slices.Concat(tracetest.PassiveOpen, []string{"ESTABLISHED>CLOSE"}), resetBy("ECONNRESET")},
			},
			rfc793Illegal: []string{"child LISTEN>SYN_RECV"},
		})
		return err
	})
}

// Scenario 7: close() with unread data sends an RST instead of a FIN.
func TestCloseWithUnreadData(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		lfd, c, a, p, cport := e.established(4)
		e.ok(e.ns.Write(a, 100))
		e.waitReadable("client", c)
		e.close(c) // 100 bytes unread
		e.waitState("child after the RST", a, model.Close)
		e.close(a)
		e.close(lfd)
		f := model.AFInet
		_, err := e.finish(want{
			socks: []sock{
				{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
				{"client", f, cport, p, slices.Concat(tracetest.ActiveOpen, []string{"ESTABLISHED>CLOSE"}), aborted("TCP_ABORT_ON_CLOSE")},
				{"child", f, p, cport, slices.Concat(tracetest.PassiveOpen, []string{"ESTABLISHED>CLOSE"}), resetBy("ECONNRESET")},
			},
			rfc793Illegal: []string{"child LISTEN>SYN_RECV"},
		})
		return err
	})
}

// Scenario 8: the self transitions. tcp_close_state() maps FIN_WAIT1,
// FIN_WAIT2, CLOSING and LAST_ACK to themselves, and tcp_set_state()
// reports old == new: close() after shutdown(SHUT_WR) in those states.
// Where the state must outlast an acknowledgment that loopback would send
// at once, the FIN waits behind data the peer's closed window keeps unsent.
func TestSelfTransitions(t *testing.T) {
	t.Parallel()

	// shutdown(SHUT_WR) queues the FIN behind unsent data; close() while it
	// still waits.
	t.Run("FIN_WAIT1", func(t *testing.T) {
		t.Parallel()
		scenario(t, func(e *env) error {
			ap := e.addr(4, 0)
			lfd := e.listen(ap, 16, e.smallRcvbuf)
			c := e.socket(4)
			e.smallSndbuf(c)
			e.startConnect(c, ap)
			e.ok(e.finishConnect(c))
			a := e.accept(lfd)
			cport := e.port(c)
			e.fill("client", c)
			e.ok(e.ns.Shutdown(c, unix.SHUT_WR))
			e.requireState("client after shutdown(SHUT_WR) with its FIN queued", c, model.FinWait1)
			e.close(c) // FIN_WAIT1>FIN_WAIT1
			e.ok(e.ns.ReadEOF(a))
			e.close(a)
			e.close(lfd)
			f, p := model.AFInet, ap.Port()
			_, err := e.finish(want{
				socks: []sock{
					{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
					{"client", f, cport, p, slices.Concat(tracetest.ActiveOpen, []string{
						"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}), finActive},
					{"child", f, p, cport, slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), finPassive},
				},
				rfc793Illegal: []string{"child LISTEN>SYN_RECV", "client FIN_WAIT1>FIN_WAIT1", "client FIN_WAIT2>CLOSE"},
			})
			return err
		})
	})

	// shutdown(SHUT_WR), the FIN is acknowledged, close().
	t.Run("FIN_WAIT2", func(t *testing.T) {
		t.Parallel()
		scenario(t, func(e *env) error {
			lfd, c, a, p, cport := e.established(4)
			e.ok(e.ns.Shutdown(c, unix.SHUT_WR))
			e.waitState("client after shutdown(SHUT_WR)", c, model.FinWait2)
			e.close(c) // FIN_WAIT2>FIN_WAIT2, then the timewait socket takes over
			e.ok(e.ns.ReadEOF(a))
			e.close(a)
			e.close(lfd)
			f := model.AFInet
			_, err := e.finish(want{
				socks: []sock{
					{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
					{"client", f, cport, p, slices.Concat(tracetest.ActiveOpen, []string{
						"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>FIN_WAIT2", "FIN_WAIT2>CLOSE"}), finActive},
					{"child", f, p, cport, slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), finPassive},
				},
				rfc793Illegal: []string{"child LISTEN>SYN_RECV", "client FIN_WAIT2>FIN_WAIT2", "client FIN_WAIT2>CLOSE"},
			})
			return err
		})
	})

	// The client closes its side first; the server fills the client's
	// window, shutdown(SHUT_WR) queues its FIN behind the unsent data
	// (CLOSE_WAIT>LAST_ACK), close() while it waits.
	t.Run("LAST_ACK", func(t *testing.T) {
		t.Parallel()
		scenario(t, func(e *env) error {
			ap := e.addr(4, 0)
			lfd := e.listen(ap, 16)
			c := e.socket(4)
			e.smallRcvbuf(c)
			e.startConnect(c, ap)
			e.ok(e.finishConnect(c))
			a := e.accept(lfd)
			e.smallSndbuf(a)
			cport := e.port(c)
			e.ok(e.ns.Shutdown(c, unix.SHUT_WR))
			e.waitState("client after shutdown(SHUT_WR)", c, model.FinWait2)
			e.requireState("child after the client's FIN", a, model.CloseWait)
			e.fill("child", a)
			e.ok(e.ns.Shutdown(a, unix.SHUT_WR))
			e.requireState("child after shutdown(SHUT_WR) with its FIN queued", a, model.LastAck)
			e.close(a) // LAST_ACK>LAST_ACK
			e.ok(e.ns.ReadEOF(c))
			e.waitState("client after the child's FIN", c, model.Close)
			e.close(c)
			e.close(lfd)
			f, p := model.AFInet, ap.Port()
			_, err := e.finish(want{
				socks: []sock{
					{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
					{"client", f, cport, p, slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), finActive},
					{"child", f, p, cport, slices.Concat(tracetest.PassiveOpen, []string{
						"ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>LAST_ACK", "LAST_ACK>CLOSE"}), finPassive},
				},
				rfc793Illegal: []string{"child LISTEN>SYN_RECV", "child LAST_ACK>LAST_ACK", "client FIN_WAIT2>CLOSE"},
			})
			return err
		})
	})

	// The simultaneous close of TestSimultaneousClose, with close() in CLOSING.
	t.Run("CLOSING", func(t *testing.T) {
		t.Parallel()
		scenario(t, func(e *env) error { return simultaneousClose(e, true) })
	})
}

// Scenario 9: connect(AF_UNSPEC) disconnects an established socket
// (tcp_disconnect(): ESTABLISHED>CLOSE and an RST), and the same struct
// sock connects again: a second incarnation at the same skaddr, whose
// CLOSE>SYN_SENT still carries the first incarnation's source port (the
// tracepoint fires before inet_hash_connect() picks the new one).
func TestDisconnectAndReconnect(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		lfd, c, a1, p, cport1 := e.established(4)
		e.disconnect(c)
		e.requireState("client after connect(AF_UNSPEC)", c, model.Close)
		e.waitState("first child after the RST", a1, model.Close)
		e.close(a1)

		// The first connection's port is free again (a reset leaves no
		// TIME_WAIT) and connect() could pick it for the second: a socket
		// bound to it keeps the two connections apart.
		hold := e.socket(4)
		e.ok(unix.Bind(hold, sockaddr(testnet.Addr(4, cport1))))
		e.ok(unix.Connect(c, sockaddr(e.addr(4, 0))))
		e.close(hold)
		a2 := e.accept(lfd)
		cport2 := e.port(c)
		e.close(c)
		e.ok(e.ns.ReadEOF(a2))
		e.close(a2)
		e.close(lfd)

		f := model.AFInet
		ls, err := e.finish(want{
			socks: []sock{
				{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
				{"client#1", f, cport1, p, slices.Concat(tracetest.ActiveOpen, []string{"ESTABLISHED>CLOSE"}), aborted("TCP_STATE")},
				{"child#1", f, p, cport1, slices.Concat(tracetest.PassiveOpen, []string{"ESTABLISHED>CLOSE"}), resetBy("ECONNRESET")},
				{"client#2", f, cport2, p, slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), finActive},
				{"child#2", f, p, cport2, slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), finPassive},
			},
			rfc793Illegal: []string{"child#1 LISTEN>SYN_RECV", "child#2 LISTEN>SYN_RECV", "client#2 FIN_WAIT2>CLOSE"},
		})
		c1, c2 := ls["client#1"], ls["client#2"]
		if err != nil || c1 == nil || c2 == nil {
			return err
		}
		if c1.Skaddr != c2.Skaddr {
			t.Errorf("the reconnected socket has skaddr %#x, the first connection %#x: want the same struct sock", c2.Skaddr, c1.Skaddr)
		}
		if sp := c2.Evs[0].Sport; sp != cport1 {
			t.Errorf("second CLOSE>SYN_SENT has sport %d, want the stale port %d of the first connection", sp, cport1)
		}
		t.Logf("second CLOSE>SYN_SENT: sport %d (stale; first connection %d, second %d)", c2.Evs[0].Sport, cport1, cport2)
		return nil
	})
}

// Scenario 10: a listener closed with two connections in its accept
// queue: inet_csk_listen_stop() disconnects each child (ESTABLISHED>CLOSE,
// an RST), and each client is reset.
func TestListenerClosedWithPending(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		ap := e.addr(4, 0)
		lfd := e.listen(ap, 16)
		c1 := e.connect(ap)
		c2 := e.connect(ap)
		cp1, cp2 := e.port(c1), e.port(c2)
		e.waitQueued(lfd, 2)
		e.close(lfd)
		e.waitState("client 1 after the RST", c1, model.Close)
		e.waitState("client 2 after the RST", c2, model.Close)
		e.close(c1)
		e.close(c2)
		f, p := model.AFInet, ap.Port()
		_, err := e.finish(want{
			socks: []sock{
				{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
				{"client1", f, cp1, p, slices.Concat(tracetest.ActiveOpen, []string{"ESTABLISHED>CLOSE"}), resetBy("ECONNRESET")},
				{"child1", f, p, cp1, slices.Concat(tracetest.PassiveOpen, []string{"ESTABLISHED>CLOSE"}), aborted("TCP_STATE")},
				{"client2", f, cp2, p, slices.Concat(tracetest.ActiveOpen, []string{"ESTABLISHED>CLOSE"}), resetBy("ECONNRESET")},
				{"child2", f, p, cp2, slices.Concat(tracetest.PassiveOpen, []string{"ESTABLISHED>CLOSE"}), aborted("TCP_STATE")},
			},
			rfc793Illegal: []string{"child1 LISTEN>SYN_RECV", "child2 LISTEN>SYN_RECV"},
		})
		return err
	})
}

// tcpiOptSynData is TCPI_OPT_SYN_DATA: the SYN's data was acknowledged.
const tcpiOptSynData = 32

// Scenario 11: TCP Fast Open (net.ipv4.tcp_fastopen=3 in the namespace).
// The first sendto(MSG_FASTOPEN) asks for a cookie: an ordinary handshake.
// The second sends its data in the SYN with the cookie: the server creates
// the child at once, in SYN_RECV and already acceptable. The client sets
// TCP_DEFER_ACCEPT, which makes tcp_rcv_synsent_state_process() delay the
// handshake's last ACK (up to 200 ms): the server accepts, reads and
// closes the child while it is still in SYN_RECV: SYN_RECV>FIN_WAIT1.
func TestFastOpen(t *testing.T) {
	t.Parallel()
	scenario(t, func(e *env) error {
		e.ok(e.ns.SetSysctl("net.ipv4.tcp_fastopen", "3"))
		ap := e.addr(4, 0)
		data := []byte("hello")
		lfd := e.listen(ap, 16, func(fd int) { e.setInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 16) })

		c1 := e.socket(4)
		e.ok(unix.Sendto(c1, data, unix.MSG_FASTOPEN, sockaddr(ap)))
		a1 := e.accept(lfd)
		e.ok(e.ns.ReadFull(a1, len(data)))
		if info, err := tcpInfo(c1); err != nil || info.Options&tcpiOptSynData != 0 {
			t.Fatalf("the first Fast Open connection (no cookie yet) sent data in its SYN: %+v, %v", info, err)
		}
		cp1 := e.port(c1)
		e.close(c1)
		e.ok(e.ns.ReadEOF(a1))
		e.close(a1)

		c2 := e.socket(4)
		e.setInt(c2, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1)
		e.ok(unix.Sendto(c2, data, unix.MSG_FASTOPEN, sockaddr(ap)))
		a2 := e.accept(lfd)
		e.ok(e.ns.ReadFull(a2, len(data)))
		if st := e.state(a2); st != model.SynRecv {
			return fmt.Errorf("the Fast Open child is in %v before close(), want SYN_RECV: the client's ACK came first: %w", st, errRetry)
		}
		e.close(a2) // SYN_RECV>FIN_WAIT1
		if info, err := tcpInfo(c2); err != nil || info.Options&tcpiOptSynData == 0 {
			t.Fatalf("the second Fast Open connection did not have its SYN's data acknowledged: %+v, %v", info, err)
		}
		cp2 := e.port(c2)
		e.ok(e.ns.ReadEOF(c2))
		e.close(c2)
		e.close(lfd)

		f, p := model.AFInet, ap.Port()
		_, err := e.finish(want{
			socks: []sock{
				{"listener", f, p, 0, tracetest.ListenerLife, listenerClosed},
				{"client1", f, cp1, p, slices.Concat(tracetest.ActiveOpen, tracetest.ActiveClose), finActive},
				{"child1", f, p, cp1, slices.Concat(tracetest.PassiveOpen, tracetest.PassiveClose), finPassive},
				{"client2", f, cp2, p, slices.Concat(tracetest.ActiveOpen, tracetest.PassiveClose), finPassive},
				{"child2", f, p, cp2, []string{"LISTEN>SYN_RECV", "SYN_RECV>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}, finActive},
			},
			rfc793Illegal: []string{
				"child1 LISTEN>SYN_RECV", "client1 FIN_WAIT2>CLOSE",
				"child2 LISTEN>SYN_RECV", "child2 FIN_WAIT2>CLOSE",
			},
		})
		return err
	})
}
