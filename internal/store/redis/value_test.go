package redis

import (
	"slices"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  []owner
	}{
		{name: "ok/one owner", value: "sio1\nL00000000000000ff 10.0.0.1:3000",
			want: []owner{{dial: "10.0.0.1:3000", client: 255}}},
		{name: "ok/tombstone and live owner", value: "sio1\nGffffffffffffffff 10.0.0.1:3000\nL0000000000000001 unix//run/node.sock",
			want: []owner{{dial: "10.0.0.1:3000", client: 1<<64 - 1, gone: true}, {dial: "unix//run/node.sock", client: 1}}},
		{name: "fail/empty", value: ""},
		{name: "fail/version only", value: "sio1"},
		{name: "fail/other version", value: "sio2\nL0000000000000001 a:1"},
		{name: "fail/truncated", value: "sio1\nL000000000000"},
		{name: "fail/bad state", value: "sio1\nX0000000000000001 a:1"},
		{name: "fail/bad hex", value: "sio1\nL000000000000000g a:1"},
		{name: "fail/no space", value: "sio1\nL0000000000000001_a:1"},
		{name: "fail/space in dial", value: "sio1\nL0000000000000001 a b:1"},
		{name: "fail/empty dial", value: "sio1\nL0000000000000001 "},
		{name: "fail/trailing newline", value: "sio1\nL0000000000000001 a:1\n"},
		{name: "fail/too many owners", value: "sio1" + strings.Repeat("\nL0000000000000001 a:1", 5)},
		{name: "fail/control byte", value: "sio1\nL0000000000000001 a:1\x00"},
		{name: "fail/too long", value: "sio1\nL0000000000000001 " + strings.Repeat("a", maxDial+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := decode(tt.value)
			if ok != (tt.want != nil) || !slices.Equal(got, tt.want) {
				t.Fatalf("decode = %+v, %v; want %+v", got, ok, tt.want)
			}
			if ok && encode(got) != tt.value {
				t.Fatalf("encode(decode(v)) = %q, want %q", encode(got), tt.value)
			}
		})
	}
}

// FuzzDecode checks that decode never panics, and that what it accepts
// encodes back to the same value.
func FuzzDecode(f *testing.F) {
	f.Add("sio1\nL00000000000000ff 10.0.0.1:3000")
	f.Add("sio1\nGffffffffffffffff a:1\nL0000000000000001 b:2")
	f.Add("sio1\n")
	f.Fuzz(func(t *testing.T, v string) {
		owners, ok := decode(v)
		if ok && encode(owners) != v {
			t.Fatalf("encode(decode(%q)) = %q", v, encode(owners))
		}
	})
}
