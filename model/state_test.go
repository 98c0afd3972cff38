package model

import (
	"strings"
	"testing"
)

// TestParseStateSpellings: the kernel's names, with or without TCP_, the
// RFC's, and ss's (its output columns and its state filter words), in any
// case.
func TestParseStateSpellings(t *testing.T) {
	for _, c := range []struct {
		in   string
		want State
	}{
		// The kernel's names, as String prints them and as tcp_states.h has them.
		{"ESTABLISHED", Established}, {"established", Established}, {"TCP_ESTABLISHED", Established},
		{"SYN_SENT", SynSent}, {"SYN_RECV", SynRecv}, {"FIN_WAIT1", FinWait1}, {"FIN_WAIT2", FinWait2},
		{"TIME_WAIT", TimeWait}, {"CLOSE", Close}, {"CLOSE_WAIT", CloseWait}, {"LAST_ACK", LastAck},
		{"LISTEN", Listen}, {"CLOSING", Closing}, {"NEW_SYN_RECV", NewSynRecv}, {"tcp_new_syn_recv", NewSynRecv},
		{" close-wait ", CloseWait},
		// ss's output (ss -tan's State column).
		{"ESTAB", Established}, {"estab", Established},
		{"SYN-SENT", SynSent}, {"SYN-RECV", SynRecv},
		{"FIN-WAIT-1", FinWait1}, {"FIN-WAIT-2", FinWait2}, {"fin-wait-1", FinWait1},
		{"TIME-WAIT", TimeWait}, {"CLOSE-WAIT", CloseWait}, {"LAST-ACK", LastAck},
		{"LISTEN", Listen}, {"CLOSING", Closing}, {"UNCONN", Close}, {"unconn", Close},
		// ss's state filter words (ss state listening ...).
		{"listening", Listen}, {"closed", Close},
		// The RFC's.
		{"CLOSED", Close}, {"SYN_RECEIVED", SynRecv}, {"SYN-RECEIVED", SynRecv},
		{"FIN_WAIT_1", FinWait1}, {"FIN-WAIT2", FinWait2},
	} {
		got, err := ParseState(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseState(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, s := range States() {
		if got, err := ParseState(s.String()); err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v: does not read back String", s.String(), got, err)
		}
	}
	for _, bad := range []string{"", "BOGUS", "FIN_WAIT", "FIN_WAIT3", "SYN", "WAIT", "ESTABLISH", "TCP_", "STATE(13)"} {
		if s, err := ParseState(bad); err == nil {
			t.Errorf("ParseState(%q) = %v, want an error", bad, s)
		} else if !strings.Contains(err.Error(), "ESTABLISHED") {
			t.Errorf("ParseState(%q): %v; want the error to list the names", bad, err)
		}
	}
}

// TestUnreported: the states the tracepoint never reports are exactly the
// ones model linux has no edge for, and each says what to use instead.
func TestUnreported(t *testing.T) {
	m, err := ModelByName("linux")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range States() {
		used := false
		for _, x := range States() {
			used = used || m.Allowed(s, x) || m.Allowed(x, s)
		}
		why := s.Unreported()
		if used != (why == "") {
			t.Errorf("%v: in model linux %v, but Unreported says %q", s, used, why)
		}
	}
	if why := TimeWait.Unreported(); !strings.Contains(why, "FIN_WAIT2") || !strings.Contains(why, "CLOSING") || !strings.Contains(why, "timewait socket") {
		t.Errorf("TIME_WAIT: %q; want the hand-over to a timewait socket and FIN_WAIT2/CLOSING", why)
	}
	if why := NewSynRecv.Unreported(); !strings.Contains(why, "SYN_RECV") || !strings.Contains(why, "request socket") {
		t.Errorf("NEW_SYN_RECV: %q; want request sockets and SYN_RECV", why)
	}
}
