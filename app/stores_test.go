package app

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestRedisStore(t *testing.T) {
	t.Setenv("SOCKETIO_APP_TEST_PASSWORD", "hunter2")
	provisioned := func(t *testing.T, r RedisStore) *RedisStore {
		t.Helper()
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		defer cancel()
		if err := r.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return &r
	}

	t.Run("ok/placeholders replaced, password only hashed into the key", func(t *testing.T) {
		r := provisioned(t, RedisStore{Addresses: []string{"127.0.0.1:6379"}, Password: "{env.SOCKETIO_APP_TEST_PASSWORD}"})
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
		if r.cfg.Password != "hunter2" {
			t.Fatalf("password %q, want the environment's", r.cfg.Password)
		}
		if strings.Contains(r.PoolKey(), "hunter2") {
			t.Fatal("password in the pool key")
		}
	})
	t.Run("ok/equal settings share a store, others do not", func(t *testing.T) {
		a := provisioned(t, RedisStore{Addresses: []string{"127.0.0.1:6379"}})
		b := provisioned(t, RedisStore{Addresses: []string{"127.0.0.1:6379"}})
		c := provisioned(t, RedisStore{Addresses: []string{"127.0.0.1:6379"}, KeyPrefix: "other:"})
		if a.PoolKey() != b.PoolKey() || a.PoolKey() == c.PoolKey() {
			t.Fatalf("keys %s %s %s", a.PoolKey(), b.PoolKey(), c.PoolKey())
		}
	})
	for _, tt := range []struct {
		name string
		r    RedisStore
		err  string
	}{
		{"fail/no address", RedisStore{}, "at least one address"},
		{"fail/negative db", RedisStore{Addresses: []string{"a:1"}, DB: -1}, "db must not be negative"},
		{"fail/timeout too long", RedisStore{Addresses: []string{"a:1"}, Timeout: caddy.Duration(time.Minute)}, "timeout must be between"},
		{"fail/bad URL, password not echoed", RedisStore{Addresses: []string{"redis://:hunter2@[::1"}}, "invalid Redis URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := provisioned(t, tt.r).Validate()
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("password in the error: %v", err)
			}
		})
	}
}
