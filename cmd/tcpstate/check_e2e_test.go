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

// TestCheckClosedOutput: check's standard output closed by its reader
// (check --fail-on gap big.jsonl | head -n 1) ends the output, not the
// check: it reads on to the end, and its exit status is still the
// input's (3 here: a gap late in the file). Before, SIGPIPE killed it
// (status 141); with SIGPIPE ignored, EPIPE must not become exit 1.
func TestCheckClosedOutput(t *testing.T) {
	bin := buildBinary(t, t.TempDir())
	var in strings.Builder
	for i := range 2000 {
		in.WriteString(rec(sk1+uint64(i)*0x800, model.Listen, model.FinWait2)) // illegal, printed
	}
	in.WriteString(rec(sk2, model.Close, model.SynSent) + rec(sk2, model.Established, model.FinWait1)) // a gap, last
	path := writeTemp(t, in.String())
	cmd := exec.Command(bin, "check", "--fail-on", "gap", path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := testnet.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(stdout).ReadString('\n') // head -n 1
	stdout.Close()
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != exitAnomalies || !strings.Contains(stderr.String(), "standard output was closed by its reader") {
		t.Errorf("exit %d (%v), stderr %q; want %d: the gap at the end of the input found", code, err, stderr.String(), exitAnomalies)
	}
}
