package vmtest

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// GuestSpec is what goes into a guest's initramfs.
type GuestSpec struct {
	Label    string
	Init     string            // the static /init
	Bins     map[string]string // name in GuestBinDir -> host file (tcpstate, loadgen)
	Packages []Package         // host paths of the test binaries; Timeout per package
	Modules  []Module          // host paths, in load order
	Tools    []string          // host programs to copy (AddTools)
	Commands [][]string        // run before the tests, output on the console
	Slowdown int               // TCPSTATE_TEST_SLOWDOWN (testnet.Slowdown)
}

// BuildInitramfs writes the guest's initramfs to out and returns the tools
// the host did not have.
func BuildInitramfs(s GuestSpec, out string) (missingTools []string, err error) {
	var r Initramfs
	if err := r.CopyFile("init", s.Init, 0o755); err != nil {
		return nil, err
	}
	r.AddCharDev("dev/console", 5, 1, 0o600)
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "root", "etc"} {
		r.AddDir(d)
	}
	// Tests look users up (the unprivileged ones run as nobody).
	r.AddFile("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	r.AddFile("etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	for name, src := range s.Bins {
		if err := r.CopyFile(path.Join(GuestBinDir, name), src, 0o755); err != nil {
			return nil, err
		}
	}
	m := Manifest{Label: s.Label, Commands: s.Commands, Env: []string{
		"PATH=" + GuestBinDir + ":/usr/bin:/usr/sbin:/sbin",
		"HOME=/root", "TMPDIR=/tmp",
		BinDirEnv + "=" + GuestBinDir,
		GuestEnv + "=" + s.Label,
		fmt.Sprintf("TCPSTATE_TEST_SLOWDOWN=%d", max(1, s.Slowdown)),
	}}
	for _, mod := range s.Modules {
		img, err := ReadModule(mod.Path)
		if err != nil {
			return nil, err
		}
		p := path.Join(GuestModDir, mod.Name+".ko")
		r.AddFile(p, img, 0o644)
		m.Modules = append(m.Modules, Module{Name: mod.Name, Path: p})
	}
	for _, p := range s.Packages {
		bin := path.Join(GuestTestDir, filepath.Base(p.Binary))
		if err := r.CopyFile(bin, p.Binary, 0o755); err != nil {
			return nil, err
		}
		dir := path.Join(GuestSrcDir, p.Name)
		r.AddDir(dir)
		if err := addPackageFiles(&r, dir, p.Dir); err != nil {
			return nil, err
		}
		m.Packages = append(m.Packages, Package{Name: p.Name, Binary: bin, Dir: dir, Timeout: p.Timeout, Args: p.Args})
	}
	if missingTools, err = AddTools(&r, s.Tools); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	r.AddFile(ManifestPath, b, 0o644)
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	if _, err := r.WriteTo(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", out, err)
	}
	return missingTools, f.Close()
}

// addPackageFiles copies the files a package's tests may read relative to
// their directory (tracer/tcpstate_bpfel.o, testdata/): everything in src
// but Go source.
func addPackageFiles(r *Initramfs, dir, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if p != src && d.Name() != "testdata" && !strings.HasPrefix(rel, "testdata"+string(filepath.Separator)) {
				return filepath.SkipDir // another package
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") || !d.Type().IsRegular() {
			return nil
		}
		return r.CopyFile(path.Join(dir, filepath.ToSlash(rel)), p, 0)
	})
}
