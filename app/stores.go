package app

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
	"github.com/caddy-socketio/caddy-socketio/internal/store/redis"
)

func init() {
	caddy.RegisterModule(new(MemoryStore))
	caddy.RegisterModule(new(RedisStore))
}

// MemoryStore keeps the pins in the memory of this Caddy process: the
// default. Each instance then knows only the sessions whose handshake it
// proxied; a restart forgets them all.
type MemoryStore struct{}

// CaddyModule returns the Caddy module information.
func (*MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "socketio.stores.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// PoolKey names the process's memory store.
func (*MemoryStore) PoolKey() string { return memory.ProcessKey }

// Open returns a new memory store.
func (*MemoryStore) Open() (store.Store, error) { return memory.Open() }

// RedisStore keeps the pins in Redis (6.0 or later) or Valkey, shared by
// every Caddy instance configured with the same server and key prefix, so
// that any instance routes a session to the node that minted it.
//
// Each instance keeps the pins it has seen in memory too: a request whose
// session the instance knows costs no round trip to Redis. A handshake's
// pin is written to Redis before the handshake's answer reaches the
// client (at most `timeout` later); a request with a session id the
// instance does not know reads Redis once (at most `timeout`). Pins live
// as long as the socketio policy's `ttl` without requests, in Redis too:
// their keys expire by themselves.
//
// When Redis does not answer within `timeout`, every instance goes on
// with the pins it knows, stops asking Redis until a background PING (one
// a second) gets an answer, and places new sessions by client-IP hash,
// which every instance computes alike; a log line marks each change.
// Caddy starts without Redis, and says so.
type RedisStore struct {
	// The Redis server: `host:port`, or a `redis://` or `rediss://` URL
	// (`rediss` turns TLS on; a URL may carry the user, password and
	// database). Several addresses are the seeds of a Redis Cluster.
	// Required. Accepts placeholders.
	Addresses []string `json:"addresses,omitempty"`

	// The ACL user name, if Redis has users. Accepts placeholders.
	Username string `json:"username,omitempty"`

	// The password (`requirepass`, or the ACL user's). Write a
	// placeholder such as `{env.REDIS_PASSWORD}`, so that the password
	// stays out of the configuration, the admin API and autosave.json;
	// it is replaced when the store is provisioned, and never logged.
	Password string `json:"password,omitempty"`

	// The database number (SELECT). Default: 0.
	DB int `json:"db,omitempty"`

	// Connect with TLS, verified against the system's roots.
	TLS bool `json:"tls,omitempty"`

	// The name the server's certificate must carry, when it is not the
	// address's host. Implies TLS.
	TLSServerName string `json:"tls_server_name,omitempty"`

	// Start every key with this prefix, so that one Redis can hold the
	// pins of several separate clusters. Default: `socketio:sid:`.
	// Accepts placeholders.
	KeyPrefix string `json:"key_prefix,omitempty"`

	// The longest a request waits for Redis: a handshake's pin write, or
	// the lookup of a session this instance does not know. When Redis
	// takes longer it is counted down (see above). Default: 50ms; at
	// most 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	cfg    redis.Config
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "socketio.stores.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// maxTimeout bounds Timeout: a request must never wait long for Redis.
const maxTimeout = 5 * time.Second

// Provision replaces placeholders and derives the connection settings.
func (r *RedisStore) Provision(ctx caddy.Context) error {
	// the store outlives this configuration: log through the process's
	// logger, not this configuration's
	r.logger = caddy.Log().Named("socketio.stores.redis")
	repl := caddy.NewReplacer()
	addrs := make([]string, 0, len(r.Addresses))
	for _, a := range r.Addresses {
		addrs = append(addrs, repl.ReplaceAll(a, ""))
	}
	r.cfg = redis.Config{
		Addresses:     addrs,
		Username:      repl.ReplaceAll(r.Username, ""),
		Password:      repl.ReplaceAll(r.Password, ""),
		DB:            r.DB,
		TLS:           r.TLS,
		TLSServerName: r.TLSServerName,
		KeyPrefix:     repl.ReplaceAll(r.KeyPrefix, ""),
		Timeout:       time.Duration(r.Timeout),
	}
	return nil
}

// Validate checks the settings; it connects to nothing.
func (r *RedisStore) Validate() error {
	if len(r.Addresses) == 0 {
		return errors.New("redis store: at least one address is required")
	}
	if r.DB < 0 {
		return fmt.Errorf("redis store: db must not be negative: %d", r.DB)
	}
	if r.Timeout < 0 || time.Duration(r.Timeout) > maxTimeout {
		return fmt.Errorf("redis store: timeout must be between 0 and %s: %s", maxTimeout, time.Duration(r.Timeout))
	}
	if err := r.cfg.Check(); err != nil {
		return fmt.Errorf("redis store: %v", err)
	}
	return nil
}

// PoolKey names the store by its connection settings (the password
// hashed), so that a reload with the same settings keeps the connection
// and the pins it knows.
func (r *RedisStore) PoolKey() string { return r.cfg.PoolKey() }

// Open returns a new Redis store; it connects when its maintenance
// starts.
func (r *RedisStore) Open() (store.Store, error) { return redis.Open(r.cfg, r.logger) }

// Interface guards
var (
	_ StoreModule       = (*MemoryStore)(nil)
	_ StoreModule       = (*RedisStore)(nil)
	_ caddy.Provisioner = (*RedisStore)(nil)
	_ caddy.Validator   = (*RedisStore)(nil)
)
