package engineio

import "errors"

// MaxHandshakeBytes bounds how much of a handshake response body the
// learner looks at. A real open packet is about 120 bytes (a few more with
// a long sid or extra upgrade names); anything that has not produced a
// complete open packet by then is not one.
const MaxHandshakeBytes = 4096

// Errors of the handshake readers.
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
