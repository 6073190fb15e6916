// Package app is the `socketio` Caddy app: the process-wide settings of
// the socketio modules, configured once per Caddy instance in the
// `socketio` global option. Today that is where pins are stored: in this
// process's memory (the default, as without the app) or in Redis, shared
// by several Caddy instances.
package app

import (
	"encoding/json"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the `socketio` app. It holds the pin store that every socketio
// selection policy of the configuration uses. Without it, pins stay in
// the memory of this process, as with `"store": {"module": "memory"}`.
//
// The store itself outlives config reloads (a reload must not forget
// which node owns each session, nor reconnect to Redis): configurations
// whose store settings are equal share one store.
type App struct {
	// Where pins are kept: a module of the `socketio.stores` namespace,
	// named by its "module" key: `memory` (the default) or `redis`.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=socketio.stores inline_key=module"`

	store StoreModule
}

// StoreModule is a pin store's configuration: a module of the
// socketio.stores namespace.
type StoreModule interface {
	caddy.Module
	// PoolKey names the store among the stores of the process: the
	// configurations whose stores have equal keys share one store.
	PoolKey() string
	// Open returns a new store. It must do no I/O: the store connects
	// in its Maintain method, if it has one (see store.Maintainer).
	Open() (store.Store, error)
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "socketio",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision loads the store module.
func (a *App) Provision(ctx caddy.Context) error {
	if a.StoreRaw == nil {
		a.store = new(MemoryStore)
		return nil
	}
	mod, err := ctx.LoadModule(a, "StoreRaw")
	if err != nil {
		return fmt.Errorf("loading socketio store module: %v", err)
	}
	a.store = mod.(StoreModule)
	return nil
}

// Start does nothing: the store starts with the first policy that
// acquires it (store.Acquire), so that `caddy validate` connects to
// nothing and a reload keeps the connection.
func (*App) Start() error { return nil }

// Stop does nothing: the store stops when the last policy releases it.
func (*App) Stop() error { return nil }

// Store returns the pool key and the opener of the configured store,
// for store.Acquire.
func (a *App) Store() (key string, open func() (store.Store, error)) {
	return a.store.PoolKey(), a.store.Open
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
