package app

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestParseGlobalOption(t *testing.T) {
	tests := []struct {
		name, input, want, err string
	}{
		{name: "ok/memory", input: `socketio {
			store memory
		}`, want: `{"store":{"module":"memory"}}`},
		{name: "ok/empty", input: `socketio`, want: `{}`},
		{name: "ok/redis", input: `socketio {
			store redis {
				address 10.0.0.1:6379 rediss://redis.example:6380/2
				username caddy
				password {env.REDIS_PASSWORD}
				db 3
				tls redis.internal
				key_prefix app1:
				timeout 20ms
			}
		}`, want: `{"store":{"addresses":["10.0.0.1:6379","rediss://redis.example:6380/2"],"db":3,"key_prefix":"app1:","module":"redis","password":"{env.REDIS_PASSWORD}","timeout":20000000,"tls":true,"tls_server_name":"redis.internal","username":"caddy"}}`},
		{name: "fail/unknown store", input: `socketio {
			store etcd
		}`, err: "socketio.stores.etcd"},
		{name: "fail/two stores", input: `socketio {
			store memory
			store memory
		}`, err: "store already specified"},
		{name: "fail/unknown option", input: `socketio {
			stores memory
		}`, err: "unrecognized option 'stores'"},
		{name: "fail/redis unknown option", input: `socketio {
			store redis {
				adress x
			}
		}`, err: "unrecognized option 'adress'"},
		{name: "fail/redis repeated option", input: `socketio {
			store redis {
				db 1
				db 2
			}
		}`, err: "db already specified"},
		{name: "fail/redis bad timeout", input: `socketio {
			store redis {
				timeout fast
			}
		}`, err: "invalid timeout"},
		{name: "fail/memory block", input: `socketio {
			store memory {
				size 1
			}
		}`, err: "unrecognized option 'size'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tt.input)
			got, err := parseGlobalOption(d, nil)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			app := got.(httpcaddyfile.App)
			if app.Name != "socketio" {
				t.Fatalf("app name %q", app.Name)
			}
			var norm map[string]any
			if err := json.Unmarshal(app.Value, &norm); err != nil {
				t.Fatal(err)
			}
			out, _ := json.Marshal(norm)
			if string(out) != tt.want {
				t.Fatalf("got  %s\nwant %s", out, tt.want)
			}
		})
	}
}
