package main

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
	"github.com/tcpstate/tcpstate/model"
)

// TestCheckPrintsAsItReads: reading a pipe (trace -o json | check -),
// check prints each anomaly as soon as its line is read, not when the
// input ends (before: nothing until EOF, so a live pipe showed nothing).
func TestCheckPrintsAsItReads(t *testing.T) {
	bin := buildBinary(t, t.TempDir())
	cmd := exec.Command(bin, "check", "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := testnet.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// An illegal edge, and the input stays open.
	if _, err := stdin.Write([]byte(rec(sk1, model.Listen, model.FinWait2))); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for got := false; !got; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("check ended before its input did")
			}
			got = strings.Contains(l, "LISTEN      -> FIN_WAIT2") && strings.Contains(l, "!! ILLEGAL")
		case <-deadline:
			t.Fatal("the anomaly was not printed within 5s of its line, with the input still open")
		}
	}
	stdin.Close()
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("check: %v", err)
	}
}
