package agentd

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns prefix + "-" + 16 random lowercase base32 characters (80 bits).
func NewID(prefix string) string {
	var b [10]byte
	rand.Read(b[:]) // never fails on supported platforms (crypto/rand docs)
	var sb strings.Builder
	sb.Grow(len(prefix) + 17)
	sb.WriteString(prefix)
	sb.WriteByte('-')
	sb.WriteString(idEncoding.EncodeToString(b[:]))
	return sb.String()
}
