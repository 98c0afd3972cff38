// Command tcpstate traces kernel TCP state transitions with eBPF and checks
// each one against a TCP state model.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes, documented in the README and in `tcpstate --help`.
const (
	exitOK        = 0
	exitError     = 1 // the environment or the run failed
	exitUsage     = 2 // bad flags, arguments or input files
	exitAnomalies = 3 // --fail-on saw an anomaly it was told to fail on
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

// exitCode prints err once, on one line, and maps it to an exit status.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var fail *anomalyError
	if errors.As(err, &fail) {
		fmt.Fprintf(os.Stderr, "tcpstate: %v\n", err)
		return exitAnomalies
	}
	var usage *usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(os.Stderr, "tcpstate: %v\nRun 'tcpstate --help' for usage.\n", err)
		return exitUsage
	}
	fmt.Fprintf(os.Stderr, "tcpstate: %v\n", err)
	return exitError
}

// usageError marks bad flags, arguments or input: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

// usageArgs makes a cobra argument check's error a usage error (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// anomalyError marks a run that saw anomalies named by --fail-on: exit status 3.
type anomalyError struct{ msg string }

func (e *anomalyError) Error() string { return e.msg }
