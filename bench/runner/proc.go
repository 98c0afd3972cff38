package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// userHZ is the unit of the times in /proc/PID/stat and /proc/stat
// (USER_HZ, 100 on every Linux architecture Go supports).
const userHZ = 100

// processCPU returns the user+system CPU seconds that pid's threads have used
// so far, live and exited ones (/proc/PID/stat fields 14 and 15).
func processCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return float64(ut+st) / userHZ, nil
}

// progStat is one BPF program's kernel statistics, as its fd's fdinfo shows
// them. run_time_ns and run_cnt count only while BPF stats are enabled.
type progStat struct {
	ID              uint64
	Type            uint64
	RunTimeNs       uint64
	RunCnt          uint64
	RecursionMisses uint64
}

// progStats reads the statistics of every BPF program pid holds a file
// descriptor for (/proc/PID/fdinfo), one entry per program id. It works for
// any tracer (tcpstate, bpftrace, libbpf tools) without bpftool.
func progStats(pid int) (map[uint64]progStat, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[uint64]progStat{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // the fd closed meanwhile
		}
		var (
			p     progStat
			isBPF bool
		)
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "prog_id":
				p.ID = n
			case "prog_type":
				// Only a program's own fd has it; a link's fdinfo also
				// names its prog_id, without statistics.
				p.Type, isBPF = n, true
			case "run_time_ns":
				p.RunTimeNs = n
			case "run_cnt":
				p.RunCnt = n
			case "recursion_misses":
				p.RecursionMisses = n
			}
		}
		if isBPF {
			out[p.ID] = p
		}
	}
	return out, nil
}

// heldProgIDs returns the ids of the BPF programs pid holds, through a
// program's fd or a link's (whose fdinfo names its program too).
func heldProgIDs(pid int) map[uint64]bool {
	out := map[uint64]bool{}
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
					out[id] = true
				}
			}
		}
	}
	return out
}

// progDelta is what the programs did between two snapshots.
type progDelta struct {
	Programs        int    `json:"programs"`
	RunTimeNs       uint64 `json:"run_time_ns"` // all programs
	RunCnt          uint64 `json:"run_cnt"`     // all programs
	RecursionMisses uint64 `json:"recursion_misses"`
	// The busiest program (most runs): under this load, the one on
	// sock:inet_sock_set_state.
	BusiestRunTimeNs uint64 `json:"busiest_run_time_ns"`
	BusiestRunCnt    uint64 `json:"busiest_run_cnt"`
}

func diffProgs(before, after map[uint64]progStat) progDelta {
	var d progDelta
	for id, a := range after {
		b := before[id]
		d.Programs++
		rt, rc, rm := a.RunTimeNs-b.RunTimeNs, a.RunCnt-b.RunCnt, a.RecursionMisses-b.RecursionMisses
		d.RunTimeNs += rt
		d.RunCnt += rc
		d.RecursionMisses += rm
		if rc > d.BusiestRunCnt {
			d.BusiestRunCnt, d.BusiestRunTimeNs = rc, rt
		}
	}
	return d
}

func totalRuns(m map[uint64]progStat) uint64 {
	var n uint64
	for _, p := range m {
		n += p.RunCnt
	}
	return n
}

// cpuTimes is the first line of /proc/stat, in USER_HZ ticks.
type cpuTimes struct {
	busy  uint64 // user, nice, system (not irq/softirq: see othersCPU)
	irq   uint64 // irq + softirq
	total uint64
}

func readCPUTimes() (cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return cpuTimes{}, fmt.Errorf("/proc/stat is empty")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 8 || fields[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", sc.Text())
	}
	var v [10]uint64
	for i := 1; i < len(fields) && i <= 8; i++ {
		v[i-1], _ = strconv.ParseUint(fields[i], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	t := cpuTimes{busy: v[0] + v[1] + v[2], irq: v[5] + v[6]}
	for _, x := range v[:8] {
		t.total += x
	}
	return t, nil
}

// waitQuiet waits, at most maxWait, for a 300 ms window in which the machine
// is less than threshold percent busy (all CPUs together): the previous run's
// namespace teardown (freeing ~20k TIME_WAIT sockets in a kernel worker) and
// other people's jobs should not land inside the next measurement. It returns
// the busy percentage of the last window and whether it was quiet.
func waitQuiet(ctx context.Context, maxWait time.Duration, threshold float64) (busyPct float64, quiet bool) {
	deadline := time.Now().Add(maxWait)
	prev, err := readCPUTimes()
	if err != nil {
		return 0, true
	}
	for {
		select {
		case <-ctx.Done():
			return busyPct, false
		case <-time.After(300 * time.Millisecond):
		}
		cur, err := readCPUTimes()
		if err != nil {
			return 0, true
		}
		if dt := cur.total - prev.total; dt > 0 {
			busyPct = 100 * float64((cur.busy+cur.irq)-(prev.busy+prev.irq)) / float64(dt)
		}
		if busyPct < threshold {
			return busyPct, true
		}
		if time.Now().After(deadline) {
			return busyPct, false
		}
		prev = cur
	}
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// systemProgStats reads the statistics of every BPF program loaded on the
// machine, by id. Other people's tracers on the same tracepoint slow the load
// and would be booked to it; comparing two snapshots finds them.
func systemProgStats() map[uint64]progStat {
	out := map[uint64]progStat{}
	var id ebpf.ProgramID
	for range 100000 {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break // ErrNotExist at the end
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		st, err := p.Stats()
		p.Close()
		if err != nil {
			continue
		}
		out[uint64(id)] = progStat{ID: uint64(id), RunTimeNs: uint64(st.Runtime), RunCnt: st.RunCount, RecursionMisses: st.RecursionMisses}
	}
	return out
}

// foreignRuns is what programs not in own did between two system snapshots.
func foreignRuns(before, after, own map[uint64]progStat) (runs, ns uint64) {
	for id, a := range after {
		if _, mine := own[id]; mine {
			continue
		}
		b, ok := before[id]
		if !ok {
			continue // loaded during the load: its first counts are unknown
		}
		runs += a.RunCnt - b.RunCnt
		ns += a.RunTimeNs - b.RunTimeNs
	}
	return runs, ns
}
