package module

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-socketio/caddy-socketio/internal/homecookie"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// TestReconnectCookie: a handshake answer sets the reconnect hint of its
// upstream; a later handshake that carries it goes back to that upstream
// (the fallback, `first`, would pick another) unless it drains; session
// requests keep going by sid (issue 13).
func TestReconnectCookie(t *testing.T) {
	h := testHandler(t)
	h.ReconnectCookie, h.ReconnectSecret = DefaultReconnectCookie, "shared secret"
	h.hint = homecookie.New(h.ReconnectSecret)
	policy := newTestPolicy(t)
	pool := testPool("a:1", "b:1")
	const handshake = "/socket.io/?EIO=4&transport=polling"
	open := `0{"sid":"reconnect00000000000%d","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}`
	serve := func(target, cookie string, n int) (*httptest.ResponseRecorder, string) {
		t.Helper()
		r := newRequest(http.MethodGet, target, "10.0.0.1")
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		next := &fakeProxy{policy: policy, pool: pool, status: 200, chunks: []string{strings.Replace(open, "%d", string(rune('0'+n)), 1)}}
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, r, next); err != nil {
			t.Fatal(err)
		}
		if next.chosen == nil {
			return rec, ""
		}
		return rec, next.chosen.Dial
	}

	// the first session lands on b (a drains for a moment)
	store.SetDraining("a:1", true)
	rec, dial := serve(handshake, "", 1)
	store.SetDraining("a:1", false)
	if dial != "b:1" {
		t.Fatalf("first handshake went to %q", dial)
	}
	setCookie := rec.Header().Get("Set-Cookie")
	c, err := http.ParseSetCookie(setCookie)
	if err != nil || c.Name != DefaultReconnectCookie || c.Path != "/socket.io/" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.MaxAge <= 0 {
		t.Fatalf("Set-Cookie %q (%v): want io_home, Path /socket.io/, HttpOnly, SameSite=Lax, not Secure on plain HTTP", setCookie, err)
	}
	if strings.Contains(c.Value, "b:1") {
		t.Fatalf("the hint %q reveals the upstream", c.Value)
	}
	hint := c.Name + "=" + c.Value

	tests := []struct {
		name, target, cookie string
		draining             string
		want                 string
	}{
		{"ok/reconnect goes home", handshake, hint, "", "b:1"},
		{"ok/home drains: the fallback", handshake, hint, "b:1", "a:1"},
		{"ok/forged hint: the fallback", handshake, DefaultReconnectCookie + "=AAAAAAAAAAAAAAAAAAAAAA", "", "a:1"},
		{"ok/no hint: the fallback", handshake, "", "", "a:1"},
		{"ok/session requests go by sid", "/socket.io/?EIO=4&transport=polling&sid=onA", hint, "", "a:1"},
	}
	policy.pin("onA", "a:1")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.draining != "" {
				store.SetDraining(tt.draining, true)
				defer store.SetDraining(tt.draining, false)
			}
			if _, dial := serve(tt.target, tt.cookie, i+2); dial != tt.want {
				t.Fatalf("routed to %q, want %q", dial, tt.want)
			}
		})
	}

	t.Run("ok/Secure on HTTPS", func(t *testing.T) {
		r := newRequest(http.MethodGet, handshake, "10.0.0.1")
		r.TLS = &tls.ConnectionState{}
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, r, &fakeProxy{policy: policy, pool: pool, status: 200, chunks: []string{strings.Replace(open, "%d", "9", 1)}}); err != nil {
			t.Fatal(err)
		}
		if c, err := http.ParseSetCookie(rec.Header().Get("Set-Cookie")); err != nil || !c.Secure {
			t.Fatalf("Set-Cookie %q on HTTPS is not Secure", rec.Header().Get("Set-Cookie"))
		}
	})
	t.Run("ok/off by default", func(t *testing.T) {
		rec := httptest.NewRecorder()
		if err := testHandler(t).ServeHTTP(rec, newRequest(http.MethodGet, handshake, "10.0.0.1"), &fakeProxy{policy: policy, pool: pool, status: 200, chunks: []string{strings.Replace(open, "%d", "8", 1)}}); err != nil {
			t.Fatal(err)
		}
		if sc := rec.Header().Get("Set-Cookie"); sc != "" {
			t.Fatalf("Set-Cookie %q without reconnect_cookie", sc)
		}
	})
}
