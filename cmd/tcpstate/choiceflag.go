package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// choiceFlag is a flag that takes one of a few words, in any case, and
// stores the word as the command spells it: -o JSON is -o json. Every
// command's -o and --model are choice flags, so they treat case alike.
type choiceFlag struct {
	val     *string
	choices []string
}

// choiceVarP defines a choice flag on f that stores into p.
func choiceVarP(f *pflag.FlagSet, p *string, name, short, def string, choices []string, usage string) {
	*p = def
	f.VarP(&choiceFlag{val: p, choices: choices}, name, short, usage)
}

func (c *choiceFlag) String() string { return *c.val }

// Type is "string": the help shows "--output string", as for a plain
// string flag.
func (c *choiceFlag) Type() string { return "string" }

func (c *choiceFlag) Set(v string) error {
	ch, ok := c.lookup(v)
	if !ok {
		return fmt.Errorf("want %s", orList(c.choices))
	}
	*c.val = ch
	return nil
}

// accepts reports whether Set would take v.
func (c *choiceFlag) accepts(v string) bool {
	_, ok := c.lookup(v)
	return ok
}

func (c *choiceFlag) lookup(v string) (string, bool) {
	for _, ch := range c.choices {
		if strings.EqualFold(strings.TrimSpace(v), ch) {
			return ch, true
		}
	}
	return "", false
}

// orList joins words as a sentence does: "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
