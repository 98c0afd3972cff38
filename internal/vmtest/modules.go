package vmtest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is one kernel module to load in the guest, in load order.
type Module struct {
	Name string // as modinfo names it: veth
	Path string // the host file, .ko or .ko.xz
}

// modName normalises a module name: the kernel treats - and _ alike.
func modName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(s, ".ko"), "-", "_")
}

// ModuleTree is a kernel package's lib/modules/VERSION directory. Debian's
// packages do not ship modules.dep (depmod writes it at install time), so
// dependencies are read from each module's .modinfo section instead.
type ModuleTree struct {
	Dir     string
	files   map[string]string // module name -> path
	builtin map[string]bool
}

// OpenModuleTree indexes dir (lib/modules/VERSION of an unpacked package).
func OpenModuleTree(dir string) (*ModuleTree, error) {
	t := &ModuleTree{Dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			t.builtin[modName(l)] = true
		}
	}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			t.files[modName(d.Name())] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing kernel modules in %s: %w", dir, err)
	}
	return t, nil
}

// Resolve returns the modules to load for names, dependencies first; a
// name built into the kernel needs nothing and is left out.
func (t *ModuleTree) Resolve(names []string) ([]Module, error) {
	var out []Module
	done := map[string]bool{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = modName(name)
		if done[name] || t.builtin[name] {
			return nil
		}
		for _, c := range chain {
			if c == name {
				return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
			}
		}
		p, ok := t.files[name]
		if !ok {
			return fmt.Errorf("module %s is neither built in nor in %s", name, t.Dir)
		}
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		done[name] = true
		out = append(out, Module{Name: name, Path: p})
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Builtin reports whether the kernel has name built in.
func (t *ModuleTree) Builtin(name string) bool { return t.builtin[modName(name)] }

// ReadModule returns a module file's ELF image, decompressed (Debian's
// 6.12 packages compress modules with xz; the `xz` tool does that here).
func ReadModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.xz"):
		out, err := exec.Command("xz", "-dc", path).Output()
		if err != nil {
			return nil, fmt.Errorf("decompressing %s with xz (apt-get install xz-utils): %w", path, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: unsupported module compression", path)
}

// moduleDepends reads "depends=" from a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	img, err := ReadModule(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", path, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s has no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("reading %s's .modinfo: %w", path, err)
	}
	return parseDepends(data), nil
}

// parseDepends takes the modules named by "depends=" in a .modinfo
// section (NUL-separated key=value strings).
func parseDepends(modinfo []byte) []string {
	var deps []string
	for _, kv := range bytes.Split(modinfo, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, d)
				}
			}
		}
	}
	return deps
}
