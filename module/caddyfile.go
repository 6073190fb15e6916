package module

import (
	"math"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
//		max_body        <size>
//		max_body_memory <size>
//		reconnect_cookie [<name>] {
//			secret <key>
//		}
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
			if err := parseSize(d, &h.MaxBody); err != nil {
				return err
			}
		case "max_body_memory":
			if err := parseSize(d, &h.MaxBodyMemory); err != nil {
				return err
			}
		case "reconnect_cookie":
			if h.ReconnectCookie != "" {
				return d.Err("reconnect_cookie already specified")
			}
			h.ReconnectCookie = DefaultReconnectCookie
			if d.NextArg() {
				h.ReconnectCookie = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "secret":
					if h.ReconnectSecret != "" {
						return d.Err("secret already specified")
					}
					if !d.NextArg() {
						return d.ArgErr()
					}
					h.ReconnectSecret = d.Val()
					if d.NextArg() {
						return d.ArgErr()
					}
				default:
					return d.Errf("unrecognized reconnect_cookie option '%s'", d.Val())
				}
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

// parseSize sets *dst from the option's one argument, a positive size
// such as 1MB.
func parseSize(d *caddyfile.Dispenser, dst *int64) error {
	name := d.Val()
	if *dst != 0 {
		return d.Errf("%s already specified", name)
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	size, err := humanize.ParseBytes(d.Val())
	if err != nil || size == 0 || size > math.MaxInt64 {
		return d.Errf("invalid %s '%s': must be a positive size such as 1MB", name, d.Val())
	}
	*dst = int64(size)
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
