package caddytest

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddytester "github.com/caddyserver/caddy/v2/caddytest"
)

var update = flag.Bool("update", false, "rewrite the JSON half of the golden Caddyfile adapt tests")

// TestCaddyfileAdapt adapts every testdata/caddyfile_adapt/*.caddyfiletest
// (a Caddyfile, a line of dashes, the JSON it must become) and compares.
// Run with -update to regenerate the JSON after a deliberate change, then
// review the diff.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "caddyfile_adapt", "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	sep := regexp.MustCompile(`(?m)^-{10,}\n`)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parts := sep.Split(string(data), 2)
			if len(parts) != 2 {
				t.Fatalf("%s: missing the line of dashes", file)
			}
			caddyfile, want := parts[0], parts[1]
			if *update {
				adapted := adaptIndented(t, caddyfile)
				out := caddyfile + strings.Repeat("-", 10) + "\n" + adapted + "\n"
				if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !caddytester.CompareAdapt(t, file, caddyfile, "caddyfile", strings.TrimSuffix(want, "\n")) {
				t.Errorf("%s: adapted JSON differs (diff above; run with -update after a deliberate change)", file)
			}
		})
	}
}

func adaptIndented(t *testing.T, caddyfile string) string {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	var b strings.Builder
	if err := jsonIndent(&b, out); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestCaddyfileExampleValidates is `caddy adapt --config Caddyfile.example
// --validate` in process: the configuration the README recommends adapts
// without warnings, and every module in it provisions.
func TestCaddyfileExampleValidates(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(data, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("adapting Caddyfile.example: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("adapting Caddyfile.example: warning: %s", w.String())
	}
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("Caddyfile.example does not validate: %v", err)
	}
}
