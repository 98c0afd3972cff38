package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tcpstate/tcpstate/model"
	"github.com/tcpstate/tcpstate/tracer"
)

// filterFlags are the in-kernel filters that trace and stats share: the same
// flag names, help and validation in both commands.
type filterFlags struct {
	fs                    *pflag.FlagSet
	ports, lports, rports []string
	pids                  []string
	ipv4, ipv6            bool
	states                []string
	// listing: the command lists sockets (ls), whose --state selects
	// sockets by their state, TIME_WAIT and ss's groups included; it
	// parses --state itself (lsStates), and apply leaves it alone. Its
	// --pid matches any process that holds the socket (lsSelect).
	listing bool
	// closing: the command prints connections as they close (life): the
	// kernel sends only ->CLOSE, so --state keeps the connections that
	// closed from that state.
	closing    bool
	cgroups    []string
	containers []string
	netns      []string
	// findCgroupFS finds the cgroup2 mount (tests give another).
	findCgroupFS func() (tracer.CgroupFS, error)
}

// register defines the filter flags on f, --state and --pid worded for
// the command (listing and closing are set before).
func (ff *filterFlags) register(f *pflag.FlagSet) {
	ff.fs = f
	pidHelp := "only sockets owned by this process id"
	stateHelp := "only transitions into or out of this state (ESTABLISHED, SYN_SENT, CLOSE_WAIT, ...; ss's names such as ESTAB or FIN-WAIT-1 too)"
	switch {
	case ff.listing:
		pidHelp = "only sockets this process id holds open (any of their holders, not only the owner shown)"
		stateHelp = "only sockets in this state (ESTABLISHED, TIME_WAIT, CLOSE_WAIT, ...; ss's names such as ESTAB or FIN-WAIT-1 too) or in one of ss's groups: all, connected, synchronized, bucket, big"
	case ff.closing:
		pidHelp = "only connections owned by this process id (the owner life prints, not the task on the CPU at the close)"
		stateHelp = "only connections that closed from this state, their last before CLOSE (ESTABLISHED, SYN_SENT, LAST_ACK, FIN_WAIT2, ...; ss's names such as ESTAB or LAST-ACK too)"
	}
	f.StringSliceVar(&ff.ports, "port", nil, "only sockets with this local or remote port (repeat or comma-separate for several)")
	f.StringSliceVar(&ff.lports, "lport", nil, "only sockets with this local port")
	f.StringSliceVar(&ff.rports, "rport", nil, "only sockets with this remote port")
	f.StringSliceVar(&ff.pids, "pid", nil, pidHelp)
	f.BoolVarP(&ff.ipv4, "ipv4", "4", false, "only IPv4 sockets")
	f.BoolVarP(&ff.ipv6, "ipv6", "6", false, "only IPv6 sockets (IPv4-mapped addresses included)")
	f.StringSliceVar(&ff.states, "state", nil, stateHelp)
	f.StringArrayVar(&ff.cgroups, "cgroup", nil, "only sockets of the cgroup v2 at `PATH` or below it: its path from the cgroup2 root, as /proc/PID/cgroup shows it (/system.slice/nginx.service), or its directory; a socket's cgroup is the one its creator was in (repeat for several)")
	containerHelp := "only sockets of the container `ID`: its id or 4 or more of its first hex digits (docker, containerd, cri-o, podman), a systemd service's name (nginx.service), or a Kubernetes pod's uid, as their cgroup paths name them"
	if !ff.listing {
		// A listing looks once, at every socket there is.
		containerHelp += "; looked for again every second, so a container that starts or restarts later is followed from then on (its sockets created before are not traced)"
	}
	f.StringSliceVar(&ff.containers, "container", nil, containerHelp)
	f.StringSliceVar(&ff.netns, "netns", nil, "only sockets of the network namespace `NETNS`: its inode number (as in /proc/PID/ns/net, net:[INODE] too) or a path: /run/netns/NAME, /proc/PID/ns/net")
}

// apply validates the filter flags and sets them in t; a bad value is a
// usage error (exit status 2).
func (ff *filterFlags) apply(t *tracer.Options) error {
	// A filter flag given with nothing in it (--port "$UNSET") would
	// silently trace everything.
	for name, vals := range map[string][]string{"port": ff.ports, "lport": ff.lports, "rport": ff.rports, "pid": ff.pids, "state": ff.states,
		"cgroup": ff.cgroups, "container": ff.containers, "netns": ff.netns} {
		if ff.fs != nil && ff.fs.Changed(name) && len(vals) == 0 {
			return usagef("--%s needs a value", name)
		}
	}
	var err error
	if t.Ports, err = parsePorts("port", ff.ports); err != nil {
		return err
	}
	if t.LPorts, err = parsePorts("lport", ff.lports); err != nil {
		return err
	}
	if t.RPorts, err = parsePorts("rport", ff.rports); err != nil {
		return err
	}
	if t.Pids, err = parsePids(ff.pids); err != nil {
		return err
	}
	switch {
	case ff.ipv4 && ff.ipv6:
		return usagef("-4 and -6 exclude each other; give neither for both families")
	case ff.ipv4:
		t.Family = model.AFInet
	case ff.ipv6:
		t.Family = model.AFInet6
	}
	for _, s := range ff.states {
		if ff.listing {
			break // ls parses --state itself (lsStates)
		}
		st, err := model.ParseState(s)
		if err != nil {
			return usagef("--state: %v", err)
		}
		// The filter sees transitions: a state that none has would
		// silently match nothing.
		if why := st.Unreported(); why != "" {
			return usagef("--state %s would match nothing: %s", st, why)
		}
		t.States = append(t.States, st)
	}
	for _, v := range ff.netns {
		ino, err := tracer.ResolveNetns(strings.TrimSpace(v))
		if err != nil {
			return usagef("--netns %q: %v", v, err)
		}
		if ino == 0 {
			return usagef("--netns %q: no namespace has inode 0", v)
		}
		if !slices.Contains(t.Netns, ino) {
			t.Netns = append(t.Netns, ino)
		}
	}
	return ff.applyCgroups(t)
}

// applyCgroups resolves --cgroup to the cgroups' ids and depths, and checks
// --container: a prefix that names two containers is an error, and one
// that names a container now is pinned to its whole id (a later container
// with the same prefix is another). A container with no cgroup now is not
// an error: the tracer says so and looks again.
func (ff *filterFlags) applyCgroups(t *tracer.Options) error {
	if len(ff.cgroups) == 0 && len(ff.containers) == 0 {
		return nil
	}
	for _, c := range ff.cgroups {
		if strings.TrimSpace(c) == "" {
			return usagef("--cgroup needs a value")
		}
	}
	for _, c := range ff.containers {
		if !containerName(strings.TrimSpace(c)) {
			return usagef("--container %q: want a container id (4 or more of its hex digits), a systemd unit's name (nginx.service) or a Kubernetes pod's uid", c)
		}
	}
	find := ff.findCgroupFS
	if find == nil {
		find = tracer.FindCgroupFS
	}
	fs, err := find()
	if err != nil {
		return err
	}
	flag := "--container"
	if len(ff.cgroups) > 0 {
		flag = "--cgroup"
	}
	if fs.Mount == "" {
		// The host, not the flag, is at fault: exit status 1.
		return fmt.Errorf("%s: %w", flag, tracer.ErrNoCgroup2)
	}
	for _, c := range ff.cgroups {
		w, err := fs.ResolveCgroup(c)
		if err != nil {
			return usagef("--cgroup %q: %v", c, err)
		}
		if !slices.ContainsFunc(t.Cgroups, func(x model.CgroupWant) bool { return x.ID == w.ID }) {
			t.Cgroups = append(t.Cgroups, w)
		}
	}
	if len(t.Cgroups) > model.MaxCgroupWants {
		return usagef("--cgroup: %d cgroups; the kernel's filter takes at most %d (give a common parent)", len(t.Cgroups), model.MaxCgroupWants)
	}
	if len(ff.containers) == 0 {
		return nil
	}
	cgs, err := fs.Walk()
	if err != nil {
		return err
	}
	for _, c := range ff.containers {
		c = strings.TrimSpace(c)
		_, named, err := tracer.ContainerCgroups(cgs, []string{c}, t.Cgroups)
		if err != nil {
			return &usageError{err}
		}
		if id, ok := named[c]; ok && !strings.HasPrefix(id, "pod ") {
			c = id
		}
		if !slices.Contains(t.Containers, c) {
			t.Containers = append(t.Containers, c)
		}
	}
	wants, _, err := tracer.ContainerCgroups(cgs, t.Containers, t.Cgroups)
	if err != nil {
		return &usageError{err}
	}
	if len(wants) > model.MaxCgroupWants {
		return usagef("--container: the containers have %d cgroups; the kernel's filter takes at most %d", len(wants), model.MaxCgroupWants)
	}
	return nil
}

// parsePorts validates port flags: numbers from 1 to 65535.
func parsePorts(flag string, vals []string) ([]uint16, error) {
	var out []uint16
	for _, v := range vals {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 || n > 65535 {
			return nil, usagef("--%s %q: a port is a number from 1 to 65535", flag, v)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

func parsePids(vals []string) ([]uint32, error) {
	var out []uint32
	for _, v := range vals {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 || n > 1<<22 {
			return nil, usagef("--pid %q: a process id is a number from 1 to %d", v, 1<<22)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// containerName reports whether s can name a container: the characters of
// hex ids, uuids, systemd unit names (with their \x escapes) and LXC names.
func containerName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("-_.@:\\", c):
		default:
			return false
		}
	}
	return true
}
