package selection

import (
	"fmt"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/internal/handoff"
)

// TestClientIPAgreesWithClientIPHash: the key the policy hashes is the one
// Caddy's client_ip_hash hashes, whatever Caddy's client IP variable holds
// (issue 10, item 9): a handshake placed by client_ip_hash and the
// session's later requests, routed by the policy's own hashing when their
// pin is unknown, must reach the same upstream.
func TestClientIPAgreesWithClientIPHash(t *testing.T) {
	dials := make([]string, 16)
	for i := range dials {
		dials[i] = fmt.Sprintf("10.9.0.%d:3000", i+1)
	}
	pool := testPool(dials...)
	tests := []struct {
		name, clientIP, want string
	}{
		{"ok/IPv4", "203.0.113.7", "203.0.113.7"},
		{"ok/IPv4 with port", "203.0.113.7:5000", "203.0.113.7"},
		{"ok/IPv6", "2001:db8::7", "2001:db8::7"},
		{"ok/IPv6 with zone", "fe80::1%eth0", "fe80::1%eth0"},
		{"ok/bracketed IPv6 with port", "[2001:db8::7]:443", "2001:db8::7"},
		// net.SplitHostPort fails on these, and client_ip_hash then
		// hashes the whole value
		{"ok/bracketed IPv6 without port", "[2001:db8::7]", "[2001:db8::7]"},
		{"ok/unclosed bracket", "[2001:db8::7", "[2001:db8::7"},
		{"ok/stray bracket", "a]:80", "a]:80"},
		// a unix-socket listener without trusted_proxies_unix: Caddy has
		// no client IP, and client_ip_hash hashes "", not the peer
		{"ok/empty", "", ""},
		{"ok/port only", ":80", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest("GET", "/socket.io/?EIO=4&transport=polling&sid=x", tt.clientIP)
			r.RemoteAddr = "192.0.2.1:1234"
			got := handoff.ClientIP(r)
			if got != tt.want {
				t.Fatalf("ClientIP() = %q, want %q", got, tt.want)
			}
			want := reverseproxy.ClientIPHashSelection{}.Select(pool, r, nil)
			if i := Hash(upstreamPool(pool), got); i < 0 || pool[i] != want {
				t.Fatalf("the policy hashes %q to upstream %d, client_ip_hash picks %s", got, i, want.Dial)
			}
		})
	}
}
