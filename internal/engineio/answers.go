package engineio

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Answers of Engine.IO servers that the proxy acts on.

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
