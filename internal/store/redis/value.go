package redis

import (
	"strings"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// A sid's pins live under one Redis key, prefix+sid, as one small string
// value that expires by itself (SET PX, refreshed by PEXPIRE):
//
//	sio1
//	L0123456789abcdef 10.0.0.1:3000
//	G89abcdef01234567 10.0.0.2:3000
//
// The first line is the format's version; each further line is one owner
// of the sid: its state (L live, G gone: a tombstone), the hash of the
// handshake's client address in 16 hex digits, a space and the owner's
// dial address. A sid has one owner unless two nodes minted it (see
// store.MaxOwners). The Lua script (script.go) reads and writes the same
// format.

// version is the first line of every value this plugin writes.
const version = "sio1"

// maxValue bounds the values read: MaxOwners lines of at most
// 18+maxDial bytes, and the version line.
const maxValue = len(version) + store.MaxOwners*(1+18+maxDial)

// maxDial bounds a dial address in a value.
const maxDial = 255

// owner is one line of a value.
type owner struct {
	dial   string
	client uint64
	gone   bool
}

// appendLine appends o's line, without its newline, to b.
func appendLine(b []byte, o owner) []byte {
	if o.gone {
		b = append(b, 'G')
	} else {
		b = append(b, 'L')
	}
	b = appendHex(b, o.client)
	b = append(b, ' ')
	return append(b, o.dial...)
}

func appendHex(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}

// clientArg is client as the Lua script takes it.
func clientArg(client uint64) string {
	return string(appendHex(make([]byte, 0, 16), client))
}

// encode returns the value holding owners.
func encode(owners []owner) string {
	b := []byte(version)
	for _, o := range owners {
		b = append(b, '\n')
		b = appendLine(b, o)
	}
	return string(b)
}

// decode parses a value. It refuses anything this plugin would not have
// written: another version or program, a truncated write, more owners
// than MaxOwners, a dial address that is not a plain host:port or path.
func decode(v string) ([]owner, bool) {
	if len(v) > maxValue {
		return nil, false
	}
	lines := strings.Split(v, "\n")
	if lines[0] != version || len(lines) < 2 || len(lines)-1 > store.MaxOwners {
		return nil, false
	}
	owners := make([]owner, 0, len(lines)-1)
	for _, line := range lines[1:] {
		if len(line) < 19 || line[17] != ' ' || (line[0] != 'L' && line[0] != 'G') {
			return nil, false
		}
		client, ok := parseHex(line[1:17])
		if !ok {
			return nil, false
		}
		dial := line[18:]
		if !validDial(dial) {
			return nil, false
		}
		owners = append(owners, owner{dial: dial, client: client, gone: line[0] == 'G'})
	}
	return owners, true
}

// parseHex parses 16 lower-case hex digits, as appendHex writes them.
func parseHex(h string) (uint64, bool) {
	var v uint64
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uint64(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// validDial reports whether dial can stand in a value: printable ASCII
// without spaces, at most maxDial bytes.
func validDial(dial string) bool {
	if dial == "" || len(dial) > maxDial {
		return false
	}
	for i := 0; i < len(dial); i++ {
		if c := dial[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
