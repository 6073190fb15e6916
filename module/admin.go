package module

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/redis"
)

func init() {
	caddy.RegisterModule(adminSessions{})
}

// adminSessions provides the /socketio/sessions endpoint of the admin
// API: what the process's pin store holds, for operators and tests.
type adminSessions struct{}

// CaddyModule returns the Caddy module information.
func (adminSessions) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.socketio",
		New: func() caddy.Module { return new(adminSessions) },
	}
}

// Routes returns the routes of the socketio admin API:
//
//   - GET /socketio/sessions: what the pin store holds;
//   - GET /socketio/upstreams: per upstream, its live sessions and
//     whether it drains;
//   - POST /socketio/upstreams/drain and /socketio/upstreams/undrain with
//     {"address": "<dial address>"}: the upstream takes no new sessions
//     (its sessions go on), or takes them again.
func (a adminSessions) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/socketio/sessions", Handler: caddy.AdminHandlerFunc(a.handleSessions)},
		{Pattern: "/socketio/upstreams", Handler: caddy.AdminHandlerFunc(handleUpstreams)},
		{Pattern: "/socketio/upstreams/drain", Handler: caddy.AdminHandlerFunc(handleDrain(true))},
		{Pattern: "/socketio/upstreams/undrain", Handler: caddy.AdminHandlerFunc(handleDrain(false))},
	}
}

// sessionsReport is the JSON answer of /socketio/sessions.
type sessionsReport struct {
	// Loaded is false when no socketio policy is loaded (no store).
	Loaded bool `json:"loaded"`
	// TTL and MaxSessions are the limits in force.
	TTL         string `json:"ttl,omitempty"`
	MaxSessions int    `json:"max_sessions,omitempty"`
	// Pins counts pins held, tombstones included; ByUpstream counts the
	// live ones per upstream dial address.
	Pins       int            `json:"pins"`
	Tombstones int            `json:"tombstones"`
	ByUpstream map[string]int `json:"by_upstream"`
	// Counters since the store was created.
	Pinned     uint64 `json:"pinned"`
	Collisions uint64 `json:"collisions"`
	Evicted    uint64 `json:"evicted"`
	Expired    uint64 `json:"expired"`
	Dropped    uint64 `json:"dropped"`
	Refused    uint64 `json:"refused"`
	// Store is "memory" or "redis"; Shared describes a shared store.
	Store  string        `json:"store,omitempty"`
	Shared *sharedReport `json:"shared,omitempty"`
}

// sharedReport is what a shared store reports: whether its backend is
// reachable and what this instance asked it, since the store was opened.
// Pins and the counters above are this instance's local layer.
type sharedReport struct {
	Reachable     bool   `json:"reachable"`
	RemoteLookups uint64 `json:"remote_lookups"`
	RemoteHits    uint64 `json:"remote_hits"`
	RemotePins    uint64 `json:"remote_pins"`
	Refreshed     uint64 `json:"refreshed"`
	DropsShared   uint64 `json:"drops_shared"`
	WritesLost    uint64 `json:"writes_lost"`
	Ignored       uint64 `json:"ignored"`
	Outages       uint64 `json:"outages"`
	Timeouts      uint64 `json:"timeouts"`
	Announced     uint64 `json:"announced"`
}

func (adminSessions) handleSessions(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	report := sessionsReport{ByUpstream: map[string]int{}}
	// one store is in use; a shared one wins over the memory store that a
	// configuration being unloaded may still hold
	store.Range(func(_ string, st store.Store) bool {
		stats := st.Stats()
		ttl, capacity := st.Limits()
		live, tombstones := st.Census()
		report = sessionsReport{
			Loaded: true, TTL: ttl.String(), MaxSessions: capacity,
			Pins: stats.Pins, Tombstones: tombstones, ByUpstream: live,
			Pinned: stats.Pinned, Collisions: stats.Collisions, Evicted: stats.Evicted,
			Expired: stats.Expired, Dropped: stats.Dropped, Refused: stats.Refused,
			Store: "memory",
		}
		rs, ok := st.(*redis.Store)
		if !ok {
			return true
		}
		c := rs.Counters()
		report.Store = "redis"
		report.Shared = &sharedReport{
			Reachable: rs.Reachable(), RemoteLookups: c.RemoteLookups, RemoteHits: c.RemoteHits,
			RemotePins: c.RemotePins, Refreshed: c.Refreshed, DropsShared: c.DropsShared,
			WritesLost: c.WritesLost, Ignored: c.Ignored, Outages: c.Outages, Timeouts: c.Timeouts, Announced: c.Announced,
		}
		return false
	})
	return writeJSON(w, report)
}

// upstreamReport is one upstream in the answer of /socketio/upstreams.
type upstreamReport struct {
	// Address is the upstream's dial address, as in the configuration.
	Address string `json:"address"`
	// Sessions counts its live pins.
	Sessions int `json:"sessions"`
	// Draining is true while it takes no new sessions.
	Draining bool `json:"draining"`
}

// handleUpstreams lists, sorted by address, the static upstreams of the
// loaded configurations and the upstreams that hold live sessions or
// drain.
func handleUpstreams(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	return writeJSON(w, struct {
		Upstreams []upstreamReport `json:"upstreams"`
	}{upstreamReports()})
}

func upstreamReports() []upstreamReport {
	sessions, _ := store.Census()
	for _, dial := range store.Draining() {
		sessions[dial] += 0
	}
	reports := make([]upstreamReport, 0, len(sessions))
	for dial, n := range sessions {
		reports = append(reports, upstreamReport{Address: dial, Sessions: n, Draining: store.IsDraining(dial)})
	}
	slices.SortFunc(reports, func(a, b upstreamReport) int { return strings.Compare(a.Address, b.Address) })
	return reports
}

// handleDrain marks the upstream named in the request body as draining
// (on) or not, and answers its report.
func handleDrain(on bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodPost {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
		}
		var req struct {
			Address string `json:"address"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf(`want {"address": "<upstream dial address>"}: %v`, err)}
		}
		if req.Address == "" || len(req.Address) > 255 || strings.ContainsFunc(req.Address, func(c rune) bool { return c <= ' ' || c > '~' }) {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("invalid upstream address %q", req.Address)}
		}
		// with a shared store, every instance drains: the change goes
		// there first, and is refused if it cannot (an instance that
		// drained alone would be undone by the shared set)
		var sharer store.DrainSharer
		store.Range(func(_ string, st store.Store) bool {
			sharer, _ = st.(store.DrainSharer)
			return sharer == nil
		})
		if sharer != nil {
			if err := sharer.ShareDrain(req.Address, on); err != nil {
				return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("not changed: %v", err)}
			}
		}
		if store.SetDraining(req.Address, on) {
			caddy.Log().Named("admin.api.socketio").Info("upstream drain changed", zap.String("upstream", req.Address), zap.Bool("draining", on))
		}
		report := upstreamReport{Address: req.Address, Draining: on}
		for _, u := range upstreamReports() {
			if u.Address == req.Address {
				report = u
			}
		}
		return writeJSON(w, report)
	}
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = adminSessions{}
