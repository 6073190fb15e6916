// Package metrics holds the Prometheus metrics of the socketio modules.
//
// Caddy gives each loaded configuration its own registry (what the admin
// endpoint's /metrics serves). The collectors here are made once per
// process and registered into every configuration's registry as it is
// provisioned (Register), as Caddy's reverse_proxy does with its own: a
// counter keeps counting across config reloads, and the registry of the
// running configuration always serves it.
package metrics

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/redis"
)

const namespace, subsystem = "caddy", "socketio"

var (
	once sync.Once

	requests       *prometheus.CounterVec
	handshakes     *prometheus.CounterVec
	sessionUnknown *prometheus.CounterVec
	refused        *prometheus.CounterVec
	pins           *storeCollector
)

func initCollectors() {
	once.Do(func() {
		requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "requests_total",
			Help: "Requests routed by the socketio selection policy, by route: owner, owner_down, unknown, new, refused.",
		}, []string{"route"})
		handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "handshakes_total",
			Help: "Engine.IO handshakes learned (sessions pinned) by the socketio handler, by upstream.",
		}, []string{"upstream"})
		sessionUnknown = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "session_unknown_total",
			Help: `Engine.IO 400 "Session ID unknown" answers from upstreams, by upstream: a rise means misrouted requests or a node that lost its sessions.`,
		}, []string{"upstream"})
		refused = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "refused_total",
			Help: "Requests the socketio handler answered itself, never reaching an upstream, by reason.",
		}, []string{"reason"})
		pins = newStoreCollector()
	})
}

// Register registers the collectors into registry, a configuration's
// registry (caddy.Context.GetMetricsRegistry). Registering them again
// into the same registry (several socketio modules in one configuration)
// is not an error.
func Register(registry *prometheus.Registry) error {
	initCollectors()
	if registry == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{requests, handshakes, sessionUnknown, refused, pins} {
		if err := registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) && already.ExistingCollector == c {
				continue
			}
			return err
		}
	}
	return nil
}

// Requests returns the counter of requests routed by route, for the
// policy to keep (a label lookup per request costs more than the count).
func Requests(route string) prometheus.Counter {
	initCollectors()
	return requests.WithLabelValues(route)
}

// Learned counts a handshake pinned to upstream.
func Learned(upstream string) {
	initCollectors()
	handshakes.WithLabelValues(upstream).Inc()
}

// SessionUnknown counts a "Session ID unknown" answer of upstream.
func SessionUnknown(upstream string) {
	initCollectors()
	sessionUnknown.WithLabelValues(upstream).Inc()
}

// Refused counts a request the handler refused, for reason.
func Refused(reason string) {
	initCollectors()
	refused.WithLabelValues(reason).Inc()
}

// storeCollector reports the pin stores of the process (store.Range) at
// each scrape: live pins per upstream and tombstones as gauges, and the
// stores' own counters. The counters start again from zero when the last
// configuration using a store is unloaded, as Prometheus counters may.
type storeCollector struct {
	sessions, tombstones, draining                *prometheus.Desc
	shared                                        sharedDescs
	pinned, collisions, evicted, expired, dropped *prometheus.Desc
}

func newStoreCollector() *storeCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help, labels, nil)
	}
	return &storeCollector{
		shared:     newSharedDescs(desc),
		sessions:   desc("sessions", "Live pins (sessions known to be owned) per upstream.", "upstream"),
		tombstones: desc("pin_tombstones", "Pins of ended sessions kept so that their late requests fail fast."),
		draining:   desc("upstream_draining", "1 for each upstream that drains (takes no new sessions).", "upstream"),
		pinned:     desc("pins_created_total", "Pins created."),
		collisions: desc("pin_collisions_total", "Handshakes whose sid was already pinned to another upstream."),
		evicted:    desc("pins_evicted_total", "Pins evicted to stay within max_sessions."),
		expired:    desc("pins_expired_total", "Pins expired after ttl without a request."),
		dropped:    desc("pins_dropped_total", `Pins turned into tombstones because their session ended (the owner's "Session ID unknown", or the owner left the configuration).`),
	}
}

// sharedDescs describe the shared store's metrics.
type sharedDescs struct {
	reachable, requests, hits, errors, outages, announced, latency *prometheus.Desc
}

func newSharedDescs(desc func(name, help string, labels ...string) *prometheus.Desc) sharedDescs {
	return sharedDescs{
		reachable: desc("shared_store_reachable", "1 while the shared store (Redis) answers, 0 while it is counted down (new sessions are then placed by client-IP hash)."),
		requests:  desc("shared_store_requests_total", "Requests to the shared store, by op: lookup (a sid unknown here), pin (a handshake), refresh (TTLs of live pins), drop (tombstones).", "op"),
		hits:      desc("shared_store_lookup_hits_total", "Lookups in the shared store that found a pin."),
		errors:    desc("shared_store_errors_total", "Shared store errors, by kind: timeout (a request gave up waiting), lost_write (a tombstone or late pin not written), ignored_value (a value the plugin did not write).", "kind"),
		outages:   desc("shared_store_outages_total", "Times the shared store was found unreachable."),
		announced: desc("shared_store_announcements_total", "Changes of owners received from the other instances."),
		latency:   desc("shared_store_request_duration_seconds", "Round trips to the shared store made for clients (lookups and pins)."),
	}
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.tombstones, c.draining, c.pinned, c.collisions, c.evicted, c.expired, c.dropped,
		c.shared.reachable, c.shared.requests, c.shared.hits, c.shared.errors, c.shared.outages, c.shared.announced, c.shared.latency} {
		ch <- d
	}
}

// collectShared reports a shared (Redis) store.
func (c *storeCollector) collectShared(ch chan<- prometheus.Metric, rs *redis.Store) {
	d := c.shared
	reachable := 0.0
	if rs.Reachable() {
		reachable = 1
	}
	ch <- prometheus.MustNewConstMetric(d.reachable, prometheus.GaugeValue, reachable)
	n := rs.Counters()
	for op, v := range map[string]uint64{"lookup": n.RemoteLookups, "pin": n.RemotePins, "refresh": n.Refreshed, "drop": n.DropsShared} {
		ch <- prometheus.MustNewConstMetric(d.requests, prometheus.CounterValue, float64(v), op)
	}
	ch <- prometheus.MustNewConstMetric(d.hits, prometheus.CounterValue, float64(n.RemoteHits))
	for kind, v := range map[string]uint64{"timeout": n.Timeouts, "lost_write": n.WritesLost, "ignored_value": n.Ignored} {
		ch <- prometheus.MustNewConstMetric(d.errors, prometheus.CounterValue, float64(v), kind)
	}
	ch <- prometheus.MustNewConstMetric(d.outages, prometheus.CounterValue, float64(n.Outages))
	ch <- prometheus.MustNewConstMetric(d.announced, prometheus.CounterValue, float64(n.Announced))
	l := rs.Latency()
	buckets := make(map[float64]uint64, len(redis.LatencyBuckets))
	var cumulative uint64
	for i, bound := range redis.LatencyBuckets {
		cumulative += l.Buckets[i]
		buckets[bound.Seconds()] = cumulative
	}
	ch <- prometheus.MustNewConstHistogram(d.latency, l.Count, l.Sum.Seconds(), buckets)
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	live, tombstones := store.Census()
	var sum store.Stats
	sharedDone := false
	store.Range(func(_ string, s store.Store) bool {
		if rs, ok := s.(*redis.Store); ok && !sharedDone {
			// one shared store is in use; another (a reload onto a
			// new Redis) is on its way out
			sharedDone = true
			c.collectShared(ch, rs)
		}
		st := s.Stats()
		sum.Pinned += st.Pinned
		sum.Collisions += st.Collisions
		sum.Evicted += st.Evicted
		sum.Expired += st.Expired
		sum.Dropped += st.Dropped
		return true
	})
	for dial, n := range live {
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(n), dial)
	}
	ch <- prometheus.MustNewConstMetric(c.tombstones, prometheus.GaugeValue, float64(tombstones))
	for _, dial := range store.Draining() {
		ch <- prometheus.MustNewConstMetric(c.draining, prometheus.GaugeValue, 1, dial)
	}
	for _, m := range []struct {
		d *prometheus.Desc
		v uint64
	}{{c.pinned, sum.Pinned}, {c.collisions, sum.Collisions}, {c.evicted, sum.Evicted}, {c.expired, sum.Expired}, {c.dropped, sum.Dropped}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
}
