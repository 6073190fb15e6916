// Package engineio reads the parts of the Engine.IO protocol that a load
// balancer needs: what a request is (handshake, poll, upgrade probe), which
// session it belongs to, and which session id a handshake response minted.
//
// Everything here treats its input as untrusted and never allocates on the
// paths that run for every request.
package engineio

import (
	"errors"
	"net/url"
	"strings"
)

// Transport is the value of the transport query parameter.
type Transport uint8

// Transports known to Engine.IO. WebTransport never reaches an HTTP/1.1 or
// plain HTTP/2 handler, so it is reported as TransportUnknown.
const (
	TransportNone Transport = iota
	TransportPolling
	TransportWebSocket
	TransportUnknown
)

// String returns the protocol name of t.
func (t Transport) String() string {
	switch t {
	case TransportNone:
		return ""
	case TransportPolling:
		return "polling"
	case TransportWebSocket:
		return "websocket"
	default:
		return "unknown"
	}
}

// Query holds the Engine.IO parameters of a request's query string.
type Query struct {
	// EIO is the protocol revision (3 or 4 today); 0 when absent.
	EIO int
	// Transport is the requested transport.
	Transport Transport
	// SID is the session id, percent-decoded; empty when absent. When the
	// raw value needs no decoding it shares memory with the raw query.
	SID string
	// JSONP is true when the request carries j=<n>: an old-browser polling
	// transport whose responses wrap the payload in a script.
	JSONP bool
}

// IsEngineIO reports whether q names an Engine.IO request: every request an
// Engine.IO client makes carries both EIO and transport, so a request
// without them (the client bundle, an application's own query strings with
// a "sid") is never treated as one.
func (q Query) IsEngineIO() bool {
	return q.EIO != 0 && q.Transport != TransportNone
}

// Errors returned by ParseQuery. Each one is a client error: the request
// is malformed and must not be routed by its session id.
var (
	ErrRepeatedParam = errors.New("engine.io parameter repeated")
	ErrBadEIO        = errors.New("invalid EIO protocol version")
)

// ParseQuery extracts the Engine.IO parameters from a raw (still
// percent-encoded) query string without allocating, except to decode a
// sid that is percent-encoded.
//
// Rules, chosen so that the proxy and every backend agree on what a request
// means:
//   - EIO, transport and sid may appear at most once. Servers read repeated
//     parameters differently (Node's querystring makes an array, Go and
//     Python take the first), so a repeated sid could be routed by one
//     value and served by another.
//   - A present sid must be 1..MaxSIDLength visible ASCII characters after
//     decoding. engine.io treats "sid=" as a handshake while a proxy sees a
//     session request: refuse rather than guess.
//   - EIO must be a decimal number from 1 to 99.
func ParseQuery(raw string) (Query, error) {
	var q Query
	var seenEIO, seenTransport, seenSID bool
	for raw != "" {
		var key, val string
		key, val, raw = nextParam(raw)
		switch key {
		case "EIO":
			if seenEIO {
				return Query{}, ErrRepeatedParam
			}
			seenEIO = true
			v, ok := parseEIO(val)
			if !ok {
				return Query{}, ErrBadEIO
			}
			q.EIO = v
		case "transport":
			if seenTransport {
				return Query{}, ErrRepeatedParam
			}
			seenTransport = true
			if needsUnescape(val) {
				// engine.io decodes values as it does keys
				if v, err := url.QueryUnescape(val); err == nil {
					val = v
				}
			}
			q.Transport = parseTransport(val)
		case "sid":
			if seenSID {
				return Query{}, ErrRepeatedParam
			}
			seenSID = true
			sid, err := decodeSID(val)
			if err != nil {
				return Query{}, err
			}
			q.SID = sid
		case "j":
			q.JSONP = true
		}
	}
	return q, nil
}

// ClaimsEngineIO reports whether a raw query names both EIO and transport,
// as every Engine.IO request does, however malformed its values. When
// ParseQuery fails, it tells an Engine.IO request that must be refused
// from an application's own request that merely has an odd "sid".
func ClaimsEngineIO(raw string) bool {
	var eio, transport bool
	for raw != "" && !(eio && transport) {
		var key string
		key, _, raw = nextParam(raw)
		switch key {
		case "EIO":
			eio = true
		case "transport":
			transport = true
		}
	}
	return eio && transport
}

// nextParam splits the first key=value pair off a raw query and returns
// its key, percent-decoded (servers decode keys too: "%73id" is a sid to
// Node, Go and Python alike, so it must be one here), its raw value, and
// the rest of the query.
func nextParam(raw string) (key, val, rest string) {
	var pair string
	pair, rest, _ = strings.Cut(raw, "&")
	key, val, _ = strings.Cut(pair, "=")
	if needsUnescape(key) {
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
	}
	return key, val, rest
}

// needsUnescape reports whether s holds a percent-escape or a '+'.
// strings.ContainsAny builds a lookup table on every call, which costs
// more than scanning a query parameter.
func needsUnescape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c == '+' {
			return true
		}
	}
	return false
}

func parseEIO(s string) (int, bool) {
	if len(s) == 0 || len(s) > 2 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n > 0
}

func parseTransport(s string) Transport {
	switch s {
	case "polling":
		return TransportPolling
	case "websocket":
		return TransportWebSocket
	default:
		return TransportUnknown
	}
}
