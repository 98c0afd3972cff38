// Command init is the /init of tcpstate's test VMs (internal/vmtest): a
// static Go program (CGO_ENABLED=0) that mounts what the privileged tests
// need, brings lo up, loads the kernel modules the initramfs carries, runs
// each test binary the manifest lists, reports on the second serial port
// in vmtest's line protocol and powers the machine off.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/vmtest"
)

func main() {
	rep := vmtest.Reporter{W: os.Stdout}
	defer powerOff()
	defer func() {
		if r := recover(); r != nil {
			rep.Send(vmtest.Event{Ev: vmtest.EvError, Detail: fmt.Sprint("init panicked: ", r)})
		}
	}()
	mounted, err := mountAll()
	if err != nil {
		fmt.Println("init:", err)
		rep.Send(vmtest.Event{Ev: vmtest.EvError, Detail: err.Error()})
		return
	}
	// The protocol's own port: the console (stdout) also carries kernel
	// messages and the tests' output.
	if f, err := os.OpenFile(vmtest.ProtocolPort, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		rawTTY(f)
		rep.W = f
		protocol = f
	} else {
		fmt.Println("init: no protocol port, reporting on the console:", err)
	}
	var u unix.Utsname
	unix.Uname(&u)
	release := unix.ByteSliceToString(u.Release[:])
	rep.Send(vmtest.Event{Ev: vmtest.EvBoot, Kernel: release, Detail: strings.Join(mounted, " ")})

	if err := run(rep); err != nil {
		fmt.Println("init:", err)
		rep.Send(vmtest.Event{Ev: vmtest.EvError, Detail: err.Error()})
		return
	}
	rep.Send(vmtest.Event{Ev: vmtest.EvDone})
}

func run(rep vmtest.Reporter) error {
	b, err := os.ReadFile(vmtest.ManifestPath)
	if err != nil {
		return err
	}
	var m vmtest.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("reading %s: %w", vmtest.ManifestPath, err)
	}
	for _, kv := range m.Env { // PATH, for finding the commands
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	if err := linkUp("lo"); err != nil {
		return err
	}
	// A distribution's init raises the open-files limit (systemd: soft
	// 1024, hard 524288); the kernel starts init with 4096 for both, which
	// the tests that hold 100,000 sockets do not fit in.
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 1024, Max: 524288}); err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	for _, mod := range m.Modules {
		e := vmtest.Event{Ev: vmtest.EvModule, Name: mod.Name}
		if err := insmod(mod.Path); err != nil {
			e.Err = err.Error()
		}
		rep.Send(e)
	}
	for _, c := range m.Commands {
		fmt.Printf("\n==== %s\n", strings.Join(c, " "))
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Env, cmd.Stdout, cmd.Stderr = m.Env, os.Stdout, os.Stdout
		cmd.Dir = "/tmp"
		err := cmd.Run()
		fmt.Printf("==== %s: %v\n", c[0], err)
	}
	for _, p := range m.Packages {
		fmt.Printf("\n==== %s (%s)\n", p.Name, p.Binary)
		vmtest.RunPackage(context.Background(), p, m.Env, os.Stdout, rep)
	}
	return nil
}

// mountAll mounts what the tests and the tracer use; each mount point is
// made first (the initramfs has only what the host put in it).
func mountAll() ([]string, error) {
	var done []string
	for _, m := range []struct {
		fs, dir string
		must    bool
	}{
		{"proc", "/proc", true},
		{"sysfs", "/sys", true},
		{"devtmpfs", "/dev", true},
		{"tmpfs", "/tmp", true},
		{"tmpfs", "/run", false},
		{"bpf", "/sys/fs/bpf", false},
		{"tracefs", "/sys/kernel/tracing", false},
		{"debugfs", "/sys/kernel/debug", false},
		{"cgroup2", "/sys/fs/cgroup", false},
		{"devpts", "/dev/pts", false},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil && m.must {
			return done, err
		}
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			if m.must {
				return done, fmt.Errorf("mounting %s on %s: %w", m.fs, m.dir, err)
			}
			fmt.Printf("init: mounting %s on %s: %v\n", m.fs, m.dir, err)
			continue
		}
		done = append(done, m.fs)
	}
	os.Chmod("/tmp", 0o1777)
	return done, nil
}

// rawTTY turns off output processing on the protocol port, so that lines
// arrive as written.
func rawTTY(f *os.File) {
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		return
	}
	t.Oflag &^= unix.OPOST
	unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing %s up: SIOCGIFFLAGS: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing %s up: SIOCSIFFLAGS: %w", name, err)
	}
	return nil
}

func insmod(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

// protocol is the protocol port, drained before power-off.
var protocol *os.File

func powerOff() {
	unix.Sync()
	// Wait until the serial ports have sent everything (tcdrain).
	for _, f := range []*os.File{protocol, os.Stdout} {
		if f != nil {
			unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
		}
	}
	time.Sleep(100 * time.Millisecond)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Without ACPI power-off, a restart ends qemu too (-no-reboot).
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}
