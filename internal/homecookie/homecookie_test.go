package homecookie

import (
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	a, b := New("secret one"), New("secret two")
	tok := a.Token("10.0.0.1:3000")
	tests := []struct {
		name  string
		hint  *Hint
		token string
		dial  string
		want  bool
	}{
		{"ok/own token", a, tok, "10.0.0.1:3000", true},
		{"ok/same secret, another Hint (another instance)", New("secret one"), tok, "10.0.0.1:3000", true},
		{"fail/another upstream", a, tok, "10.0.0.2:3000", false},
		{"fail/another secret", b, tok, "10.0.0.1:3000", false},
		{"fail/process key", New(""), tok, "10.0.0.1:3000", false},
		{"fail/forged", a, strings.Repeat("A", TokenLen), "10.0.0.1:3000", false},
		{"fail/truncated", a, tok[:TokenLen-1], "10.0.0.1:3000", false},
		{"fail/empty", a, "", "10.0.0.1:3000", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.hint.Names(tt.token, tt.dial); got != tt.want {
				t.Fatalf("Names(%q, %q) = %v, want %v", tt.token, tt.dial, got, tt.want)
			}
		})
	}
	if strings.Contains(tok, "10.0.0.1") || !Valid(tok) {
		t.Fatalf("token %q: reveals the address or is not valid", tok)
	}
	first, second := New(""), New("")
	if first.Token("x:1") != second.Token("x:1") {
		t.Fatal("the process key changes between Hints: reloads would break hints")
	}
}

func TestValid(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{strings.Repeat("a", TokenLen), true},
		{strings.Repeat("-_09AZaz", 3)[:TokenLen], true},
		{strings.Repeat("a", TokenLen-1), false},
		{strings.Repeat("a", TokenLen+1), false},
		{strings.Repeat("a", TokenLen-1) + "=", false},
		{strings.Repeat("a", TokenLen-1) + "/", false},
		{"", false},
	} {
		if got := Valid(tt.in); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
