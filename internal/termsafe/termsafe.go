// Package termsafe makes text that other users control safe to print on a
// terminal, and says how many terminal columns it takes.
//
// A task name is whatever the task set with prctl(PR_SET_NAME): any local
// user can call a process "\x1b]0;PWN\x07\x1b[2J" and, if it were printed
// raw, retitle and clear the terminal of root running tcpstate. A record
// that check reads from a file is no better. Append escapes every byte a
// terminal could take for a control, visibly, so that what is printed is
// plain text showing what the name holds:
//
//	C0 controls 0x00-0x1f, DEL 0x7f   \xHH    ESC -> \x1b, TAB -> \x09
//	C1 controls U+0080-U+009F         \u00HH  CSI (UTF-8 C2 9B) -> \u009b
//	  (UTF-8 encoded)
//	bytes that are not UTF-8, each    \xHH    0xff -> \xff, a lone 0x9b -> \x9b
//	the backslash                     \\
//
// Everything else (printable ASCII, and UTF-8 characters that are not
// controls) is copied unchanged. These are Go's escapes (strconv.Quote
// writes the same for these bytes) without its one-letter forms such as \n:
// one form for each kind of byte. With the backslash doubled, an escape
// cannot be mistaken for a name that spells one, and the original bytes can
// always be read back from the output.
//
// JSON output does not come here: its encoders escape for JSON, and a JSON
// string must hold the name exactly.
package termsafe

import (
	"unicode/utf8"

	"github.com/clipperhouse/displaywidth"
	"github.com/olekukonko/tablewriter/pkg/twwidth"
)

const hexDigits = "0123456789abcdef"

// widths measures a character as tablewriter (pkg/twwidth) does: one
// character at a time with displaywidth, wide East Asian ambiguous
// characters when twwidth has detected a CJK locale. tcpstate's own tables
// and its tablewriter tables then agree on every name's width.
var widths = displaywidth.Options{EastAsianWidth: twwidth.IsEastAsian()}

// Append appends s to dst escaped (see the package comment) and returns the
// extended buffer and the display width of what it appended, in terminal
// columns: one for each byte of printable ASCII and of an escape, and for
// other characters their width as tablewriter counts it (2 for most CJK
// characters, 0 for combining marks). It allocates only when dst has no
// room.
func Append[T ~string | ~[]byte](dst []byte, s T) ([]byte, int) {
	width := 0
	for i := 0; i < len(s); {
		// A run of printable ASCII, the common case, is copied whole.
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] < 0x7f && s[j] != '\\' {
			j++
		}
		if j > i {
			dst = append(dst, s[i:j]...)
			width += j - i
			i = j
			continue
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c == '\\' {
				dst = append(dst, '\\', '\\')
				width += 2
			} else { // C0 or DEL
				dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
				width += 4
			}
			i++
			continue
		}
		var b [utf8.UTFMax]byte
		n := copy(b[:], s[i:])
		r, size := utf8.DecodeRune(b[:n])
		switch {
		case r == utf8.RuneError && size == 1: // not UTF-8: this byte alone
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			width += 4
		case r <= 0x9f: // C1 control, U+0080-U+009F
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
			width += 6
		default:
			dst = append(dst, b[:size]...)
			width += widths.Rune(r)
		}
		i += size
	}
	return dst, width
}

// String returns s escaped as Append escapes it: s itself when nothing in
// it needs an escape.
func String(s string) string {
	var stack [64]byte
	b, _ := Append(stack[:0], s)
	// Every escape is longer than what it replaces.
	if len(b) == len(s) {
		return s
	}
	return string(b)
}
