package caddytest

import (
	"bytes"
	"encoding/json"
	"io"
)

func jsonIndent(w io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "\t"); err != nil {
		return err
	}
	_, err := buf.WriteTo(w)
	return err
}
