package module

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// TestAdminDrain: the drain endpoints take one JSON object naming a dial
// address, refuse anything else with a 4xx, and change the process's
// drain set.
func TestAdminDrain(t *testing.T) {
	const dial = "10.9.9.9:3000"
	t.Cleanup(func() { store.SetDraining(dial, false) })
	tests := []struct {
		name, method, path, body string
		status                   int
		draining                 bool
	}{
		{"fail/GET", http.MethodGet, "/socketio/upstreams/drain", "", http.StatusMethodNotAllowed, false},
		{"fail/not JSON", http.MethodPost, "/socketio/upstreams/drain", "10.9.9.9:3000", http.StatusBadRequest, false},
		{"fail/unknown field", http.MethodPost, "/socketio/upstreams/drain", `{"address":"` + dial + `","all":true}`, http.StatusBadRequest, false},
		{"fail/empty address", http.MethodPost, "/socketio/upstreams/drain", `{"address":""}`, http.StatusBadRequest, false},
		{"fail/control characters", http.MethodPost, "/socketio/upstreams/drain", `{"address":"a\nb"}`, http.StatusBadRequest, false},
		{"fail/too large", http.MethodPost, "/socketio/upstreams/drain", `{"address":"` + strings.Repeat("a", 5000) + `"}`, http.StatusBadRequest, false},
		{"ok/drain", http.MethodPost, "/socketio/upstreams/drain", `{"address":"` + dial + `"}`, http.StatusOK, true},
		{"ok/drain again", http.MethodPost, "/socketio/upstreams/drain", `{"address":"` + dial + `"}`, http.StatusOK, true},
		{"ok/undrain", http.MethodPost, "/socketio/upstreams/undrain", `{"address":"` + dial + `"}`, http.StatusOK, false},
	}
	routes := map[string]caddy.AdminHandler{}
	for _, r := range (adminSessions{}).Routes() {
		routes[r.Pattern] = r.Handler
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := routes[tt.path].ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			status := http.StatusOK
			var apiErr caddy.APIError
			if errors.As(err, &apiErr) {
				status = apiErr.HTTPStatus
			} else if err != nil {
				t.Fatalf("error %v is not an APIError", err)
			}
			if status != tt.status {
				t.Fatalf("status %d, want %d (%v)", status, tt.status, err)
			}
			if store.IsDraining(dial) != tt.draining {
				t.Fatalf("draining %v, want %v", store.IsDraining(dial), tt.draining)
			}
			if status == http.StatusOK {
				var u upstreamReport
				if err := json.NewDecoder(rec.Body).Decode(&u); err != nil || u.Address != dial || u.Draining != tt.draining {
					t.Fatalf("answer %+v (%v)", u, err)
				}
			}
		})
	}
}
