// Package vmtest runs tcpstate's privileged tests on other kernels: Debian's
// kernel packages boot under qemu (TCG) with an initramfs this package
// builds, whose /init (internal/vmtest/init, a static Go program) runs the
// compiled test binaries and reports through a serial port; the same runner
// runs them on the host kernel directly. `make test-kernels` drives it
// (internal/vmtest/run); a plain `go test ./...` never boots a VM.
//
// The guest reports on its second serial port (ttyS1, the host's qemu
// stdout) in a line protocol: each line is Prefix followed by one JSON
// Event. The first serial port (ttyS0) is the kernel console and carries
// the tests' verbose output, kept in a log file on the host. Lines without
// the prefix are ignored, so kernel messages never break the protocol.
package vmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Prefix starts every protocol line.
const Prefix = "@@tcpstate-vm "

// Event kinds, in the order a guest sends them.
const (
	EvBoot   = "boot"   // the guest is up: Kernel, Detail (mounts)
	EvModule = "module" // a kernel module: Name, Err when insmod failed
	EvStart  = "start"  // a test package starts: Pkg
	EvTest   = "test"   // a top-level test ended: Pkg, Name, Result, Secs, Reason
	EvPkg    = "pkg"    // a test package ended: Pkg, Result, Secs, Detail
	EvDone   = "done"   // every package ran; the guest powers off next
	EvError  = "error"  // the guest could not go on: Detail
)

// Results of a test or a package.
const (
	Pass    = "pass"
	Fail    = "fail"
	Skip    = "skip"
	Timeout = "timeout" // the package's binary ran past its deadline
)

// Event is one protocol line.
type Event struct {
	Ev     string  `json:"ev"`
	Kernel string  `json:"kernel,omitempty"`
	Pkg    string  `json:"pkg,omitempty"`
	Name   string  `json:"name,omitempty"`
	Result string  `json:"result,omitempty"`
	Secs   float64 `json:"secs,omitempty"`
	Reason string  `json:"reason,omitempty"` // why a test skipped or failed (its last log line)
	Detail string  `json:"detail,omitempty"`
	Err    string  `json:"err,omitempty"`
}

// Encode returns the event as one protocol line, newline included. JSON
// escapes every control character, so an event is always one line.
func Encode(e Event) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("vmtest: encoding %+v: %v", e, err)) // plain strings and numbers only
	}
	return append(append([]byte(Prefix), b...), '\n')
}

// Parse reads one line: ok is false for a line that is not a protocol
// line (kernel messages, noise); err is set for a protocol line that does
// not decode (a line cut short by a guest that died while writing).
func Parse(line string) (e Event, ok bool, err error) {
	line = strings.TrimRight(line, "\r\n")
	i := strings.Index(line, Prefix)
	if i < 0 {
		return Event{}, false, nil
	}
	dec := json.NewDecoder(strings.NewReader(line[i+len(Prefix):]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Event{}, true, fmt.Errorf("protocol line %q: %w", line, err)
	}
	if e.Ev == "" {
		return Event{}, true, fmt.Errorf("protocol line %q: no event kind", line)
	}
	return e, true, nil
}

// Reporter writes events to a writer, one line each.
type Reporter struct{ W io.Writer }

// Send writes one event; a failed write is ignored (there is no one to tell).
func (r Reporter) Send(e Event) {
	if r.W != nil {
		r.W.Write(Encode(e))
	}
}

// lineSplitter feeds complete lines to f; it is an io.Writer.
type lineSplitter struct {
	buf []byte
	f   func(line string)
}

func (s *lineSplitter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		s.f(string(s.buf[:i]))
		s.buf = s.buf[i+1:]
	}
}

// flush hands over a last line that has no newline.
func (s *lineSplitter) flush() {
	if len(s.buf) > 0 {
		s.f(string(s.buf))
		s.buf = nil
	}
}

// EventWriter is an io.Writer of protocol lines that hands each event to f.
func EventWriter(f func(Event)) io.Writer {
	return &lineSplitter{f: func(line string) {
		e, ok, err := Parse(line)
		switch {
		case err != nil:
			f(Event{Ev: EvError, Detail: err.Error()})
		case ok:
			f(e)
		}
	}}
}
