// Package caddysocketio registers the caddy-socketio modules: the
// `socketio` load-balancing selection policy
// (http.reverse_proxy.selection_policies.socketio) and the `socketio` HTTP
// handler (http.handlers.socketio). Build them into Caddy with
//
//	xcaddy build --with github.com/caddy-socketio/caddy-socketio
package caddysocketio

import (
	// the modules register themselves
	_ "github.com/caddy-socketio/caddy-socketio/module"
	_ "github.com/caddy-socketio/caddy-socketio/selection"
)
