package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A child process inherits every file descriptor of the test process
// between fork and exec, close-on-exec ones included: it drops them only in
// exec. If the test closes a socket in that window, the child's reference
// is the last one, and the socket's close (ESTABLISHED->FIN_WAIT1, or
// LISTEN->CLOSE ...) happens in the child's exec, later, and in the child's
// name: tcpstate would rightly name the child as the owner, and a test
// reading the kernel's record at once would miss the close. Tests run in
// parallel and start helper processes, so this happens.
//
// execMu prevents it: socket(), accept() and close() of this package's
// sockets hold it for reading; StartCmd holds it for writing from before
// the fork until the child has let go of the test's sockets.
var execMu sync.RWMutex

func lockedFD(f func() (int, error)) (int, error) {
	execMu.RLock()
	defer execMu.RUnlock()
	return f()
}

func closeFD(fd int) error {
	execMu.RLock()
	defer execMu.RUnlock()
	return unix.Close(fd)
}

// StartCmd starts cmd (cmd.Start) so that it takes none of the test's
// sockets with it: it returns once the child holds no socket of the test
// process but those handed to it (cmd.ExtraFiles, cmd.Stdin ...). Tests
// that use this package start every subprocess with StartCmd or RunCmd.
func StartCmd(cmd *exec.Cmd) error {
	execMu.Lock()
	defer execMu.Unlock()
	mine, err := socketInodes("self")
	if err != nil {
		return err
	}
	for _, f := range append([]*os.File{asFile(cmd.Stdin), asFile(cmd.Stdout), asFile(cmd.Stderr)}, cmd.ExtraFiles...) {
		if f == nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err == nil {
			delete(mine, st.Ino)
		}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if len(mine) == 0 {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		held, err := socketInodes(strconv.Itoa(cmd.Process.Pid))
		if err != nil {
			return nil // exited already
		}
		kept := 0
		for ino := range held {
			if mine[ino] {
				kept++
			}
		}
		if kept == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testnet: child %d still holds %d of the test's sockets 5s after it started", cmd.Process.Pid, kept)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// RunCmd is StartCmd, then cmd.Wait.
func RunCmd(cmd *exec.Cmd) error {
	if err := StartCmd(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

func asFile(v any) *os.File {
	if f, ok := v.(*os.File); ok {
		return f
	}
	return nil
}

// socketInodes lists the sockets a process has open (its /proc/PID/fd).
func socketInodes(pid string) (map[uint64]bool, error) {
	dir := filepath.Join("/proc", pid, "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[ino] = true
			}
		}
	}
	return out, nil
}
