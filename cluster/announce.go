package cluster

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ProtocolVersion is the version of the discovery announcement format. A
// node drops announcements of any other version (counted as DropVersion),
// so a mixed-version LAN says why nodes do not pair instead of failing
// silently, as happened to libcluster users when a default changed.
const ProtocolVersion = 1

// MaxPacketSize bounds an announcement on the wire. Real announcements are
// about 150 bytes; anything larger is hostile or broken and is dropped
// before any work is done on it.
const MaxPacketSize = 1024

const (
	maxNameLen = 64
	maxURLLen  = 256

	magic        = "BTN"
	clusterTagSz = 8
	headerSize   = len(magic) + 1 + clusterTagSz // magic, version, cluster tag
	nonceSize    = 12
	tagSize      = 16
	minPacket    = headerSize + nonceSize + tagSize
)

// Announcement is what a node multicasts about itself about once a second.
// It is the only thing discovery trusts, and only after authentication.
type Announcement struct {
	Node     string // node name, unique in the cluster
	Boot     uint64 // random per process start; tells a restart from a replay
	Seq      uint64 // increases by one per announcement within a boot
	RouteURL string // nats-route://host:port, without credentials
	Leaving  bool   // the node is stopping cleanly
}

// DropReason says why an incoming discovery packet was not used. Every
// dropped packet is counted under exactly one reason.
type DropReason int

const (
	DropNone      DropReason = iota
	DropShort                // shorter than the smallest possible packet
	DropTooBig               // larger than MaxPacketSize
	DropMagic                // not a baton packet at all
	DropVersion              // baton packet of another protocol version
	DropForeign              // baton packet of another cluster name
	DropAuth                 // wrong secret, or altered in transit
	DropMalformed            // authentic but its fields do not parse
	DropSelf                 // our own packet, looped back
	DropReplay               // sequence number not newer than one seen
	DropStaleBoot            // from a boot of that node that has been replaced
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNone:      "none",
	DropShort:     "short",
	DropTooBig:    "too_big",
	DropMagic:     "bad_magic",
	DropVersion:   "version",
	DropForeign:   "foreign_cluster",
	DropAuth:      "auth",
	DropMalformed: "malformed",
	DropSelf:      "self",
	DropReplay:    "replay",
	DropStaleBoot: "stale_boot",
}

// String returns the reason's name as used in logs, metrics and /status.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return fmt.Sprintf("DropReason(%d)", int(r))
	}
	return dropNames[r]
}

// DropReasons lists every reason other than DropNone, in a stable order.
func DropReasons() []DropReason {
	rs := make([]DropReason, 0, numDropReasons-1)
	for r := DropShort; r < numDropReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// DropError is returned by Codec.Open for a packet that must be dropped.
type DropError struct {
	Reason DropReason
	Detail string
}

func (e *DropError) Error() string {
	if e.Detail == "" {
		return "discovery packet dropped: " + e.Reason.String()
	}
	return "discovery packet dropped: " + e.Reason.String() + ": " + e.Detail
}

func drop(r DropReason, detail string) error { return &DropError{Reason: r, Detail: detail} }

// ReasonOf returns the drop reason carried by err, or DropMalformed for an
// error that carries none.
func ReasonOf(err error) DropReason {
	var de *DropError
	if errors.As(err, &de) {
		return de.Reason
	}
	return DropMalformed
}

// Codec seals and opens announcements for one cluster. The key is derived
// from the shared secret with HKDF, and the cluster name is bound in twice:
// as HKDF info (another cluster with the same secret cannot decrypt) and as
// a short tag in the clear header (so a node can say it hears a foreign
// cluster rather than reporting a bare authentication failure).
//
// A Codec is safe for concurrent use.
type Codec struct {
	aead cipher.AEAD
	tag  [clusterTagSz]byte
	rand io.Reader
}

// NewCodec derives the discovery key from secret and cluster. rnd supplies
// nonces; nil means crypto/rand.
func NewCodec(secret, cluster string, rnd io.Reader) (*Codec, error) {
	if secret == "" {
		return nil, errors.New("discovery codec: empty secret")
	}
	if cluster == "" {
		return nil, errors.New("discovery codec: empty cluster name")
	}

	key, err := hkdf.Key(sha256.New, []byte(secret), []byte("baton/discovery/v1"), cluster, 32)
	if err != nil {
		return nil, fmt.Errorf("derive discovery key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("discovery cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("discovery cipher: %w", err)
	}

	if rnd == nil {
		rnd = rand.Reader
	}
	return &Codec{aead: aead, tag: ClusterTag(cluster), rand: rnd}, nil
}

// ClusterTag is the short, public fingerprint of a cluster name carried in
// every announcement header.
func ClusterTag(cluster string) [clusterTagSz]byte {
	sum := sha256.Sum256([]byte("baton/cluster-tag/v1\x00" + cluster))
	var t [clusterTagSz]byte
	copy(t[:], sum[:])
	return t
}

// Seal encodes and encrypts a. The layout is
//
//	"BTN" | version (1) | cluster tag (8) | nonce (12) | AES-GCM(body) + tag (16)
//
// with the 12-byte header as additional authenticated data, and body
//
//	boot (8) | seq (8) | flags (1) | len(node) (1) | node | len(url) (2) | url
//
// in big-endian order.
func (c *Codec) Seal(a Announcement) ([]byte, error) {
	if err := validateAnnouncement(a); err != nil {
		return nil, err
	}

	body := make([]byte, 0, 20+len(a.Node)+len(a.RouteURL))
	body = binary.BigEndian.AppendUint64(body, a.Boot)
	body = binary.BigEndian.AppendUint64(body, a.Seq)
	var flags byte
	if a.Leaving {
		flags |= 1
	}
	body = append(body, flags, byte(len(a.Node)))
	body = append(body, a.Node...)
	body = binary.BigEndian.AppendUint16(body, uint16(len(a.RouteURL)))
	body = append(body, a.RouteURL...)

	pkt := make([]byte, 0, minPacket+len(body))
	pkt = append(pkt, magic...)
	pkt = append(pkt, ProtocolVersion)
	pkt = append(pkt, c.tag[:]...)
	nonce := pkt[headerSize : headerSize+nonceSize]
	if _, err := io.ReadFull(c.rand, nonce); err != nil {
		return nil, fmt.Errorf("announcement nonce: %w", err)
	}
	pkt = pkt[:headerSize+nonceSize]
	return c.aead.Seal(pkt, nonce, body, pkt[:headerSize]), nil
}

func validateAnnouncement(a Announcement) error {
	switch {
	case a.Node == "" || len(a.Node) > maxNameLen:
		return fmt.Errorf("announcement: node name must be 1 to %d bytes, got %d", maxNameLen, len(a.Node))
	case len(a.RouteURL) > maxURLLen:
		return fmt.Errorf("announcement: route URL longer than %d bytes", maxURLLen)
	}
	return nil
}

// Open authenticates and decodes one packet. It never panics on any input;
// a packet that must be dropped yields a *DropError naming the reason.
// Self and replay filtering is not done here but by a Filter, because they
// need state.
func (c *Codec) Open(pkt []byte) (Announcement, error) {
	switch {
	case len(pkt) > MaxPacketSize:
		return Announcement{}, drop(DropTooBig, fmt.Sprintf("%d bytes", len(pkt)))
	case len(pkt) < len(magic) || string(pkt[:len(magic)]) != magic:
		if len(pkt) < minPacket {
			return Announcement{}, drop(DropShort, fmt.Sprintf("%d bytes", len(pkt)))
		}
		return Announcement{}, drop(DropMagic, "")
	case len(pkt) < minPacket:
		return Announcement{}, drop(DropShort, fmt.Sprintf("%d bytes", len(pkt)))
	case pkt[len(magic)] != ProtocolVersion:
		return Announcement{}, drop(DropVersion, fmt.Sprintf("version %d, want %d", pkt[len(magic)], ProtocolVersion))
	case string(pkt[len(magic)+1:headerSize]) != string(c.tag[:]):
		return Announcement{}, drop(DropForeign, "")
	}

	header := pkt[:headerSize]
	nonce := pkt[headerSize : headerSize+nonceSize]
	body, err := c.aead.Open(nil, nonce, pkt[headerSize+nonceSize:], header)
	if err != nil {
		return Announcement{}, drop(DropAuth, "")
	}
	return decodeBody(body)
}

func decodeBody(b []byte) (Announcement, error) {
	var a Announcement
	if len(b) < 18 {
		return a, drop(DropMalformed, "body too short")
	}
	a.Boot = binary.BigEndian.Uint64(b[0:8])
	a.Seq = binary.BigEndian.Uint64(b[8:16])
	flags, nameLen := b[16], int(b[17])
	a.Leaving = flags&1 != 0
	b = b[18:]

	if nameLen == 0 || nameLen > maxNameLen || len(b) < nameLen+2 {
		return Announcement{}, drop(DropMalformed, "bad node name length")
	}
	a.Node = string(b[:nameLen])
	b = b[nameLen:]

	urlLen := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if urlLen > maxURLLen || len(b) != urlLen {
		return Announcement{}, drop(DropMalformed, "bad route URL length")
	}
	a.RouteURL = string(b)

	if err := ValidateName(a.Node); err != nil {
		return Announcement{}, drop(DropMalformed, err.Error())
	}
	return a, nil
}

// ValidateName checks that s can be a node or cluster name: 1 to 64
// characters from [A-Za-z0-9_-]. Names become NATS subject tokens and
// server names, where dots, spaces and wildcards would change meaning.
func ValidateName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("name %q must be 1 to %d characters", s, maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '-' || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			return fmt.Errorf("name %q has character %q; use only letters, digits, '-' and '_'", s, c)
		}
	}
	return nil
}
