// Package textfmt formats numbers for people: the demo's report and the
// benchmark's table.
package textfmt

import (
	"strconv"
	"strings"
)

// Thousands formats n with commas between groups of three digits.
func Thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
