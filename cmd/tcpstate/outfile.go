package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tcpstate/tcpstate/internal/termsafe"
)

// outFile is a file tcpstate writes at the end of a run (--summary-json),
// checked and its directory opened before the run starts, so that a path
// it cannot write is a usage error at once, not a failure after the whole
// --duration.
//
// tcpstate runs as root and the path may lie in a directory other users
// can write (/tmp): it never follows a symbolic link another user owns
// (one planted in /tmp could point at any file of root's), and it never
// opens the target for writing. It writes a temporary file next to the
// target, created with O_EXCL|O_NOFOLLOW in the directory it opened at the
// start (without following symbolic links: openat2 RESOLVE_NO_SYMLINKS),
// and renames it over the target: the file is written whole or not at all,
// and whatever entry is there by then, a symbolic link included, is
// replaced, never written through. A device or a FIFO (/dev/stdout) is
// written in place.
type outFile struct {
	flag   string // the flag that named it, for messages
	shown  string // the path as given, escaped for messages
	dir    int    // the directory's descriptor (O_PATH), -1 when direct
	base   string
	direct string // a device or FIFO: written in place at this path
	mode   uint32 // permissions of the file written
}

// maxSymlinks bounds the symbolic links followed, as the kernel's 40.
const maxSymlinks = 40

// openOutFile checks that path can be written and opens its directory.
// Every error is a usage error (exit 2) that says why.
func openOutFile(flag, path string) (*outFile, error) {
	f := &outFile{flag: flag, shown: termsafe.String(path), dir: -1, mode: 0o644}
	fail := func(format string, a ...any) error {
		return usagef("%s %s: %s", flag, f.shown, fmt.Sprintf(format, a...))
	}
	if path == "" {
		return nil, fail("no file name")
	}
	dir, base, target, err := resolveOutPath(path, fail)
	if err != nil {
		return nil, err
	}
	switch {
	case target == nil: // a new file
	case target.IsDir():
		return nil, fail("it is a directory")
	case target.Mode().IsRegular():
		f.mode = uint32(target.Mode().Perm())
	default:
		// A device or a FIFO: written in place (/dev/stdout, /dev/null).
		full := filepath.Join(dir, base)
		if err := unix.Access(full, unix.W_OK); err != nil {
			return nil, fail("cannot write it: %v", err)
		}
		f.direct = full
		return f, nil
	}
	fd, err := openDirNoSymlinks(dir)
	if err != nil {
		return nil, fail("cannot open its directory %s: %v", termsafe.String(dir), err)
	}
	f.dir, f.base = fd, base
	// Prove now that a file can be made there.
	tmp, name, err := f.createTemp()
	if err != nil {
		f.Close()
		return nil, fail("cannot write in %s: %v", termsafe.String(dir), err)
	}
	unix.Close(tmp)
	unix.Unlinkat(f.dir, name, 0)
	return f, nil
}

// resolveOutPath follows the symbolic links of path, component by
// component, each only if its owner is the user running tcpstate or root,
// and returns the directory (free of symbolic links, as it was when
// looked at), the file's name in it, and the file's Lstat (nil: it does not
// exist).
func resolveOutPath(path string, fail func(string, ...any) error) (dir, base string, target os.FileInfo, err error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", "", nil, fail("%v", err)
	}
	euid := uint32(os.Geteuid())
	links := 0
restart:
	comps := strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/")
	cur := "/"
	for i, c := range comps {
		next := filepath.Join(cur, c)
		last := i == len(comps)-1
		fi, err := os.Lstat(next)
		switch {
		case errors.Is(err, os.ErrNotExist) && last:
			return cur, c, nil, nil
		case errors.Is(err, os.ErrNotExist):
			return "", "", nil, fail("directory %s does not exist", termsafe.String(next))
		case err != nil:
			return "", "", nil, fail("%v", err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			owner := fi.Sys().(*syscall.Stat_t).Uid
			if owner != euid && owner != 0 {
				return "", "", nil, fail("refusing to follow %s: it is a symbolic link owned by uid %d, not by you (uid %d) or root, "+
					"so another user could point it at any file of yours; remove it or give another path",
					termsafe.String(next), owner, euid)
			}
			if last {
				// A link to a device or FIFO (/dev/stdout, whose target
				// is a magic link of /proc) is written in place.
				if st, err := os.Stat(next); err == nil && !st.Mode().IsRegular() && !st.IsDir() {
					return cur, c, st, nil
				}
			}
			if links++; links > maxSymlinks {
				return "", "", nil, fail("too many levels of symbolic links")
			}
			to, err := os.Readlink(next)
			if err != nil {
				return "", "", nil, fail("%v", err)
			}
			if !filepath.IsAbs(to) {
				to = filepath.Join(cur, to)
			}
			p = filepath.Join(append([]string{to}, comps[i+1:]...)...)
			goto restart
		}
		if last {
			return cur, c, fi, nil
		}
		if !fi.IsDir() {
			return "", "", nil, fail("%s is not a directory", termsafe.String(next))
		}
		cur = next
	}
	return "", "", nil, fail("not a file name")
}

// openDirNoSymlinks opens dir (O_PATH) refusing any symbolic link on the
// way: a directory swapped for a link since it was looked at is not
// entered. Without openat2 (before Linux 5.6), only the last component is
// checked.
func openDirNoSymlinks(dir string) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if errors.Is(err, unix.ENOSYS) {
		fd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	return fd, err
}

// createTemp makes a new file next to the target: O_EXCL|O_NOFOLLOW, so
// it is this process's own, whatever another user put in the directory.
func (f *outFile) createTemp() (int, string, error) {
	for i := 0; ; i++ {
		name := "." + f.base + ".tcpstate-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(i)
		fd, err := unix.Openat(f.dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, f.mode)
		if errors.Is(err, unix.EEXIST) && i < 100 {
			continue
		}
		return fd, name, err
	}
}

// Write writes b as the whole file.
func (f *outFile) Write(b []byte) error {
	if f.direct != "" {
		fd, err := unix.Open(f.direct, unix.O_WRONLY|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("writing %s %s: %w", f.flag, f.shown, err)
		}
		defer unix.Close(fd)
		_ = unix.SetNonblock(fd, false)
		if _, err := writeFD(fd, b); err != nil {
			return fmt.Errorf("writing %s %s: %w", f.flag, f.shown, err)
		}
		return nil
	}
	fd, name, err := f.createTemp()
	if err != nil {
		return fmt.Errorf("writing %s %s: %w", f.flag, f.shown, err)
	}
	_, err = writeFD(fd, b)
	if err == nil {
		err = unix.Fchmod(fd, f.mode) // the target's mode, whatever the umask
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(f.dir, name, f.dir, f.base)
	}
	if err != nil {
		unix.Unlinkat(f.dir, name, 0)
		return fmt.Errorf("writing %s %s: %w", f.flag, f.shown, err)
	}
	return nil
}

// WriteJSON writes v, indented, as the whole file.
func (f *outFile) WriteJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", f.flag, err)
	}
	return f.Write(append(b, '\n'))
}

// Close releases the directory.
func (f *outFile) Close() {
	if f != nil && f.dir >= 0 {
		unix.Close(f.dir)
		f.dir = -1
	}
}

func writeFD(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}
