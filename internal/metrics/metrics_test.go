package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
)

// TestRegisterTwiceAndGather: several socketio modules of one
// configuration register the same collectors into its registry, and a
// pedantic registry (what Caddy uses) accepts what they collect.
func TestRegisterTwiceAndGather(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for i := range 2 {
		if err := Register(reg); err != nil {
			t.Fatalf("Register #%d: %v", i+1, err)
		}
	}
	h, err := store.Acquire("metrics-test", memory.Open)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Pin("a", "10.0.0.1:3000", 1)
	h.Pin("b", "10.0.0.1:3000", 2)
	h.Pin("c", "10.0.0.2:3000", 3)
	h.DropDial("c", "10.0.0.2:3000")
	Requests("owner").Inc()

	if _, err := reg.Gather(); err != nil {
		t.Fatalf("Gather: %v", err)
	}
	if n := testutil.CollectAndCount(pins, "caddy_socketio_sessions"); n != 1 {
		t.Errorf("%d sessions series, want 1 (one upstream with live pins)", n)
	}
	if v := testutil.ToFloat64(requests.WithLabelValues("owner")); v != 1 {
		t.Errorf("requests_total{route=owner} = %v, want 1", v)
	}
}
