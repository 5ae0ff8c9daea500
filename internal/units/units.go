// Package units holds the one syntax for byte sizes that cancelio's
// command-line tools accept: iobench's --size, and wiascan's and scand's
// --bandwidth and --hang-after go through ParseBytes, so "4k" means the
// same in all three.
//
// A size is a whole decimal number of bytes, optionally followed by a
// multiplier: k, M or G (any case), or their IEC spellings KiB, MiB and
// GiB. Every multiplier is a power of 1024, as fio and dd read "4k":
// "4k" = "4KiB" = 4096. A trailing "B" ("4KB", "1MB") is refused rather than
// guessed at, because in SI it would mean 1000.
package units

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Syntax describes the accepted forms, for error messages and flag help.
const Syntax = "bytes, or a whole number with k, M or G (powers of 1024; KiB, MiB, GiB also accepted), e.g. 4096, 4k, 64KiB, 1M"

// ErrSyntax is wrapped by the errors of ParseBytes for text that is not a
// size; ErrRange for a size outside the bounds asked for.
var (
	ErrSyntax = errors.New("not a size")
	ErrRange  = errors.New("size out of range")
)

// multipliers maps a lower-case suffix to its value.
var multipliers = map[string]int64{
	"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
}

// ParseBytes parses a size (see the package doc) and checks that it lies in
// lo..hi. Spaces around s, and between the number and the multiplier, are
// ignored. The error says what is wrong without naming a flag (the caller
// adds that): it wraps ErrSyntax or ErrRange.
func ParseBytes(s string, lo, hi int64) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	digits, suffix := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := multipliers[suffix]
	if digits == "" || !ok {
		return 0, fmt.Errorf("%w: want %s", ErrSyntax, Syntax)
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("%w: larger than %s", ErrRange, FormatBytes(hi))
	}
	v *= mult
	switch {
	case v < lo:
		return 0, fmt.Errorf("%w: want at least %s", ErrRange, FormatBytes(lo))
	case v > hi:
		return 0, fmt.Errorf("%w: want at most %s", ErrRange, FormatBytes(hi))
	}
	return v, nil
}

// FormatBytes formats n in the syntax ParseBytes reads, exactly: with the
// largest multiplier that divides it ("4k", "64k", "1M", "1536", "3G").
func FormatBytes(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "G"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "M"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}
