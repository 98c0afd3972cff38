package model

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// The expected edge sets, written out independently of transitions.go: each
// state maps to the new states it may go to.
var (
	wantLinux = map[State][]State{
		Close:       {Listen, SynSent},
		Listen:      {SynRecv, Close},
		SynSent:     {SynRecv, Established, Close},
		SynRecv:     {Established, FinWait1, Close, CloseWait},
		Established: {FinWait1, CloseWait, Close},
		FinWait1:    {FinWait1, FinWait2, Closing, Close},
		FinWait2:    {FinWait2, Close},
		Closing:     {Closing, Close},
		CloseWait:   {LastAck, Close},
		LastAck:     {LastAck, Close},
	}
	wantRFC793 = map[State][]State{
		Close:       {Listen, SynSent},
		Listen:      {SynSent, Close},
		SynSent:     {SynRecv, Established, Close},
		SynRecv:     {Established, Listen, FinWait1, Close},
		Established: {FinWait1, CloseWait, Close},
		FinWait1:    {FinWait2, Closing, TimeWait, Close},
		FinWait2:    {TimeWait},
		Closing:     {TimeWait},
		TimeWait:    {Close},
		CloseWait:   {LastAck, Close},
		LastAck:     {Close},
	}
)

func mustModel(t testing.TB, name string) *Model {
	t.Helper()
	m, err := ModelByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestModelEdgeTables checks every pair (old, new), including the invalid
// state 0 and numbers past the kernel's range, against the expected sets, and
// checks that Allowed, Mask and Edges agree.
func TestModelEdgeTables(t *testing.T) {
	for _, tc := range []struct {
		name string
		want map[State][]State
	}{
		{"linux", wantLinux},
		{"rfc793", wantRFC793},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustModel(t, tc.name)
			if m.Name() != tc.name {
				t.Errorf("Name() = %q", m.Name())
			}
			mask := m.Mask()
			edges := m.Edges()
			nwant := 0
			for old := State(0); old <= NumStates+2; old++ {
				for nw := State(0); nw <= NumStates+2; nw++ {
					want := slices.Contains(tc.want[old], nw)
					if want {
						nwant++
					}
					if got := m.Allowed(old, nw); got != want {
						t.Errorf("Allowed(%v, %v) = %v, want %v", old, nw, got, want)
					}
					if old < NumStates && nw < NumStates {
						if got := mask[old]&(1<<nw) != 0; got != want {
							t.Errorf("Mask()[%v] bit %v = %v, want %v", old, nw, got, want)
						}
					}
					inEdges := slices.ContainsFunc(edges, func(e Edge) bool { return e.Old == old && e.New == nw })
					if inEdges != want {
						t.Errorf("Edges() has %v -> %v: %v, want %v", old, nw, inEdges, want)
					}
				}
			}
			if len(edges) != nwant {
				t.Errorf("Edges() has %d edges, want %d", len(edges), nwant)
			}
			if mask[0] != 0 {
				t.Errorf("Mask()[0] = %#x, want 0", mask[0])
			}
			for _, e := range edges {
				if e.Doc == "" {
					t.Errorf("edge %v has no Doc", e)
				}
			}
			edges[0].Old = 0 // Edges returns a copy
			if m.Edges()[0].Old == 0 {
				t.Error("Edges() returned the model's own slice")
			}
		})
	}
}

// TestLinuxKernelDocEdges: the table "Transitions Linux really emits (TCP)"
// of docs/kernel.md, parsed from its text as written there, is exactly the
// linux model's edges: each one it lists is accepted, and the model has
// none it does not list.
func TestLinuxKernelDocEdges(t *testing.T) {
	b, err := os.ReadFile("../docs/kernel.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "\n## Transitions Linux really emits (TCP)\n")
	if !ok {
		t.Fatal(`docs/kernel.md has no section "Transitions Linux really emits (TCP)"`)
	}
	table, _, _ = strings.Cut(table, "\n## ")
	m := mustModel(t, "linux")
	listed := map[[2]State]bool{}
	for _, row := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(row, "| "), "|")
		if !strings.HasPrefix(row, "|") || len(cells) != 2 {
			continue // prose
		}
		old, err := ParseState(strings.TrimSpace(cells[0]))
		if err != nil {
			continue // the header and the rule
		}
		for _, f := range strings.FieldsFunc(dropParens(cells[1]), func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
			nw, err := ParseState(f)
			if err != nil {
				continue // prose
			}
			listed[[2]State{old, nw}] = true
			if !m.Allowed(old, nw) {
				t.Errorf("linux rejects %v -> %v, which docs/kernel.md lists", old, nw)
			}
		}
	}
	for _, e := range m.Edges() {
		if !listed[[2]State{e.Old, e.New}] {
			t.Errorf("linux has %v -> %v, which docs/kernel.md does not list", e.Old, e.New)
		}
	}
	if n := len(listed); n != 26 { // 25 seen edges + SYN_RECV -> CLOSE_WAIT (in source)
		t.Errorf("parsed %d edges from docs/kernel.md, want 26", n)
	}
	// TIME_WAIT and NEW_SYN_RECV never appear in a Linux report.
	for _, s := range States() {
		for _, x := range []State{TimeWait, NewSynRecv} {
			if m.Allowed(s, x) || m.Allowed(x, s) {
				t.Errorf("linux accepts an edge between %v and %v", s, x)
			}
		}
	}
}

// dropParens removes the table's parenthesised comments, such as "(close of
// a Fast Open child)", whose words would parse as states.
func dropParens(s string) string {
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			depth++
		case r == ')':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestRFC793RejectsLinuxOnlyEdges: the edges only Linux has.
func TestRFC793RejectsLinuxOnlyEdges(t *testing.T) {
	linux, rfc := mustModel(t, "linux"), mustModel(t, "rfc793")
	for _, e := range []struct {
		old, new State
		why      string
	}{
		{FinWait1, FinWait1, "self transition"},
		{FinWait2, FinWait2, "self transition"},
		{Closing, Closing, "self transition"},
		{LastAck, LastAck, "self transition"},
		{FinWait2, Close, "timewait handover instead of TIME_WAIT"},
		{Closing, Close, "timewait handover instead of TIME_WAIT"},
		{Listen, SynRecv, "birth of a child socket"},
		{SynRecv, CloseWait, "tcp_fin() in SYN_RECV"},
	} {
		if !linux.Allowed(e.old, e.new) {
			t.Errorf("linux rejects %v -> %v (%s)", e.old, e.new, e.why)
		}
		if rfc.Allowed(e.old, e.new) {
			t.Errorf("rfc793 accepts %v -> %v (%s)", e.old, e.new, e.why)
		}
	}
	// And the textbook edges Linux never reports.
	for _, e := range [][2]State{
		{Listen, SynSent}, {SynRecv, Listen}, {FinWait1, TimeWait},
		{FinWait2, TimeWait}, {Closing, TimeWait}, {TimeWait, Close},
	} {
		if linux.Allowed(e[0], e[1]) || !rfc.Allowed(e[0], e[1]) {
			t.Errorf("%v -> %v: want rfc793 only", e[0], e[1])
		}
	}
	// No self transition at all in rfc793.
	for _, s := range States() {
		if rfc.Allowed(s, s) {
			t.Errorf("rfc793 accepts self transition %v", s)
		}
	}
}

func TestModelByName(t *testing.T) {
	if got := ModelNames(); !slices.Equal(got, []string{"linux", "rfc793"}) {
		t.Errorf("ModelNames() = %q", got)
	}
	if got := ModelNames()[0]; got != DefaultModelName {
		t.Errorf("first model %q is not the default %q", got, DefaultModelName)
	}
	for _, tc := range []struct{ in, want string }{
		{"linux", "linux"}, {"Linux", "linux"}, {" rfc793 ", "rfc793"}, {"RFC793", "rfc793"},
	} {
		m, err := ModelByName(tc.in)
		if err != nil || m.Name() != tc.want {
			t.Errorf("ModelByName(%q) = %v, %v; want %s", tc.in, m, err, tc.want)
		}
		if m.Summary() == "" {
			t.Errorf("model %s has no summary", m.Name())
		}
	}
	for _, in := range []string{"", "bsd", "rfc9293", "linux,rfc793"} {
		_, err := ModelByName(in)
		if err == nil {
			t.Errorf("ModelByName(%q) succeeded", in)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "linux, rfc793") || !strings.Contains(msg, "unknown transition model") {
			t.Errorf("ModelByName(%q) error %q does not list the models", in, msg)
		}
	}
}

func TestIllegalReasons(t *testing.T) {
	rfc := mustModel(t, "rfc793")
	for _, tc := range []struct {
		old, new State
		want     string
	}{
		{FinWait2, Close, "FIN_WAIT2 -> CLOSE is not a transition of model rfc793"},
		{Listen, SynRecv, "LISTEN -> SYN_RECV (birth of a child socket) is not a transition of model rfc793"},
		{0, Close, "STATE(0) -> CLOSE is not a transition of model rfc793"},
		{Close, 200, "CLOSE -> STATE(200) is not a transition of model rfc793"},
	} {
		if got := rfc.illegalReason(tc.old, tc.new); got != tc.want {
			t.Errorf("illegalReason(%v, %v) = %q, want %q", tc.old, tc.new, got, tc.want)
		}
	}
}

func TestNewModelRejectsBadTables(t *testing.T) {
	for name, edges := range map[string][]Edge{
		"invalid state": {{Close, 0, "x"}},
		"duplicate":     {{Close, Listen, "x"}, {Close, Listen, "y"}},
		"undocumented":  {{Close, Listen, ""}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: newModel did not panic", name)
				}
			}()
			newModel("bad", "bad", edges)
		}()
	}
}

func TestMissing(t *testing.T) {
	m, err := ModelByName("linux")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from, to State
		want     uint64
	}{
		{Established, Established, 0},
		{SynSent, Established, 1},
		{Established, FinWait2, 2}, // ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 unseen
		{Established, Close, 1},    // ESTABLISHED -> CLOSE is an edge
		{FinWait1, Close, 1},       // FIN_WAIT1 -> CLOSE is an edge
		{CloseWait, Close, 1},      // CLOSE_WAIT -> CLOSE is an edge
		{Listen, Established, 2},   // via SYN_RECV
		{Close, FinWait2, 4},       // through SYN_SENT, ESTABLISHED, FIN_WAIT1
		{TimeWait, Established, 1}, // no path in linux: at least one
	} {
		if got := m.Missing(c.from, c.to); got != c.want {
			t.Errorf("Missing(%v, %v) = %d, want %d", c.from, c.to, got, c.want)
		}
	}
}
