package memory

import (
	"slices"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

func TestSharedHelpers(t *testing.T) {
	s, c := newTestStore(t, 10*time.Second, 100)
	s.Acquire([]string{"a:1", "b:1"})
	s.Pin("old", "a:1", 1)
	c.Advance(3 * time.Second)
	since := s.Clock()
	s.Pin("new", "b:1", 2)
	s.Pin("gone", "a:1", 3)
	s.DropDial("gone", "a:1")

	t.Run("ok/SID of a looked-up owner", func(t *testing.T) {
		var buf [store.MaxOwners]store.Owner
		owners := s.Lookup("new", buf[:0])
		if len(owners) != 1 || SID(owners[0]) != "new" {
			t.Fatalf("SID = %q", SID(owners[0]))
		}
		if SID(store.Owner{}) != "" {
			t.Fatal("SID of a foreign owner")
		}
	})
	t.Run("ok/Used lists live pins used since", func(t *testing.T) {
		var got []string
		s.Used(since, func(sid, dial string, client uint64) { got = append(got, sid+"@"+dial) })
		if !slices.Equal(got, []string{"new@b:1"}) {
			t.Fatalf("Used = %v", got)
		}
		got = got[:0]
		s.Used(0, func(sid, dial string, client uint64) { got = append(got, sid) })
		slices.Sort(got)
		if !slices.Equal(got, []string{"new", "old"}) {
			t.Fatalf("Used(0) = %v, want the live pins only", got)
		}
	})
	t.Run("ok/Known", func(t *testing.T) {
		s.Pin("dyn", "c:1", 4) // a dynamic upstream: pinned, never acquired
		for dial, want := range map[string]bool{"a:1": true, "b:1": true, "c:1": true, "d:1": false} {
			if got := s.Known(dial); got != want {
				t.Errorf("Known(%s) = %v, want %v", dial, got, want)
			}
		}
		s.Release([]string{"a:1"})
		if s.Known("a:1") {
			t.Error("a released dial is still known")
		}
	})
}
