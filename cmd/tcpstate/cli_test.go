package main

// What the command line says when it is used wrongly, and the flags that
// name states, output modes and models: no kernel needed.

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/tcpstate/tcpstate/model"
)

// usageErr runs args through the root command and returns the usage
// error's message, failing the test when args are accepted or the error is
// not a usage error (exit status 2) on one line.
func usageErr(t *testing.T, args ...string) string {
	t.Helper()
	root := statsRoot()
	root.SetArgs(args)
	var out, errb strings.Builder
	root.SetOut(&out)
	root.SetErr(&errb)
	// A done context: args accepted by mistake end at once (after
	// loading, as root) instead of tracing until the test times out.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := root.ExecuteContext(ctx)
	if err == nil {
		t.Fatalf("tcpstate %s: accepted", strings.Join(args, " "))
	}
	if code := exitCode(err); code != exitUsage {
		t.Errorf("tcpstate %s: exit status %d, want %d (%v)", strings.Join(args, " "), code, exitUsage, err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("tcpstate %s: error on more than one line: %q", strings.Join(args, " "), err)
	}
	if out.Len()+errb.Len() != 0 {
		t.Errorf("tcpstate %s printed %q %q", strings.Join(args, " "), out.String(), errb.String())
	}
	return err.Error()
}

func TestStateFlagSpellings(t *testing.T) {
	o := traceOptionsFrom(t, "--state", "ESTAB,fin-wait-1", "--state", "UNCONN", "--state", "SYN-RECV,last-ack,TCP_CLOSE_WAIT")
	got, err := o.tracerOptions()
	if err != nil {
		t.Fatal(err)
	}
	want := []model.State{model.Established, model.FinWait1, model.Close, model.SynRecv, model.LastAck, model.CloseWait}
	if !slices.Equal(got.States, want) {
		t.Errorf("--state: %v, want %v", got.States, want)
	}
}

// TestStateFlagRefusesUnreportedStates: a state the tracepoint never
// reports would match nothing; trace and stats say so and what to use.
func TestStateFlagRefusesUnreportedStates(t *testing.T) {
	for _, cmd := range []string{"trace", "stats"} {
		for _, c := range []struct {
			arg  string
			want []string
		}{
			{"TIME_WAIT", []string{"--state TIME_WAIT would match nothing", "timewait socket", "FIN_WAIT2 or CLOSING", "-> CLOSE"}},
			{"time-wait", []string{"--state TIME_WAIT would match nothing"}},
			{"ESTABLISHED,TIME-WAIT", []string{"--state TIME_WAIT would match nothing"}},
			{"NEW_SYN_RECV", []string{"--state NEW_SYN_RECV would match nothing", "request socket", "select SYN_RECV"}},
		} {
			msg := usageErr(t, cmd, "--state", c.arg)
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%s --state %s: %q, want it to contain %q", cmd, c.arg, msg, w)
				}
			}
		}
	}
}
