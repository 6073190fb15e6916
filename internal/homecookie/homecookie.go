// Package homecookie makes and checks the reconnect hint of the socketio
// handler: a cookie, set on each handshake response, that names the
// upstream which served the client's last session, so that the client's
// next handshake (a reconnect) can go back to it.
//
// The cookie names the upstream by a token, an HMAC of its dial address
// under a key: it reveals no address, and nobody without the key can make
// one that names a given upstream. The policy still sends a hinted
// handshake home only if that upstream is available and not draining, so
// a token cannot steer anyone to a node that is down, and it is never
// used for requests of a session (those go by sid).
package homecookie

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
)

// TokenLen is the length of a token: 128 bits of HMAC, base64url.
const TokenLen = 22

// Hint makes and checks tokens under one key.
type Hint struct {
	key    []byte
	tokens sync.Map // dial address -> token
}

// New returns a Hint keyed by secret, or, if secret is empty, by the
// process's random key (the same for every configuration of the process,
// so that reloads keep hints valid; several Caddy instances must share a
// secret to read each other's hints).
func New(secret string) *Hint {
	if secret == "" {
		return &Hint{key: processKey()}
	}
	mac := hmac.New(sha256.New, []byte("caddy-socketio reconnect hint key"))
	mac.Write([]byte(secret))
	return &Hint{key: mac.Sum(nil)}
}

var processKey = sync.OnceValue(func() []byte {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return key
})

// Token returns the token that names the upstream with the dial address.
func (h *Hint) Token(dial string) string {
	if t, ok := h.tokens.Load(dial); ok {
		return t.(string)
	}
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(dial))
	t := base64.RawURLEncoding.EncodeToString(mac.Sum(nil))[:TokenLen]
	h.tokens.Store(dial, t)
	return t
}

// Names reports whether token names the upstream with the dial address.
func (h *Hint) Names(token, dial string) bool {
	return len(token) == TokenLen && subtle.ConstantTimeCompare([]byte(token), []byte(h.Token(dial))) == 1
}

// Valid reports whether s has the form of a token, so that a cookie that
// cannot be one is ignored before any work.
func Valid(s string) bool {
	if len(s) != TokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
