package selection

import (
	"encoding/json"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

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
var _ caddyfile.Unmarshaler = (*SocketIOSelection)(nil)
