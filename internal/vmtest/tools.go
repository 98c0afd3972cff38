package vmtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// GuestTools are the host programs the tests run (ss and nsenter are the
// snapshot tests' oracle, ip adds addresses, sh, grep, umount and unshare
// run the tracefs test's script, ln plants the symlinks of the output-file
// tests, setpriv and prlimit drop privileges for the least-privilege test,
// which reads its capability sets with cat, nohup starts a run with SIGHUP
// ignored). AddTools copies them, with the shared
// libraries ldd names, into the guest at their host paths; a test whose
// tool is missing skips (testnet.NeedTools).
var GuestTools = []string{"sh", "grep", "umount", "unshare", "nsenter", "ss", "ip", "ln", "setpriv", "prlimit", "cat", "nohup"}

// AddTools copies each tool found on the host's PATH into r, and the
// libraries and loader it links. It returns the tools it did not find.
func AddTools(r *Initramfs, tools []string) (missing []string, err error) {
	for _, t := range tools {
		p, err := exec.LookPath(t)
		if err != nil {
			missing = append(missing, t)
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return missing, err
		}
		if err := r.CopyFile(p, real, 0); err != nil {
			return missing, err
		}
		libs, err := sharedLibs(p)
		if err != nil {
			return missing, err
		}
		for _, l := range libs {
			if r.Has(l) {
				continue
			}
			real, err := filepath.EvalSymlinks(l)
			if err != nil {
				return missing, err
			}
			if err := r.CopyFile(l, real, 0); err != nil {
				return missing, err
			}
		}
	}
	return missing, nil
}

// sharedLibs lists the files a dynamic executable loads, as ldd prints
// them; a static one has none.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w\n%s", bin, err, out)
	}
	return parseLdd(string(out)), nil
}

// parseLdd takes the paths from ldd's output: "libc.so.6 => /lib/...
// (0x...)" and the loader's "/lib64/ld-linux-x86-64.so.2 (0x...)"; the
// vDSO has no file.
func parseLdd(out string) []string {
	var libs []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs
}
