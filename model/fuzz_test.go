package model

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"
)

// fuzzSeed is a few lines as `trace -o json` writes them: one socket's active
// open and close, a listener with a child, an IPv6 socket whose FIN_WAIT1 ->
// FIN_WAIT2 was lost, and the damage a capture may have (a truncated line,
// garbage). The checked-in corpus in testdata/fuzz/FuzzParseRecordAndCheck
// has more.
const fuzzSeed = `{"time":"2025-03-14T15:09:26.000000001Z","ts_ns":1000,"skaddr":"0xffff88810a3c0800","pid":77,"comm":"curl","owner":"known","cpu_pid":77,"cpu_comm":"curl","family":"ipv4","saddr":"0.0.0.0","sport":0,"daddr":"127.0.0.1","dport":8080,"old":"CLOSE","new":"SYN_SENT","old_state_ns":null}
{"time":"2025-03-14T15:09:26.000000002Z","ts_ns":2000,"skaddr":"0xffff88810a3c0800","pid":77,"comm":"curl","owner":"known","cpu_pid":0,"cpu_comm":"swapper/1","family":"ipv4","saddr":"127.0.0.1","sport":40312,"daddr":"127.0.0.1","dport":8080,"old":"SYN_SENT","new":"ESTABLISHED","old_state_ns":1000,"verdict":"ok"}
{"time":"2025-03-14T15:09:26.000000003Z","ts_ns":3000,"skaddr":"0xffff88810a3c1000","pid":12,"comm":"nginx","owner":"inherited","cpu_pid":77,"cpu_comm":"curl","family":"ipv4","saddr":"127.0.0.1","sport":8080,"daddr":"0.0.0.0","dport":0,"old":"LISTEN","new":"SYN_RECV","old_state_ns":null,"last_state":"LISTEN","netns":4026531840}
{"time":"2025-03-14T15:09:26.000000004Z","ts_ns":4000,"skaddr":"0xffff88810a3c0800","pid":77,"comm":"curl","owner":"known","cpu_pid":77,"cpu_comm":"curl","family":"ipv4","saddr":"127.0.0.1","sport":40312,"daddr":"127.0.0.1","dport":8080,"old":"FIN_WAIT2","new":"CLOSE","old_state_ns":2000,"held":true,"verdict":"gap","reason":"expected old state ESTABLISHED (last seen), got FIN_WAIT2; no events reported lost"}
{"time":"2025-03-14T15:09:26.000000005+02:00","ts_ns":5000,"skaddr":"0xffff88810a3c1800","pid":0,"comm":"","owner":"unknown","cpu_pid":0,"cpu_comm":"ksoftirqd/0","family":"ipv6","saddr":"2001:db8::1","sport":443,"daddr":"::ffff:192.0.2.1","dport":5555,"old":"FIN_WAIT1","new":"CLOSING","old_state_ns":null,"verdict":"unknown"}
{"time":"2025-03-14T15:09:26.0000
not json at all
`

// FuzzParseRecordAndCheck feeds lines to ParseRecord and the events it
// accepts to trackers (both models, tiny bounds so eviction runs, one sparse),
// with losses noted between lines. It checks that nothing panics, that every
// rejection wraps ErrNotRecord, that an accepted record survives
// AppendJSON -> ParseRecord, and that the trackers' verdicts and counters stay
// consistent.
func FuzzParseRecordAndCheck(f *testing.F) {
	f.Add([]byte(fuzzSeed))
	f.Add([]byte(goldenRecord))
	f.Fuzz(func(t *testing.T, data []byte) {
		trackers := []*Tracker{
			NewTracker(linuxModel, 2),
			NewTracker(rfc793Model, 3),
			NewTracker(linuxModel, 1),
		}
		trackers[2].SetSparse(true)
		var buf []byte
		for n, line := range bytes.Split(data, []byte("\n")) {
			if n%4 == 3 {
				for _, tr := range trackers {
					tr.NoteLoss(uint64(n))
				}
			}
			e, v, err := ParseRecord(line)
			if err != nil {
				if !errors.Is(err, ErrNotRecord) {
					t.Fatalf("line %d: error %v does not wrap ErrNotRecord", n+1, err)
				}
				continue
			}
			if v.Kind != VerdictNone && !v.Kind.Anomaly() && v.Kind != VerdictOK && v.Kind != VerdictUnknown {
				t.Fatalf("line %d: recorded verdict %d", n+1, v.Kind)
			}
			// Every record ParseRecord accepts survives a round trip; it
			// rejects IPv6 zones, which AppendJSON would not escape.
			if e.Saddr.Zone() != "" || e.Daddr.Zone() != "" {
				t.Fatalf("line %d: ParseRecord accepted a zoned address", n+1)
			}
			buf = AppendJSON(buf[:0], &e, &v)
			e2, v2, err := ParseRecord(buf)
			if err != nil {
				t.Fatalf("line %d: a parsed record does not parse again: %v\n in: %q\nout: %q", n+1, err, line, buf)
			}
			if !sameRecord(e, e2) || v2 != v {
				t.Fatalf("line %d: round trip changed the record\n in: %+v %+v\nout: %+v %+v\njson: %q", n+1, e, v, e2, v2, buf)
			}
			for _, tr := range trackers {
				got := tr.Check(&e)
				switch got.Kind {
				case VerdictOK, VerdictUnknown:
					if got.Reason != "" {
						t.Fatalf("%v verdict with a reason: %q", got.Kind, got.Reason)
					}
				case VerdictIllegal, VerdictGap:
					if got.Reason == "" {
						t.Fatalf("%v verdict without a reason", got.Kind)
					}
				default:
					t.Fatalf("verdict kind %d", got.Kind)
				}
				if got.Kind != VerdictIllegal && !tr.Model().Allowed(e.Old, e.New) {
					t.Fatalf("%v -> %v not in %s but verdict %v", e.Old, e.New, tr.Model().Name(), got.Kind)
				}
				checkStatsConsistent(t, tr.Stats())
			}
		}
		for _, tr := range trackers {
			st := tr.Stats()
			if tr.sparse && (st.LiveSockets != 0 || st.Closed != 0 || st.Evicted != 0) {
				t.Fatalf("sparse tracker tracked sockets: %+v", st)
			}
			if 2*tr.live > len(tr.slots) || tr.live != st.LiveSockets {
				t.Fatalf("index of %d slots for %d sockets", len(tr.slots), tr.live)
			}
		}
	})
}

// sameRecord is sameEvent, except that task names are compared as the JSON
// record can carry them: up to the first NUL, and only when valid UTF-8
// (AppendJSON writes invalid bytes as U+FFFD, and a name cut at 16 bytes may
// end inside a character).
func sameRecord(a, b Event) bool {
	for _, c := range [][2]*Comm{{&a.Comm, &b.Comm}, {&a.CPUComm, &b.CPUComm}} {
		x, y := c[0].Bytes(), c[1].Bytes()
		if utf8.Valid(x) && !bytes.Equal(x, y) {
			return false
		}
		*c[0], *c[1] = Comm{}, Comm{}
	}
	return sameEvent(a, b)
}
