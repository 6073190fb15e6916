// Package handoff is where the socketio handler and the socketio
// selection policy of one request meet.
//
// The handler parses the request's Engine.IO query and attaches a Handoff
// to the request; the policy reads the query from it and records which
// upstream it chose and whether that upstream owns the request's session;
// when the response comes back, the handler pins or drops the session
// through the Handoff, in the store the policy used. Calls run one way:
// handler → Handoff → store, and policy → Handoff → store; neither module
// needs the other's internals.
//
// Caddy's Selector.Select(pool, r, w) has no other channel than the
// request: it receives a clone of the request that shares its context, so
// a request variable set by the handler is what the policy finds, and
// what the policy writes into it is visible to the handler afterwards.
package handoff

import (
	"net"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-socketio/caddy-socketio/internal/engineio"
	"github.com/caddy-socketio/caddy-socketio/internal/homecookie"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// VarKey is the request variable that carries the Handoff.
const VarKey = "socketio.handoff"

// Handoff carries one Engine.IO request from the handler to the policy
// that routes it, and the policy's choice back. The zero value is ready
// for Attach.
type Handoff struct {
	// Query is the request's Engine.IO query as the handler parsed it.
	query    engineio.Query
	rawQuery string
	req      *http.Request

	// the reconnect hint the handshake carries, if any (see SetHome)
	hint      *homecookie.Hint
	homeToken string

	// set by Choose, overwritten on every retry
	store  store.Store
	dial   string
	owner  bool
	chosen bool
}

// Attach records the request and its parsed query in h and makes h
// reachable from the request's context. h is usually embedded in a
// larger per-request value of the handler, so that this costs no
// allocation of its own.
func Attach(h *Handoff, r *http.Request, q engineio.Query) {
	h.query, h.rawQuery, h.req = q, r.URL.RawQuery, r
	caddyhttp.SetVar(r.Context(), VarKey, h)
}

// From returns the Handoff attached to r's context, or nil.
func From(r *http.Request) *Handoff {
	h, _ := caddyhttp.GetVar(r.Context(), VarKey).(*Handoff)
	return h
}

// Query returns the Engine.IO query the handler parsed, if r still
// carries that very query (a rewrite between the handler and the proxy
// may have changed it).
func (h *Handoff) Query(r *http.Request) (engineio.Query, bool) {
	if h == nil || r.URL.RawQuery != h.rawQuery {
		return engineio.Query{}, false
	}
	return h.query, true
}

// SetHome records that the request carries the reconnect hint token,
// to be checked with hint.
func (h *Handoff) SetHome(hint *homecookie.Hint, token string) {
	h.hint, h.homeToken = hint, token
}

// HasHome reports whether the request carries a reconnect hint.
func (h *Handoff) HasHome() bool { return h != nil && h.homeToken != "" }

// IsHome reports whether the request's reconnect hint names the upstream
// with the dial address.
func (h *Handoff) IsHome(dial string) bool {
	return h.HasHome() && h.hint.Names(h.homeToken, dial)
}

// SID returns the session id of the request, if it has one.
func (h *Handoff) SID() string { return h.query.SID }

// Choose records the policy's choice: the upstream dial address ("" for
// none), whether it owns the request's session, and the store where the
// session's pins live. Select calls it on every try.
func (h *Handoff) Choose(st store.Store, dial string, owner bool) {
	if h == nil {
		return
	}
	h.store, h.dial, h.owner, h.chosen = st, dial, owner, dial != ""
}

// Chosen returns the upstream the policy chose, if a socketio policy
// chose one.
func (h *Handoff) Chosen() (dial string, ok bool) {
	if h == nil {
		return "", false
	}
	return h.dial, h.chosen
}

// ToOwner reports whether the request went to the owner of its session.
func (h *Handoff) ToOwner() bool { return h != nil && h.chosen && h.owner }

// Pin records that the chosen upstream minted sid for this request's
// client.
func (h *Handoff) Pin(sid string) store.PinResult {
	return h.store.Pin(sid, h.dial, store.ClientHash(ClientIP(h.req)))
}

// Disown drops the pin of the request's session to the chosen upstream:
// the upstream answered that it does not know the session. It reports
// whether a live pin was dropped.
func (h *Handoff) Disown() bool {
	if !h.ToOwner() || h.query.SID == "" {
		return false
	}
	return h.store.DropDial(h.query.SID, h.dial)
}

// ClientIP returns the key Caddy's client_ip_hash policy hashes for r:
// the client address Caddy determined (honouring trusted_proxies), without
// a port, and nothing else: when Caddy has none (a unix-socket listener
// without trusted_proxies_unix, an unparsable peer address) it is empty
// for both, so that a handshake placed by client_ip_hash and the
// session's later requests agree. It is also the key that tells clients
// of colliding sids apart.
func ClientIP(r *http.Request) string {
	addr, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	// what client_ip_hash does: net.SplitHostPort, or the whole value if
	// that fails. The usual values (an IP, no port) fail it, and it
	// allocates its error, so the cases it must fail are answered first:
	// no colon at all, or more than one outside brackets (a bare IPv6)
	if colons := strings.Count(addr, ":"); colons == 0 || (colons > 1 && !strings.HasPrefix(addr, "[")) {
		return addr
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
