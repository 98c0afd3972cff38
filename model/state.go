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

// stateAliases are the other spellings ParseState takes, keyed as
// stateKey writes them: ss's (its State column: ESTAB, UNCONN; its state
// filter: listening, closed) and the RFC's (CLOSED, SYN-RECEIVED).
var stateAliases = map[string]State{
	"ESTAB":       Established,
	"UNCONN":      Close,
	"CLOSED":      Close,
	"LISTENING":   Listen,
	"SYNRECEIVED": SynRecv,
}

// stateKey is a state name reduced to what tells states apart: upper case,
// no TCP_ prefix, no '_', '-' or spaces ("fin-wait-1", "FIN_WAIT1" and
// "TCP_FIN_WAIT1" are all FINWAIT1).
func stateKey(name string) string {
	n := strings.ToUpper(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "TCP_")
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r == ' ' {
			return -1
		}
		return r
	}, n)
}

// ParseState accepts a state name as String prints it or as the kernel,
// ss or the RFC spell it, case-insensitively: with or without the TCP_
// prefix, with '-' for '_' and the digit of FIN-WAIT-1 apart ("close-wait",
// "TCP_CLOSE_WAIT", "FIN-WAIT-1"), ss's ESTAB, UNCONN and listening, and the
// RFC's CLOSED and SYN-RECEIVED. It accepts every state, TIME_WAIT and
// NEW_SYN_RECV included: callers that only see transitions check
// Unreported.
func ParseState(name string) (State, error) {
	k := stateKey(name)
	if s, ok := stateAliases[k]; ok {
		return s, nil
	}
	for i := State(1); i < NumStates; i++ {
		if k != "" && stateKey(stateNames[i]) == k {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown TCP state %q (want one of %s)", name, strings.Join(stateNames[1:], ", "))
}

// Unreported says why the sock:inet_sock_set_state tracepoint never reports
// a transition into or out of s, and what to select instead; "" for the
// states it does report. A snapshot of the sockets (ss, iter/tcp) does see
// these states.
func (s State) Unreported() string {
	switch s {
	case TimeWait:
		return "Linux never reports TIME_WAIT: tcp_time_wait() hands the connection over to a separate timewait socket, " +
			"and the full socket goes FIN_WAIT2 -> CLOSE or CLOSING -> CLOSE instead; " +
			"select FIN_WAIT2 or CLOSING (their -> CLOSE is where a socket enters TIME_WAIT)"
	case NewSynRecv:
		return "Linux never reports NEW_SYN_RECV: a request socket (a connection still in its handshake) sets its state without the tracepoint; " +
			"the child socket made at the handshake's end reports LISTEN -> SYN_RECV: select SYN_RECV"
	}
	return ""
}
