// Command caddy is Caddy with the standard modules and this working
// tree's caddy-socketio: the tests that need more than one Caddy process
// (caddytest/shared_store_test.go) build it with `go build`, so that a
// second instance runs the very code under test.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-socketio/caddy-socketio"
)

func main() {
	caddycmd.Main()
}
