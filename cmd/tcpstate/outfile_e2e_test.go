package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpstate/tcpstate/internal/testnet"
)

// runBin runs the built binary to its end (at most timeout) and returns
// its exit status, stderr, and how long it ran. asNobody: as uid 65534,
// with no capabilities.
func runBin(t *testing.T, timeout time.Duration, asNobody bool, bin string, args ...string) (int, string, time.Duration) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	if asNobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := testnet.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("tcpstate %s ran longer than %v\nstderr:\n%s", strings.Join(args, " "), timeout, &stderr)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String(), time.Since(start)
}

// asNobody runs a command as uid 65534.
func asNobody(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v as nobody: %v\n%s", name, args, err, out)
	}
}

// TestSummaryJSONFile: the file --summary-json names is checked before
// tracing starts, and written without following another user's symbolic
// link.
func TestSummaryJSONFile(t *testing.T) {
	testnet.RequireRoot(t)
	bin := buildBinary(t, t.TempDir())
	port := strconv.Itoa(int(testnet.New(t).Port(0)))
	// A directory only root may write in, that nobody may enter.
	rootDir := t.TempDir()
	for _, d := range []string{rootDir, filepath.Dir(rootDir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// A path tcpstate cannot write is a usage error (exit 2) at once,
	// not a failure after the whole --duration (before: exit 1, 30 s
	// later, with the summary lost).
	t.Run("unwritable", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			nobody bool
			path   string
			msg    string
		}{
			{"missing directory", false, filepath.Join(rootDir, "no", "such", "dir", "s.json"), "does not exist"},
			{"a directory", false, rootDir, "it is a directory"},
			{"no permission", true, filepath.Join(rootDir, "s.json"), "permission denied"},
		} {
			for _, command := range []string{"trace", "stats"} {
				code, stderr, took := runBin(t, 20*time.Second, c.nobody, bin, command, "--port", port, "--duration", "30s", "--summary-json", c.path)
				if code != exitUsage || !strings.Contains(stderr, "--summary-json "+c.path+": ") || !strings.Contains(stderr, c.msg) || took > 10*time.Second {
					t.Errorf("%s, %s: exit %d after %v, stderr %q; want %d at once, naming the file and %q", command, c.name, code, took.Round(time.Millisecond), stderr, exitUsage, c.msg)
				}
			}
		}
	})

	// The attack: in a sticky, world-writable directory (/tmp), another
	// user's symbolic link points at a file of root's, mode 0600. root's
	// tcpstate must leave that file alone and say why (before: it wrote
	// the summary over it).
	t.Run("another user's symlink", func(t *testing.T) {
		sticky, err := os.MkdirTemp("", "tcpstate-sticky-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(sticky) })
		if err := os.Chmod(sticky, 0o1777); err != nil {
			t.Fatal(err)
		}
		victim := filepath.Join(rootDir, "secret")
		if err := os.WriteFile(victim, []byte("root's secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		before, err := os.Stat(victim)
		if err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(sticky, "summary.json")
		asNobody(t, "ln", "-s", victim, link)
		for _, command := range []string{"trace", "stats"} {
			code, stderr, _ := runBin(t, 20*time.Second, false, bin, command, "--port", port, "--duration", "1s", "--summary-json", link)
			if code != exitUsage || !strings.Contains(stderr, "refusing to follow "+link+": it is a symbolic link owned by uid 65534, not by you (uid 0) or root") {
				t.Errorf("%s: exit %d, stderr %q; want %d and why", command, code, stderr, exitUsage)
			}
		}
		after, err := os.Stat(victim)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(victim)
		if string(b) != "root's secret\n" || after.Mode() != before.Mode() || !after.ModTime().Equal(before.ModTime()) {
			t.Errorf("the victim changed: %q, mode %v, modified %v (was %v)", b, after.Mode(), after.ModTime(), before.ModTime())
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the link itself was touched: %v %v", fi, err)
		}
	})

	// A link of one's own (or root's) is followed: the file it points at
	// is replaced whole, the link stays, no temporary file is left.
	t.Run("own symlink and a new file", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "real.json")
		if err := os.WriteFile(target, []byte("old"), 0o640); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "link.json")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		fresh := filepath.Join(dir, "fresh.json")
		for path, want := range map[string]string{link: target, fresh: fresh} {
			code, stderr, _ := runBin(t, 20*time.Second, false, bin, "trace", "--port", port, "--duration", "500ms", "--summary-json", path)
			if code != 0 {
				t.Fatalf("--summary-json %s: exit %d\n%s", path, code, stderr)
			}
			b, err := os.ReadFile(want)
			var v map[string]any
			if err != nil || json.Unmarshal(b, &v) != nil || v["events"] == nil {
				t.Errorf("--summary-json %s: %s holds %q (%v), want the summary", path, want, b, err)
			}
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the link was replaced: %v %v", fi, err)
		}
		if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o640 {
			t.Errorf("the target's mode: %v %v, want 0640 kept", fi, err)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 3 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("files left in the directory: %v", names)
		}
	})
}
