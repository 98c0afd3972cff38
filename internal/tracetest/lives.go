package tracetest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tcpstate/tcpstate/model"
)

// Edge is how the tests spell a transition: "CLOSE>SYN_SENT".
func Edge(old, nw model.State) string { return old.String() + ">" + nw.String() }

// Expected transitions per socket role (docs/kernel.md, "Transitions Linux
// really emits"). TIME_WAIT never appears: the full socket goes
// FIN_WAIT2->CLOSE when the timewait socket takes over, and a passively
// opened socket is born LISTEN>SYN_RECV on its own skaddr. Callers combine
// them with slices.Concat and never change them.
var (
	ListenerLife = []string{"CLOSE>LISTEN", "LISTEN>CLOSE"}
	ActiveOpen   = []string{"CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED"}
	PassiveOpen  = []string{"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED"}
	ActiveClose  = []string{"ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}
	PassiveClose = []string{"ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"}
)

// Life is one socket incarnation: its events from its first until ->CLOSE.
// The kernel reuses a freed struct sock's address, so one skaddr has
// several lives, numbered in order (N).
type Life struct {
	Skaddr uint64
	N      int    // incarnation number of Skaddr among the lives grouped together
	Name   string // what the test calls it, once it has matched it
	Evs    []model.Event
}

// Key names the incarnation as the oracle comparison does: "0x.../N".
func (l *Life) Key() string { return fmt.Sprintf("%#x/%d", l.Skaddr, l.N) }

// Edges is the life's transitions, spelt by Edge.
func (l *Life) Edges() []string {
	s := make([]string, len(l.Evs))
	for i, e := range l.Evs {
		s[i] = Edge(e.Old, e.New)
	}
	return s
}

// First is the first transition of a life: its role.
func (l *Life) First() string { return Edge(l.Evs[0].Old, l.Evs[0].New) }

// Lives groups the events of the namespace netns by socket incarnation, in
// the order of each one's first event. Ring order across sockets is not
// time order; within a socket it is.
func Lives(evs []model.Event, netns uint32) []*Life {
	return group(evs, func(e *model.Event) bool { return e.Netns == netns })
}

// LivesIn groups the events of the namespaces netns by socket
// incarnation, as Lives does for one.
func LivesIn(evs []model.Event, netns ...uint32) []*Life {
	return group(evs, func(e *model.Event) bool { return slices.Contains(netns, e.Netns) })
}

// ForeignLives groups the events of every namespace but netns, as Lives.
func ForeignLives(evs []model.Event, netns uint32) []*Life {
	return group(evs, func(e *model.Event) bool { return e.Netns != netns })
}

func group(evs []model.Event, keep func(e *model.Event) bool) []*Life {
	var out []*Life
	open := map[uint64]*Life{}
	n := map[uint64]int{}
	for i := range evs {
		e := &evs[i]
		if !keep(e) {
			continue
		}
		l := open[e.Skaddr]
		if l == nil {
			l = &Life{Skaddr: e.Skaddr, N: n[e.Skaddr]}
			out = append(out, l)
			open[e.Skaddr] = l
		}
		l.Evs = append(l.Evs, *e)
		if e.New == model.Close {
			delete(open, e.Skaddr)
			n[e.Skaddr]++
		}
	}
	return out
}

// FmtEvent is one event on one line, for failure messages.
func FmtEvent(e *model.Event) string {
	return fmt.Sprintf("%#x %-24s %s %v:%d -> %v:%d pid=%d(%s) cpu_pid=%d(%s) flags=%#x netns=%d",
		e.Skaddr, Edge(e.Old, e.New), e.Family, e.Saddr, e.Sport, e.Daddr, e.Dport,
		e.Pid, e.Comm, e.CPUPid, e.CPUComm, e.Flags, e.Netns)
}

// Dump prints lives, one event a line, for failure messages.
func Dump(ls []*Life) string {
	var b strings.Builder
	for _, l := range ls {
		name := ""
		if l.Name != "" {
			name = " " + l.Name
		}
		fmt.Fprintf(&b, "  socket %s%s:\n", l.Key(), name)
		for i := range l.Evs {
			fmt.Fprintf(&b, "      %s\n", FmtEvent(&l.Evs[i]))
		}
	}
	return b.String()
}
