package main

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// connectionSamples encodes n loopback connections as the BPF program sends
// them: 10 transitions each (client and accepted child), in ring order.
func connectionSamples(n int) [][]byte {
	lo := netip.MustParseAddr("127.0.0.1")
	steps := []struct {
		child    bool
		old, new model.State
	}{
		{false, model.Close, model.SynSent},
		{false, model.SynSent, model.Established},
		{true, model.Listen, model.SynRecv},
		{true, model.SynRecv, model.Established},
		{false, model.Established, model.FinWait1},
		{true, model.Established, model.CloseWait},
		{true, model.CloseWait, model.LastAck},
		{false, model.FinWait1, model.FinWait2},
		{false, model.FinWait2, model.Close},
		{true, model.LastAck, model.Close},
	}
	var out [][]byte
	ts := uint64(1_000_000_000)
	for i := range n {
		client := 0xffff888100000000 + uint64(i%512)*0x1000
		child := client + 0x800
		cport := uint16(30000 + i%30000)
		for _, s := range steps {
			ts += 5000
			e := model.Event{
				TsNs: ts, Pid: 4242, CPUPid: 4242, Family: model.AFInet,
				Saddr: lo, Daddr: lo, Old: s.old, New: s.new, OldStateNs: 5000,
				Comm: model.CommFrom("loadgen"), CPUComm: model.CommFrom("loadgen"),
				Flags: model.FlagOwnerKnown | model.FlagDurationKnown, Netns: 4026531833,
			}
			if s.child {
				e.Skaddr, e.Sport, e.Dport = child, 18080, cport
			} else {
				e.Skaddr, e.Sport, e.Dport = client, cport, 18080
			}
			if s.old == model.Close || s.old == model.Listen {
				e.Flags &^= model.FlagDurationKnown
			}
			out = append(out, tracer.Encode(&e))
		}
	}
	return out
}

func newBenchHandler(mode string, w io.Writer) *traceHandler {
	p, err := newPrinter(mode, true)
	if err != nil {
		panic(err)
	}
	m, _ := model.ModelByName("linux")
	h := &traceHandler{
		out: newAsyncOut(w, 64<<10, nil), p: p, buf: outBuf{b: make([]byte, 0, 64<<10)},
		tracker: model.NewTracker(m, 0),
	}
	h.buf.b = p.header(h.buf.b) // as runTrace does
	return h
}

// hotPath is what tracer.Run does per ring buffer record: decode, then the
// handler checks and formats.
func hotPath(h *traceHandler, clock tracer.Clock, samples [][]byte, ev *model.Event, i int) {
	if err := tracer.Decode(samples[i%len(samples)], clock, ev); err != nil {
		panic(err)
	}
	if err := h.Event(ev); err != nil {
		panic(err)
	}
}

// BenchmarkHotPath measures the user-space cost of one event: decode ->
// check -> format -> buffered write, per output mode.
func BenchmarkHotPath(b *testing.B) {
	samples := connectionSamples(2000)
	clock := tracer.ClockWithOffset(time.Now().UnixNano())
	for _, mode := range []string{outJSON, outTable, outWide} {
		b.Run(mode, func(b *testing.B) {
			h := newBenchHandler(mode, io.Discard)
			var ev model.Event
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				hotPath(h, clock, samples, &ev, i)
			}
		})
	}
}

// The JSON hot path must not allocate per event: at 200k events/s garbage
// per event is the tracer's CPU bill. (An allocation count, not a timing.)
func TestHotPathAllocatesNothing(t *testing.T) {
	samples := connectionSamples(200)
	clock := tracer.ClockWithOffset(time.Now().UnixNano())
	for _, mode := range []string{outJSON, outTable} {
		h := newBenchHandler(mode, io.Discard)
		var ev model.Event
		i := 0
		// Warm up: the tracker's table and the buffers reach their size.
		for ; i < len(samples); i++ {
			hotPath(h, clock, samples, &ev, i)
		}
		allocs := testing.AllocsPerRun(5000, func() {
			hotPath(h, clock, samples, &ev, i)
			i++
		})
		if allocs != 0 {
			t.Errorf("%s: %.2f allocations per event, want 0", mode, allocs)
		}
		if st := h.tracker.Stats(); st.Anomalies() != 0 {
			t.Errorf("%s: the synthetic connections gave %d anomalies: %+v", mode, st.Anomalies(), st)
		}
	}
}
