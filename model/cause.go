package model

import "strconv"

// CloseFacts are what the kernel knew at a socket's ->CLOSE (bpf/cause.h,
// enum close_fact; tracer's tests pin the bits against bpf2go's copy):
// the old state, the socket error's class, whether a reset was sent or
// received, whether it went through CLOSING, and which timer gave up. Cause
// says what they mean: the one definition trace, life, stats and serve use.
type CloseFacts uint16

// The bits of CloseFacts.
const (
	FactStateMask   CloseFacts = 0xf
	FactErrShift               = 4
	FactErrMask     CloseFacts = 0x70
	FactRstSent     CloseFacts = 0x80
	FactRstReceived CloseFacts = 0x100
	FactClosing     CloseFacts = 0x200
	FactTimerShift             = 10
	FactTimerMask   CloseFacts = 0xc00
	// FactLive: at ->CLOSE the socket was neither orphaned (SOCK_DEAD) nor
	// past the peer's FIN (SOCK_DONE): torn down by tcp_disconnect().
	FactLive CloseFacts = 0x1000
	// FactValues is one more than the largest CloseFacts.
	FactValues = 0x2000
)

// ErrClass classes the socket error at ->CLOSE.
type ErrClass uint8

// The error classes (enum close_err).
const (
	ErrNone     ErrClass = 0
	ErrRefused  ErrClass = 1 // ECONNREFUSED: a reset answered the SYN
	ErrReset    ErrClass = 2 // ECONNRESET
	ErrPipe     ErrClass = 3 // EPIPE: a reset in CLOSE_WAIT
	ErrTimedOut ErrClass = 4 // ETIMEDOUT
	ErrOther    ErrClass = 5 // another error, a soft one (ICMP unreachable) that outlived the retries
	ErrAborted  ErrClass = 6 // ECONNABORTED: tcp_abort() (SOCK_DESTROY: ss -K, bpf_sock_destroy), out of orphan memory
)

// CloseTimer says which timer gave up (enum close_timer).
type CloseTimer uint8

// The timers.
const (
	TimerNone      CloseTimer = 0
	TimerRetrans   CloseTimer = 1 // data in flight
	TimerProbe0    CloseTimer = 2 // zero-window probes
	TimerKeepalive CloseTimer = 3 // keepalive probes
)

// Old is the old state of the ->CLOSE transition.
func (f CloseFacts) Old() State { return State(f & FactStateMask) }

// Err is the class of the socket error.
func (f CloseFacts) Err() ErrClass { return ErrClass((f & FactErrMask) >> FactErrShift) }

// Timer is the timer that gave up, where the socket tells.
func (f CloseFacts) Timer() CloseTimer { return CloseTimer((f & FactTimerMask) >> FactTimerShift) }

// Cause is why a socket closed.
type Cause uint8

// The causes. CauseNone: not a close.
const (
	CauseNone           Cause = iota
	CauseFin                  // closed by a FIN exchange (Side says who sent it first)
	CauseResetReceived        // the peer sent a reset
	CauseResetSent            // we aborted: SO_LINGER 0, close with unread data, tcp_abort, a child dropped with its listener
	CauseRefused              // connect() was answered by a reset
	CauseTimeout              // a timer gave up (Detail: connect, retransmission, keepalive, zero_window_probe)
	CauseCancelled            // the application closed a socket still connecting (a client's timeout)
	CauseListenerClosed       // a listening socket closed
	NumCauses
)

var causeNames = [NumCauses]string{"", "fin", "reset_received", "reset_sent", "refused", "timeout", "cancelled", "listener_closed"}

var causeMeanings = [NumCauses]string{
	CauseFin:            "closed by a FIN exchange (side: who sent the first FIN)",
	CauseResetReceived:  "the peer sent a reset",
	CauseResetSent:      "we aborted with a reset: SO_LINGER 0, close() with unread data, tcp_abort, a child dropped with its listener",
	CauseRefused:        "connect() was answered by a reset (ECONNREFUSED)",
	CauseTimeout:        "a timer gave up: connect, retransmission, keepalive or zero-window probe",
	CauseCancelled:      "the application closed a socket still connecting (a client timeout, connect(AF_UNSPEC))",
	CauseListenerClosed: "a listening socket closed",
}

// String returns the cause's name as JSON and the tables show it.
func (c Cause) String() string {
	if c < NumCauses {
		return causeNames[c]
	}
	return "cause(" + itoa(uint64(c)) + ")"
}

// Meaning explains the cause in a sentence.
func (c Cause) Meaning() string {
	if c < NumCauses {
		return causeMeanings[c]
	}
	return ""
}

// Causes lists the causes of a close, in the order the tables show them.
func Causes() []Cause {
	out := make([]Cause, 0, NumCauses-1)
	for c := CauseFin; c < NumCauses; c++ {
		out = append(out, c)
	}
	return out
}

// CloseCause is a close's cause with its detail: for fin, the side that
// sent the first FIN (active: this socket, passive: the peer, simultaneous);
// for timeout, the timer (connect, retransmission, keepalive,
// zero_window_probe; "" when the socket did not tell).
type CloseCause struct {
	Cause  Cause
	Detail string
}

// String returns "fin/active", "timeout/connect", "reset_received", ...
func (c CloseCause) String() string {
	if c.Detail == "" {
		return c.Cause.String()
	}
	return c.Cause.String() + "/" + c.Detail
}

var detailMeanings = map[CloseCause]string{
	{CauseFin, "active"}:                "closed by FINs; this socket sent the first",
	{CauseFin, "passive"}:               "closed by FINs; the peer sent the first",
	{CauseFin, "simultaneous"}:          "closed by FINs sent at once (through CLOSING)",
	{CauseTimeout, "connect"}:           "connect() got no answer: the SYN's retries gave up",
	{CauseTimeout, "retransmission"}:    "data in flight was never acknowledged: retransmissions gave up",
	{CauseTimeout, "keepalive"}:         "keepalive probes went unanswered",
	{CauseTimeout, "zero_window_probe"}: "the peer's window stayed shut: zero-window probes gave up",
}

// Meaning explains the cause and its detail in a sentence.
func (c CloseCause) Meaning() string {
	if m, ok := detailMeanings[c]; ok {
		return m
	}
	return c.Cause.Meaning()
}

// Cause decides why the socket closed.
func (f CloseFacts) Cause() CloseCause {
	old, err := f.Old(), f.Err()
	switch old {
	case Listen:
		return CloseCause{Cause: CauseListenerClosed}
	case SynSent:
		switch err {
		case ErrRefused, ErrReset:
			return CloseCause{Cause: CauseRefused}
		case ErrTimedOut, ErrOther:
			return CloseCause{Cause: CauseTimeout, Detail: "connect"}
		case ErrAborted:
			// ss -K on a socket still connecting: tcp_abort() sends no
			// reset from SYN_SENT; the connect was given up.
			return CloseCause{Cause: CauseCancelled}
		}
		if f&FactRstReceived != 0 {
			return CloseCause{Cause: CauseRefused}
		}
		return CloseCause{Cause: CauseCancelled}
	}
	switch {
	case err == ErrReset || err == ErrPipe || f&FactRstReceived != 0:
		return CloseCause{Cause: CauseResetReceived}
	case err == ErrAborted:
		// tcp_abort() (SOCK_DESTROY: ss -K, bpf_sock_destroy) sends its
		// reset, then closes with ECONNABORTED; so does an orphan that
		// runs out of memory (tcp_out_of_resources).
		return CloseCause{Cause: CauseResetSent}
	case err == ErrTimedOut || err == ErrOther:
		return CloseCause{Cause: CauseTimeout, Detail: f.Timer().name()}
	case f&FactRstSent != 0:
		return CloseCause{Cause: CauseResetSent}
	}
	switch old {
	case FinWait1:
		// A FIN exchange always takes a socket out of FIN_WAIT1 first
		// (to FIN_WAIT2 when its FIN is acknowledged, to CLOSING when the
		// peer's FIN comes first). Straight to CLOSE without an error it
		// was aborted: close() with SO_LINGER 0 or with unread data,
		// connect(AF_UNSPEC), an orphan with TCP_LINGER2 < 0; each sends
		// its reset after the close.
		return CloseCause{Cause: CauseResetSent}
	case FinWait2:
		if f&FactLive != 0 {
			// Still held by its application and the peer's FIN not
			// taken: not a FIN exchange's end (which hands an orphan to
			// a timewait socket, or follows the peer's FIN) but
			// tcp_disconnect(): SO_LINGER 0 after shutdown(SHUT_WR),
			// connect(AF_UNSPEC). Its reset follows the close.
			return CloseCause{Cause: CauseResetSent}
		}
		if f&FactClosing != 0 {
			return CloseCause{Cause: CauseFin, Detail: "simultaneous"}
		}
		return CloseCause{Cause: CauseFin, Detail: "active"}
	case Closing:
		return CloseCause{Cause: CauseFin, Detail: "simultaneous"}
	case LastAck:
		return CloseCause{Cause: CauseFin, Detail: "passive"}
	case SynRecv:
		// A child not established yet (its handshake, or a Fast Open
		// child), closed without an error: dropped, a reset sent.
		return CloseCause{Cause: CauseResetSent}
	}
	// ESTABLISHED or CLOSE_WAIT without an error and without a FIN
	// exchange: closed locally without FIN, which sends a reset (the reset
	// tracepoint may come after the close: close() with unread data).
	return CloseCause{Cause: CauseResetSent}
}

func (t CloseTimer) name() string {
	switch t {
	case TimerRetrans:
		return "retransmission"
	case TimerProbe0:
		return "zero_window_probe"
	case TimerKeepalive:
		return "keepalive"
	}
	return ""
}

// Outcome is the close's outcome class, the coarser classes stats has
// always shown, from the same definition.
func (f CloseFacts) Outcome() Outcome {
	c := f.Cause()
	switch c.Cause {
	case CauseListenerClosed:
		return OutcomeListenerClosed
	case CauseRefused:
		return OutcomeConnectRefused
	case CauseCancelled:
		return OutcomeConnectAborted
	case CauseTimeout:
		if c.Detail == "connect" {
			return OutcomeConnectTimeout
		}
		return OutcomeTimeout
	case CauseResetReceived:
		return OutcomeReset
	case CauseResetSent:
		return OutcomeAbort
	}
	switch c.Detail {
	case "passive":
		return OutcomePassiveClose
	case "simultaneous":
		return OutcomeSimultaneousClose
	}
	return OutcomeActiveClose
}

// errnoNames names the socket errors a TCP socket ends with.
var errnoNames = map[uint16]string{
	1: "EPERM", 11: "EAGAIN", 12: "ENOMEM", 22: "EINVAL", 32: "EPIPE", 71: "EPROTO", 90: "EMSGSIZE",
	95: "EOPNOTSUPP", 97: "EAFNOSUPPORT", 98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 100: "ENETDOWN",
	101: "ENETUNREACH", 102: "ENETRESET", 103: "ECONNABORTED", 104: "ECONNRESET", 105: "ENOBUFS",
	107: "ENOTCONN", 110: "ETIMEDOUT", 111: "ECONNREFUSED", 112: "EHOSTDOWN", 113: "EHOSTUNREACH",
	125: "ECANCELED",
}

// ErrnoName names a socket error: "ECONNRESET", or "errno N".
func ErrnoName(err uint16) string {
	if n, ok := errnoNames[err]; ok {
		return n
	}
	return "errno " + strconv.Itoa(int(err))
}

// ParseErrno is ErrnoName's inverse.
func ParseErrno(name string) (uint16, bool) {
	for n, s := range errnoNames {
		if s == name {
			return n, true
		}
	}
	return 0, false
}
