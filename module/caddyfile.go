package module

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("socketio", parseHandlerCaddyfile)
	// the handler must see requests before reverse_proxy does, in the
	// same route; ordering it here spares users an `order` line
	httpcaddyfile.RegisterDirectiveOrder("socketio", httpcaddyfile.Before, "reverse_proxy")
}

func parseHandlerCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	socketio [<matcher>] {
//		path     <prefix>
//		cookie   <name>
//		max_body <size>
//	}
//
// Like every handler directive, socketio takes an optional matcher token
// first (so `socketio /chat/*` restricts where it runs); the Engine.IO
// path itself is set with `path`.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "path":
			if h.Path != "" {
				return d.Err("path already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Path = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "max_body":
			if h.MaxBody != 0 {
				return d.Err("max_body already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(d.Val())
			if err != nil || size == 0 || size > math.MaxInt64 {
				return d.Errf("invalid max_body '%s': must be a positive size such as 1MB", d.Val())
			}
			h.MaxBody = int64(size)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "cookie":
			if h.Cookie != "" {
				return d.Err("cookie already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Cookie = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized option '%s'", d.Val())
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy socketio {
//		fallback     <policy> [<args...>]
//		ttl          <duration>
//		max_sessions <n>
//	}
//
// The fallback policy takes its own arguments and block, as after
// `lb_policy`.
func (s *SocketIOSelection) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "fallback":
			if s.FallbackRaw != nil {
				return d.Err("fallback selection policy already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			raw, err := loadFallbackPolicy(d)
			if err != nil {
				return err
			}
			s.FallbackRaw = raw
		case "ttl":
			if s.TTL != 0 {
				return d.Err("ttl already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			ttl, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("invalid ttl duration '%s': %v", d.Val(), err)
			}
			if ttl <= 0 {
				return d.Errf("invalid ttl duration '%s': must be positive", d.Val())
			}
			s.TTL = caddy.Duration(ttl)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "max_sessions":
			if s.MaxSessions != 0 {
				return d.Err("max_sessions already specified")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("invalid max_sessions '%s': must be a positive integer", d.Val())
			}
			s.MaxSessions = n
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized option '%s'", d.Val())
		}
	}
	return nil
}

// loadFallbackPolicy unmarshals the selection policy named by the
// dispenser's current token, with its arguments and block, as the
// reverse_proxy directive does for lb_policy.
func loadFallbackPolicy(d *caddyfile.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	if name == "socketio" {
		return nil, d.Err("the socketio policy cannot be its own fallback")
	}
	modID := "http.reverse_proxy.selection_policies." + name
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		return nil, err
	}
	sel, ok := unm.(reverseproxy.Selector)
	if !ok {
		return nil, d.Errf("module %s (%T) is not a reverseproxy.Selector", modID, unm)
	}
	return caddyconfig.JSONModuleObject(sel, "policy", name, nil), nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*SocketIOSelection)(nil)
)
