// Package relay passes batons between cluster members: each node receives
// batons on a subject named after itself, adds one to the counter and
// sends it on to a live peer. The rules (counter format, peer choice,
// leadership) are pure functions and types; Relay is the shell that wires
// them to a NATS connection.
package relay

import (
	"errors"
	"fmt"
	"strconv"
)

// SubjectPrefix + node name is the subject a node receives batons on.
const SubjectPrefix = "baton.relay."

// Wildcard matches every node's baton subject.
const Wildcard = SubjectPrefix + "*"

// Subject returns the baton subject of node.
func Subject(node string) string { return SubjectPrefix + node }

// maxCounterDigits is the length of the largest uint64 in decimal.
const maxCounterDigits = 20

// ErrBadBaton is wrapped by ParseCounter's errors.
var ErrBadBaton = errors.New("bad baton")

// AppendCounter appends the wire form of a baton counter to dst: the
// counter in decimal ASCII, so `nats sub` shows it as it is.
func AppendCounter(dst []byte, n uint64) []byte { return strconv.AppendUint(dst, n, 10) }

// ParseCounter reads a baton's counter. Only plain decimal digits are
// accepted: no sign, no spaces, no leading zeros, at most 20 digits, no
// overflow. It does not allocate.
func ParseCounter(b []byte) (uint64, error) {
	switch {
	case len(b) == 0:
		return 0, fmt.Errorf("%w: empty", ErrBadBaton)
	case len(b) > maxCounterDigits:
		return 0, fmt.Errorf("%w: %d bytes", ErrBadBaton, len(b))
	case len(b) > 1 && b[0] == '0':
		return 0, fmt.Errorf("%w: leading zero", ErrBadBaton)
	}

	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: byte %q", ErrBadBaton, c)
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, fmt.Errorf("%w: overflows 64 bits", ErrBadBaton)
		}
		n = n*10 + d
	}
	return n, nil
}
