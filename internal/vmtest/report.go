package vmtest

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// PkgResult is one test package's run on one kernel.
type PkgResult struct {
	Result            string // Pass, Fail, Timeout; "" when it never ended
	Secs              float64
	Detail            string
	Pass, Fail, Skips int
	Tests             []Event // the tests that did not pass
}

// KernelResult collects one kernel's events.
type KernelResult struct {
	Label   string // host, 6.1, 6.12
	Release string // uname -r, from the boot event
	Wall    time.Duration
	Err     string   // the run's own failure: boot, timeout, guest error
	Modules []string // kernel modules loaded, or why not
	Pkgs    map[string]*PkgResult
	Done    bool // the guest reported the end of its run
}

// Add takes one protocol event.
func (k *KernelResult) Add(e Event) {
	if k.Pkgs == nil {
		k.Pkgs = map[string]*PkgResult{}
	}
	pkg := func() *PkgResult {
		p := k.Pkgs[e.Pkg]
		if p == nil {
			p = &PkgResult{}
			k.Pkgs[e.Pkg] = p
		}
		return p
	}
	switch e.Ev {
	case EvBoot:
		k.Release = e.Kernel
	case EvModule:
		m := e.Name
		if e.Err != "" {
			m += " (failed: " + e.Err + ")"
		}
		k.Modules = append(k.Modules, m)
	case EvStart:
		pkg()
	case EvTest:
		p := pkg()
		switch e.Result {
		case Pass:
			p.Pass++
		case Skip:
			p.Skips++
			p.Tests = append(p.Tests, e)
		default:
			p.Fail++
			p.Tests = append(p.Tests, e)
		}
	case EvPkg:
		p := pkg()
		p.Result, p.Secs, p.Detail = e.Result, e.Secs, e.Detail
	case EvDone:
		k.Done = true
	case EvError:
		k.Err = strings.TrimPrefix(k.Err+"; "+e.Detail, "; ")
	}
}

// OK reports whether every package passed and the run ended cleanly.
func (k *KernelResult) OK(pkgs []string) bool {
	if k.Err != "" || !k.Done {
		return false
	}
	for _, name := range pkgs {
		if p := k.Pkgs[name]; p == nil || p.Result != Pass {
			return false
		}
	}
	return true
}

// cell is a package's table cell: PASS 41/0/3 2m10s (passed/failed/skipped tests).
func (k *KernelResult) cell(name string) string {
	p := k.Pkgs[name]
	if p == nil {
		return "not run"
	}
	res := strings.ToUpper(p.Result)
	if res == "" {
		res = "UNFINISHED"
	}
	return fmt.Sprintf("%s %d/%d/%d %s", res, p.Pass, p.Fail, p.Skips, (time.Duration(p.Secs) * time.Second).String())
}

// WriteTable prints one row per kernel and one column per package, the
// wall time of each kernel's run, then the tests that failed or skipped,
// and a closing count.
func WriteTable(w io.Writer, kernels []*KernelResult, pkgs []string) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "KERNEL\t%s\tWALL\tRESULT\n", strings.Join(pkgs, "\t"))
	for _, k := range kernels {
		row := []string{k.name()}
		for _, p := range pkgs {
			row = append(row, k.cell(p))
		}
		verdict := "PASS"
		if !k.OK(pkgs) {
			verdict = "FAIL"
		}
		row = append(row, k.Wall.Round(time.Second).String(), verdict)
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	fmt.Fprintln(w, "cells: result passed/failed/skipped tests, the package's run time")
	var passed, failed, skipped int
	for _, k := range kernels {
		if k.Err != "" {
			fmt.Fprintf(w, "\n%s: %s\n", k.name(), k.Err)
		} else if !k.Done {
			fmt.Fprintf(w, "\n%s: the run ended before the guest reported its end\n", k.name())
		}
		if len(k.Modules) > 0 {
			fmt.Fprintf(w, "%s: modules %s\n", k.name(), strings.Join(k.Modules, ", "))
		}
		for _, name := range pkgs {
			p := k.Pkgs[name]
			if p == nil {
				continue
			}
			passed += p.Pass
			failed += p.Fail
			skipped += p.Skips
			if p.Result != Pass && p.Result != "" && p.Detail != "" && p.Fail == 0 {
				fmt.Fprintf(w, "  %s %s: %s\n", k.name(), name, p.Detail)
			}
			tests := slices.Clone(p.Tests)
			sort.SliceStable(tests, func(i, j int) bool { return tests[i].Result < tests[j].Result })
			for _, t := range tests {
				fmt.Fprintf(w, "  %s %s %s %s: %s\n", k.name(), name, strings.ToUpper(t.Result), t.Name, t.Reason)
			}
		}
	}
	fmt.Fprintf(w, "\nkernels: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
}

func (k *KernelResult) name() string {
	if k.Release == "" || k.Release == k.Label {
		return k.Label
	}
	return k.Label + " (" + k.Release + ")"
}
