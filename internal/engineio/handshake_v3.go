package engineio

import "unicode/utf8"

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
