package main

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the --help blocks of ../../README.md from the commands' help")

// helpBlock is a README code block that shows a command's help: its first
// line is "$ tcpstate CMD --help", the rest what that prints.
var helpBlock = regexp.MustCompile("(?m)^```\n\\$ tcpstate ([a-z]+) --help\n((?:[^`].*\n|\n)*?)```$")

// TestREADMEHelp: every --help the README shows is what the command prints
// now (go test ./cmd/tcpstate -run TestREADMEHelp -update-readme rewrites
// them).
func TestREADMEHelp(t *testing.T) {
	readme := string(readREADME(t))
	blocks := helpBlock.FindAllStringSubmatchIndex(readme, -1)
	if len(blocks) < 4 {
		t.Fatalf("found %d --help blocks in the README, want one per command at least for trace, check, stats and serve", len(blocks))
	}
	var out strings.Builder
	last := 0
	for _, m := range blocks {
		cmd, shown := readme[m[2]:m[3]], readme[m[4]:m[5]]
		code, stdout, stderr := runMain(cmd, "--help")
		if code != 0 || stderr != "" {
			t.Fatalf("tcpstate %s --help: exit status %d, stderr %q", cmd, code, stderr)
		}
		if stdout != shown && !*updateREADME {
			t.Errorf("README's tcpstate %s --help is not what it prints (run go test ./cmd/tcpstate -run TestREADMEHelp -update-readme):\n%s", cmd, firstDiff(shown, stdout))
		}
		out.WriteString(readme[last:m[4]])
		out.WriteString(stdout)
		last = m[5]
	}
	out.WriteString(readme[last:])
	if *updateREADME && out.String() != readme {
		if err := os.WriteFile(readmePath, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const readmePath = "../../README.md"

// readREADME reads the repository's README. A test binary run outside
// the repository (in make test-kernels' guests, which carry only the test
// binaries) has none: there the test skips, as the host's run checks it.
func readREADME(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if errors.Is(err, fs.ErrNotExist) && os.Getenv("TCPSTATE_TEST_SLOWDOWN") != "" {
		t.Skipf("no %s here: this test binary runs outside the repository (a make test-kernels guest); the host's run checks it", readmePath)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firstDiff shows the first line where two texts differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\n README: " + x + "\n prints: " + y
		}
	}
	return ""
}
