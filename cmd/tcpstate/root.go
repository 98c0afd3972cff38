package main

import (
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tcpstate",
		Short: "Trace kernel TCP state transitions with eBPF and check them against the TCP state machine",
		Long: `tcpstate follows every TCP state change the Linux kernel makes (the
sock:inet_sock_set_state tracepoint), names the process that owns each socket,
and checks each transition against a TCP state model.

Exit status: 0 success, also a run that SIGINT, SIGTERM or SIGHUP stopped,
or whose standard output was closed by its reader (| head) or blocked when
it had to end (the summary says how many lines were not written); 1 the run
failed (privileges, kernel support, I/O, a write error other than a closed
pipe); 2 bad flags, arguments or input; 3 --fail-on saw an anomaly (whatever
stopped the run).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Cobra's own default, which SuggestionsFor does not apply.
		SuggestionsMinimumDistance: 2,
	}
	// Without this, an unknown command would be a plain error (exit 1)
	// instead of a usage error (exit 2) with a suggestion.
	root.Args = unknownCommand
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	bi, ok := debug.ReadBuildInfo()
	root.Version = versionText(version, commit, bi, ok)
	root.SetVersionTemplate("{{.Version}}\n")
	root.Flags().BoolP("version", "v", false, "print the version, the commit it was built from, and the Go and cilium/ebpf versions")
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(newTraceCmd())
	root.AddCommand(newStatsCmd())
	root.AddCommand(newCheckCmd())
	root.AddCommand(newLsCmd())
	root.AddCommand(newLifeCmd())
	root.AddCommand(newServeCmd())
	return root
}
