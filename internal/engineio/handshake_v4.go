package engineio

import (
	"encoding/json"
	"errors"
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
