package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagError turns pflag's parse errors into usage errors (exit status 2)
// that say in words which flag, which value and what is wanted, instead of
// the Go parser's message ("strconv.ParseUint: parsing "-1": invalid
// syntax").
func flagError(_ *cobra.Command, err error) error {
	var invalid *pflag.InvalidValueError
	var noValue *pflag.ValueRequiredError
	switch {
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		return usagef("--%s %q: %s", f.Name, invalid.GetValue(), wanted(f, invalid.Unwrap()))
	case errors.As(err, &noValue):
		name := "--" + noValue.GetSpecifiedName()
		if noValue.GetSpecifiedShortnames() != "" {
			name = "-" + noValue.GetSpecifiedName()
		}
		return usagef("%s needs a value", name)
	}
	// Unknown flags and bad syntax: pflag's messages are plain already
	// ("unknown flag: --bogus").
	return &usageError{err}
}

// wanted says what flag f takes, for a value it refused with cause. pflag's
// own types get a sentence per type; tcpstate's flag types (--stuck, -o)
// explain themselves in cause.
func wanted(f *pflag.Flag, cause error) string {
	typ := f.Value.Type()
	switch typ {
	case "bool":
		return "want true or false (the flag alone means true)"
	case "duration":
		return "want a duration such as 500ms, 30s, 5m or 1h30m"
	case "stringSlice":
		return "want a comma-separated list (a value that starts with a double quote must end with one)"
	}
	if bits, ok := strings.CutPrefix(typ, "uint"); ok {
		if errors.Is(cause, strconv.ErrRange) {
			return "want a whole number, 0 or more, below 2^" + bitSize(bits)
		}
		return "want a whole number, 0 or more"
	}
	if bits, ok := strings.CutPrefix(typ, "int"); ok {
		if errors.Is(cause, strconv.ErrRange) {
			b := bitSize(bits)
			n, _ := strconv.Atoi(b)
			return fmt.Sprintf("want a whole number from -2^%d to 2^%d-1", n-1, n-1)
		}
		return "want a whole number"
	}
	return cause.Error()
}

// bitSize is the size of a Go integer type from its name's digits ("64",
// or "" for int and uint).
func bitSize(digits string) string {
	if digits == "" {
		return strconv.Itoa(strconv.IntSize)
	}
	return digits
}
