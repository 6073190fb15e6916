package engineio

import (
	"bytes"
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

// OpenPacketSID returns the session id minted by an Engine.IO v4 polling
// handshake response body: the open packet, type '0', followed by its JSON
// data, e.g. `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],...}`,
// possibly followed by \x1e and more packets (protocol v4 separates
// packets in a payload with the record separator).
//
// body is the prefix of the response seen so far. When final is false and
// body is a valid but unfinished prefix, it returns ErrIncomplete.
func OpenPacketSID(body []byte, final bool) (string, error) {
	obj, rest, err := openPacketData(body, final)
	if err != nil {
		return "", err
	}
	// What follows the object must be the end of the body or the record
	// separator; until that is known the answer must wait, so that a body
	// is judged the same however it was split into writes.
	if len(rest) == 0 && !final {
		return "", ErrIncomplete
	}
	if len(rest) > 0 && rest[0] != 0x1e {
		return "", ErrNotOpenPacket
	}
	return sidFromJSON(obj)
}

// openPacketData splits an open packet at the start of p, `0{…}`, into its
// JSON object and what follows it.
func openPacketData(p []byte, final bool) (obj, rest []byte, err error) {
	switch {
	case len(p) == 0:
		return nil, nil, incomplete(final)
	case p[0] != '0':
		return nil, nil, ErrNotOpenPacket
	case len(p) == 1:
		return nil, nil, incomplete(final)
	case p[1] != '{':
		return nil, nil, ErrNotOpenPacket
	}
	data := p[1:]
	end, err := jsonObjectEnd(data)
	if errors.Is(err, ErrIncomplete) {
		return nil, nil, incomplete(final)
	}
	if err != nil {
		return nil, nil, err
	}
	return data[:end], data[end:], nil
}

func incomplete(final bool) error {
	if final {
		return ErrNotOpenPacket
	}
	return ErrIncomplete
}

// sidFromJSON decodes the open packet's JSON object and validates its sid.
// The JSON is parsed rather than scanned because servers order its keys
// differently (zishang520's Go server writes "sid" last); the key is
// matched exactly, as JSON.parse in the client does, where a struct field
// would match "SID" or "ſid" too.
func sidFromJSON(obj []byte) (string, error) {
	raw, ok := jsonMember(obj, "sid")
	if !ok {
		return "", ErrNotOpenPacket
	}
	var sid string
	if err := json.Unmarshal(raw, &sid); err != nil || sid == "" {
		return "", ErrNotOpenPacket
	}
	if !ValidSID(sid) {
		return "", ErrBadSID
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

// jsonMember returns the raw value of the member named exactly key of the
// JSON object obj (the last one, if repeated, as JSON.parse keeps).
func jsonMember(obj []byte, key string) (json.RawMessage, bool) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(obj, &members); err != nil {
		return nil, false
	}
	raw, ok := members[key]
	return raw, ok
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

// CodeUnknownSID is engine.io's error code for a sid the server does not
// know ("Session ID unknown").
const CodeUnknownSID = 1

// IsSessionUnknown reports whether body is a server's "Session ID unknown"
// answer: the server that received the request does not (or no longer)
// know its sid. engine.io (Node, and the Go port) answers
// {"code":1,"message":"Session ID unknown"}; python-engineio answers the
// JSON string "Invalid session <sid>".
func IsSessionUnknown(body []byte) bool {
	if len(body) == 0 {
		return false
	}
	switch body[0] {
	case '{':
		end, err := jsonObjectEnd(body)
		if err != nil {
			return false
		}
		raw, ok := jsonMember(body[:end], "code")
		if !ok {
			return false
		}
		var code int
		return json.Unmarshal(raw, &code) == nil && code == CodeUnknownSID
	case '"':
		// the message names the sid, so a long sid may not fit in what
		// the caller kept of the body: the prefix decides
		if !bytes.HasPrefix(body, []byte(`"Invalid session `)) {
			return false
		}
		end, err := jsonStringEnd(body)
		if errors.Is(err, ErrIncomplete) {
			return true
		}
		var msg string
		return err == nil && json.Unmarshal(body[:end], &msg) == nil
	default:
		return false
	}
}
