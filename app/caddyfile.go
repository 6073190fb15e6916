package app

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("socketio", parseGlobalOption)
}

// parseGlobalOption sets up the socketio app from the `socketio` global
// option. Syntax:
//
//	{
//		socketio {
//			store memory
//			store redis {
//				address    <host:port|redis://…|rediss://…>...
//				username   <name>
//				password   <password>      # e.g. {env.REDIS_PASSWORD}
//				db         <n>
//				tls        [<server_name>]
//				key_prefix <prefix>
//				timeout    <duration>
//			}
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("socketio global option already specified")
	}
	app := new(App)
	d.Next() // consume option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "store":
			if app.StoreRaw != nil {
				return nil, d.Err("store already specified")
			}
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "socketio.stores."+name)
			if err != nil {
				return nil, err
			}
			app.StoreRaw = caddyconfig.JSONModuleObject(unm, "module", name, nil)
		default:
			return nil, d.Errf("unrecognized option '%s'", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "socketio", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the memory store: `store memory` takes no
// argument nor block.
func (*MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume store name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("unrecognized option '%s'", d.Val())
	}
	return nil
}

// UnmarshalCaddyfile sets up the Redis store from the block of `store
// redis`; see parseGlobalOption for the syntax.
func (r *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume store name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s already specified", opt)
		}
		seen[opt] = true
		switch opt {
		case "address":
			r.Addresses = d.RemainingArgs()
			if len(r.Addresses) == 0 {
				return d.ArgErr()
			}
		case "username", "password", "key_prefix":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch opt {
			case "username":
				r.Username = d.Val()
			case "password":
				r.Password = d.Val()
			default:
				r.KeyPrefix = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "db":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("invalid db '%s': must be a non-negative integer", d.Val())
			}
			r.DB = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "tls":
			r.TLS = true
			if d.NextArg() {
				r.TLSServerName = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("invalid timeout '%s': must be a positive duration", d.Val())
			}
			r.Timeout = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized option '%s'", opt)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)
