package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Prebuilt returns the path of the program name (tcpstate, loadgen) that
// a test would otherwise build with Go, when TCPSTATE_TEST_BINDIR names a
// directory that has it: the kernel matrix's guests (internal/vmtest) have
// no Go toolchain, so the host builds them once.
func Prebuilt(name string) (string, bool) {
	dir := os.Getenv("TCPSTATE_TEST_BINDIR")
	if dir == "" {
		return "", false
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", false
	}
	return p, true
}

// NeedTools skips the test when a program it runs is not installed, with a
// message naming them (the kernel matrix's guests have only the programs
// their initramfs carries); with CI=true a missing tool is a failure.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s, not installed here", strings.Join(missing, " and "))
	if g := os.Getenv("TCPSTATE_VM_GUEST"); g != "" {
		msg += fmt.Sprintf(" (test VM of kernel %s)", g)
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this is a failure, not a skip")
	}
	t.Skip(msg)
}
