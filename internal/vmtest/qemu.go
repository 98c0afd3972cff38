package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"time"
)

// BootOptions is one guest run.
type BootOptions struct {
	Kernel     string        // the kernel image (vmlinuz)
	Initrd     string        // the initramfs (cpio)
	Memory     string        // -m, e.g. 3G
	CPUs       int           // -smp
	Timeout    time.Duration // the whole run, boot to power-off
	ConsoleLog string        // where the first serial port (the console) is written
	Append     string        // extra kernel command line
}

// ErrTimeout is returned when a guest runs past its timeout.
var ErrTimeout = errors.New("timed out")

// QemuArgs is qemu's command line. TCG, not KVM: KVM does not work on the
// project's machines. TCG's multi-threaded mode (a host thread per vCPU)
// oopsed a 6.12 guest while the tests attached and detached programs
// ("Oops: int3" in ttwu_do_activate: one vCPU ran code another had just
// live-patched, text_poke_bp's int3 already gone): thread=single emulates
// every vCPU on one host thread, which also keeps one guest to one host
// core. ttyS0 is the console, into ConsoleLog; ttyS1 is the protocol, on
// qemu's stdout. -no-reboot makes a guest panic (panic=-1) or restart end
// qemu.
func QemuArgs(o BootOptions) []string {
	cmdline := "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off nokaslr"
	if o.Append != "" {
		cmdline += " " + o.Append
	}
	return []string{
		"-accel", "tcg,thread=single", "-cpu", "max",
		"-m", o.Memory, "-smp", strconv.Itoa(o.CPUs),
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
		"-kernel", o.Kernel, "-initrd", o.Initrd, "-append", cmdline,
		"-serial", "file:" + o.ConsoleLog, "-serial", "stdio",
	}
}

// Boot runs one guest to its end and hands each protocol event to f as it
// arrives. It returns ErrTimeout when the guest ran past o.Timeout (it is
// killed), or qemu's own failure.
func Boot(ctx context.Context, o BootOptions, f func(Event)) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", QemuArgs(o)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting qemu-system-x86_64: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		e, ok, err := Parse(sc.Text())
		switch {
		case err != nil:
			f(Event{Ev: EvError, Detail: err.Error()})
		case ok:
			f(e)
		}
	}
	io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("guest %w after %s", ErrTimeout, o.Timeout)
	}
	if err != nil {
		return fmt.Errorf("qemu-system-x86_64: %w: %s", err, stderr.String())
	}
	return nil
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
