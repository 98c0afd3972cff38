package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Initramfs is the guest's root file system, built in memory and written
// as a cpio archive in the "newc" format the kernel unpacks
// (Documentation/driver-api/early-userspace/buffer-format.rst).
// Directories are made for every path's parents.
type Initramfs struct {
	files map[string]entry
}

type entry struct {
	mode uint32    // type and permission bits
	rdev [2]uint32 // a device node's major and minor
	data []byte    // contents (in memory)
	src  string    // or a host file to copy
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

// AddCharDev adds a character device node (the kernel opens /dev/console
// for init before anything is mounted).
func (r *Initramfs) AddCharDev(name string, major, minor uint32, perm os.FileMode) {
	r.add(name, entry{mode: modeChar | uint32(perm.Perm()), rdev: [2]uint32{major, minor}})
}

// AddFile adds a file with the given contents and permissions.
func (r *Initramfs) AddFile(name string, data []byte, perm os.FileMode) {
	r.add(name, entry{mode: modeFile | uint32(perm.Perm()), data: data})
}

// CopyFile adds the host file src as name, with perm (0: src's own).
func (r *Initramfs) CopyFile(name, src string, perm os.FileMode) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	if perm == 0 {
		perm = st.Mode().Perm()
	}
	r.add(name, entry{mode: modeFile | uint32(perm.Perm()), src: src})
	return nil
}

// AddDir adds an empty directory.
func (r *Initramfs) AddDir(name string) { r.add(name, entry{mode: modeDir | 0o755}) }

func (r *Initramfs) add(name string, e entry) {
	if r.files == nil {
		r.files = map[string]entry{}
	}
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := r.files[d]; !ok {
			r.files[d] = entry{mode: modeDir | 0o755}
		}
	}
	r.files[name] = e
}

// Has reports whether name is in the archive.
func (r *Initramfs) Has(name string) bool {
	_, ok := r.files[strings.TrimPrefix(path.Clean("/"+name), "/")]
	return ok
}

// WriteTo writes the archive, parents before children.
func (r *Initramfs) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(r.files))
	for n := range r.files {
		names = append(names, n)
	}
	sort.Strings(names) // "a" sorts before "a/b"
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	for i, n := range names {
		e := r.files[n]
		data := e.data
		if e.src != "" {
			var err error
			if data, err = os.ReadFile(e.src); err != nil {
				return cw.n, err
			}
		}
		if err := writeEntry(cw, uint32(i+1), n, e.mode, e.rdev, data); err != nil {
			return cw.n, err
		}
	}
	if err := writeEntry(cw, 0, "TRAILER!!!", 0, [2]uint32{}, nil); err != nil {
		return cw.n, err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

func writeEntry(w *countWriter, ino uint32, name string, mode uint32, rdev [2]uint32, data []byte) error {
	nlink := 1
	if mode&modeDir != 0 {
		nlink = 2
	}
	// c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize c_devmajor
	// c_devminor c_rdevmajor c_rdevminor c_namesize c_check
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name)+1, 0)
	if _, err := io.WriteString(w, hdr+name+"\x00"); err != nil {
		return err
	}
	if err := w.pad(); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.pad()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// pad aligns to 4 bytes, as newc wants after each name and each file.
func (c *countWriter) pad() error {
	if r := c.n % 4; r != 0 {
		_, err := c.Write(make([]byte, 4-r))
		return err
	}
	return nil
}
