package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tcpstate/tcpstate/model"
)

// checkOptions are the flags every command that checks transitions shares
// (trace and check): which model, what to print, when to fail.
type checkOptions struct {
	Model     string
	Anomalies bool
	FailOn    []string
}

// addCheckFlags registers --model, --anomalies and --fail-on on fs.
func addCheckFlags(fs *pflag.FlagSet, o *checkOptions) {
	choiceVarP(fs, &o.Model, "model", "", model.DefaultModelName, model.ModelNames(),
		"transition model to check against: "+strings.Join(model.ModelNames(), " or ")+" (see 'tcpstate check --help')")
	fs.BoolVar(&o.Anomalies, "anomalies", false,
		"print only anomalies: illegal transitions and gaps")
	fs.StringSliceVar(&o.FailOn, "fail-on", nil,
		"exit with status 3 if any of these anomalies was seen: illegal, gap (comma-separated or repeated)")
}

// failOnSet is the parsed --fail-on.
type failOnSet struct {
	illegal, gap bool
}

// failOnKinds are the anomalies --fail-on accepts, in the order messages name them.
var failOnKinds = []string{"illegal", "gap"}

// validate checks the flags and returns the model and the parsed --fail-on.
// Errors are usage errors (exit status 2).
func (o *checkOptions) validate() (*model.Model, failOnSet, error) {
	var f failOnSet
	m, err := model.ModelByName(o.Model)
	if err != nil {
		return nil, f, usagef("--model: %v", err)
	}
	for _, v := range o.FailOn {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "illegal":
			f.illegal = true
		case "gap", "gaps":
			f.gap = true
		case "":
			// --fail-on "" (an empty shell variable): nothing to fail on.
		default:
			return nil, f, usagef("--fail-on %q: want %s (comma-separated)", v, strings.Join(failOnKinds, " or "))
		}
	}
	return m, f, nil
}

// any reports whether --fail-on names anything.
func (f failOnSet) any() bool { return f.illegal || f.gap }

// String returns the set as --fail-on would take it ("illegal,gap").
func (f failOnSet) String() string {
	var s []string
	if f.illegal {
		s = append(s, "illegal")
	}
	if f.gap {
		s = append(s, "gap")
	}
	return strings.Join(s, ",")
}

// check returns an *anomalyError (exit status 3) when the tracker saw an
// anomaly --fail-on names, nil otherwise. Gaps are counted as
// TrackerStats.Gaps: an illegal transition that also broke the socket's
// continuity counts for both, so --fail-on gap never misses a gap.
func (f failOnSet) check(st model.TrackerStats) error {
	var hits []string
	if f.illegal && st.Illegal > 0 {
		hits = append(hits, plural(st.Illegal, "illegal transition", "illegal transitions"))
	}
	if f.gap && st.Gaps() > 0 {
		hits = append(hits, plural(st.Gaps(), "gap", "gaps"))
	}
	if len(hits) == 0 {
		return nil
	}
	return &anomalyError{msg: fmt.Sprintf("%s seen (--fail-on %s)", strings.Join(hits, " and "), f)}
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
