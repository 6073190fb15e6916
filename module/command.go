package module

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "socketio",
		Usage: "upstreams|sessions|drain <address>|undrain <address> [--address <interface>] [--config <path> [--adapter <name>]]",
		Short: "Lists and drains the upstreams of the socketio policy",
		Long: `
Talks to the running Caddy's admin API (/socketio/...), as "caddy reload"
does: the address comes from --address, else from the admin address of
--config, else it is the default.

  upstreams          one line per upstream: live sessions, and whether it
                     drains (GET /socketio/upstreams)
  sessions           what the pin store holds, as JSON (GET /socketio/sessions)
  drain <address>    the upstream with this dial address, as in the
                     Caddyfile, takes no new sessions; its sessions go on
  undrain <address>  it takes new sessions again

With the shared redis store, a drain made through one instance applies to
every instance.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
			cmd.PersistentFlags().StringP("adapter", "a", "", "Name of the config adapter to apply (when --config is used)")
			cmd.PersistentFlags().String("address", "", "The address of the admin API, if not the default")
			cmd.AddCommand(
				&cobra.Command{
					Use:   "upstreams",
					Short: "Lists the upstreams with their live sessions and drain state",
					Args:  cobra.NoArgs,
					RunE:  caddycmd.WrapCommandFuncForCobra(cmdUpstreams),
				},
				&cobra.Command{
					Use:   "sessions",
					Short: "Prints what the pin store holds",
					Args:  cobra.NoArgs,
					RunE:  caddycmd.WrapCommandFuncForCobra(cmdSessions),
				},
				drainCommand("drain", "Stops new sessions on an upstream; its sessions go on"),
				drainCommand("undrain", "Lets an upstream take new sessions again"),
			)
		},
	})
}

func drainCommand(name, short string) *cobra.Command {
	return &cobra.Command{
		Use:   name + " <address>",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE:  caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) { return cmdDrain(fl, name) }),
	}
}

// cmdDrain posts the address (the only argument) to
// /socketio/upstreams/<action> and prints the upstream's line.
func cmdDrain(fl caddycmd.Flags, action string) (int, error) {
	body, err := json.Marshal(map[string]string{"address": fl.Arg(0)})
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var u upstreamReport
	if err := adminCall(fl, http.MethodPost, "/socketio/upstreams/"+action, bytes.NewReader(body), &u); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return printUpstreams(os.Stdout, []upstreamReport{u})
}

func cmdUpstreams(fl caddycmd.Flags) (int, error) {
	var report struct {
		Upstreams []upstreamReport `json:"upstreams"`
	}
	if err := adminCall(fl, http.MethodGet, "/socketio/upstreams", nil, &report); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return printUpstreams(os.Stdout, report.Upstreams)
}

func cmdSessions(fl caddycmd.Flags) (int, error) {
	var report json.RawMessage
	if err := adminCall(fl, http.MethodGet, "/socketio/sessions", nil, &report); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, report, "", "  "); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	out.WriteByte('\n')
	_, err := out.WriteTo(os.Stdout)
	return caddy.ExitCodeSuccess, err
}

// printUpstreams writes one aligned line per upstream.
func printUpstreams(w io.Writer, upstreams []upstreamReport) (int, error) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tSESSIONS\tDRAINING")
	for _, u := range upstreams {
		fmt.Fprintf(tw, "%s\t%d\t%t\n", u.Address, u.Sessions, u.Draining)
	}
	if err := tw.Flush(); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
}

// adminCall sends a request to the admin API that the flags name and
// decodes its JSON answer into v.
func adminCall(fl caddycmd.Flags, method, uri string, body io.Reader, v any) error {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return fmt.Errorf("couldn't determine the admin API address: %v", err)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("reading the answer of %s: %v", uri, err)
	}
	return nil
}
