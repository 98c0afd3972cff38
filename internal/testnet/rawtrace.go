package testnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
)

// The oracle's second way to read its instance, for kernels whose tracefs
// has no "fields" option (added in Linux 6.3; Debian's 6.1 lacks it), where
// the text views cannot show skaddr: the per-CPU binary buffers
// (per_cpu/cpuN/trace_pipe_raw), decoded with the event's own format file,
// the way trace-cmd reads them. Pages are the ring buffer's sub-buffers
// (events/header_page): a u64 timestamp, a commit word (the data's length;
// bits 31 and 30 flag lost events), then records, each a u32 header
// (type_len: 5 bits, time_delta: 27 bits) (kernel/trace/ring_buffer.c).

const (
	rbPadding    = 29 // RINGBUF_TYPE_PADDING
	rbTimeExtend = 30 // RINGBUF_TYPE_TIME_EXTEND
	rbTimeStamp  = 31 // RINGBUF_TYPE_TIME_STAMP
	rbMissed     = 1<<31 | 1<<30
)

// hasFieldsOption reports whether the instance's tracefs prints raw event
// fields (options/fields).
func (o *Oracle) hasFieldsOption() bool {
	_, err := os.Stat(filepath.Join(o.dir, "options", "fields"))
	return err == nil
}

// traceField is one field of an event format file.
type traceField struct{ offset, size int }

var formatFieldRE = regexp.MustCompile(`field:.*?\s\**(\w+)(\[\d+\])?;\s*offset:(\d+);\s*size:(\d+);`)

// parseFormat reads an event format file: its ID and its fields.
func parseFormat(s string) (id int, fields map[string]traceField, err error) {
	fields = map[string]traceField{}
	id = -1
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "ID: "); ok {
			id, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if m := formatFieldRE.FindStringSubmatch(l); m != nil {
			off, _ := strconv.Atoi(m[3])
			size, _ := strconv.Atoi(m[4])
			fields[m[1]] = traceField{off, size}
		}
	}
	if id < 0 {
		return 0, nil, errors.New("no ID in the event format")
	}
	return id, fields, nil
}

// rawRecord is one record of the binary buffer.
type rawRecord struct {
	cpu  int
	ts   uint64
	data []byte
}

// parsePage decodes one sub-buffer: its records of event type id, with
// their timestamps. dataOff is where records start (16 on 64-bit), commit
// the size of the commit word.
func parsePage(page []byte, dataOff, commitSize int, cpu int) ([]rawRecord, error) {
	if len(page) < dataOff {
		return nil, fmt.Errorf("short page (%d bytes)", len(page))
	}
	le := binary.LittleEndian
	ts := le.Uint64(page)
	var commit uint64
	if commitSize == 8 {
		commit = le.Uint64(page[8:])
	} else {
		commit = uint64(le.Uint32(page[8:]))
	}
	if commit&rbMissed != 0 {
		return nil, errors.New("the tracefs instance lost events (a page flags missed events)")
	}
	size := int(commit & (1<<27 - 1))
	data := page[dataOff:]
	if size > len(data) {
		return nil, fmt.Errorf("page commit %d past the page's %d data bytes", size, len(data))
	}
	data = data[:size]
	var out []rawRecord
	for off := 0; off+4 <= len(data); {
		hdr := le.Uint32(data[off:])
		typeLen, delta := hdr&0x1f, uint64(hdr>>5)
		arg := func() uint64 {
			if off+8 > len(data) {
				return 0
			}
			return uint64(le.Uint32(data[off+4:]))
		}
		switch {
		case typeLen == rbPadding:
			if delta == 0 {
				return out, nil // the rest of the page is unused
			}
			off += 4 + int(arg())
		case typeLen == rbTimeExtend:
			ts += arg()<<27 | delta
			off += 8
		case typeLen == rbTimeStamp:
			abs := arg()<<27 | delta
			ts = ts&^(1<<59-1) | abs
			off += 8
		case typeLen == 0:
			n := int(arg()) - 4
			if n < 0 || off+8+n > len(data) {
				return nil, fmt.Errorf("record at %d: length %d past the page", off, n)
			}
			ts += delta
			out = append(out, rawRecord{cpu: cpu, ts: ts, data: data[off+8 : off+8+n]})
			off += 8 + (n+3)&^3
		default:
			n := int(typeLen) * 4
			if off+4+n > len(data) {
				return nil, fmt.Errorf("record at %d: length %d past the page", off, n)
			}
			ts += delta
			out = append(out, rawRecord{cpu: cpu, ts: ts, data: data[off+4 : off+4+n]})
			off += 4 + n
		}
	}
	return out, nil
}

// readRaw reads the instance's binary buffers, recording stopped.
func (o *Oracle) readRaw() ([]OracleEvent, error) {
	fmtText, err := os.ReadFile(filepath.Join(o.dir, "events/sock/inet_sock_set_state/format"))
	if err != nil {
		return nil, fmt.Errorf("reading the event's format: %w", err)
	}
	id, fields, err := parseFormat(string(fmtText))
	if err != nil {
		return nil, err
	}
	hdrText, err := os.ReadFile(filepath.Join(tracefsDir, "events/header_page"))
	if err != nil {
		return nil, fmt.Errorf("reading the ring buffer's page header: %w", err)
	}
	_, hdr, err := parseFormat("ID: 0\n" + strings.ReplaceAll(string(hdrText), "field: ", "field:"))
	if err != nil {
		return nil, err
	}
	commit, data := hdr["commit"], hdr["data"]
	if data.offset == 0 || data.size == 0 {
		return nil, fmt.Errorf("unexpected ring buffer page header:\n%s", hdrText)
	}
	pageSize := data.offset + data.size
	cpus, err := filepath.Glob(filepath.Join(o.dir, "per_cpu", "cpu*"))
	if err != nil {
		return nil, err
	}
	var recs []rawRecord
	for _, dir := range cpus {
		cpu, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "cpu"))
		if err != nil {
			continue
		}
		if err := checkCPUStats(filepath.Join(dir, "stats")); err != nil {
			return nil, err
		}
		pages, err := readPages(filepath.Join(dir, "trace_pipe_raw"), pageSize)
		if err != nil {
			return nil, err
		}
		for _, p := range pages {
			rs, err := parsePage(p, data.offset, commit.size, cpu)
			if err != nil {
				return nil, fmt.Errorf("cpu %d: %w", cpu, err)
			}
			recs = append(recs, rs...)
		}
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].ts < recs[j].ts })
	comms := savedCmdlines()
	var evs []OracleEvent
	for _, r := range recs {
		e, ok, err := decodeRaw(r, id, fields)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if e.Task = comms[e.TaskPid]; e.Task == "" {
			e.Task = "<...>"
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// checkCPUStats fails when a CPU's buffer overwrote or dropped events.
func checkCPUStats(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch k {
		case "overrun", "commit overrun", "dropped events":
			if strings.TrimSpace(v) != "0" {
				return fmt.Errorf("the tracefs instance lost events (%s: %s in %s)", k, strings.TrimSpace(v), path)
			}
		}
	}
	return nil
}

// readPages reads every page a CPU's binary buffer holds: a consuming,
// non-blocking read, EAGAIN when it is empty (raw system calls: an
// os.File would wait for the file to become readable instead).
func readPages(path string, pageSize int) ([][]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer unix.Close(fd)
	var pages [][]byte
	// The instance's buffer is 512 KiB per CPU (NewOracle): far fewer
	// pages than this bound.
	for range 1 << 16 {
		buf := make([]byte, pageSize)
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN) || (err == nil && n == 0):
			return pages, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		pages = append(pages, buf[:n])
	}
	return nil, fmt.Errorf("reading %s: no end after %d pages", path, 1<<16)
}

// decodeRaw decodes one record of inet_sock_set_state; ok is false for
// another event type.
func decodeRaw(r rawRecord, id int, fields map[string]traceField) (e OracleEvent, ok bool, err error) {
	le := binary.LittleEndian
	get := func(name string) []byte {
		f, found := fields[name]
		if !found || f.offset+f.size > len(r.data) {
			if err == nil {
				err = fmt.Errorf("inet_sock_set_state record of %d bytes has no field %s", len(r.data), name)
			}
			return make([]byte, 16)
		}
		return r.data[f.offset : f.offset+f.size]
	}
	num := func(name string) uint64 {
		b := get(name)
		switch len(b) {
		case 1:
			return uint64(b[0])
		case 2:
			return uint64(le.Uint16(b))
		case 4:
			return uint64(le.Uint32(b))
		default:
			return le.Uint64(b)
		}
	}
	if int(num("common_type")) != id {
		return e, false, err
	}
	e = OracleEvent{
		CPU:  r.cpu,
		Time: traceTime(r.ts),
		// As the text view's Ns: its Time, microseconds, in ns.
		Ns:       (r.ts + 500) / 1000 * 1000,
		TaskPid:  int(int32(num("common_pid"))),
		Skaddr:   num("skaddr"),
		Old:      model.State(num("oldstate")),
		New:      model.State(num("newstate")),
		Sport:    uint16(num("sport")),
		Dport:    uint16(num("dport")),
		Family:   model.Family(num("family")),
		Protocol: uint16(num("protocol")),
	}
	if e.Family == model.AFInet6 {
		e.Saddr = netip.AddrFrom16([16]byte(get("saddr_v6")))
		e.Daddr = netip.AddrFrom16([16]byte(get("daddr_v6")))
	} else {
		e.Saddr = netip.AddrFrom4([4]byte(get("saddr")))
		e.Daddr = netip.AddrFrom4([4]byte(get("daddr")))
	}
	return e, true, err
}

// traceTime prints a timestamp as tracefs does: microseconds, rounded
// (ns2usecs in kernel/trace/trace.c).
func traceTime(ns uint64) string {
	us := (ns + 500) / 1000
	return fmt.Sprintf("%d.%06d", us/1e6, us%1e6)
}

// savedCmdlines maps pids to the command names tracefs saved for them.
func savedCmdlines() map[int]string {
	b, _ := os.ReadFile(filepath.Join(tracefsDir, "saved_cmdlines"))
	out := map[int]string{}
	for _, l := range strings.Split(string(b), "\n") {
		pid, comm, ok := strings.Cut(l, " ")
		if n, err := strconv.Atoi(pid); ok && err == nil {
			out[n] = comm
		}
	}
	return out
}
