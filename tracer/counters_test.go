package tracer

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryCounterRead: every index of the kernel's counters map (enum
// counter in bpf/event.h, as bpf2go generated it) is read somewhere in the
// tracer's own code. A counter the BPF side fills and Go never reads is a
// count nobody sees: issue 11 was CNT_RST_NO_SOCKET, counted since the reset
// hook took a NULL socket and never shown.
func TestEveryCounterRead(t *testing.T) {
	fset := token.NewFileSet()
	gen, err := parser.ParseFile(fset, "tcpstate_bpfel.go", nil, 0)
	if errors.Is(err, fs.ErrNotExist) && os.Getenv("TCPSTATE_TEST_SLOWDOWN") != "" {
		t.Skip("no source here: this test binary runs outside the repository (a make test-kernels guest); the host's run reads it")
	}
	if err != nil {
		t.Fatal(err)
	}
	var counters []string
	ast.Inspect(gen, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "tcpstateCounter" {
				for _, name := range vs.Names {
					if name.Name != "tcpstateCounterCNT_MAX" {
						counters = append(counters, name.Name)
					}
				}
			}
		}
		return true
	})
	if len(counters) < 10 {
		t.Fatalf("found %d counters in tcpstate_bpfel.go: the generated names changed?", len(counters))
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "tcpstate_bpfel.go" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range counters {
			if strings.Contains(string(b), c+"]") {
				used[c] = true
			}
		}
	}
	for _, c := range counters {
		if !used[c] {
			t.Errorf("%s: the kernel counts it, no Go code reads it (per[%s])", strings.TrimPrefix(c, "tcpstateCounter"), c)
		}
	}
}
