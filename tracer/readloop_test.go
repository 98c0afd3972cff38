package tracer

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/tcpstate/tcpstate/model"
)

// fakeReader plays a ring buffer: each batch is what is pending when the
// reader wakes; between batches ReadInto reports the deadline, as
// ringbuf.Reader does once the pending records are read.
type fakeReader struct {
	batches   [][][]byte
	deadlines int
	closed    bool
}

func (f *fakeReader) SetDeadline(time.Time) { f.deadlines++ }

func (f *fakeReader) ReadInto(rec *ringbuf.Record) error {
	if f.closed {
		return ringbuf.ErrClosed
	}
	for len(f.batches) > 0 && len(f.batches[0]) == 0 {
		f.batches = f.batches[1:]
		return os.ErrDeadlineExceeded
	}
	if len(f.batches) == 0 {
		return os.ErrDeadlineExceeded
	}
	rec.RawSample = f.batches[0][0]
	f.batches[0] = f.batches[0][1:]
	return nil
}

type recordingHandler struct {
	events  []model.Event
	flushes []uint64 // lost, per flush
	// atFlush is the number of events seen at each flush.
	atFlush []int
	stopAt  int
	cancel  context.CancelFunc
}

func (h *recordingHandler) Event(e *model.Event) error {
	h.events = append(h.events, *e)
	if h.stopAt > 0 && len(h.events) == h.stopAt {
		return ErrStop
	}
	return nil
}

func (h *recordingHandler) Flush(lost uint64) error {
	h.flushes = append(h.flushes, lost)
	h.atFlush = append(h.atFlush, len(h.events))
	if len(h.flushes) == 3 && h.cancel != nil {
		h.cancel()
	}
	return nil
}

func sample(skaddr uint64, old, new model.State) []byte {
	lo := netip.MustParseAddr("127.0.0.1")
	return Encode(&model.Event{
		TsNs: 1000, Skaddr: skaddr, Family: model.AFInet, Saddr: lo, Daddr: lo,
		Sport: 1, Dport: 2, Old: old, New: new,
	})
}

func TestReadLoopDeliversInOrderAndFlushesWhenDrained(t *testing.T) {
	r := &fakeReader{batches: [][][]byte{
		{sample(1, model.Close, model.SynSent), sample(1, model.SynSent, model.Established)},
		{},
		{sample(2, model.Close, model.Listen)},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &recordingHandler{cancel: cancel}
	totals := []uint64{0, 5, 7}
	calls := 0
	lost := func() (uint64, error) {
		v := totals[min(calls, len(totals)-1)]
		calls++
		return v, nil
	}
	// A zero loss-check interval is not configurable; the first flush reads
	// the counters, later ones within lossCheckInterval do not.
	if err := readLoop(ctx, r, ClockWithOffset(0), time.Millisecond, lost, h); err != nil {
		t.Fatal(err)
	}
	if len(h.events) != 3 || h.events[0].New != model.SynSent || h.events[1].New != model.Established || h.events[2].New != model.Listen {
		t.Fatalf("events %+v, want the three samples in order", h.events)
	}
	if len(h.flushes) != 3 {
		t.Fatalf("%d flushes, want 3 (one per drained batch, until cancel)", len(h.flushes))
	}
	if h.atFlush[0] != 2 || h.atFlush[1] != 2 || h.atFlush[2] != 3 {
		t.Errorf("events seen at each flush %v, want [2 2 3]: a flush comes after each drained batch", h.atFlush)
	}
	if calls != 1 || h.flushes[0] != 0 {
		t.Errorf("loss counters read %d times (flushes %v); want once within %v", calls, h.flushes, lossCheckInterval)
	}
}

func TestReadLoopReportsNewLossOnce(t *testing.T) {
	r := &fakeReader{batches: [][][]byte{{}, {}, {}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &recordingHandler{cancel: cancel}
	total := uint64(0)
	lost := func() (uint64, error) { total += 4; return total, nil }
	// The poll interval is longer than lossCheckInterval, so every flush
	// reads the counters.
	if err := readLoop(ctx, r, ClockWithOffset(0), lossCheckInterval+time.Millisecond, lost, &slowFlush{h, lossCheckInterval + time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	for i, l := range h.flushes {
		if l != 4 {
			t.Errorf("flush %d reported %d lost, want the 4 new ones (never the running total)", i, l)
		}
	}
}

// slowFlush spaces flushes so that each one is past lossCheckInterval.
type slowFlush struct {
	*recordingHandler
	d time.Duration
}

func (s *slowFlush) Flush(lost uint64) error {
	time.Sleep(s.d)
	return s.recordingHandler.Flush(lost)
}

func TestReadLoopStops(t *testing.T) {
	t.Run("ErrStop from the handler is a clean end", func(t *testing.T) {
		r := &fakeReader{batches: [][][]byte{{sample(1, model.Close, model.SynSent), sample(1, model.SynSent, model.Close), sample(2, model.Close, model.SynSent)}}}
		h := &recordingHandler{stopAt: 2}
		if err := readLoop(context.Background(), r, ClockWithOffset(0), time.Millisecond, func() (uint64, error) { return 0, nil }, h); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		if len(h.events) != 2 {
			t.Errorf("%d events, want 2: nothing after ErrStop", len(h.events))
		}
	})
	t.Run("a closed reader ends the loop", func(t *testing.T) {
		r := &fakeReader{closed: true}
		if err := readLoop(context.Background(), r, ClockWithOffset(0), time.Millisecond, func() (uint64, error) { return 0, nil }, &recordingHandler{}); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
	})
	t.Run("a corrupt sample is an error", func(t *testing.T) {
		r := &fakeReader{batches: [][][]byte{{make([]byte, EventSize-8)}}}
		err := readLoop(context.Background(), r, ClockWithOffset(0), time.Millisecond, func() (uint64, error) { return 0, nil }, &recordingHandler{})
		if err == nil {
			t.Fatal("a short sample was accepted")
		}
	})
	t.Run("a failing counter read is an error", func(t *testing.T) {
		r := &fakeReader{batches: [][][]byte{{}}}
		boom := errors.New("boom")
		err := readLoop(context.Background(), r, ClockWithOffset(0), time.Millisecond, func() (uint64, error) { return 0, boom }, &recordingHandler{})
		if !errors.Is(err, boom) {
			t.Fatalf("got %v, want the counter error: loss must not go unreported silently", err)
		}
	})
}

func TestDrainReadsWhatIsPending(t *testing.T) {
	r := &fakeReader{batches: [][][]byte{{sample(1, model.Close, model.Listen), sample(1, model.Listen, model.Close)}, {sample(3, model.Close, model.SynSent)}}}
	h := &recordingHandler{}
	if err := drain(r, ClockWithOffset(0), h); err != nil {
		t.Fatal(err)
	}
	if len(h.events) != 2 {
		t.Errorf("drain delivered %d events, want the 2 pending ones", len(h.events))
	}
}
