package main

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// An end of run that took longer than stopGrace to compute (a final
// snapshot on a slow machine) still writes its last output to a healthy
// standard output; a blocked one is given up at once after a handover
// already gave up on it.
func TestAsyncOutLateEnd(t *testing.T) {
	closed := make(chan struct{})
	close(closed) // giveUp passed before the last output was formatted

	var got bytes.Buffer
	a := newAsyncOut(&got, 64, func() {})
	cur := outBuf{b: []byte("last report\n"), lines: 1}
	if !a.finish(&cur, closed) {
		t.Fatal("a healthy output was given up because the end took long to compute")
	}
	if got.String() != "last report\n" {
		t.Errorf("wrote %q", got.String())
	}

	r, w := io.Pipe() // never read: the writer blocks
	defer r.Close()
	b := newAsyncOut(w, 64, func() {})
	first := outBuf{b: []byte("blocks the writer\n"), lines: 1}
	open := make(chan struct{})
	if !b.swap(&first, open) {
		t.Fatal("the first handover waits for nothing")
	}
	giveUp := make(chan struct{})
	time.AfterFunc(50*time.Millisecond, func() { close(giveUp) })
	second := outBuf{b: []byte("waits\n"), lines: 1}
	start := time.Now()
	if b.finish(&second, giveUp) {
		t.Fatal("a blocked output reported written")
	}
	third := outBuf{b: []byte("after giving up\n"), lines: 1}
	if b.finish(&third, giveUp) {
		t.Fatal("a blocked output reported written")
	}
	if d := time.Since(start); d > stopGrace/2 {
		t.Errorf("giving up on a blocked output took %v: the late window opened although a handover had given up", d)
	}
}
