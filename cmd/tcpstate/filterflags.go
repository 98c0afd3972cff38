package main

import (
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
	// parses --state itself (lsStates), and apply leaves it alone.
	listing bool
}

// register defines the filter flags on f.
func (ff *filterFlags) register(f *pflag.FlagSet) {
	ff.fs = f
	f.StringSliceVar(&ff.ports, "port", nil, "only sockets with this local or remote port (repeat or comma-separate for several)")
	f.StringSliceVar(&ff.lports, "lport", nil, "only sockets with this local port")
	f.StringSliceVar(&ff.rports, "rport", nil, "only sockets with this remote port")
	f.StringSliceVar(&ff.pids, "pid", nil, "only sockets owned by this process id")
	f.BoolVarP(&ff.ipv4, "ipv4", "4", false, "only IPv4 sockets")
	f.BoolVarP(&ff.ipv6, "ipv6", "6", false, "only IPv6 sockets (IPv4-mapped addresses included)")
	f.StringSliceVar(&ff.states, "state", nil, "only transitions into or out of this state (ESTABLISHED, SYN_SENT, CLOSE_WAIT, ...; ss's names such as ESTAB or FIN-WAIT-1 too)")
}

// apply validates the filter flags and sets them in t; a bad value is a
// usage error (exit status 2).
func (ff *filterFlags) apply(t *tracer.Options) error {
	// A filter flag given with nothing in it (--port "$UNSET") would
	// silently trace everything.
	for name, vals := range map[string][]string{"port": ff.ports, "lport": ff.lports, "rport": ff.rports, "pid": ff.pids, "state": ff.states} {
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
	if ff.listing {
		return nil
	}
	for _, s := range ff.states {
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
