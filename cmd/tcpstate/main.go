// Command tcpstate traces kernel TCP state transitions with eBPF and checks
// each one against a TCP state model.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tcpstate/tcpstate/model"
)

// Exit codes, documented in the README and in `tcpstate --help`.
const (
	exitOK        = 0
	exitError     = 1 // the environment or the run failed
	exitUsage     = 2 // bad flags, arguments or input files
	exitAnomalies = 3 // --fail-on saw an anomaly it was told to fail on
)

// stopSignals are the signals that end a run cleanly: the summary on
// stderr, --summary-json written, exit status 0 (or 3 for --fail-on).
// SIGHUP is a dropped SSH session or a closed terminal; under nohup,
// which starts tcpstate with SIGHUP ignored, it stays ignored (Notify
// would otherwise catch it).
func stopSignals() []os.Signal {
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	return sigs
}

func main() {
	// A write to a pipe whose reader is gone (| head) returns EPIPE
	// instead of killing the process (Go's default for standard output
	// and error), so that the run ends cleanly, with its summary:
	// standard output's end is the end of the output.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals()...)
	code := run(ctx, newRootCmd(), os.Stderr)
	stop()
	os.Exit(code)
}

// run executes root and reports its error once, on stderr, with a pointer
// to the help of the command that was run when it is a usage error. It
// returns the exit status.
func run(ctx context.Context, root *cobra.Command, stderr io.Writer) int {
	cmd, err := root.ExecuteContextC(ctx)
	code := exitCode(err)
	if code == exitOK {
		return code
	}
	fmt.Fprintf(stderr, "tcpstate: %v\n", err)
	var oneLine *oneLineError
	if code == exitUsage && !errors.As(err, &oneLine) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// exitCode maps an error to the exit status.
func exitCode(err error) int {
	var fail *anomalyError
	var usage *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &fail):
		return exitAnomalies
	case errors.As(err, &usage):
		return exitUsage
	}
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

// unknownCommand is the root's argument check: an argument there is a
// command tcpstate does not have. It suggests the nearest ones.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if args[0] == "version" && cmd.Flags().Lookup("version") != nil {
		return usagef("%s; did you mean --version?", msg)
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		return usagef("%s; did you mean %s?", msg, orList(s))
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			names = append(names, c.Name())
		}
	}
	return usagef("%s (its commands: %s)", msg, strings.Join(names, ", "))
}

// noArgs is the argument check of trace and stats, whose filters and
// options are all flags. An argument that would make sense as a flag's
// value gets that flag suggested.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	a := args[0]
	msg := fmt.Sprintf("%s takes no arguments, got %q", cmd.Name(), strings.Join(args, " "))
	hint := ""
	if n, err := strconv.ParseUint(a, 10, 16); err == nil && n > 0 {
		hint = "--port " + a
	} else if _, err := model.ParseState(a); err == nil {
		hint = "--state " + a
	} else if f := cmd.Flags().Lookup("output"); f != nil {
		if c, ok := f.Value.(*choiceFlag); ok && c.accepts(a) {
			hint = "-o " + a
		}
	}
	if hint != "" {
		return usagef("%s; did you mean %s?", msg, hint)
	}
	return usagef("%s; filters and options are flags (see --help)", msg)
}

// anomalyError marks a run that saw anomalies named by --fail-on: exit status 3.
type anomalyError struct{ msg string }

func (e *anomalyError) Error() string { return e.msg }
