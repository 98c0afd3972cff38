// Package model holds what tcpstate knows about TCP independent of the kernel
// plumbing: the states and their names, the event record every command shares,
// the transition models, the per-socket checker and aggregation. It imports
// nothing kernel-specific, so it is tested without root.
package model

import (
	"fmt"
	"strings"
)

// State is a TCP state as the kernel numbers it (include/net/tcp_states.h).
type State uint8

// The kernel's TCP states. The numbers are the kernel's and are part of the
// BPF event record, so they must not change.
const (
	Established State = 1
	SynSent     State = 2
	SynRecv     State = 3
	FinWait1    State = 4
	FinWait2    State = 5
	TimeWait    State = 6
	Close       State = 7
	CloseWait   State = 8
	LastAck     State = 9
	Listen      State = 10
	Closing     State = 11
	NewSynRecv  State = 12

	// NumStates bounds the state numbers: every valid State is below it.
	NumStates = 13
)

var stateNames = [NumStates]string{
	Established: "ESTABLISHED",
	SynSent:     "SYN_SENT",
	SynRecv:     "SYN_RECV",
	FinWait1:    "FIN_WAIT1",
	FinWait2:    "FIN_WAIT2",
	TimeWait:    "TIME_WAIT",
	Close:       "CLOSE",
	CloseWait:   "CLOSE_WAIT",
	LastAck:     "LAST_ACK",
	Listen:      "LISTEN",
	Closing:     "CLOSING",
	NewSynRecv:  "NEW_SYN_RECV",
}

// States lists every valid state in kernel order.
func States() []State {
	s := make([]State, 0, NumStates-1)
	for i := State(1); i < NumStates; i++ {
		s = append(s, i)
	}
	return s
}

// Valid reports whether s is one of the kernel's TCP states.
func (s State) Valid() bool { return s >= Established && s < NumStates }

// String returns the kernel's name without the TCP_ prefix ("ESTABLISHED"),
// or "STATE(n)" for a number the kernel does not define.
func (s State) String() string {
	if s.Valid() {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// ParseState accepts a state name as String prints it, case-insensitively,
// with or without the TCP_ prefix, and with '-' in place of '_'
// ("close-wait", "TCP_CLOSE_WAIT"). RFC spellings CLOSED and SYN_RECEIVED are
// accepted too.
func ParseState(name string) (State, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	n = strings.ReplaceAll(n, "-", "_")
	n = strings.TrimPrefix(n, "TCP_")
	switch n {
	case "CLOSED":
		return Close, nil
	case "SYN_RECEIVED":
		return SynRecv, nil
	}
	for i := State(1); i < NumStates; i++ {
		if stateNames[i] == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown TCP state %q (want one of %s)", name, strings.Join(stateNames[1:], ", "))
}
