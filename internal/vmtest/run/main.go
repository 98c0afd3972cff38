// Command run is `make test-kernels`: it builds the privileged test
// binaries, runs them on the host kernel and in a qemu guest (TCG) of each
// Debian kernel asked for, and prints one table of the results
// (internal/vmtest says how the guest is built and reports).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tcpstate/tcpstate/internal/vmtest"
)

type options struct {
	kernels    []string
	host       bool
	packages   []string
	run, skip  string
	timeout    time.Duration
	pkgTimeout time.Duration
	memory     string
	cpus       int
	cache      string
	modules    []string
	tools      []string
	commands   [][]string
	slowdown   int
}

func split(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

func main() {
	var o options
	var kernels, packages, modules, tools string
	flag.StringVar(&kernels, "kernels", "6.1,6.12", "Debian kernel series (6.1, 6.12) or packages (linux-image-...-amd64) to boot, comma-separated; empty: none")
	flag.BoolVar(&o.host, "host", true, "also run the tests on the host kernel directly")
	flag.StringVar(&packages, "packages", "tracer,internal/scenario,cmd/tcpstate", "test packages, comma-separated")
	flag.StringVar(&o.run, "run", "", "only tests matching this regexp (go test -run)")
	flag.StringVar(&o.skip, "skip", "", "not the tests matching this regexp (go test -skip)")
	flag.DurationVar(&o.timeout, "timeout", 50*time.Minute, "the limit of one kernel's whole run (a guest from boot to power-off); past it, a failure")
	flag.DurationVar(&o.pkgTimeout, "pkg-timeout", 25*time.Minute, "the limit of one test package's run (go test -timeout)")
	flag.StringVar(&o.memory, "memory", vmtest.DefaultMemory, "guest memory (qemu -m)")
	flag.IntVar(&o.cpus, "cpus", 2, "guest CPUs (qemu -smp)")
	flag.IntVar(&o.slowdown, "slowdown", 20, "how many times slower the emulated guest runs the tests than the host (TCPSTATE_TEST_SLOWDOWN: bounds on waits grow by it, volume-only loads shrink by it); measured here: loading the tracer 0.2 s on the host, 6-25 s in a guest")
	flag.StringVar(&o.cache, "cache", defaultCache(), "where kernel packages are unpacked and logs kept")
	flag.StringVar(&modules, "modules", "veth,tcp_diag", "kernel modules to load in the guest (with their dependencies), comma-separated: veth for namespace pairs, tcp_diag for ss (without it ss falls back to /proc/net/tcp6, which has no IPV6_V6ONLY, and prints a v6-only listener's peer as *)")
	flag.StringVar(&tools, "tools", strings.Join(vmtest.GuestTools, ","), "host programs to copy into the guest, comma-separated")
	flag.Func("cmd", "a command to run in each guest before the tests, output in the console log, e.g. -cmd 'tcpstate trace --verbose --duration 1s' (repeatable; with -packages '' only it)", func(s string) error {
		o.commands = append(o.commands, strings.Fields(s))
		return nil
	})
	flag.Parse()
	o.kernels, o.packages, o.modules, o.tools = split(kernels), split(packages), split(modules), split(tools)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test-kernels:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func defaultCache() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "tcpstate")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "tcpstate")
	}
	return filepath.Join(".cache", "tcpstate")
}

func say(format string, args ...any) { fmt.Fprintf(os.Stderr, "test-kernels: "+format+"\n", args...) }

func run(ctx context.Context, o options) (bool, error) {
	repo, err := os.Getwd()
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		return false, fmt.Errorf("run from the repository's root (make test-kernels): %w", err)
	}
	if len(o.kernels) > 0 {
		if err := ensureTools(); err != nil {
			return false, err
		}
	}
	tmp, err := os.MkdirTemp("", "tcpstate-vmtest-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	logs := filepath.Join(o.cache, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return false, err
	}

	b, err := build(ctx, repo, tmp, o)
	if err != nil {
		return false, err
	}
	var results []*vmtest.KernelResult
	if o.host {
		results = append(results, runHost(ctx, repo, b, o, logs))
	}
	for _, label := range o.kernels {
		if ctx.Err() != nil {
			break
		}
		results = append(results, runGuest(ctx, label, b, o, tmp, logs))
	}
	fmt.Println()
	vmtest.WriteTable(os.Stdout, results, o.packages)
	fmt.Printf("logs: %s\n", logs)
	ok := ctx.Err() == nil
	for _, r := range results {
		ok = ok && r.OK(o.packages)
	}
	return ok, nil
}

// ensureTools installs what booting a guest needs and a fresh Debian
// machine lacks (the suite installs its own tools).
func ensureTools() error {
	var pkgs []string
	for tool, pkg := range map[string]string{"qemu-system-x86_64": "qemu-system-x86", "xz": "xz-utils"} {
		if _, err := exec.LookPath(tool); err != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	say("installing %s", strings.Join(pkgs, " "))
	cmd := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s (as root; after apt-get update): %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// built is what build made: the guest's /init, the helper binaries and the
// test binaries.
type built struct {
	init string
	bins map[string]string
	pkgs []vmtest.Package // Binary is the host path; Dir the package's directory in the repository
}

func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// build compiles everything static (CGO_ENABLED=0): the guest has no
// shared libraries of its own but those of the tools it carries.
func build(ctx context.Context, repo, tmp string, o options) (built, error) {
	start := time.Now()
	b := built{bins: map[string]string{}}
	gobuild := func(args ...string) error {
		cmd := exec.CommandContext(ctx, goTool(), args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	b.init = filepath.Join(tmp, "init")
	if err := gobuild("build", "-o", b.init, "./internal/vmtest/init"); err != nil {
		return b, err
	}
	// What the tests would otherwise build with Go (testnet.Prebuilt).
	for name, pkg := range map[string]string{"tcpstate": "./cmd/tcpstate", "loadgen": "./bench/loadgen"} {
		out := filepath.Join(tmp, "bin", name)
		if err := gobuild("build", "-o", out, pkg); err != nil {
			return b, err
		}
		b.bins[name] = out
	}
	var args []string
	if o.run != "" {
		args = append(args, "-test.run="+o.run)
	}
	if o.skip != "" {
		args = append(args, "-test.skip="+o.skip)
	}
	for _, p := range o.packages {
		out := filepath.Join(tmp, "tests", strings.ReplaceAll(p, "/", "-")+".test")
		if err := gobuild("test", "-c", "-o", out, "./"+p); err != nil {
			return b, err
		}
		b.pkgs = append(b.pkgs, vmtest.Package{Name: p, Binary: out, Dir: filepath.Join(repo, p), Timeout: o.pkgTimeout, Args: args})
	}
	say("built %d test binaries in %s", len(b.pkgs), time.Since(start).Round(time.Second))
	return b, nil
}

// collector turns protocol lines written to it into a KernelResult, and
// says each package's result as it ends.
func collect(k *vmtest.KernelResult) func(vmtest.Event) {
	return func(e vmtest.Event) {
		k.Add(e)
		switch e.Ev {
		case vmtest.EvBoot:
			if k.Label == "host" {
				say("host: kernel %s", e.Kernel)
			} else {
				say("%s: booted %s", k.Label, e.Kernel)
			}
		case vmtest.EvPkg:
			p := k.Pkgs[e.Pkg]
			say("%s: %s %s (%d passed, %d failed, %d skipped) in %s", k.Label, e.Pkg, e.Result, p.Pass, p.Fail, p.Skips, time.Duration(e.Secs*float64(time.Second)).Round(time.Second))
		case vmtest.EvError:
			say("%s: guest error: %s", k.Label, e.Detail)
		}
	}
}

// runHost runs the test binaries on the host kernel, as the guest does.
func runHost(ctx context.Context, repo string, b built, o options, logs string) *vmtest.KernelResult {
	var u syscall.Utsname
	syscall.Uname(&u)
	var rel []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	k := &vmtest.KernelResult{Label: "host"}
	f := collect(k)
	rep := vmtest.Reporter{W: vmtest.EventWriter(f)}
	start := time.Now()
	logPath := filepath.Join(logs, "host.log")
	log, err := os.Create(logPath)
	if err != nil {
		k.Err = err.Error()
		return k
	}
	defer log.Close()
	rep.Send(vmtest.Event{Ev: vmtest.EvBoot, Kernel: string(rel)})
	env := vmtest.Env(vmtest.BinDirEnv + "=" + filepath.Dir(b.bins["tcpstate"]))
	for _, p := range b.pkgs {
		if ctx.Err() != nil {
			break
		}
		say("host: running %s", p.Name)
		vmtest.RunPackage(ctx, p, env, log, rep)
	}
	if ctx.Err() == nil {
		rep.Send(vmtest.Event{Ev: vmtest.EvDone})
	}
	k.Wall = time.Since(start)
	say("host: done in %s (log %s)", k.Wall.Round(time.Second), logPath)
	return k
}

// runGuest boots one Debian kernel with the tests in its initramfs.
func runGuest(ctx context.Context, label string, b built, o options, tmp, logs string) *vmtest.KernelResult {
	k := &vmtest.KernelResult{Label: label}
	fail := func(err error) *vmtest.KernelResult {
		k.Err = err.Error()
		say("%s: %v", label, err)
		return k
	}
	pkg, err := vmtest.FindPackage(label)
	if err != nil {
		return fail(err)
	}
	kern, err := vmtest.FetchKernel(label, pkg, filepath.Join(o.cache, "kernels"))
	if err != nil {
		return fail(err)
	}
	k.Release = kern.Release
	tree, err := vmtest.OpenModuleTree(kern.Modules())
	if err != nil {
		return fail(err)
	}
	mods, err := tree.Resolve(o.modules)
	if err != nil {
		return fail(err)
	}
	initrd := filepath.Join(tmp, "initramfs-"+kern.Release+".cpio")
	missing, err := vmtest.BuildInitramfs(vmtest.GuestSpec{
		Label: label, Init: b.init, Bins: b.bins, Packages: b.pkgs, Modules: mods, Tools: o.tools, Commands: o.commands, Slowdown: o.slowdown,
	}, initrd)
	if err != nil {
		return fail(fmt.Errorf("building the initramfs: %w", err))
	}
	defer os.Remove(initrd)
	if len(missing) > 0 {
		say("%s: the host lacks %s: tests that need them skip in the guest", label, strings.Join(missing, ", "))
	}
	consoleLog := filepath.Join(logs, label+".console.log")
	say("%s: booting %s (qemu TCG, %s, %d CPUs; console in %s)", label, pkg, o.memory, o.cpus, consoleLog)
	start := time.Now()
	err = vmtest.Boot(ctx, vmtest.BootOptions{
		Kernel: kern.Vmlinuz(), Initrd: initrd, Memory: o.memory, CPUs: o.cpus,
		Timeout: o.timeout, ConsoleLog: consoleLog,
	}, collect(k))
	k.Wall = time.Since(start)
	if err != nil {
		k.Err = strings.TrimPrefix(k.Err+"; "+err.Error(), "; ")
	}
	say("%s: done in %s", label, k.Wall.Round(time.Second))
	return k
}
