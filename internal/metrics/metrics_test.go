package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
	"github.com/caddy-socketio/caddy-socketio/internal/store/redis"
	"github.com/caddy-socketio/caddy-socketio/internal/store/redis/redistest"
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

// TestSharedStoreMetrics: with the redis store, the shared store's
// reachability, requests and round-trip latency are reported.
func TestSharedStoreMetrics(t *testing.T) {
	srv := redistest.Start(t, "")
	reg := prometheus.NewPedanticRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	h, err := store.Acquire("metrics-redis-test", func() (store.Store, error) {
		return redis.Open(redis.Config{Addresses: []string{srv.Addr}}, zap.NewNop())
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rs := h.Store.(*redis.Store)
	for deadline := time.Now().Add(10 * time.Second); !rs.Reachable() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	h.Acquire([]string{"10.0.0.1:3000"})
	h.Pin("sharedmetrics0000000", "10.0.0.1:3000", 1)
	var buf [store.MaxOwners]store.Owner
	h.Lookup("unknownhere000000000", buf[:0])

	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			switch {
			case m.GetHistogram() != nil:
				got[name] = float64(m.GetHistogram().GetSampleCount())
			case m.GetCounter() != nil:
				got[name] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[name] = m.GetGauge().GetValue()
			}
		}
	}
	for name, want := range map[string]float64{
		"caddy_socketio_shared_store_reachable":                1,
		"caddy_socketio_shared_store_requests_total/pin":       1,
		"caddy_socketio_shared_store_requests_total/lookup":    1,
		"caddy_socketio_shared_store_request_duration_seconds": 2,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}
