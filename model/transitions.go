package model

import (
	"fmt"
	"strings"
)

// A Model is a set of allowed TCP state transitions ("edges"), as the kernel
// reports them on the sock:inet_sock_set_state tracepoint: an edge old->new
// means "an event with oldstate=old and newstate=new may occur".
//
// Two models exist (ModelNames):
//
//   - linux, the default: exactly the edges Linux emits for TCP sockets
//     (protocol 6). Every edge names the kernel path that produces it. An
//     illegal verdict under linux means the kernel did something this table
//     does not know: a kernel change, an MPTCP socket that slipped through the
//     protocol filter, or a tracer bug.
//   - rfc793: the RFC 793/9293 state diagram (TLPI figure 61-5) plus the
//     reset/abort edges of the RFC's event-processing text that do not blur
//     the diagram's closing sequence. It flags normal Linux behaviour (self
//     transitions, FIN_WAIT2->CLOSE and CLOSING->CLOSE instead of TIME_WAIT, a
//     child socket born with LISTEN->SYN_RECV) as illegal; that is its use:
//     showing where Linux departs from the textbook.
//
// The table is a bitmask (Mask) so that Allowed is one array load on the
// per-event path, and so that the BPF program can load the same table to check
// edges in the kernel. A Model is immutable and safe for concurrent use.
type Model struct {
	name    string
	summary string
	mask    [NumStates]uint16
	edges   []Edge
	// illegal holds the Reason of an illegal verdict for each edge outside the
	// model, built once so that flagging an illegal edge allocates nothing.
	illegal [NumStates][NumStates]string
	// dist[a][b] is the fewest edges from a to b (0 for a == b; -1: no path).
	dist [NumStates][NumStates]int8
}

// Edge is one allowed transition and where it comes from: for linux the kernel
// function(s) that emit it, for rfc793 the part of the RFC that has it.
type Edge struct {
	Old, New State
	Doc      string
}

// String returns "OLD -> NEW".
func (e Edge) String() string { return e.Old.String() + " -> " + e.New.String() }

// DefaultModelName is the model commands use unless told otherwise.
const DefaultModelName = "linux"

// Name returns the model's name as ModelByName accepts it.
func (m *Model) Name() string { return m.name }

// Summary returns a one-line description of the model, for help texts.
func (m *Model) Summary() string { return m.summary }

// Allowed reports whether old->new is an edge of the model. It is one array
// lookup; states outside the kernel's range are never allowed.
func (m *Model) Allowed(old, new State) bool {
	if old >= NumStates || new >= NumStates {
		return false
	}
	return m.mask[old]&(1<<new) != 0
}

// Edges returns the model's edges in the order they are documented (a
// socket's life: opening, data transfer, closing). The slice is a copy.
func (m *Model) Edges() []Edge {
	return append([]Edge(nil), m.edges...)
}

// Mask returns the edge table as bitmasks: bit n of Mask()[old] is set when
// old->n is allowed. Bit 0 and row 0 are never set (0 is not a state). This is
// the form the BPF program loads into a map to check edges in the kernel.
func (m *Model) Mask() [NumStates]uint16 { return m.mask }

// illegalReason returns the Reason of an illegal verdict for old->new.
func (m *Model) illegalReason(old, new State) string {
	if old < NumStates && new < NumStates {
		return m.illegal[old][new]
	}
	return old.String() + " -> " + new.String() + " is not a transition of model " + m.name
}

// IsChildBirth reports whether an event with these states is the birth of a
// passively opened socket. inet_csk_clone_lock() copies the listener into a
// new struct sock (a new skaddr), state included, and then sets the clone's
// state to SYN_RECV: the kernel reports LISTEN->SYN_RECV on the child. Linux
// never moves a listening socket itself to SYN_RECV (a listener only ever
// leaves LISTEN for CLOSE), so every LISTEN->SYN_RECV report is a child birth.
func IsChildBirth(old, new State) bool { return old == Listen && new == SynRecv }

var (
	linuxModel = newModel("linux",
		"the transitions Linux really emits for TCP, self transitions and FIN_WAIT2/CLOSING -> CLOSE included, no TIME_WAIT",
		linuxEdges)
	rfc793Model = newModel("rfc793",
		"the RFC 793/9293 state diagram with TIME_WAIT and the RFC's reset/abort edges; flags normal Linux behaviour",
		rfc793Edges)
	models = []*Model{linuxModel, rfc793Model}
)

// ModelNames lists the models ModelByName knows, the default first.
func ModelNames() []string {
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = m.name
	}
	return names
}

// ModelByName returns the model called name (case-insensitive).
func ModelByName(name string) (*Model, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, m := range models {
		if m.name == n {
			return m, nil
		}
	}
	return nil, fmt.Errorf("unknown transition model %q (want one of %s)", name, strings.Join(ModelNames(), ", "))
}

// newModel builds a model from its documented edges. A bad table is a
// programming error, caught by the package's tests at init.
func newModel(name, summary string, edges []Edge) *Model {
	m := &Model{name: name, summary: summary, edges: edges}
	for _, e := range edges {
		if !e.Old.Valid() || !e.New.Valid() {
			panic(fmt.Sprintf("model %s: edge %d -> %d has an invalid state", name, e.Old, e.New))
		}
		if m.mask[e.Old]&(1<<e.New) != 0 {
			panic(fmt.Sprintf("model %s: edge %v listed twice", name, e))
		}
		if e.Doc == "" {
			panic(fmt.Sprintf("model %s: edge %v is not documented", name, e))
		}
		m.mask[e.Old] |= 1 << e.New
	}
	for old := State(0); old < NumStates; old++ {
		for nw := State(0); nw < NumStates; nw++ {
			if m.Allowed(old, nw) {
				continue
			}
			r := old.String() + " -> " + nw.String()
			if IsChildBirth(old, nw) {
				r += " (birth of a child socket)"
			}
			m.illegal[old][nw] = r + " is not a transition of model " + name
		}
	}
	m.distances()
	return m
}

// distances fills dist by a breadth-first walk from every state.
func (m *Model) distances() {
	for a := range NumStates {
		for b := range NumStates {
			m.dist[a][b] = -1
		}
		m.dist[a][a] = 0
		queue := []State{State(a)}
		for len(queue) > 0 {
			s := queue[0]
			queue = queue[1:]
			for n := range State(NumStates) {
				if m.Allowed(s, n) && m.dist[a][n] < 0 {
					m.dist[a][n] = m.dist[a][s] + 1
					queue = append(queue, n)
				}
			}
		}
	}
}

// Missing is the fewest transitions a socket must have made, unseen, to get
// from state from (its last seen new state) to state to (the old state of
// its next event): at least 1 when they differ, also when the model has no
// path between them.
func (m *Model) Missing(from, to State) uint64 {
	if from == to {
		return 0
	}
	if from < NumStates && to < NumStates && m.dist[from][to] > 0 {
		return uint64(m.dist[from][to])
	}
	return 1
}

// linuxEdges: every TCP transition Linux emits (kernel 6.18, measured and read
// in net/ipv4/tcp.c, tcp_input.c, tcp_minisocks.c, inet_connection_sock.c,
// inet_hashtables.c, af_inet.c; docs/kernel.md has the table). All of them go
// through tcp_set_state() or inet_sk_set_state(), which fire the tracepoint
// even when old == new: that is where the self transitions come from.
//
// Not here, on purpose:
//   - TIME_WAIT: tcp_time_wait() hands the connection to a separate
//     inet_timewait_sock (which has no tracepoint) and the full socket goes to
//     CLOSE through tcp_done(). Snapshots (ss, iter/tcp) do see TIME_WAIT.
//   - NEW_SYN_RECV: request sockets get their state set directly, without the
//     tracepoint.
//   - MPTCP connection-level sockets (protocol 262) add CLOSE->CLOSE,
//     LISTEN->LISTEN and LISTEN->ESTABLISHED; the tracer filters them out and
//     their subflows are plain TCP sockets. MPTCP-aware checking is future work.
//   - CLOSE->CLOSE: tcp_disconnect() and __tcp_close() skip the state change
//     on a socket that is already closed (e.g. reset before close()).
var linuxEdges = []Edge{
	// Opening.
	{Close, Listen, "listen(): inet_csk_listen_start() (from __inet_listen_sk)"},
	{Close, SynSent, "connect(): tcp_v4_connect()/tcp_v6_connect(); fires before the source port is chosen (sport 0)"},
	{Listen, SynRecv, "birth of a child socket: inet_csk_clone_lock() sets SYN_RECV on the new skaddr it cloned from the listener"},
	{Listen, Close, "close() or shutdown() of a listener: __tcp_close()/tcp_disconnect(), then inet_csk_listen_stop(); also inet_csk_listen_start() failing to get the port"},
	{SynSent, SynRecv, "simultaneous open or self-connect: tcp_rcv_synsent_state_process() got a SYN without ACK"},
	{SynSent, Established, "SYN-ACK received: tcp_rcv_synsent_state_process() -> tcp_finish_connect() (also TCP_REPAIR's tcp_connect())"},
	{SynSent, Close, "connect failed or abandoned: tcp_done() on RST (tcp_reset()) or SYN retries exhausted (tcp_write_err()); close() -> __tcp_close(); tcp_disconnect() (connect(AF_UNSPEC)); tcp_v4_connect()'s error path"},
	{SynRecv, Established, "handshake completed: tcp_rcv_state_process(), case TCP_SYN_RECV, acceptable ACK"},
	{SynRecv, FinWait1, "close() of a Fast Open child (or a simultaneous-open socket) before the final ACK: __tcp_close() -> tcp_close_state()"},
	{SynRecv, Close, "tcp_done() on RST or abort; inet_ehash_nolisten() losing the race for the request (child destroyed); tcp_v4_syn_recv_sock() failing after the clone; tcp_disconnect() by inet_child_forget() when the listener closes"},
	{SynRecv, CloseWait, "in source, not seen on 6.18: tcp_fin() has a TCP_SYN_RECV case, but tcp_rcv_state_process() drops ACK-less segments and moves SYN_RECV to ESTABLISHED before any FIN is processed; accepted because the kernel has the path"},
	// Data transfer ends.
	{Established, FinWait1, "close() or shutdown(SHUT_WR): tcp_close_state() from __tcp_close()/tcp_shutdown()"},
	{Established, CloseWait, "FIN received: tcp_fin()"},
	{Established, Close, "tcp_done() on RST received (tcp_reset()), retransmission or keepalive timeout (tcp_write_err()), tcp_abort() (SOCK_DESTROY); close() with unread data or SO_LINGER 0 (__tcp_close(), tcp_disconnect())"},
	// Active close.
	{FinWait1, FinWait1, "self: shutdown(SHUT_WR) then close(): tcp_close_state() maps FIN_WAIT1 to itself and tcp_set_state() reports it"},
	{FinWait1, FinWait2, "our FIN acknowledged: tcp_rcv_state_process(), case TCP_FIN_WAIT1"},
	{FinWait1, Closing, "simultaneous close, FIN received before our FIN is acked: tcp_fin(), case TCP_FIN_WAIT1"},
	{FinWait1, Close, "tcp_done() on RST, orphan retries exhausted (tcp_write_timeout()), tcp_abort(); __tcp_close() under orphan pressure (tcp_check_oom())"},
	{FinWait2, FinWait2, "self: shutdown(SHUT_WR) then close(): tcp_close_state()"},
	{FinWait2, Close, "the normal end of an active close: tcp_time_wait() hands the connection to a timewait socket and tcp_done()s the full socket (from tcp_fin(), tcp_rcv_state_process() or the FIN_WAIT2 timer); also RST, linger2 < 0"},
	{Closing, Closing, "self: shutdown(SHUT_WR) then close(): tcp_close_state()"},
	{Closing, Close, "end of a simultaneous close: tcp_rcv_state_process(), case TCP_CLOSING, -> tcp_time_wait() -> tcp_done(); also RST"},
	// Passive close.
	{CloseWait, LastAck, "close() or shutdown(SHUT_WR) after the peer's FIN: tcp_close_state()"},
	{CloseWait, Close, "tcp_done() on RST or abort; close() with unread data or SO_LINGER 0; tcp_disconnect()"},
	{LastAck, LastAck, "self: shutdown(SHUT_WR) then close(): tcp_close_state()"},
	{LastAck, Close, "our FIN acknowledged: tcp_rcv_state_process(), case TCP_LAST_ACK -> tcp_done(); also RST, retries exhausted"},
}

// rfc793Edges: RFC 793 figure 6 / RFC 9293 figure 5 as drawn in TLPI figure
// 61-5 (with the TIME_WAIT edges and FIN_WAIT1->TIME_WAIT of the RFC's text),
// plus reset/abort edges to CLOSED from the RFC's "Event Processing" section.
//
// Which reset/abort edges: the RFC's text sends a socket to CLOSED on a reset
// (SEGMENT ARRIVES, RST bit), on ABORT and on the user timeout from every
// state. Kept: SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT1 and CLOSE_WAIT ->
// CLOSED. Left out: FIN_WAIT2->CLOSED and CLOSING->CLOSED. In those two
// states the diagram's way out is TIME_WAIT, and Linux leaves them to CLOSE
// on every normal close (tcp_time_wait()); accepting the reset edge would
// make rfc793 accept exactly the Linux behaviour it exists to expose, and no
// event says whether a reset was involved. LAST_ACK->CLOSED and
// TIME_WAIT->CLOSED are in the diagram anyway.
//
// One diagram edge is left out: the listener's own LISTEN->SYN_RECV. In the
// RFC a listening TCB itself becomes SYN_RECEIVED; Linux never does that, and
// the LISTEN->SYN_RECV Linux reports is the birth of a new child socket
// (IsChildBirth), which the RFC does not have. Since the table is over what
// the kernel reports, rfc793 rejects that report; the listener's own edge
// could never be reported by Linux, so nothing is lost.
var rfc793Edges = []Edge{
	// Opening.
	{Close, Listen, "diagram: passive OPEN"},
	{Close, SynSent, "diagram: active OPEN, send SYN"},
	{Listen, SynSent, "diagram: SEND on a listening connection, send SYN"},
	{Listen, Close, "diagram: CLOSE of a listening connection"},
	{SynSent, SynRecv, "diagram: simultaneous open, SYN received"},
	{SynSent, Established, "diagram: SYN-ACK received"},
	{SynSent, Close, "diagram: CLOSE; text: RST with an acceptable ACK (connection refused), ABORT, user timeout"},
	{SynRecv, Established, "diagram: ACK of our SYN received"},
	{SynRecv, Listen, "diagram/text: RST received on a passively opened connection returns it to LISTEN"},
	{SynRecv, FinWait1, "diagram: CLOSE, send FIN"},
	{SynRecv, Close, "text: RST on an actively opened connection (refused), ABORT, user timeout"},
	// Data transfer ends.
	{Established, FinWait1, "diagram: CLOSE, send FIN"},
	{Established, CloseWait, "diagram: FIN received"},
	{Established, Close, "text: RST received, ABORT, user timeout"},
	// Active close.
	{FinWait1, FinWait2, "diagram: ACK of our FIN received"},
	{FinWait1, Closing, "diagram: FIN received (simultaneous close)"},
	{FinWait1, TimeWait, "text (and TLPI's diagram): FIN received with the ACK of our FIN"},
	{FinWait1, Close, "text: RST received, ABORT, user timeout"},
	{FinWait2, TimeWait, "diagram: FIN received"},
	{Closing, TimeWait, "diagram: ACK of our FIN received"},
	{TimeWait, Close, "diagram: 2MSL timeout"},
	// Passive close.
	{CloseWait, LastAck, "diagram: CLOSE, send FIN"},
	{CloseWait, Close, "text: RST received, ABORT, user timeout"},
	{LastAck, Close, "diagram: ACK of our FIN received"},
}
