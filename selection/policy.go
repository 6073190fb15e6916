package selection

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-socketio/caddy-socketio/internal/engineio"
	"github.com/caddy-socketio/caddy-socketio/internal/handoff"
	"github.com/caddy-socketio/caddy-socketio/internal/metrics"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

func init() {
	caddy.RegisterModule(new(SocketIOSelection))
}

// SocketIOSelection is a load-balancing selection policy that keeps every
// request of an Engine.IO (Socket.IO) session on the upstream that minted
// the session's id.
//
// Engine.IO clients open a session with a polling handshake, then send
// more polls, POSTs and a WebSocket upgrade that carry `?sid=`; every one
// of them must reach the same node, or the node answers 400 "Session ID
// unknown" and the client starts over. This policy routes:
//
//   - a request whose sid is pinned to an available upstream of the pool
//     to that upstream;
//   - a request whose sid is pinned to an upstream that is unavailable
//     (down, or at max_requests) to no upstream for now, keeping the pin:
//     reverse_proxy selects again until lb_try_duration is spent, so the
//     session goes on if its owner is back in time, and gets 503 if not;
//   - a request whose sid is pinned to an upstream that left the
//     configuration or answered "Session ID unknown" to no upstream at all
//     (503): no other node knows the session, so the client should start a
//     new one;
//   - a request whose sid is not pinned, or is pinned by several upstreams
//     (servers minting sequential ids) none or several of them for this
//     client's address, by client-IP hashing (the same hash as
//     `client_ip_hash`), but never to an upstream holding another
//     client's pin of the sid (503 instead);
//   - a request without sid (a new session, or anything that is not
//     Engine.IO) to the fallback policy.
//
// Pins are learned from handshake responses by the `socketio` HTTP
// handler, which must run in the same route before `reverse_proxy`.
// Without the handler the policy still keeps every session of a client
// with a stable address on one node, as long as the fallback is
// `client_ip_hash` (the default), because handshakes and session requests
// are then hashed alike.
//
// Pins are shared by every socketio policy of the process and survive
// config reloads. When several policies are loaded, the store uses the
// largest `ttl` and the largest `max_sessions` among them.
type SocketIOSelection struct {
	// The policy that places new sessions (requests without a sid).
	// Default: `client_ip_hash`, which honours the server's
	// `trusted_proxies`. Any selection policy works; `least_conn` spreads
	// clients behind one NAT evenly but needs the `socketio` handler, and
	// Socket.IO's connection state recovery then only works with an
	// adapter that shares state across nodes.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	// How long a pin lives without a request routed by it. A live polling
	// session makes a request at least every pingInterval (25 s by
	// default); a session that upgraded to WebSocket makes none. Must
	// exceed the servers' pingInterval + pingTimeout. Default: 90s.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// The most pins kept at once. When a new session would exceed it, the
	// pin idle the longest is evicted (its session then falls back to
	// client-IP hashing). Each pin costs about 145 bytes.
	// Default: 1000000.
	MaxSessions int `json:"max_sessions,omitempty"`

	fallback reverseproxy.Selector
	store    *store.Handle
	dials    []string
	logger   *zap.Logger
	released bool // Cleanup ran

	warnNoHandler sync.Once
}

// CaddyModule returns the Caddy module information.
func (*SocketIOSelection) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.socketio",
		New: func() caddy.Module { return new(SocketIOSelection) },
	}
}

// Provision sets up the policy: it loads the fallback policy, joins the
// process's pin store and registers the static upstreams of the enclosing
// reverse_proxy, so that pins to an upstream are dropped when the last
// configuration using it is unloaded.
func (s *SocketIOSelection) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if s.TTL == 0 {
		s.TTL = caddy.Duration(store.DefaultTTL)
	}
	if s.MaxSessions == 0 {
		s.MaxSessions = store.DefaultCapacity
	}
	if s.FallbackRaw == nil {
		s.FallbackRaw = caddyconfig.JSONModuleObject(reverseproxy.ClientIPHashSelection{}, "policy", "client_ip_hash", nil)
	}
	mod, err := ctx.LoadModule(s, "FallbackRaw")
	if err != nil {
		return fmt.Errorf("loading fallback selection policy: %v", err)
	}
	s.fallback = mod.(reverseproxy.Selector)
	if err := metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}

	proxy := enclosingProxy(ctx)
	if proxy != nil {
		for _, u := range proxy.Upstreams {
			s.dials = append(s.dials, u.Dial)
		}
		s.checkHealthChecks(proxy)
	}
	key, open, err := storeOf(ctx)
	if err != nil {
		return err
	}
	s.store, err = store.Acquire(key, open)
	if err != nil {
		return fmt.Errorf("opening the session store: %v", err)
	}
	s.fallback = whileUnshared(s.store.Store, s.fallback)
	s.store.Acquire(s.dials)
	s.store.SetLimits(s, store.Limits{TTL: time.Duration(s.TTL), Capacity: s.MaxSessions})
	return nil
}

// longPoll is how long below which unhealthy_latency would count healthy
// Engine.IO long-polls as failures: engine.io's default pingInterval of
// 25 s plus a margin.
const longPoll = 30 * time.Second

// enclosingProxy returns the nearest reverse_proxy handler above this
// policy (it may also be the fallback of another policy), whose static
// upstreams and health checks are already decoded while its modules are
// provisioned.
func enclosingProxy(ctx caddy.Context) *reverseproxy.Handler {
	mods := ctx.Modules()
	for i := len(mods) - 1; i >= 0; i-- {
		if h, ok := mods[i].(*reverseproxy.Handler); ok {
			return h
		}
	}
	return nil
}

// checkHealthChecks warns about passive health checks that count 400
// answers as failures: engine.io answers 400 "Session ID unknown" to every
// stale session, so a node restart elsewhere would take healthy nodes out
// of the pool one after the other.
func (s *SocketIOSelection) checkHealthChecks(proxy *reverseproxy.Handler) {
	if proxy.HealthChecks == nil || proxy.HealthChecks.Passive == nil {
		return
	}
	passive := proxy.HealthChecks.Passive
	if latency := time.Duration(passive.UnhealthyLatency); latency > 0 && latency < longPoll {
		// a long-poll is held open by the server until it has something
		// to send or its pingInterval (25 s by default) runs out
		s.logger.Warn("passive health checks count slow answers as failures, but Engine.IO long-polls are held open up to the servers' pingInterval (25s by default): raise unhealthy_latency above it or remove it",
			zap.Duration("unhealthy_latency", latency))
	}
	for _, status := range passive.UnhealthyStatus {
		if caddyhttp.StatusCodeMatches(http.StatusBadRequest, status) {
			s.logger.Warn("passive health checks count 400 answers as failures; engine.io answers 400 \"Session ID unknown\" to stale sessions, which is not a node failure: remove 400 and 4xx from unhealthy_status",
				zap.Int("unhealthy_status", status))
			return
		}
	}
}

// Validate checks the policy's settings.
func (s *SocketIOSelection) Validate() error {
	if s.TTL < 0 {
		return fmt.Errorf("ttl must not be negative: %s", time.Duration(s.TTL))
	}
	if s.TTL > 0 && time.Duration(s.TTL) < time.Second {
		return fmt.Errorf("ttl must be at least 1s: %s", time.Duration(s.TTL))
	}
	if s.MaxSessions < 0 {
		return fmt.Errorf("max_sessions must not be negative: %d", s.MaxSessions)
	}
	return nil
}

// Cleanup releases the policy's hold on the pin store and on the dial
// addresses of its upstreams.
//
// Requests of the old configuration may still be in flight after a reload
// (long-polls finishing within the grace period) and pin their handshakes
// through this policy, so the store stays reachable; it only stops being
// swept once no policy holds it.
func (s *SocketIOSelection) Cleanup() error {
	if s.store == nil || s.released {
		return nil
	}
	s.released = true
	s.store.ClearLimits(s)
	s.store.Release(s.dials)
	s.store.Close()
	return nil
}

// Select returns the upstream that must serve r, or nil if none may.
func (s *SocketIOSelection) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	up, _ := s.selectRoute(pool, r, w)
	return up
}

// selectRoute is Select, also saying which route it took.
func (s *SocketIOSelection) selectRoute(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) (*reverseproxy.Upstream, Route) {
	ho := handoff.From(r)
	up, route := s.choose(pool, r, w, ho)
	dial := ""
	if up != nil {
		dial = up.Dial
	}
	ho.Choose(s.store, dial, route == RouteOwner)
	routeCounters()[route].Inc()
	if c := s.logger.Check(zapcore.DebugLevel, "selected upstream"); c != nil {
		fields := []zap.Field{zap.Stringer("route", route)}
		if up != nil {
			fields = append(fields, zap.String("upstream", up.Dial))
		}
		c.Write(fields...)
	}
	return up, route
}

func (s *SocketIOSelection) choose(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter, ho *handoff.Handoff) (*reverseproxy.Upstream, Route) {
	q, parsed := ho.Query(r)
	if !parsed {
		var err error
		if q, err = engineio.ParseQuery(r.URL.RawQuery); err != nil {
			if !engineio.ClaimsEngineIO(r.URL.RawQuery) {
				// an application's own request with an odd "sid"
				return s.placeNew(pool, r, w), RouteNew
			}
			// ambiguous or malformed Engine.IO: the handler answers 400
			// for these; on its own the policy must not guess which node
			// to send it to
			return nil, RouteRefused
		}
	}
	if !q.IsEngineIO() || q.SID == "" {
		if q.IsEngineIO() && q.Transport == engineio.TransportPolling && ho == nil {
			s.warnNoLearning()
		}
		if q.IsEngineIO() && ho.HasHome() && s.sharedReachable() {
			if up := home(pool, ho); up != nil {
				return up, RouteHome
			}
		}
		return s.placeNew(pool, r, w), RouteNew
	}
	var buf [store.MaxOwners]store.Owner
	owners := s.store.Lookup(q.SID, buf[:0])
	i, o, route := Resolve(upstreamPool(pool), owners, handoff.ClientIP(r))
	if route == RouteOwner {
		s.store.Touch(owners[o])
	}
	if i < 0 {
		// RouteOwnerDown keeps the pin of an owner that is only
		// unavailable (see Resolve); reverse_proxy answers 503 or retries
		return nil, route
	}
	return pool[i], route
}

// sharedReachable reports whether the policy's store, if shared by
// several instances, is reachable. While it is not, new sessions are placed
// by client-IP hash only (see whileUnshared), reconnect hints included:
// the other instances could not find such a session's node.
func (s *SocketIOSelection) sharedReachable() bool {
	shared, ok := s.store.Store.(store.Shared)
	return !ok || shared.Reachable()
}

// home returns the upstream that the handshake's reconnect hint names, if
// it may take a new session: available and not draining.
func home(pool reverseproxy.UpstreamPool, ho *handoff.Handoff) *reverseproxy.Upstream {
	for _, u := range pool {
		if ho.IsHome(u.Dial) {
			if u.Available() && !store.IsDraining(u.Dial) {
				return u
			}
			return nil
		}
	}
	return nil
}

// placeNew asks the fallback policy for an upstream, hiding from it the
// upstreams that drain (see store.SetDraining): they take no new session,
// even if every upstream drains.
func (s *SocketIOSelection) placeNew(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if store.AnyDraining() {
		kept := make(reverseproxy.UpstreamPool, 0, len(pool))
		for _, u := range pool {
			if !store.IsDraining(u.Dial) {
				kept = append(kept, u)
			}
		}
		pool = kept
	}
	return s.fallback.Select(pool, r, w)
}

// warnNoLearning warns, once, when a polling handshake is placed by a
// fallback other than client-IP hashing and no socketio handler is there
// to learn where it went: the session's next requests would then be routed
// by client IP, which may pick another node.
func (s *SocketIOSelection) warnNoLearning() {
	if _, ipHash := s.fallback.(*reverseproxy.ClientIPHashSelection); ipHash {
		return
	}
	s.warnNoHandler.Do(func() {
		s.logger.Warn("new Engine.IO sessions are placed by a fallback other than client_ip_hash, but no socketio handler learns where they go; add the socketio directive to the route of this reverse_proxy",
			zap.String("fallback", fmt.Sprintf("%T", s.fallback)))
	})
}

// routeCounters are the requests_total counters, by Route.
var routeCounters = sync.OnceValue(func() (c [routeCount]prometheus.Counter) {
	for r := range c {
		c[r] = metrics.Requests(Route(r).String())
	}
	return c
})

func upstreamPool(pool reverseproxy.UpstreamPool) Pool[*reverseproxy.Upstream] {
	return Pool[*reverseproxy.Upstream]{Upstreams: pool, Dial: upstreamDial, Available: upstreamAvailable}
}

func upstreamDial(u *reverseproxy.Upstream) string    { return u.Dial }
func upstreamAvailable(u *reverseproxy.Upstream) bool { return u.Available() }

// Interface guards
var (
	_ reverseproxy.Selector = (*SocketIOSelection)(nil)
	_ caddy.Provisioner     = (*SocketIOSelection)(nil)
	_ caddy.Validator       = (*SocketIOSelection)(nil)
	_ caddy.CleanerUpper    = (*SocketIOSelection)(nil)
)
