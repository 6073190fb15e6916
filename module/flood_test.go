package module

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
)

// TestUnknownSIDFlood sends what an attacker can cheaply send: a million
// requests with random sids the store never saw, each answered "Session
// ID unknown". They may not create pins nor grow memory. (A handshake
// flood is selection's TestHandshakeFlood.)
func TestUnknownSIDFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("a million requests")
	}
	h := testHandler(t)
	pool := testPool("a:1", "b:1", "c:1")
	p := newTestPolicy(t)
	pinsBefore := p.pins()
	next := &fakeProxy{policy: p, pool: pool, status: 400, chunks: []string{`{"code":1,"message":"Session ID unknown"}`}}
	r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid=x", "10.1.2.3")
	w := httptest.NewRecorder()
	sid := make([]byte, 20)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	heapBefore := heapInUse()
	const requests = 1_000_000
	for i := 0; i < requests; i++ {
		for j := range sid {
			sid[j] = alphabet[rand.IntN(len(alphabet))]
		}
		r.URL.RawQuery = "EIO=4&transport=polling&sid=" + string(sid)
		w.Body.Reset()
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
	}
	growth := int64(heapInUse()) - int64(heapBefore)
	t.Logf("%d requests with unknown sids: %d pins, heap growth %d bytes", requests, p.pins()-pinsBefore, growth)
	if n := p.pins() - pinsBefore; n != 0 {
		t.Fatalf("%d pins created by unknown sids", n)
	}
	if growth > 4<<20 {
		t.Fatalf("heap grew by %d bytes", growth)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
