package main

import (
	"fmt"
	"io"

	"github.com/tcpstate/tcpstate/tracer"
)

// cgroupNotes says on w what the host's cgroups allow, once the tracer is
// loaded: with --verbose, where the cgroup2 file system is and how ids
// are resolved; on a host without cgroup2 (cgroup v1 only), when the
// output shows cgroups (shows), that it cannot name them. --cgroup and
// --container are refused on such a host before anything is loaded.
func cgroupNotes(w io.Writer, t *tracer.Tracer, shows, verbose bool) {
	for _, f := range t.Features() {
		if f.Name != "socket cgroups" {
			continue
		}
		if verbose {
			fmt.Fprintf(w, "tcpstate: %s: %s\n", f.Name, f.Detail)
		}
		if !f.Active && shows {
			fmt.Fprintf(w, "tcpstate: warning: %v\n", tracer.ErrNoCgroup2)
		}
	}
}

// infoTo prints the tracer's notes (a container's new cgroup joined the
// filter) on w.
func infoTo(w io.Writer) func(string) {
	return func(msg string) { fmt.Fprintf(w, "tcpstate: %s\n", msg) }
}
