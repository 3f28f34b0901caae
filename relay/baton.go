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

// Batons carry their id and epoch in a NATS header, so the payload stays
// the bare counter: `nats sub` shows "Baton: 3.1" (baton 3, epoch 1)
// above "48213". The epoch rises each time the leader injects a lost
// baton again; see progress.go.
const (
	headerPrefix = "NATS/1.0\r\nBaton: "
	headerSuffix = "\r\n\r\n"
)

// MaxBatonID is the largest baton id; ids are 0 to BATON_BATONS-1.
const MaxBatonID = 1<<31 - 1

// AppendHeader appends the header block of baton id at epoch to dst.
func AppendHeader(dst []byte, id uint32, epoch uint16) []byte {
	dst = append(dst, headerPrefix...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, '.')
	dst = strconv.AppendUint(dst, uint64(epoch), 10)
	return append(dst, headerSuffix...)
}

// ParseHeader reads the baton id and epoch from a header block. Only the
// block AppendHeader writes is accepted, byte for byte, with no other
// headers: anything else is not a baton. The epoch must be at least 1.
// It does not allocate.
func ParseHeader(h []byte) (id uint32, epoch uint16, err error) {
	if len(h) < len(headerPrefix)+3+len(headerSuffix) ||
		string(h[:len(headerPrefix)]) != headerPrefix ||
		string(h[len(h)-len(headerSuffix):]) != headerSuffix {
		return 0, 0, fmt.Errorf("%w: no baton header", ErrBadBaton)
	}
	v := h[len(headerPrefix) : len(h)-len(headerSuffix)]
	dot := -1
	for i, c := range v {
		if c == '.' {
			dot = i
			break
		}
	}
	if dot < 0 {
		return 0, 0, fmt.Errorf("%w: baton header %q lacks an epoch", ErrBadBaton, v)
	}
	n, err1 := ParseCounter(v[:dot])
	e, err2 := ParseCounter(v[dot+1:])
	if err1 != nil || err2 != nil || n > MaxBatonID || e == 0 || e > MaxEpoch {
		return 0, 0, fmt.Errorf("%w: bad baton header %q", ErrBadBaton, v)
	}
	return uint32(n), uint16(e), nil
}
