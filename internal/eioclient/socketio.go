package eioclient

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The Socket.IO packets of the test nodes (caddytest/testdata/sio-node.js):
// on connect they emit `hello` with their name, and they acknowledge an
// `echo` event with their name and its payload.

// HelloNode reads the node name out of a Socket.IO `hello` event packet
// (`42["hello",{"node":"node1"}]`), or "".
func HelloNode(packet string) string {
	if !strings.HasPrefix(packet, `42["hello",`) {
		return ""
	}
	var ev []json.RawMessage
	var body struct {
		Node string `json:"node"`
	}
	if json.Unmarshal([]byte(packet[2:]), &ev) != nil || len(ev) != 2 || json.Unmarshal(ev[1], &body) != nil {
		return ""
	}
	return body.Node
}

// AckNode reads the node out of the ack of an `echo` event sent with ack
// id id (`43<id>[{"node":"node1","payload":…}]`); ok is false for any
// other packet.
func AckNode(packet string, id int) (node string, ok bool) {
	prefix := fmt.Sprintf("43%d[", id)
	if !strings.HasPrefix(packet, prefix) {
		return "", false
	}
	var args []struct {
		Node string `json:"node"`
	}
	if json.Unmarshal([]byte(packet[len(prefix)-1:]), &args) != nil || len(args) != 1 {
		return "", false
	}
	return args[0].Node, true
}

// EchoPacket is a Socket.IO `echo` event with ack id id and id as its
// payload.
func EchoPacket(id int) string { return fmt.Sprintf(`42%d["echo",%d]`, id, id) }

// PacketIs matches the packet want.
func PacketIs(want string) func(string) bool { return func(p string) bool { return p == want } }

// HasPrefix matches the packets that start with prefix.
func HasPrefix(prefix string) func(string) bool {
	return func(p string) bool { return strings.HasPrefix(p, prefix) }
}
