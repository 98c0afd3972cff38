package tracetest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tcpstate/tcpstate/model"
)

// Reporter is what the checks report to: a *testing.T, or anything that
// collects the reports to judge them later.
type Reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// Roles are the listener, client and accepted child of one connection.
type Roles struct{ Listener, Client, Child *Life }

// FindRoles finds the listener, client and accepted child of one
// connection to port among lives; it ends the test unless there is exactly
// one of each.
func FindRoles(t testing.TB, ls []*Life, port uint16) Roles {
	t.Helper()
	var r Roles
	for _, l := range ls {
		e := l.Evs[0]
		var slot **Life
		switch {
		case l.First() == "CLOSE>LISTEN" && e.Sport == port:
			slot = &r.Listener
		case l.First() == "CLOSE>SYN_SENT" && e.Dport == port:
			slot = &r.Client
		case l.First() == "LISTEN>SYN_RECV" && e.Sport == port:
			slot = &r.Child
		default:
			continue
		}
		if *slot != nil {
			t.Fatalf("two sockets in the same role for port %d:\n%s", port, Dump(ls))
		}
		*slot = l
	}
	if r.Listener == nil || r.Client == nil || r.Child == nil {
		t.Fatalf("port %d: listener, client or accepted socket missing:\n%s", port, Dump(ls))
	}
	return r
}

// SockWant is what one socket's events must be.
type SockWant struct {
	Name   string
	Edges  []string
	Family model.Family
	Local  netip.Addr
	Remote netip.Addr // the peer's address once known
	Lport  uint16
	Rport  uint16
	Owner  uint32
	// Inherited: the events before accept (the child's first two) name the
	// listener's owner with FlagOwnerInherited: InheritedOwner, or Owner
	// if that is 0.
	Inherited      int
	InheritedOwner uint32
	// Held: indexes (in Edges) of the events that must carry FlagHeld.
	Held []int
	// HeldInherited: the held events were released before accept() named
	// the owner (a port filter decided once the kernel set the child's
	// peer), so they carry the inherited owner, not the acceptor.
	HeldInherited bool
	// Bound: the client bound its port before connect(), so even
	// CLOSE->SYN_SENT has it.
	Bound bool
	// Only, if set, selects the transitions a States filter lets through.
	Only func(old, new model.State) bool
}

// CheckSocket asserts the exact transitions of one socket, with its ports,
// addresses, owner and flags. The kernel's own field quirks are expected:
// CLOSE->SYN_SENT fires before the source port is chosen (sport 0), a
// child's LISTEN->SYN_RECV before its peer is set, a listener has no peer.
func CheckSocket(t Reporter, l *Life, w SockWant) {
	t.Helper()
	wantEdges, index := w.Edges, []int(nil)
	if w.Only != nil {
		wantEdges = nil
		for i, e := range w.Edges {
			old, nw, _ := strings.Cut(e, ">")
			o, _ := model.ParseState(old)
			n, _ := model.ParseState(nw)
			if w.Only(o, n) {
				wantEdges = append(wantEdges, e)
				index = append(index, i)
			}
		}
	}
	if got := l.Edges(); !slices.Equal(got, wantEdges) {
		t.Errorf("%s: transitions\n    %s\nwant\n    %s\nevents:\n%s", w.Name, strings.Join(got, " "), strings.Join(wantEdges, " "), Dump([]*Life{l}))
		return
	}
	unspec := netip.IPv4Unspecified()
	if w.Family == model.AFInet6 {
		unspec = netip.IPv6Unspecified()
	}
	for j := range l.Evs {
		e := &l.Evs[j]
		i := j // the event's index in w.Edges
		if index != nil {
			i = index[j]
		}
		var problems []string
		bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

		sport, dport, daddr, saddr := w.Lport, w.Rport, w.Remote, w.Local
		switch Edge(e.Old, e.New) {
		case "CLOSE>SYN_SENT":
			if !w.Bound {
				sport = 0 // the kernel's truth: connect() picks the port after the event
			}
		case "LISTEN>SYN_RECV":
			dport, daddr = e.Dport, e.Daddr // not set yet; the oracle checks the value
			// Before 6.18 the child's addresses are still its
			// listener's at this event (inet_csk_clone_lock() sets
			// SYN_RECV before it copies the request's): a wildcard
			// listener's child reads the wildcard. The oracle checks
			// the value.
			if e.Saddr.IsUnspecified() {
				saddr = e.Saddr
			}
		}
		if w.Edges[0] == "CLOSE>LISTEN" {
			dport, daddr = 0, unspec
		}
		if e.Family != w.Family {
			bad("family %v, want %v", e.Family, w.Family)
		}
		if e.Saddr != saddr || e.Sport != sport {
			bad("local %v:%d, want %v:%d", e.Saddr, e.Sport, saddr, sport)
		}
		if e.Daddr != daddr || e.Dport != dport {
			bad("remote %v:%d, want %v:%d", e.Daddr, e.Dport, daddr, dport)
		}
		// Held events carry the owner that made the socket match: in
		// these tests the socket's final owner (its acceptor, for a
		// child held until accept()).
		held := slices.Contains(w.Held, i)
		owner, inherited := w.Owner, i < w.Inherited && (!held || w.HeldInherited)
		if inherited && w.InheritedOwner != 0 {
			owner = w.InheritedOwner
		}
		// The kernel queues a child for accept() before it sets the
		// child's ESTABLISHED (tcp_check_req() adds it to the accept
		// queue; tcp_child_process() then moves it out of SYN_RECV): an
		// acceptor on another CPU can win that race, and then the
		// acceptor is the owner of SYN_RECV->ESTABLISHED already. Rare on
		// a fast machine, common on an emulated one (make test-kernels).
		if inherited && Edge(e.Old, e.New) == "SYN_RECV>ESTABLISHED" && e.Flags&model.FlagOwnerInherited == 0 && e.Pid == w.Owner {
			owner, inherited = w.Owner, false
		}
		if !e.OwnerKnown() || e.Pid != owner {
			bad("owner pid %d (known %v), want %d", e.Pid, e.OwnerKnown(), owner)
		}
		if inh := e.Flags&model.FlagOwnerInherited != 0; inh != inherited {
			bad("owner inherited %v, want %v", inh, inherited)
		}
		if e.OwnerKnown() && e.Comm.String() == "" {
			bad("owner comm empty")
		}
		birth := e.Old == model.Close || Edge(e.Old, e.New) == "LISTEN>SYN_RECV"
		if e.DurationKnown() == birth {
			bad("duration known %v at a birth %v", e.DurationKnown(), birth)
		}
		if e.DurationKnown() && j > 0 && e.OldStateNs > e.TsNs-l.Evs[j-1].TsNs {
			bad("old_state_ns %d exceeds the time since the previous event %d", e.OldStateNs, e.TsNs-l.Evs[j-1].TsNs)
		}
		// The kernel's own model check: the previous new state it
		// remembers, and no illegal edge or gap on a normal connection.
		// One exception: a socket born at the address of an earlier one
		// whose ->CLOSE the program missed (recursion misses under load,
		// or the silent skips docs/kernel.md describes) finds that one's entry: the
		// birth then reports its last state, flagged as a gap, which is
		// right.
		var last model.State
		if i > 0 {
			_, prev, _ := strings.Cut(w.Edges[i-1], ">")
			last, _ = model.ParseState(prev)
		}
		stale := i == 0 && birth && e.LastState != 0 && e.Flags&model.FlagKernelGap != 0
		if stale {
			t.Logf("%s: born at the address of a socket whose ->CLOSE was missed (its last state %v): %s", w.Name, e.LastState, FmtEvent(e))
		} else if e.LastState != last {
			bad("last_state %v, want %v", e.LastState, last)
		}
		if e.Flags&model.FlagKernelIllegal != 0 || e.Flags&model.FlagKernelGap != 0 && !stale {
			bad("the kernel's model check flagged it (flags %#x)", e.Flags)
		}
		if got := e.Flags&model.FlagHeld != 0; got != held {
			bad("held %v, want %v", got, held)
		}
		if j > 0 && e.TsNs < l.Evs[j-1].TsNs {
			bad("timestamp before the previous event's")
		}
		if len(problems) > 0 {
			t.Errorf("%s: event %d %s: %s", w.Name, i, FmtEvent(e), strings.Join(problems, "; "))
		}
	}
}
