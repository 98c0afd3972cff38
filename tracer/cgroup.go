package tracer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/model"
)

// The cgroups the kernel records for each socket are cgroup v2 cgroups (the
// unified hierarchy): sk->sk_cgrp_data holds the creating task's, and the
// id is the kernfs node id of its directory, which is the directory's inode
// number in the cgroup2 file system. User space finds that file system in
// /proc/self/mountinfo: /sys/fs/cgroup on a cgroup v2 host,
// /sys/fs/cgroup/unified on a hybrid one (v1 controllers at /sys/fs/cgroup/*).
// A host with only v1 hierarchies has no cgroup2 mount: every socket is in
// the unified hierarchy's root there, and the ids name nothing.

// CgroupFS is the cgroup2 file system as this process sees it.
type CgroupFS struct {
	// Mount is where the cgroup2 file system is mounted; "" when there is
	// none (a host with only cgroup v1 hierarchies).
	Mount string
	// Root is the part of the hierarchy the mount shows (mountinfo's
	// fourth field): "/", but for a mount of a subtree (inside a
	// container, say).
	Root string
	// V1 lists the mount points of cgroup v1 hierarchies: on a hybrid
	// host there are both.
	V1 []string
}

// ErrNoCgroup2 says that no cgroup2 file system is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 file system is mounted (a cgroup v1-only host): the cgroup ids the kernel records for sockets are of the unified hierarchy, which is not mounted here, so they name nothing; tcpstate shows no cgroup paths or containers and cannot filter by --cgroup or --container")

// FindCgroupFS reads /proc/self/mountinfo.
func FindCgroupFS() (CgroupFS, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return CgroupFS{}, fmt.Errorf("finding the cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

// parseMountinfo picks the cgroup2 mount: one of the whole hierarchy at
// a usual place first, then any of the whole hierarchy, then any.
func parseMountinfo(r io.Reader) (CgroupFS, error) {
	var fs CgroupFS
	type mount struct{ root, point string }
	var v2 []mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+1 >= len(fields) {
			continue
		}
		root, point := unescapeMount(fields[3]), unescapeMount(fields[4])
		switch fields[sep+1] {
		case "cgroup2":
			v2 = append(v2, mount{root, point})
		case "cgroup":
			fs.V1 = append(fs.V1, point)
		}
	}
	if err := sc.Err(); err != nil {
		return fs, fmt.Errorf("reading /proc/self/mountinfo: %w", err)
	}
	rank := func(m mount) int {
		switch {
		case m.root == "/" && (m.point == "/sys/fs/cgroup" || m.point == "/sys/fs/cgroup/unified"):
			return 0
		case m.root == "/":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(v2, func(a, b mount) int { return rank(a) - rank(b) })
	if len(v2) > 0 {
		fs.Mount, fs.Root = v2[0].point, v2[0].root
	}
	return fs, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Hybrid reports whether cgroup v1 hierarchies are mounted beside cgroup2.
func (fs CgroupFS) Hybrid() bool { return fs.Mount != "" && len(fs.V1) > 0 }

// Describe says in a line what the host has, for --verbose.
func (fs CgroupFS) Describe() string {
	switch {
	case fs.Mount == "" && len(fs.V1) > 0:
		return fmt.Sprintf("cgroup v1 only (%d hierarchies, no cgroup2 mount): socket cgroups are not resolved", len(fs.V1))
	case fs.Mount == "":
		return "no cgroup file system mounted: socket cgroups are not resolved"
	case fs.Hybrid():
		return fmt.Sprintf("hybrid: cgroup2 at %s (socket cgroups are resolved there), cgroup v1 controllers in %d hierarchies", fs.Mount, len(fs.V1))
	}
	return "cgroup v2 at " + fs.Mount
}

// file is the file system path of the cgroup at path (from the root of the
// hierarchy).
func (fs CgroupFS) file(path string) string {
	rel := path
	if fs.Root != "/" && fs.Root != "" {
		rel = strings.TrimPrefix(path, fs.Root)
	}
	return filepath.Join(fs.Mount, rel)
}

// path is the hierarchy path of the file system path file, if it is in the mount.
func (fs CgroupFS) path(file string) (string, bool) {
	file = filepath.Clean(file)
	if file != fs.Mount && !strings.HasPrefix(file, strings.TrimSuffix(fs.Mount, "/")+"/") {
		return "", false
	}
	root := fs.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, strings.TrimPrefix(file, fs.Mount)), true
}

// level is a hierarchy path's depth: its number of components.
func level(path string) uint32 {
	n := uint32(0)
	for c := range strings.SplitSeq(path, "/") {
		if c != "" {
			n++
		}
	}
	return n
}

// ResolveCgroup turns what a user gives for a cgroup, a path from the root
// of the hierarchy (/system.slice/nginx.service, as /proc/PID/cgroup shows
// it) or the cgroup's directory (/sys/fs/cgroup/system.slice/nginx.service),
// into its id and depth.
func (fs CgroupFS) ResolveCgroup(arg string) (model.CgroupWant, error) {
	if fs.Mount == "" {
		return model.CgroupWant{}, ErrNoCgroup2
	}
	if arg == "" {
		return model.CgroupWant{}, errors.New("an empty cgroup path")
	}
	path, ok := fs.path(arg)
	if !ok {
		path = filepath.Join("/", arg)
	}
	dir := fs.file(path)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return model.CgroupWant{}, fmt.Errorf("no cgroup %s (no directory %s)", path, dir)
		}
		return model.CgroupWant{}, fmt.Errorf("cgroup %s: %w", path, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil || sfs.Type != unix.CGROUP2_SUPER_MAGIC || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return model.CgroupWant{}, fmt.Errorf("%s is not a cgroup of the cgroup2 hierarchy mounted at %s", dir, fs.Mount)
	}
	return model.CgroupWant{ID: st.Ino, Level: level(path), Path: path}, nil
}

// Cgroup is one cgroup a walk found.
type Cgroup struct {
	ID   uint64
	Path string // from the root of the hierarchy
}

// Walk lists every cgroup in the mount, its root first, parents before
// their children. It reads the directories with getdents64, which gives
// each one's inode (its id) without a stat.
func (fs CgroupFS) Walk() ([]Cgroup, error) {
	if fs.Mount == "" {
		return nil, ErrNoCgroup2
	}
	var st unix.Stat_t
	if err := unix.Stat(fs.Mount, &st); err != nil {
		return nil, fmt.Errorf("reading the cgroup tree: %w", err)
	}
	root := fs.Root
	if root == "" {
		root = "/"
	}
	out := []Cgroup{{ID: st.Ino, Path: root}}
	buf := make([]byte, 32<<10)
	for i := 0; i < len(out); i++ {
		kids, err := subdirs(fs.file(out[i].Path), buf)
		if err != nil {
			if i == 0 {
				return nil, fmt.Errorf("reading the cgroup tree: %w", err)
			}
			continue // removed meanwhile
		}
		for _, k := range kids {
			out = append(out, Cgroup{ID: k.ID, Path: filepath.Join(out[i].Path, k.Path)})
		}
	}
	return out, nil
}

// subdirs lists the directories in dir, with their inodes, by getdents64.
func subdirs(dir string, buf []byte) ([]Cgroup, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []Cgroup
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := b[19:reclen]
			if i := slices.Index(name, 0); i >= 0 {
				name = name[:i]
			}
			if b[18] == unix.DT_DIR && string(name) != "." && string(name) != ".." {
				out = append(out, Cgroup{ID: binary.NativeEndian.Uint64(b), Path: string(name)})
			}
			b = b[reclen:]
		}
	}
}

// fileidKernfs is the file handle type of kernfs (cgroupfs) nodes:
// FILEID_KERNFS, whose handle is the node's 64-bit id.
const fileidKernfs = 0xfe

// pathByID finds the cgroup with this id directly: open_by_handle_at on the
// mount with the kernfs handle of the id, and the path the kernel gives the
// opened directory. Needs CAP_DAC_READ_SEARCH. A removed cgroup is ESTALE.
func (fs CgroupFS) pathByID(mountFD int, id uint64) (string, error) {
	var h [8]byte
	binary.LittleEndian.PutUint64(h[:], id) // kernfs writes the id as a u64 in host order; bpfel hosts only
	fd, err := unix.OpenByHandleAt(mountFD, unix.NewFileHandle(fileidKernfs, h[:]), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	file, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	p, ok := fs.path(file)
	if !ok {
		return "", fmt.Errorf("cgroup %d is at %s, outside the mount %s", id, file, fs.Mount)
	}
	return p, nil
}

// handleUnsupported reports errors of open_by_handle_at that say it cannot
// be used at all here (rather than that this id is gone).
func handleUnsupported(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EBADF)
}

// ContainerCgroups finds the cgroups of containers: for each arg, the
// cgroups whose path names a container it matches (model.Container's
// MatchesContainer: the id, a prefix of 4 or more hex digits, or a systemd
// unit's name) or a Kubernetes pod of that uid, and whose parent does not
// (a container's own cgroup, not the ones it makes below: the filter takes
// subtrees). With within, only cgroups inside one of those subtrees count
// (--cgroup and --container together). An arg that is a prefix of two
// different containers' ids is an error.
func ContainerCgroups(cgs []Cgroup, args []string, within []model.CgroupWant) ([]model.CgroupWant, map[string]string, error) {
	matchedID := map[string]string{} // arg -> the container (or pod) it named
	var out []model.CgroupWant
	parsed := make(map[string]model.Container, len(cgs))
	for _, cg := range cgs {
		parsed[cg.Path] = model.ParseCgroupPath(cg.Path)
	}
	names := func(c model.Container, arg string) (string, bool) {
		if c.MatchesContainer(arg) {
			return c.ID, true
		}
		if c.PodUID != "" && c.PodUID == arg {
			return "pod " + c.PodUID, true
		}
		return "", false
	}
	for _, arg := range args {
		for _, cg := range cgs {
			name, ok := names(parsed[cg.Path], arg)
			if !ok {
				continue
			}
			if parent := filepath.Dir(cg.Path); parent != cg.Path {
				if _, up := names(parsed[parent], arg); up {
					continue
				}
			}
			if len(within) > 0 && !slices.ContainsFunc(within, func(w model.CgroupWant) bool { return w.Contains(cg.ID, cg.Path) }) {
				continue
			}
			if prev, seen := matchedID[arg]; seen && prev != name {
				return nil, nil, fmt.Errorf("--container %s names more than one container: %s and %s (give more of the id)", arg, prev, name)
			}
			matchedID[arg] = name
			if !slices.ContainsFunc(out, func(w model.CgroupWant) bool { return w.ID == cg.ID }) {
				out = append(out, model.CgroupWant{ID: cg.ID, Level: level(cg.Path), Path: cg.Path})
			}
		}
	}
	return out, matchedID, nil
}

// ContainerWatch keeps the kernel's cgroup filter following the
// containers of --container (Filter.Containers) as they start and
// restart: each Scan walks the cgroup tree and adds the cgroups that name
// them, inside the --cgroup subtrees, and are not in the filter yet
// (AddCgroups: they select sockets born from then on). A container
// restarted by its runtime gets a new cgroup of the same name; a systemd
// service restarted, too; a Kubernetes pod's cgroup outlives its
// containers' restarts. The tracer scans every Options.CgroupRescan.
type ContainerWatch struct {
	mu     sync.Mutex
	t      *Tracer
	fs     CgroupFS
	args   []string
	within []model.CgroupWant
	live   map[uint64]bool // the cgroups of the last walk
}

// find walks the tree and returns the containers' cgroups, and the
// containers that have none.
func (w *ContainerWatch) find() ([]model.CgroupWant, []string, error) {
	cgs, err := w.fs.Walk()
	if err != nil {
		return nil, nil, fmt.Errorf("looking for the cgroups of --container: %w", err)
	}
	wants, named, err := ContainerCgroups(cgs, w.args, w.within)
	if err != nil {
		return nil, nil, err
	}
	var none []string
	for _, a := range w.args {
		if _, ok := named[a]; !ok {
			none = append(none, a)
		}
	}
	// A prefix that named a container names that one from now on: a new
	// container whose id has the same prefix is another container.
	for i, a := range w.args {
		if id, ok := named[a]; ok && !strings.HasPrefix(id, "pod ") {
			w.args[i] = id
		}
	}
	w.live = make(map[uint64]bool, len(cgs))
	for _, cg := range cgs {
		w.live[cg.ID] = true
	}
	return wants, none, nil
}

// Scan looks once and returns the cgroups it added to the filter.
func (w *ContainerWatch) Scan() ([]model.CgroupWant, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wants, _, err := w.find()
	if err != nil {
		return nil, err
	}
	return w.t.AddCgroups(wants, func(id uint64) bool { return !w.live[id] })
}
