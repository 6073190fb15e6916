package caddytest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestCaddyfileErrors checks that every malformed socketio directive or
// lb_policy block is refused with a message that names the problem and
// its line, at adapt time, or at load time for what only provisioning can
// check.
func TestCaddyfileErrors(t *testing.T) {
	policy := func(block string) string {
		return ":8080 {\n\treverse_proxy 127.0.0.1:3001 {\n\t\tlb_policy socketio" + block + "\n\t}\n}\n"
	}
	handler := func(line string) string {
		return ":8080 {\n\t" + line + "\n\treverse_proxy 127.0.0.1:3001\n}\n"
	}
	tests := []struct {
		name, caddyfile, want string
	}{
		{"fail/policy stray argument", policy(" extra"), "wrong argument count"},
		{"fail/unknown option", policy(" {\n\t\t\tsticky yes\n\t\t}"), "unrecognized option 'sticky'"},
		{"fail/bad duration", policy(" {\n\t\t\tttl soon\n\t\t}"), "invalid ttl duration 'soon'"},
		{"fail/duration without unit", policy(" {\n\t\t\tttl 30\n\t\t}"), "invalid ttl duration '30'"},
		{"fail/zero ttl", policy(" {\n\t\t\tttl 0s\n\t\t}"), "must be positive"},
		{"fail/ttl missing", policy(" {\n\t\t\tttl\n\t\t}"), "wrong argument count"},
		{"fail/ttl twice on a line", policy(" {\n\t\t\tttl 1m 2m\n\t\t}"), "wrong argument count"},
		{"fail/repeated ttl", policy(" {\n\t\t\tttl 1m\n\t\t\tttl 2m\n\t\t}"), "ttl already specified"},
		{"fail/repeated fallback", policy(" {\n\t\t\tfallback random\n\t\t\tfallback least_conn\n\t\t}"), "fallback selection policy already specified"},
		{"fail/fallback missing", policy(" {\n\t\t\tfallback\n\t\t}"), "wrong argument count"},
		{"fail/unknown fallback", policy(" {\n\t\t\tfallback sticky\n\t\t}"), "http.reverse_proxy.selection_policies.sticky"},
		{"fail/fallback stray argument", policy(" {\n\t\t\tfallback least_conn now\n\t\t}"), "wrong argument count"},
		{"fail/fallback to itself", policy(" {\n\t\t\tfallback socketio\n\t\t}"), "cannot be its own fallback"},
		{"fail/max_sessions not a number", policy(" {\n\t\t\tmax_sessions lots\n\t\t}"), "invalid max_sessions 'lots'"},
		{"fail/max_sessions negative", policy(" {\n\t\t\tmax_sessions -5\n\t\t}"), "invalid max_sessions '-5'"},
		{"fail/repeated max_sessions", policy(" {\n\t\t\tmax_sessions 5\n\t\t\tmax_sessions 6\n\t\t}"), "max_sessions already specified"},
		{"fail/handler stray argument", handler("socketio /a/* /b/"), "wrong argument count"},
		{"fail/handler argument", handler("socketio socket.io"), "wrong argument count"},
		{"fail/handler unknown option", handler("socketio {\n\t\tprefix /a/\n\t}"), "unrecognized option 'prefix'"},
		{"fail/handler path twice", handler("socketio {\n\t\tpath /a/\n\t\tpath /b/\n\t}"), "path already specified"},
		{"fail/handler path missing", handler("socketio {\n\t\tpath\n\t}"), "wrong argument count"},
		{"fail/handler max_body not a size", handler("socketio {\n\t\tmax_body lots\n\t}"), "invalid max_body 'lots'"},
		{"fail/handler max_body zero", handler("socketio {\n\t\tmax_body 0\n\t}"), "invalid max_body '0'"},
		{"fail/handler max_body twice", handler("socketio {\n\t\tmax_body 1MB\n\t\tmax_body 2MB\n\t}"), "max_body already specified"},
		{"fail/handler max_body_memory not a size", handler("socketio {\n\t\tmax_body_memory lots\n\t}"), "invalid max_body_memory 'lots'"},
		{"fail/handler max_body_memory twice", handler("socketio {\n\t\tmax_body_memory 64MB\n\t\tmax_body_memory 64MB\n\t}"), "max_body_memory already specified"},
		{"fail/handler reconnect_cookie twice", handler("socketio {\n\t\treconnect_cookie\n\t\treconnect_cookie\n\t}"), "reconnect_cookie already specified"},
		{"fail/handler reconnect_cookie two names", handler("socketio {\n\t\treconnect_cookie a b\n\t}"), "wrong argument count"},
		{"fail/handler reconnect_cookie unknown option", handler("socketio {\n\t\treconnect_cookie {\n\t\t\tkey x\n\t\t}\n\t}"), "unrecognized reconnect_cookie option 'key'"},
		{"fail/handler reconnect_cookie secret missing", handler("socketio {\n\t\treconnect_cookie {\n\t\t\tsecret\n\t\t}\n\t}"), "wrong argument count"},
		{"fail/handler cookie twice", handler("socketio {\n\t\tcookie a\n\t\tcookie b\n\t}"), "cookie already specified"},
		{"fail/handler cookie stray argument", handler("socketio {\n\t\tcookie a b\n\t}"), "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tt.caddyfile), nil)
			if err == nil {
				t.Fatalf("adapted without error:\n%s", tt.caddyfile)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Errorf("error %q does not say where", err)
			}
		})
	}

	// these adapt, but provisioning refuses them
	loadErrors := []struct {
		name, caddyfile, want string
	}{
		{"fail/relative path", handler("socketio {\n\t\tpath chat/\n\t}"), "path must start with '/'"},
	}
	for _, tt := range loadErrors {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tt.caddyfile), nil)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var cfg caddy.Config
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			err = caddy.Validate(&cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
