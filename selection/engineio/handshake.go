package engineio

import (
	"encoding/json"
	"errors"
)

// MaxHandshakeBytes bounds how much of a handshake response body the
// learner looks at. A real open packet is about 120 bytes (a few more with
// a long sid or extra upgrade names); anything that has not produced a
// complete open packet by then is not one.
const MaxHandshakeBytes = 4096

// Errors returned by OpenPacketSID.
var (
	// ErrIncomplete means the body seen so far is a valid prefix of an
	// open packet: read more and try again.
	ErrIncomplete = errors.New("incomplete open packet")
	// ErrNotOpenPacket means the body is not a handshake answer this
	// package can read; the response must be passed on unlearned.
	ErrNotOpenPacket = errors.New("not an engine.io open packet")
	// ErrBadSID means the open packet carries a sid that ParseQuery would
	// refuse, so a client could never route by it.
	ErrBadSID = errors.New("open packet carries an invalid sid")
)

// openPacket is the part of the handshake data this package reads. The
// JSON is parsed rather than scanned because servers order its keys
// differently (zishang520's Go server writes "sid" last).
type openPacket struct {
	SID string `json:"sid"`
}

// OpenPacketSID returns the session id minted by an Engine.IO v4 polling
// handshake response body: the open packet, type '0', followed by its JSON
// data, e.g. `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],...}`,
// possibly followed by \x1e and more packets (protocol v4 separates
// packets in a payload with the record separator).
//
// body is the prefix of the response seen so far. When final is false and
// body is a valid but unfinished prefix, it returns ErrIncomplete.
func OpenPacketSID(body []byte, final bool) (string, error) {
	if len(body) == 0 {
		return "", incomplete(final)
	}
	if body[0] != '0' {
		return "", ErrNotOpenPacket
	}
	data := body[1:]
	if len(data) == 0 {
		return "", incomplete(final)
	}
	if data[0] != '{' {
		return "", ErrNotOpenPacket
	}
	end, err := jsonObjectEnd(data)
	if err != nil {
		if errors.Is(err, ErrIncomplete) {
			return "", incomplete(final)
		}
		return "", err
	}
	// A JSON object cannot continue past its closing brace, so the packet
	// is complete here even if more of the body is to come; what follows
	// must be the end of the body or the record separator.
	if end < len(data) && data[end] != 0x1e {
		return "", ErrNotOpenPacket
	}
	return sidFromJSON(data[:end])
}

func incomplete(final bool) error {
	if final {
		return ErrNotOpenPacket
	}
	return ErrIncomplete
}

// sidFromJSON decodes the open packet's JSON object and validates its sid.
func sidFromJSON(obj []byte) (string, error) {
	var p openPacket
	if err := json.Unmarshal(obj, &p); err != nil {
		return "", ErrNotOpenPacket
	}
	if p.SID == "" {
		return "", ErrNotOpenPacket
	}
	if _, err := decodeSID(p.SID); err != nil || containsQueryDelims(p.SID) {
		return "", ErrBadSID
	}
	return p.SID, nil
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

// jsonObjectEnd returns the index just past the JSON object that starts at
// data[0] == '{'. It only tracks strings and nesting; json.Unmarshal checks
// the rest. It returns ErrIncomplete when data ends inside the object.
func jsonObjectEnd(data []byte) (int, error) {
	depth := 0
	inString, escaped := false, false
	for i, c := range data {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				return i + 1, nil
			}
			if depth < 0 {
				return 0, ErrNotOpenPacket
			}
		}
	}
	return 0, ErrIncomplete
}

// errorBody is the JSON engine.io sends with its 4xx answers, e.g.
// {"code":1,"message":"Session ID unknown"}.
type errorBody struct {
	Code *int `json:"code"`
}

// CodeUnknownSID is engine.io's error code for a sid the server does not
// know ("Session ID unknown").
const CodeUnknownSID = 1

// IsSessionUnknown reports whether body is engine.io's "Session ID
// unknown" error: the server that received the request does not (or no
// longer) know its sid.
func IsSessionUnknown(body []byte) bool {
	if len(body) == 0 || body[0] != '{' {
		return false
	}
	end, err := jsonObjectEnd(body)
	if err != nil {
		return false
	}
	var e errorBody
	if json.Unmarshal(body[:end], &e) != nil || e.Code == nil {
		return false
	}
	return *e.Code == CodeUnknownSID
}
