package selection

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/app"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
)

// storeOf returns the pool key and opener of the store the `socketio`
// app configures, or of the process's memory store without the app.
func storeOf(ctx caddy.Context) (string, func() (store.Store, error), error) {
	a, err := ctx.AppIfConfigured("socketio")
	switch {
	case errors.Is(err, caddy.ErrNotConfigured):
		return memory.ProcessKey, memory.Open, nil
	case err != nil:
		return "", nil, fmt.Errorf("loading the socketio app: %v", err)
	}
	key, open := a.(*app.App).Store()
	return key, open, nil
}

// whileUnshared returns the fallback policy to place new sessions with
// st: fallback itself, unless st is shared by several Caddy instances and
// fallback is not already client-IP hashing. Then new sessions are placed
// by client-IP hash while the shared store is unreachable: each instance
// knows only its own pins then, and the next request of a session may
// reach another instance, which can only agree on the node by hashing the
// same client address.
func whileUnshared(st store.Store, fallback reverseproxy.Selector) reverseproxy.Selector {
	shared, ok := st.(store.Shared)
	if !ok {
		return fallback
	}
	if _, ipHash := fallback.(*reverseproxy.ClientIPHashSelection); ipHash {
		return fallback
	}
	return &unsharedFallback{shared: shared, fallback: fallback, ipHash: new(reverseproxy.ClientIPHashSelection)}
}

// unsharedFallback is a fallback policy that gives way to client-IP
// hashing while its shared store is unreachable.
type unsharedFallback struct {
	shared   store.Shared
	fallback reverseproxy.Selector
	ipHash   reverseproxy.Selector
}

// Select places a new session.
func (u *unsharedFallback) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if u.shared.Reachable() {
		return u.fallback.Select(pool, r, w)
	}
	return u.ipHash.Select(pool, r, w)
}

// Interface guards
var _ reverseproxy.Selector = (*unsharedFallback)(nil)
