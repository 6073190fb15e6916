package engineio

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// HandshakeSID returns the session id minted by a polling handshake
// response, in any framing an Engine.IO server sends:
//
//   - protocol v4 text: `0{"sid":…}`, packets separated by \x1e;
//   - protocol v3 text (Socket.IO v2, or v4 servers with allowEIO3):
//     `<length>:<packet>…`, e.g. `96:0{"sid":…}2:40`, where the length
//     counts the UTF-16 code units of the packet;
//   - protocol v3 binary framing (application/octet-stream):
//     `\x00<one byte per decimal digit of the length>\xff0{"sid":…}`;
//   - JSONP, for either protocol: `___eio[<n>]("<payload as a JS string>");`;
//
// compressed with gzip or deflate when contentEncoding says so (engine.io's
// httpCompression). body is the part of the response seen so far; when
// final is false and more bytes are needed, the error is ErrIncomplete.
// Decompressed output is capped at MaxHandshakeBytes, so a compression
// bomb costs at most that much memory.
func HandshakeSID(body []byte, contentEncoding string, final bool) (string, error) {
	plain, complete, err := decodeBody(body, contentEncoding)
	if err != nil {
		return "", err
	}
	// a compressed stream that has not ended cannot be judged final
	sid, err := payloadSID(plain, final && complete)
	if err == ErrIncomplete && final {
		return "", ErrNotOpenPacket
	}
	return sid, err
}

// payloadSID reads the open packet at the start of a decoded payload.
func payloadSID(p []byte, final bool) (string, error) {
	if len(p) == 0 {
		return "", incomplete(final)
	}
	switch c := p[0]; {
	case c == '0':
		return OpenPacketSID(p, final)
	case c >= '1' && c <= '9':
		return textV3SID(p, final)
	case c == 0x00:
		return binaryV3SID(p, final)
	case c == '_':
		return jsonpSID(p, final)
	default:
		return "", ErrNotOpenPacket
	}
}

// maxLengthDigits bounds the length prefix of a v3 packet: a handshake
// packet is a few hundred characters at most.
const maxLengthDigits = 6

// textV3SID reads `<length>:0{…}`.
func textV3SID(p []byte, final bool) (string, error) {
	n, i := 0, 0
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		if i == maxLengthDigits {
			return "", ErrNotOpenPacket
		}
		n = n*10 + int(p[i]-'0')
	}
	if i == len(p) {
		return "", incomplete(final)
	}
	if p[i] != ':' {
		return "", ErrNotOpenPacket
	}
	return lengthPrefixedSID(p[i+1:], n, final)
}

// binaryV3SID reads the binary framing of a string packet:
// 0x00, the length as one byte per decimal digit, 0xff, the packet.
func binaryV3SID(p []byte, final bool) (string, error) {
	n, i := 0, 1
	for ; i < len(p) && p[i] != 0xff; i++ {
		if p[i] > 9 || i > maxLengthDigits {
			return "", ErrNotOpenPacket
		}
		n = n*10 + int(p[i])
	}
	if i == len(p) {
		return "", incomplete(final)
	}
	if i == 1 {
		return "", ErrNotOpenPacket
	}
	return lengthPrefixedSID(p[i+1:], n, final)
}

// lengthPrefixedSID reads an open packet that must be exactly length long,
// counted in UTF-16 code units as engine.io-parser v2 counts JavaScript
// string lengths (for the ASCII of a real handshake, bytes).
func lengthPrefixedSID(p []byte, length int, final bool) (string, error) {
	if length < 2 {
		return "", ErrNotOpenPacket
	}
	obj, _, err := openPacketData(p, final)
	if err != nil {
		return "", err
	}
	if 1+utf16Len(obj) != length {
		return "", ErrNotOpenPacket
	}
	return sidFromJSON(obj)
}

// utf16Len returns the length of the UTF-8 text b in UTF-16 code units.
func utf16Len(b []byte) int {
	n := 0
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

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
