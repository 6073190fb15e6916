package engineio

import (
	"errors"
	"net/url"
)

// Session ids (sid) are opaque strings minted by the server: 20 characters
// (Node, python-engineio), 24 (zishang520's Go port), 32 hex (old
// python-engineio), 36 (UUIDs: netty-socketio, custom generateId), or
// sequential numbers ("1", "2", …, googollee/go-socket.io). These are the
// rules for every sid the proxy reads, from a query or from a server.

// MaxSIDLength is the longest session id accepted in a request, in bytes
// after percent-decoding. Real servers mint 20 (Node, python-engineio),
// 24 (zishang520), 32 (old python-engineio) or 36 (UUIDs) characters; the
// bound leaves room for custom generateId functions while keeping a hostile
// client from making the pin store hash or copy kilobytes.
const MaxSIDLength = 128

// Errors about a request's sid. Each one is a client error: the request is
// malformed and must not be routed by its session id.
var (
	ErrEmptySID   = errors.New("empty sid")
	ErrSIDTooLong = errors.New("sid too long")
	ErrSIDInvalid = errors.New("sid contains invalid characters")
)

// decodeSID validates and, when needed, percent-decodes a raw sid value.
func decodeSID(raw string) (string, error) {
	if raw == "" {
		return "", ErrEmptySID
	}
	// a percent-encoded sid decodes to at most a third of its length, so
	// anything beyond three times the bound cannot be valid: refuse it
	// before spending any work on it
	if len(raw) > 3*MaxSIDLength {
		return "", ErrSIDTooLong
	}
	// the usual sid needs no decoding: validate it in the same pass that
	// looks for escapes
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '%' || c == '+':
			return decodeEscapedSID(raw)
		case c <= ' ' || c >= 0x7f:
			return "", ErrSIDInvalid
		}
	}
	if len(raw) > MaxSIDLength {
		return "", ErrSIDTooLong
	}
	return raw, nil
}

func decodeEscapedSID(raw string) (string, error) {
	sid, err := url.QueryUnescape(raw)
	if err != nil {
		return "", ErrSIDInvalid
	}
	if len(sid) > MaxSIDLength {
		return "", ErrSIDTooLong
	}
	if len(sid) == 0 {
		return "", ErrEmptySID
	}
	for i := 0; i < len(sid); i++ {
		if c := sid[i]; c <= ' ' || c >= 0x7f {
			return "", ErrSIDInvalid
		}
	}
	return sid, nil
}

// ValidSID reports whether a session id minted by a server (in an open
// packet or an io cookie) can be pinned: a client can send it back in a
// query string unchanged and ParseQuery reads it as the same sid.
func ValidSID(sid string) bool {
	if sid == "" {
		return false
	}
	_, err := decodeSID(sid)
	return err == nil && !containsQueryDelims(sid)
}

// containsQueryDelims reports whether a minted sid holds bytes that change
// meaning in a query string: clients put the sid in the query unencoded
// (engine.io-client and python-engineio do not escape it), so a sid with
// '&', '=', '%', '+' or '#' would reach the proxy as something else.
func containsQueryDelims(sid string) bool {
	for i := 0; i < len(sid); i++ {
		switch sid[i] {
		case '&', '=', '%', '+', '#':
			return true
		}
	}
	return false
}
