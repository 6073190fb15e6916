package caddytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// newH3Transport speaks HTTP/3 only, trusting the test CA.
func newH3Transport(roots *x509.CertPool) *http3.Transport {
	return &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
}

// TestH3Polling runs the polling sessions of TestH2Polling over HTTP/3
// (QUIC on the HTTPS port's UDP twin).
func TestH3Polling(t *testing.T) {
	nodes, cert, _ := httpsCluster(t)
	const sessions, rounds = 30, 4
	tr := newH3Transport(cert.Roots)
	defer tr.Close()
	before := statsOf(t, nodes)
	run := runSessions(sessions, 20*time.Second, func(ctx context.Context, i int) (string, error) {
		c := httpsClient(tr, 3)
		return pollingSession(ctx, c, rounds)
	})
	after := checkSessions(t, nodes, before, run, sessions)
	if n := after.Handshakes - before.Handshakes; n != sessions {
		t.Errorf("nodes saw %d handshakes for %d sessions", n, sessions)
	}
}

// TestH3WebSocket upgrades sessions to WebSockets over HTTP/3 extended
// CONNECT (RFC 9220; quic-go's server enables it by default).
func TestH3WebSocket(t *testing.T) {
	webSocketSessions(t, 3, func(roots *x509.CertPool) (http.RoundTripper, func()) {
		tr := newH3Transport(roots)
		return tr, func() { _ = tr.Close() }
	}, h3Connect)
}
