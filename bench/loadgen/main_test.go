package main

import (
	"testing"
	"time"
)

// TestLoad makes a few hundred loopback connections in the test's own
// namespace (no root needed) and checks the counts loadgen reports.
func TestLoad(t *testing.T) {
	res, err := load(options{connections: 300, clients: 3, addr: "127.0.0.1:0", timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections != 300 || res.Errors != 0 {
		t.Fatalf("connections %d, errors %d; want 300, 0", res.Connections, res.Errors)
	}
	if want := 300*TransitionsPerConnection + TransitionsPerRun; res.ExpectedTransitions != want {
		t.Fatalf("expected transitions %d, want %d", res.ExpectedTransitions, want)
	}
	if res.ConnPerSec <= 0 || res.Netns == 0 {
		t.Fatalf("conn/s %v, netns %d", res.ConnPerSec, res.Netns)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, o := range []options{
		{connections: 0, clients: 1, addr: "127.0.0.1:1"},
		{connections: 1, clients: 0, addr: "127.0.0.1:1"},
		{connections: 1, clients: 1, addr: "192.0.2.1:80"},
	} {
		if err := run(o); err == nil {
			t.Errorf("run(%+v): want an error", o)
		}
	}
}

// TestLoadAbort: with --abort every connection still completes (the server
// takes the reset as its end) and counts six transitions.
func TestLoadAbort(t *testing.T) {
	res, err := load(options{connections: 300, clients: 3, addr: "127.0.0.1:0", timeout: 30 * time.Second, abort: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections != 300 || res.Errors != 0 {
		t.Fatalf("connections %d, errors %d; want 300, 0", res.Connections, res.Errors)
	}
	if want := 300*TransitionsPerAbortConnection + TransitionsPerRun; res.ExpectedTransitions != want {
		t.Fatalf("expected transitions %d, want %d", res.ExpectedTransitions, want)
	}
}
