package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/net/netutil"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// Defaults and bounds of serve.
const (
	defaultServeListen   = "127.0.0.1:9464"
	defaultSnapshotEvery = 5 * time.Second
	minSnapshotEvery     = time.Second
	// The HTTP server's bounds: a slow or stuck client, or a storm of
	// them, costs a few goroutines and never the kernel side, which does
	// not depend on user space in aggregate mode.
	serveMaxConns     = 32
	serveMaxScrapes   = 4
	serveScrapeBudget = 25 * time.Second
)

type serveOptions struct {
	listen     string
	portLabels []string
	// --label-container, --label-container-max
	labelContainers bool
	containerMax    int
	containerMaxSet bool
	// findCgroupFS finds the cgroup2 mount (tests give another).
	findCgroupFS func() (tracer.CgroupFS, error)
	model        string
	stuck        *stuckFlag
	snapEvery    time.Duration
	duration     time.Duration
	summary      string
	rescue       bool
	verbose      bool
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{stuck: newStuckFlag()}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Export TCP state metrics for Prometheus: transitions, anomalies, sockets by state, durations, close causes",
		Long: `Count TCP state transitions in the kernel, as stats does, and serve them
for Prometheus on /metrics until stopped (SIGTERM or SIGINT detach cleanly).
/healthz answers 200 while the programs are attached and the kernel's maps
can be read, 503 otherwise; / names the endpoints.

Every scrape reads the kernel's maps at that moment (a few batch lookups):
nothing runs between scrapes, and the kernel side never waits for user
space, so a slow, failed or abandoned scrape costs the tracing nothing.
tcpstate_sockets and tcpstate_stuck_sockets come from a snapshot of every
socket of the host (every network namespace) and the list of the sockets
the kernel follows, taken at a scrape when the last is older than
--snapshot-interval: a scrape storm shares one, and at most one runs at a
time. Each snapshot also reconciles: a socket whose state is not the one
the kernel last saw missed transitions; the snapshot corrects it and counts
them (tcpstate_events_missing_total{found_by="snapshot"}).

Clients are bounded: at most 32 connections (one that sends no request
within 5 s is dropped, an answer not taken within 30 s is abandoned) and 4
scrapes gathering at once (a fifth is answered 503 at once, saying so). A
client that stops reading holds its connection, not a gathering slot. After
SIGTERM the scrapes in flight get 5 s to finish.

Metrics (labels bounded: no address, pid or per-port label unless asked):
  tcpstate_transitions_total{old_state,new_state}   [port with --port-label]
  tcpstate_anomalies_total{model,kind}               kind illegal or gap
  tcpstate_sockets{state}                            snapshot, TIME_WAIT too
  tcpstate_state_duration_seconds{state}             histogram
  tcpstate_handshake_duration_seconds{side}          active, passive
  tcpstate_connection_duration_seconds               histogram
  tcpstate_closes_total{cause,detail}
  tcpstate_stuck_sockets{state}                      against --stuck
  tcpstate_events_lost_total{cause}
  tcpstate_events_missing_total{found_by}            gap, snapshot
  tcpstate_resets_no_socket_total                    Linux 6.10+
  tcpstate_bpf_program_runs_total{program}, tcpstate_bpf_program_run_seconds_total{program}
                                                     while kernel.bpf_stats_enabled is 1
  tcpstate_bpf_programs_attached, tcpstate_build_info{version,commit,...}
and Go's and the process's own (go_*, process_*). With --label-container:
  tcpstate_container_transitions_total{container,pod_uid}
  tcpstate_container_sockets_opened_total{container,pod_uid}
  tcpstate_container_uncounted_transitions_total     the kernel's map full
  tcpstate_container_cgroups, tcpstate_container_labels

Histograms keep the kernel's precision: their le bounds are boundaries of
its log2 microsecond buckets (2 us, 8 us, 32 us, ... 2^35 us), their _sum
is the exact sum the kernel adds up.

--label-container also counts, in the kernel, by each socket's own cgroup
(its creator's; an accepted socket has its listener's) and labels the
counts by its container, as trace -o wide's CGROUP column names it:
RUNTIME:ID with 12 hex digits (podman:4f797c539e6c, containerd:...,
cri-o:...), systemd:UNIT for a service, pod:UID for a pod's own cgroup, with pod_uid
set under Kubernetes. Three values are not containers: host (a cgroup that
names none: login sessions, the root cgroup), unknown (a cgroup removed
before a scrape could resolve it, or none recorded: Linux before 5.15)
and other (the containers past --label-container-max, default 256). A
container keeps its value from its first scrape; when it has no cgroup
left its series stay 10 minutes, then go and free the slot. The kernel counts at most 1024 cgroups: what does
not fit is tcpstate_container_uncounted_transitions_total, and scrapes
take removed cgroups out of the map (at most every 30 s) into the counts
kept here, so it does not fill over weeks and no series goes down. The
cost: a hash lookup per transition in the kernel (measured: about 30 ns,
on the ~260 ns serve's program takes without it). It needs a cgroup2 mount
(on a cgroup v1-only host serve exits with status 1) and resolves ids by
file handle with CAP_DAC_READ_SEARCH, else by reading the cgroup tree.

serve attaches no accept hook: it exports no per-process data, so it needs
no tracefs and costs other system calls nothing; nor does it count per
owner, or per cgroup without --label-container, so no kernel map grows
with the pids and cgroups that come and go. Its kernel maps are arrays of
fixed size (and, with --label-container, a hash that scrapes prune):
memory stays flat for weeks. It needs CAP_BPF and CAP_PERFMON, and for the
snapshot of the other network namespaces CAP_SYS_PTRACE (to find them in
other users' /proc/PID/ns/net) and CAP_SYS_ADMIN (to enter them): without
them it says so at start, and tcpstate_sockets leaves those namespaces out.

Bad flags, a --listen address that is in use or not this host's, and a bad
--port-label or --label-container-max exit with status 2 and one line.`,
		Example: `  sudo tcpstate serve
  sudo tcpstate serve --listen :9464 --port-label 443,8080
  sudo tcpstate serve --stuck CLOSE_WAIT=5m --snapshot-interval 15s
  sudo tcpstate serve --label-container --label-container-max 100`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.containerMaxSet = cmd.Flags().Changed("label-container-max")
			return runServe(cmd.Context(), o, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", defaultServeListen, "address to serve /metrics on, HOST:PORT (:9464 for every address of the host)")
	f.BoolVar(&o.labelContainers, "label-container", false, "also count by container in the kernel, and export tcpstate_container_transitions_total and tcpstate_container_sockets_opened_total with a container label (RUNTIME:ID as -o wide's CGROUP column shows it, host, unknown, or other past --label-container-max); costs a hash lookup per transition (~30 ns); needs a cgroup2 mount")
	f.IntVar(&o.containerMax, "label-container-max", defaultLabelContainerMax, fmt.Sprintf("with --label-container, at most this many container label values (1 to %d); later containers count as container=\"other\"", tracer.DefaultMaxCgroups))
	f.StringSliceVar(&o.portLabels, "port-label", nil, fmt.Sprintf("add a port label to tcpstate_transitions_total for these service ports (comma-separated or repeated, at most %d; the rest are port=\"other\"): a listener's or accepted socket's local port, a connecting socket's remote port", tracer.MaxLabelPorts))
	choiceVarP(f, &o.model, "model", "", model.DefaultModelName, model.ModelNames(), "transition model of tcpstate_anomalies_total ("+strings.Join(model.ModelNames(), ", ")+")")
	f.Var(o.stuck, "stuck", "count sockets in STATE longer than DURATION in tcpstate_stuck_sockets (repeat or comma-separate; overrides that state's default; DURATION 0 or off: never)")
	f.DurationVar(&o.snapEvery, "snapshot-interval", defaultSnapshotEvery, fmt.Sprintf("longest a scrape reuses the last snapshot of the host's sockets (tcpstate_sockets, tcpstate_stuck_sockets, reconciliation); at least %v", minSnapshotEvery))
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, e.g. 30s or 5m (0: until stopped)")
	f.StringVar(&o.summary, "summary-json", "", "at exit, write the kernel's counters (transitions, lost by cause) as JSON to this file")
	f.BoolVar(&o.rescue, "rescue-nested", false, "attach a second program that handles transitions the kernel skips while the first runs on the same CPU (recursion misses); costs every transition")
	f.BoolVar(&o.verbose, "verbose", false, "print the verifier's full log if the kernel rejects a program, and which optional programs are in use")
	return cmd
}

// oneLineError is a usage error (exit status 2) reported on one line,
// without the pointer to the help: its message says it all.
type oneLineError struct{ msg string }

func (e *oneLineError) Error() string { return e.msg }

func inputf(format string, a ...any) error {
	return &usageError{&oneLineError{fmt.Sprintf(format, a...)}}
}

// parsePortLabels validates --port-label.
func parsePortLabels(vals []string) ([]uint16, error) {
	var out []uint16
	for _, v := range vals {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 || n > 65535 {
			return nil, inputf("--port-label %q: a port is a number from 1 to 65535", v)
		}
		for _, p := range out {
			if p == uint16(n) {
				return nil, inputf("--port-label %d: given twice", n)
			}
		}
		out = append(out, uint16(n))
	}
	if len(out) > tracer.MaxLabelPorts {
		return nil, inputf("--port-label: %d ports, at most %d (each is a label value of every edge)", len(out), tracer.MaxLabelPorts)
	}
	return out, nil
}

// checkListen validates --listen: HOST:PORT, the port a number from 1 to
// 65535, the host empty, an IP address or a name.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return inputf("--listen %q: want HOST:PORT, for example 127.0.0.1:9464 or :9464", addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return inputf("--listen %q: the port must be a number from 1 to 65535", addr)
	}
	if strings.ContainsAny(host, " /\\%") && net.ParseIP(host) == nil {
		return inputf("--listen %q: %q is not a host name or an IP address", addr, host)
	}
	return nil
}

// listen opens --listen; its failures are the user's to fix (exit 2).
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, inputf("--listen %s: the address is in use (another process listens there); choose another --listen", addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return nil, inputf("--listen %s: not an address of this host", addr)
	case errors.Is(err, syscall.EACCES):
		return nil, inputf("--listen %s: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)", addr)
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return nil, inputf("--listen %s: cannot resolve host %q", addr, dns.Name)
	}
	return nil, inputf("--listen %s: %v", addr, err)
}

func (o *serveOptions) tracerOptions() (tracer.Options, *model.Model, error) {
	var t tracer.Options
	if err := checkListen(o.listen); err != nil {
		return t, nil, err
	}
	ports, err := parsePortLabels(o.portLabels)
	if err != nil {
		return t, nil, err
	}
	switch {
	case o.snapEvery < minSnapshotEvery:
		return t, nil, inputf("--snapshot-interval %v: must be at least %v", o.snapEvery, minSnapshotEvery)
	case o.duration < 0:
		return t, nil, inputf("--duration %v: must not be negative", o.duration)
	case o.containerMax < 1 || o.containerMax > tracer.DefaultMaxCgroups:
		return t, nil, inputf("--label-container-max %d: must be from 1 to %d", o.containerMax, tracer.DefaultMaxCgroups)
	case o.containerMaxSet && !o.labelContainers:
		return t, nil, inputf("--label-container-max needs --label-container")
	}
	m, err := model.ModelByName(o.model)
	if err != nil {
		return t, nil, usagef("--model: %v", err)
	}
	t.Mode = tracer.ModeAggregate
	t.Totals = true
	t.LabelPorts = ports
	t.CountCgroups = o.labelContainers
	t.Model = m
	// No accept hook (owners are not exported), so the accept map and the
	// held-back queues (no filters) stay at the minimum.
	t.Accept = tracer.AcceptOff
	t.MaxSockets = 16
	t.RescueNested, t.Verbose = o.rescue, o.verbose
	return t, m, nil
}

func runServe(ctx context.Context, o *serveOptions, stderr io.Writer) error {
	topts, m, err := o.tracerOptions()
	if err != nil {
		return err
	}
	if o.labelContainers {
		// As --cgroup: the host, not the flag, is at fault (exit status
		// 1), and nothing is loaded for nothing.
		find := o.findCgroupFS
		if find == nil {
			find = tracer.FindCgroupFS
		}
		fs, err := find()
		if err != nil {
			return err
		}
		if fs.Mount == "" {
			return fmt.Errorf("--label-container: %w", tracer.ErrNoCgroup2)
		}
	}
	// Check the summary file and listen before loading: a bad path or a
	// busy port fails at once, and nothing was loaded for nothing.
	var summaryOut *outFile
	if o.summary != "" {
		if summaryOut, err = openOutFile("--summary-json", o.summary); err != nil {
			return err
		}
		defer summaryOut.Close()
	}
	ln, err := listen(o.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	topts.Warn = func(msg string) { fmt.Fprintf(stderr, "tcpstate: warning: %s\n", msg) }
	t, err := tracer.Open(topts)
	if err != nil {
		return err
	}
	defer t.Close()
	if o.verbose {
		printFeatures(stderr, t)
	}

	col := newServeCollector(t, m, o.stuck.th, o.snapEvery, len(topts.LabelPorts) > 0)
	if o.labelContainers {
		col.containers = newContainerLabels(t, t.Cgroups(), o.containerMax)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var stopping atomic.Bool
	srv := &http.Server{
		Handler:           serveMux(reg, t, &stopping),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      serveScrapeBudget + 5*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(io.Discard, "", 0), // a client's bad request is not the operator's problem
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(netutil.LimitListener(ln, serveMaxConns)) }()
	fmt.Fprintf(stderr, "tcpstate: serving metrics on http://%s/metrics; Ctrl-C to stop\n", ln.Addr())

	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	// Unhealthy first, then stop serving, then detach.
	stopping.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	detachErr := t.Detach()
	if summaryOut != nil {
		c, err := t.Counters()
		if err != nil {
			return err
		}
		var tt tracer.Totals
		if err := t.ReadTotals(&tt); err != nil {
			return err
		}
		s := statsSummary{Transitions: c.Transitions, Counted: tt.Agg.Transitions(), Lost: c.Lost(),
			LostFiltered: c.LostFiltered(), LostHostWide: c.LostHostWide(), Kernel: c, Model: m.Name(),
			// What no counter saw: the gaps' proof and the snapshots'.
			Missing: c.GapMissing + col.missingFound()}
		if err := summaryOut.WriteJSON(s); err != nil {
			return err
		}
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics: %w", serveErr)
	}
	return detachErr
}

// healthSource is what /healthz asks.
type healthSource interface {
	Attached() bool
	Counters() (tracer.Counters, error)
}

func serveMux(reg *prometheus.Registry, t healthSource, stopping *atomic.Bool) *http.ServeMux {
	mux := http.NewServeMux()
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: serveMaxScrapes,
		Timeout:             serveScrapeBudget,
		Registry:            reg,
	})
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(reg, metrics))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch {
		case stopping.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "stopping")
		case !t.Attached():
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "the main BPF program is not attached")
		default:
			if _, err := t.Counters(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "cannot read the kernel's counters: %v\n", err)
				return
			}
			fmt.Fprintln(w, "ok")
		}
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!DOCTYPE html>
<html><head><title>tcpstate</title></head><body>
<h1>tcpstate serve</h1>
<p>Kernel TCP state transitions, counted in the kernel with eBPF.</p>
<ul>
<li><a href="/metrics">/metrics</a>: the metrics, for Prometheus</li>
<li><a href="/healthz">/healthz</a>: 200 while the programs are attached and the kernel's maps can be read, 503 otherwise</li>
</ul>
</body></html>
`)
	})
	return mux
}
