package model

import (
	"strings"
	"testing"
	"time"
)

func facts(old State, err ErrClass, bits CloseFacts, timer CloseTimer) CloseFacts {
	return CloseFacts(old) | CloseFacts(err)<<FactErrShift | bits | CloseFacts(timer)<<FactTimerShift
}

// TestCause: every way a socket closes, as the kernel's facts show it, and
// the cause and outcome it gets.
func TestCause(t *testing.T) {
	for _, c := range []struct {
		name    string
		f       CloseFacts
		want    string
		outcome Outcome
	}{
		{"active close: we sent FIN first", facts(FinWait2, ErrNone, 0, 0), "fin/active", OutcomeActiveClose},
		{"aborted in FIN_WAIT1 (SO_LINGER 0 with its FIN queued): reset after the close", facts(FinWait1, ErrNone, 0, 0), "reset_sent", OutcomeAbort},
		{"passive close", facts(LastAck, ErrNone, 0, 0), "fin/passive", OutcomePassiveClose},
		{"simultaneous close", facts(Closing, ErrNone, FactClosing, 0), "fin/simultaneous", OutcomeSimultaneousClose},
		{"simultaneous, handed to timewait from FIN_WAIT2", facts(FinWait2, ErrNone, FactClosing, 0), "fin/simultaneous", OutcomeSimultaneousClose},
		{"reset received in ESTABLISHED", facts(Established, ErrReset, FactRstReceived, 0), "reset_received", OutcomeReset},
		{"reset received in CLOSE_WAIT (EPIPE)", facts(CloseWait, ErrPipe, FactRstReceived, 0), "reset_received", OutcomeReset},
		{"reset received, mark only", facts(FinWait2, ErrNone, FactRstReceived, 0), "reset_received", OutcomeReset},
		{"SO_LINGER 0: reset sent first", facts(Established, ErrNone, FactRstSent, 0), "reset_sent", OutcomeAbort},
		{"close with unread data: reset after the close", facts(Established, ErrNone, 0, 0), "reset_sent", OutcomeAbort},
		{"aborted in CLOSE_WAIT", facts(CloseWait, ErrNone, 0, 0), "reset_sent", OutcomeAbort},
		{"child dropped before established", facts(SynRecv, ErrNone, 0, 0), "reset_sent", OutcomeAbort},
		{"linger 0 from FIN_WAIT1", facts(FinWait1, ErrNone, FactRstSent, 0), "reset_sent", OutcomeAbort},
		{"refused", facts(SynSent, ErrRefused, FactRstReceived, 0), "refused", OutcomeConnectRefused},
		{"connect timeout", facts(SynSent, ErrTimedOut, 0, TimerRetrans), "timeout/connect", OutcomeConnectTimeout},
		{"connect, host unreachable", facts(SynSent, ErrOther, 0, 0), "timeout/connect", OutcomeConnectTimeout},
		{"cancelled: closed while connecting", facts(SynSent, ErrNone, 0, 0), "cancelled", OutcomeConnectAborted},
		{"retransmission timeout", facts(Established, ErrTimedOut, 0, TimerRetrans), "timeout/retransmission", OutcomeTimeout},
		{"keepalive timeout", facts(Established, ErrTimedOut, 0, TimerKeepalive), "timeout/keepalive", OutcomeTimeout},
		{"zero-window probe timeout", facts(Established, ErrTimedOut, 0, TimerProbe0), "timeout/zero_window_probe", OutcomeTimeout},
		{"timeout, timer not told", facts(FinWait1, ErrTimedOut, 0, 0), "timeout", OutcomeTimeout},
		{"destroyed (ss -K, tcp_abort): reset sent, then ECONNABORTED", facts(Established, ErrAborted, FactRstSent|FactLive, 0), "reset_sent", OutcomeAbort},
		{"destroyed while connecting (ss -K): no reset from SYN_SENT", facts(SynSent, ErrAborted, FactLive, 0), "cancelled", OutcomeConnectAborted},
		{"SO_LINGER 0 after shutdown(SHUT_WR), in FIN_WAIT2: held, peer's FIN not taken", facts(FinWait2, ErrNone, FactLive, 0), "reset_sent", OutcomeAbort},
		{"shutdown(SHUT_WR), then the peer's FIN: not live (SOCK_DONE)", facts(FinWait2, ErrNone, 0, 0), "fin/active", OutcomeActiveClose},
		{"keepalive timeout: reset sent, then ETIMEDOUT", facts(Established, ErrTimedOut, FactRstSent, TimerKeepalive), "timeout/keepalive", OutcomeTimeout},
		{"keepalive timeout after an ICMP soft error: reset sent first", facts(Established, ErrOther, FactRstSent, TimerKeepalive), "timeout/keepalive", OutcomeTimeout},
		{"listener closed", facts(Listen, ErrNone, 0, 0), "listener_closed", OutcomeListenerClosed},
	} {
		if got := c.f.Cause().String(); got != c.want {
			t.Errorf("%s (facts %#x): cause %s, want %s", c.name, uint16(c.f), got, c.want)
		}
		if got := c.f.Outcome(); got != c.outcome {
			t.Errorf("%s: outcome %s, want %s", c.name, got, c.outcome)
		}
	}
	// Every possible fact value has a cause.
	for f := range CloseFacts(FactValues) {
		if f.Cause().Cause == CauseNone {
			t.Fatalf("facts %#x have no cause", uint16(f))
		}
	}
}

func TestCloseRecordRoundTrip(t *testing.T) {
	e := sampleEvent()
	e.Old, e.New = Established, Close
	e.CloseFacts = facts(Established, ErrReset, FactRstReceived, 0)
	e.CloseErr = 104
	e.BytesAcked, e.BytesReceived, e.TotalRetrans, e.SrttUs, e.AgeNs = 1<<33, 42, 3, 180, 5*uint64(time.Second)
	e.Flags |= FlagCounts
	line := AppendJSON(nil, &e, nil)
	for _, want := range []string{`"cause":"reset_received"`, `"error":"ECONNRESET"`, `"bytes_acked":8589934592`, `"bytes_received":42`, `"retransmits":3`, `"srtt_us":180`, `"age_ns":5000000000`} {
		if !strings.Contains(string(line), want) {
			t.Errorf("record lacks %s: %s", want, line)
		}
	}
	back, _, err := ParseRecord(line)
	if err != nil {
		t.Fatal(err)
	}
	if !sameEvent(back, e) {
		t.Errorf("round trip\n got %+v\nwant %+v", back, e)
	}
	sent := e
	sent.CloseFacts, sent.CloseErr, sent.ResetReason, sent.AgeNs = facts(Established, ErrNone, FactRstSent, 0), 0, "TCP_ABORT_ON_CLOSE", 0
	line = AppendJSON(nil, &sent, nil)
	for _, want := range []string{`"cause":"reset_sent"`, `"reset_reason":"TCP_ABORT_ON_CLOSE"`, `"age_ns":null`} {
		if !strings.Contains(string(line), want) {
			t.Errorf("record lacks %s: %s", want, line)
		}
	}
	if strings.Contains(string(line), `"error"`) {
		t.Errorf("a close without a socket error has an error key: %s", line)
	}
	if back, _, err := ParseRecord(line); err != nil || !sameEvent(back, sent) {
		t.Errorf("round trip: %v\n got %+v\nwant %+v", err, back, sent)
	}
}
