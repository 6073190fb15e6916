package engineio

import (
	"bytes"
	"encoding/json"
	"strings"
)

var jsonpHead = []byte("___eio[")

// jsonpSID reads `___eio[<n>]("<payload>");`: engine.io's JSONP polling
// wraps the payload in a call whose argument is JSON.stringify(payload).
func jsonpSID(p []byte, final bool) (string, error) {
	if len(p) < len(jsonpHead) {
		if bytes.HasPrefix(jsonpHead, p) {
			return "", incomplete(final)
		}
		return "", ErrNotOpenPacket
	}
	if !bytes.HasPrefix(p, jsonpHead) {
		return "", ErrNotOpenPacket
	}
	i := len(jsonpHead)
	start := i
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		if i-start == maxLengthDigits {
			return "", ErrNotOpenPacket
		}
	}
	rest := p[i:]
	switch {
	case i == start && len(rest) > 0:
		return "", ErrNotOpenPacket
	case len(rest) < 3:
		if bytes.HasPrefix([]byte(`]("`), rest) {
			return "", incomplete(final)
		}
		return "", ErrNotOpenPacket
	case !bytes.HasPrefix(rest, []byte(`]("`)):
		return "", ErrNotOpenPacket
	}
	lit := rest[2:]
	end, err := jsonStringEnd(lit)
	if err == ErrIncomplete {
		return "", incomplete(final)
	}
	if err != nil {
		return "", err
	}
	var payload string
	if json.Unmarshal(lit[:end], &payload) != nil {
		return "", ErrNotOpenPacket
	}
	// the argument is the whole payload: judge it as complete (and never
	// as another JSONP wrapper)
	if strings.HasPrefix(payload, "_") {
		return "", ErrNotOpenPacket
	}
	sid, err := payloadSID([]byte(payload), true)
	if err != nil {
		return "", ErrNotOpenPacket
	}
	return sid, nil
}

// jsonStringEnd returns the index just past the JSON string literal that
// starts at s[0] == '"'.
func jsonStringEnd(s []byte) (int, error) {
	if len(s) == 0 || s[0] != '"' {
		return 0, ErrNotOpenPacket
	}
	escaped := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case escaped:
			escaped = false
		case c == '\\':
			escaped = true
		case c == '"':
			return i + 1, nil
		case c < 0x20:
			return 0, ErrNotOpenPacket
		}
	}
	return 0, ErrIncomplete
}
