package vmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Kernel is one Debian kernel package, unpacked in the cache.
type Kernel struct {
	Label   string // what was asked for: 6.1, 6.12
	Package string // linux-image-6.1.0-57-amd64
	Release string // its uname -r, the lib/modules directory: 6.1.0-57-amd64
	Dir     string // the unpacked package
}

// Vmlinuz is the kernel image.
func (k Kernel) Vmlinuz() string { return filepath.Join(k.Dir, "boot", "vmlinuz-"+k.Release) }

// Modules is the package's lib/modules/RELEASE.
func (k Kernel) Modules() string { return filepath.Join(k.Dir, "lib", "modules", k.Release) }

// packagePattern matches the package names of a kernel series X.Y in
// Debian's archive, e.g. linux-image-6.1.0-57-amd64 (ABI 57 of 6.1) and
// linux-image-6.12.117+deb12-amd64 (6.12.117). Meta packages, -dbg,
// -unsigned, cloud and rt flavours do not match.
func packagePattern(series string) (*regexp.Regexp, error) {
	if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(series) {
		return nil, fmt.Errorf("kernel %q: name a series (6.1, 6.12) or a package (linux-image-...-amd64)", series)
	}
	return regexp.MustCompile(`^linux-image-` + regexp.QuoteMeta(series) + `(\.\d+)*(-\d+)?(\+deb\d+)?-amd64$`), nil
}

// newestPackage picks the highest version among names, comparing their
// numbers in order.
func newestPackage(names []string) string {
	num := regexp.MustCompile(`\d+`)
	key := func(s string) []int {
		var k []int
		for _, m := range num.FindAllString(s, -1) {
			n, _ := strconv.Atoi(m)
			k = append(k, n)
		}
		return k
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := key(names[i]), key(names[j])
		for x := 0; x < len(a) && x < len(b); x++ {
			if a[x] != b[x] {
				return a[x] < b[x]
			}
		}
		return len(a) < len(b)
	})
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1]
}

// FindPackage names the Debian package for label: a series (the newest
// package of it that apt knows) or a package name.
func FindPackage(label string) (string, error) {
	if strings.HasPrefix(label, "linux-image-") {
		return label, nil
	}
	re, err := packagePattern(label)
	if err != nil {
		return "", err
	}
	out, err := exec.Command("apt-cache", "pkgnames", "linux-image-"+label).Output()
	if err != nil {
		return "", fmt.Errorf("listing kernel packages with apt-cache: %w", err)
	}
	var names []string
	for _, n := range strings.Fields(string(out)) {
		if re.MatchString(n) {
			names = append(names, n)
		}
	}
	pkg := newestPackage(names)
	if pkg == "" {
		return "", fmt.Errorf("apt knows no package like linux-image-%s*-amd64 (run apt-get update; the archive must be one that has %s, e.g. Debian 12 with its updates)", label, label)
	}
	return pkg, nil
}

// FetchKernel makes sure pkg is unpacked under cache, downloading it with
// apt-get download and unpacking it with dpkg-deb -x (nothing else is
// downloaded). A package unpacked before is reused.
func FetchKernel(label, pkg, cache string) (Kernel, error) {
	k := Kernel{Label: label, Package: pkg, Dir: filepath.Join(cache, pkg)}
	if rel, err := findRelease(k.Dir); err == nil {
		k.Release = rel
		return k, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return k, err
	}
	tmp, err := os.MkdirTemp(cache, ".fetch-")
	if err != nil {
		return k, err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("apt-get", "download", pkg)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return k, fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return k, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return k, fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[0], err, out)
	}
	os.RemoveAll(filepath.Join(root, "usr")) // documentation only
	if _, err := findRelease(root); err != nil {
		return k, fmt.Errorf("%s: %w", pkg, err)
	}
	os.RemoveAll(k.Dir)
	if err := os.Rename(root, k.Dir); err != nil {
		return k, err
	}
	k.Release, err = findRelease(k.Dir)
	return k, err
}

// findRelease finds the kernel release of an unpacked package from its
// boot/vmlinuz-RELEASE and lib/modules/RELEASE.
func findRelease(dir string) (string, error) {
	imgs, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(imgs) != 1 {
		return "", errors.New("no single boot/vmlinuz-* in the package")
	}
	rel := strings.TrimPrefix(filepath.Base(imgs[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(dir, "lib", "modules", rel)); err != nil {
		return "", fmt.Errorf("no lib/modules/%s in the package", rel)
	}
	return rel, nil
}
