// Package caddysocketio registers the caddy-socketio modules: the
// `socketio` load-balancing selection policy
// (http.reverse_proxy.selection_policies.socketio), the `socketio` HTTP
// handler (http.handlers.socketio), and the `socketio` app with its pin
// stores (socketio.stores.memory, socketio.stores.redis). Build them into
// Caddy with
//
//	xcaddy build --with github.com/caddy-socketio/caddy-socketio
package caddysocketio

import (
	// the modules register themselves
	_ "github.com/caddy-socketio/caddy-socketio/app"
	_ "github.com/caddy-socketio/caddy-socketio/module"
	_ "github.com/caddy-socketio/caddy-socketio/selection"
)
