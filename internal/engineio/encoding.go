package engineio

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"strings"
)

// ErrUnsupportedEncoding means the response is compressed in a way the
// learner does not read (engine.io only uses gzip and deflate).
var ErrUnsupportedEncoding = errors.New("unsupported content encoding")

// decodeBody returns the decoded prefix of a response body given its
// Content-Encoding, whether the encoded stream was complete, and an error
// for encodings it cannot read. Output is capped at MaxHandshakeBytes.
func decodeBody(body []byte, contentEncoding string) (plain []byte, complete bool, err error) {
	switch enc := strings.ToLower(strings.TrimSpace(contentEncoding)); enc {
	case "", "identity":
		return body, true, nil
	case "gzip", "x-gzip":
		if len(body) < 10 {
			// not even a gzip header yet
			return nil, false, nil
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, false, nil
			}
			return nil, false, ErrNotOpenPacket
		}
		return readCapped(zr)
	case "deflate":
		// HTTP's deflate is zlib-wrapped (RFC 9110 §8.4.1.2), which is
		// what Node's zlib.createDeflate sends; some servers send raw
		// deflate, so fall back to it when the zlib header is wrong
		if len(body) < 2 {
			return nil, false, nil
		}
		if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
			return readCapped(zr)
		}
		return readCapped(flate.NewReader(bytes.NewReader(body)))
	default:
		return nil, false, ErrUnsupportedEncoding
	}
}

// readCapped reads a decompressor to its end or to MaxHandshakeBytes.
// complete reports whether the compressed stream ended properly; a
// stream cut short (the rest of the body is still to come) gives what
// could be decoded so far.
func readCapped(r io.Reader) ([]byte, bool, error) {
	out, err := io.ReadAll(io.LimitReader(r, MaxHandshakeBytes+1))
	if len(out) > MaxHandshakeBytes {
		// a handshake is a few hundred bytes; this is not one (or a bomb)
		return nil, false, ErrNotOpenPacket
	}
	switch {
	case err == nil:
		return out, true, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return out, false, nil
	default:
		return nil, false, ErrNotOpenPacket
	}
}
