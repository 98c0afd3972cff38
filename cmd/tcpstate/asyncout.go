package main

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// How long the end of a run waits for its output once it must end.
const (
	// stopGrace: after SIGINT, SIGTERM or SIGHUP, how long the run still
	// waits for standard output to take what was formatted.
	stopGrace = time.Second
	// stderrGrace: how long the summary waits for standard error past
	// that (a reader of stderr that stopped reading).
	stderrGrace = 250 * time.Millisecond
)

// outBuf is a buffer of formatted output and the lines (events, reports)
// it holds.
type outBuf struct {
	b     []byte
	lines uint64
}

// asyncOut writes a command's standard output from a goroutine of its
// own, so that a reader that stopped reading (a pipe nobody empties)
// holds up the run only as long as the run lets it: the run hands over a
// full buffer and takes the other one back, waiting for the writer only
// until it must end (giveUp). Two buffers take turns: one being filled,
// one being written; nothing is allocated per write.
//
// A write that fails ends the writing: EPIPE (the reader closed the pipe,
// `| head`) is the end of output, any other error a failure; either way
// onFail is called once, so that the run can stop.
type asyncOut struct {
	work    chan outBuf
	free    chan outBuf
	done    chan struct{} // closed when the writer has ended
	written atomic.Uint64 // lines written whole
	once    sync.Once
	mu      sync.Mutex
	err     error // the first write error
	// late: a window of stopGrace that opens the first time output is
	// handed over after giveUp already closed (the end of the run took
	// longer than stopGrace to compute: a final snapshot on a slow
	// machine). Without it a healthy standard output would be reported
	// blocked; with it a blocked one costs stopGrace once more, at most.
	lateOnce sync.Once
	late     chan struct{}
	// stuck: a handover already gave up waiting for the writer, which is
	// blocked: no late window then.
	stuck bool
}

// deadline is giveUp, or the late window if giveUp closed before the
// output was even handed over.
func (a *asyncOut) deadline(giveUp <-chan struct{}) <-chan struct{} {
	select {
	case <-giveUp:
	default:
		return giveUp
	}
	if a.stuck {
		return giveUp
	}
	a.lateOnce.Do(func() {
		a.late = make(chan struct{})
		time.AfterFunc(stopGrace, func() { close(a.late) })
	})
	return a.late
}

func newAsyncOut(w io.Writer, size int, onFail func()) *asyncOut {
	a := &asyncOut{work: make(chan outBuf, 1), free: make(chan outBuf, 2), done: make(chan struct{})}
	a.free <- outBuf{b: make([]byte, 0, size)}
	go func() {
		defer close(a.done)
		failed := false
		for buf := range a.work {
			if !failed {
				if _, err := w.Write(buf.b); err != nil {
					failed = true
					a.mu.Lock()
					a.err = err
					a.mu.Unlock()
					if onFail != nil {
						a.once.Do(onFail)
					}
				} else {
					a.written.Add(buf.lines)
				}
			}
			a.free <- outBuf{b: buf.b[:0]}
		}
	}()
	return a
}

// swap hands cur to the writer and gives cur a free buffer, waiting for
// the writer to finish the previous one, or until giveUp is closed: then
// it returns false and cur is unchanged.
func (a *asyncOut) swap(cur *outBuf, giveUp <-chan struct{}) bool {
	select {
	case b := <-a.free:
		a.work <- *cur
		*cur = b
		return true
	case <-a.deadline(giveUp):
		a.stuck = true
		return false
	}
}

// finish hands cur over (if it holds anything) and waits for the writer
// to write everything, or until giveUp is closed. It reports whether all
// was written; the writer may go on in the background.
func (a *asyncOut) finish(cur *outBuf, giveUp <-chan struct{}) bool {
	if len(cur.b) > 0 && !a.swap(cur, giveUp) {
		return false
	}
	// cur holds one buffer; the other back in free means the last write
	// is done (or discarded).
	select {
	case b := <-a.free:
		a.free <- b
		return true
	case <-a.deadline(giveUp):
		a.stuck = true
		return false
	}
}

// Err is the first write error, nil if none.
func (a *asyncOut) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Written is the number of lines written whole.
func (a *asyncOut) Written() uint64 { return a.written.Load() }

// outputEnd says how a run's standard output ended, for the summary.
type outputEnd string

const (
	outputComplete outputEnd = "complete" // everything formatted was written
	outputClosed   outputEnd = "closed"   // the reader closed it (EPIPE): the end of output
	outputBlocked  outputEnd = "blocked"  // the reader stopped reading; the run ended without it
	outputFailed   outputEnd = "failed"   // a write error
)

// end says how the output ended, given whether finish wrote everything.
func (a *asyncOut) end(finished bool) outputEnd {
	switch err := a.Err(); {
	case err == nil && finished:
		return outputComplete
	case err == nil:
		return outputBlocked
	case errors.Is(err, syscall.EPIPE):
		return outputClosed
	}
	return outputFailed
}

// afterDone returns a channel closed d after ctx is done (never, if ctx
// never is): the deadline of a run's output after a signal.
func afterDone(ctx context.Context, d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	context.AfterFunc(ctx, func() { time.AfterFunc(d, func() { close(ch) }) })
	return ch
}

// writeBounded writes b to w from a goroutine and waits for it until
// giveUp is closed and then d more: the summary on standard error must not
// keep a stopping run alive when stderr is a pipe nobody reads.
func writeBounded(w io.Writer, b []byte, giveUp <-chan struct{}, d time.Duration) {
	done := make(chan struct{})
	go func() {
		w.Write(b)
		close(done)
	}()
	select {
	case <-done:
		return
	case <-giveUp:
	}
	select {
	case <-done:
	case <-time.After(d):
	}
}
