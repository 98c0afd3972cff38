package tracer

import (
	"context"
	"errors"
	"time"

	"github.com/tcpstate/tcpstate/model"
)

// Handler receives what Run reads.
type Handler interface {
	// Event is called for every event, in ring buffer order. e is reused
	// after Event returns.
	Event(e *model.Event) error
	// Flush is called whenever the ring buffer has been drained, at least
	// every poll interval: the place to flush output.
	Flush() error
}

// ErrStop, returned by a Handler, ends Run cleanly (for example after --count events).
var ErrStop = errors.New("stop")

func stopOK(err error) error {
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// drainer is what the read loop needs of the ring buffer: a *ring, or a
// fake that tests feed with Encode'd samples.
type drainer interface {
	Drain(f func(sample []byte) error) (int, error)
	Pending() int
	Size() int
}

// Run reads events until ctx is done or the handler returns an error. A
// handler error ErrStop ends Run without error.
func (t *Tracer) Run(ctx context.Context, h Handler) error {
	return readLoop(ctx, t.ring, t.opts.Clock, t.opts.PollInterval, h)
}

// Drain reads what is left in the ring buffer (after Detach).
func (t *Tracer) Drain(h Handler) error { return drain(t.ring, ClockFrom(t.opts.Clock), h) }

// readLoop is Run apart from the kernel. The BPF program does not wake the
// reader, so the loop drains the ring, flushes the handler, and sleeps one
// poll interval, unless the ring was more than a quarter full, when it
// reads again at once. Before each drain it takes the offset between the
// clocks again (two clock_gettime calls), so that wall-clock times follow
// a step of the realtime clock.
func readLoop(ctx context.Context, r drainer, src ClockSource, poll time.Duration, h Handler) error {
	var ev model.Event
	var clock Clock
	deliver := func(sample []byte) error {
		if err := Decode(sample, clock, &ev); err != nil {
			return err
		}
		return h.Event(&ev)
	}
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		clock = ClockFrom(src)
		if _, err := r.Drain(deliver); err != nil {
			return stopOK(err)
		}
		if err := h.Flush(); err != nil {
			return stopOK(err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if r.Pending() > r.Size()/4 {
			continue
		}
		timer.Reset(poll)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

func drain(r drainer, clock Clock, h Handler) error {
	var ev model.Event
	_, err := r.Drain(func(sample []byte) error {
		if err := Decode(sample, clock, &ev); err != nil {
			return err
		}
		return h.Event(&ev)
	})
	if err != nil {
		return stopOK(err)
	}
	return stopOK(h.Flush())
}
