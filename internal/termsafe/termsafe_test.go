package termsafe

import (
	"bytes"
	"strconv"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/olekukonko/tablewriter/pkg/twwidth"
)

var cases = []struct {
	in, want string
	width    int
}{
	{"", "", 0},
	{"curl", "curl", 4},
	{"ksoftirqd/1", "ksoftirqd/1", 11},
	{"a b~", "a b~", 4},
	// The OSC title and clear screen any user can name a process.
	{"\x1b]0;PWN\x07\x1b[2J", `\x1b]0;PWN\x07\x1b[2J`, 21},
	// C0, DEL: one form for all, no \n or \t.
	{"\x00\x01\t\n\r\x1f\x7f", `\x00\x01\x09\x0a\x0d\x1f\x7f`, 28},
	// C1 controls encoded as UTF-8: CSI, NEL, the first and the last.
	{"\u009b31mred", `\u009b31mred`, 12},
	{"\u0085\u0080\u009f", `\u0085\u0080\u009f`, 18},
	// C1 as raw bytes is not UTF-8.
	{"\x9b2J", `\x9b2J`, 6},
	// Bytes that are not UTF-8, one escape each: stray, cut short,
	// overlong, a surrogate, past U+10FFFF.
	{"\xff\xfeok", `\xff\xfeok`, 10},
	{"\xe6\x95", `\xe6\x95`, 8},
	{"\xc0\xaf", `\xc0\xaf`, 8},
	{"\xed\xa0\x80", `\xed\xa0\x80`, 12},
	{"\xf4\x90\x80\x80", `\xf4\x90\x80\x80`, 16},
	// The backslash is doubled, so no name can pass for an escape.
	{`a\x1b`, `a\\x1b`, 6},
	// Characters that are not controls stay as they are, measured in
	// columns: the first after C1 (NO-BREAK SPACE), Latin, CJK (two
	// columns each), a combining accent (none), U+FFFD itself.
	{"\u00a0x", "\u00a0x", 2},
	{"café", "café", 4},
	{"数据库", "数据库", 6},
	{"e\u0301", "e\u0301", 1},
	{"\ufffd", "\ufffd", 1},
	{"数\x1b据", `数\x1b据`, 8},
}

func TestAppend(t *testing.T) {
	for _, c := range cases {
		if twwidth.IsEastAsian() {
			// Latin-1 letters such as é are ambiguous: two columns here.
			c.width = twwidth.Width(c.want)
		}
		got, w := Append([]byte("prefix:"), c.in)
		if string(got) != "prefix:"+c.want || w != c.width {
			t.Errorf("Append(%q) = %q, width %d; want %q, width %d", c.in, got, w, "prefix:"+c.want, c.width)
		}
		gotB, wB := Append(nil, []byte(c.in))
		if string(gotB) != c.want || wB != w {
			t.Errorf("Append([]byte(%q)) = %q, width %d; the string form gave %q, width %d", c.in, gotB, wB, c.want, w)
		}
		if s := String(c.in); s != c.want {
			t.Errorf("String(%q) = %q, want %q", c.in, s, c.want)
		}
	}
}

// String returns a name that needs no escape itself, not a copy.
func TestStringKeepsSafeNames(t *testing.T) {
	for _, s := range []string{"nginx", "数据库服务器 café", ""} {
		if got := String(s); got != s || unsafe.StringData(got) != unsafe.StringData(s) {
			t.Errorf("String(%q) made a copy", s)
		}
	}
	long := string(bytes.Repeat([]byte("\x1b"), 100))
	if got := String(long); got != string(bytes.Repeat([]byte(`\x1b`), 100)) {
		t.Errorf("String of 100 ESC = %q", got)
	}
}

// unescape reverses Append.
func unescape(t *testing.T, s []byte) []byte {
	t.Helper()
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			out = append(out, '\\')
			i++
		case i+3 < len(s) && s[i+1] == 'x':
			v, err := strconv.ParseUint(string(s[i+2:i+4]), 16, 8)
			if err != nil {
				t.Fatalf("bad escape in %q at %d", s, i)
			}
			out = append(out, byte(v))
			i += 3
		case i+5 < len(s) && s[i+1] == 'u':
			v, err := strconv.ParseUint(string(s[i+2:i+6]), 16, 16)
			if err != nil {
				t.Fatalf("bad escape in %q at %d", s, i)
			}
			out = utf8.AppendRune(out, rune(v))
			i += 5
		default:
			t.Fatalf("lone backslash in %q at %d", s, i)
		}
	}
	return out
}

// checkSafe asserts what Append promises for any input: valid UTF-8 with no
// C0, DEL or C1 control; the input read back exactly from the escapes; the
// width tablewriter measures.
func checkSafe(t *testing.T, in []byte) {
	out, w := Append(nil, in)
	if !utf8.Valid(out) {
		t.Fatalf("Append(%q) = %q: not UTF-8", in, out)
	}
	for _, r := range string(out) {
		if r < 0x20 || r >= 0x7f && r <= 0x9f {
			t.Fatalf("Append(%q) = %q: holds control %U", in, out, r)
		}
	}
	if back := unescape(t, out); !bytes.Equal(back, in) {
		t.Fatalf("Append(%q) = %q reads back as %q", in, out, back)
	}
	if tw := twwidth.Width(string(out)); tw != w {
		t.Fatalf("Append(%q) = %q: width %d, tablewriter measures %d", in, out, w, tw)
	}
}

func TestAppendIsSafe(t *testing.T) {
	for _, c := range cases {
		checkSafe(t, []byte(c.in))
	}
	// Every byte alone and after a UTF-8 lead byte.
	for b := range 256 {
		checkSafe(t, []byte{byte(b)})
		checkSafe(t, []byte{0xc2, byte(b)})
		checkSafe(t, []byte{0xe6, 0x95, byte(b)})
	}
}

func FuzzAppend(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkSafe(t, in) })
}

// trace formats names into its output buffer on the hot path: no garbage.
func TestAppendAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, 256)
	name := []byte("\x1b]0;PWN\x07\u009b数\xff")
	reason := "old state ESTABLISHED, last seen SYN_SENT"
	if n := testing.AllocsPerRun(1000, func() {
		buf, _ = Append(buf[:0], name)
		buf, _ = Append(buf, reason)
	}); n != 0 {
		t.Errorf("Append: %.1f allocations, want 0", n)
	}
}

func BenchmarkAppend(b *testing.B) {
	buf := make([]byte, 0, 256)
	for _, name := range []string{"loadgen", "\x1b]0;PWN\x07\x1b[2J", "数据库"} {
		s := []byte(name)
		b.Run(strconv.Quote(name), func(b *testing.B) {
			for b.Loop() {
				buf, _ = Append(buf[:0], s)
			}
		})
	}
}
