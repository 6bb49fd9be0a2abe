package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/coder/websocket"
)

// MQTT over WebSocket (MQTT v5 §6): every MQTT packet travels in binary
// WebSocket frames (MQTT-6.0.0-1), the stream of frames is read as one
// stream of bytes, since a packet may span frames and a frame may hold
// several packets (MQTT-6.0.0-2, MQTT-6.0.0-3), and the client offers the
// "mqtt" subprotocol (MQTT-6.0.0-3, MQTT-6.0.0-4).

// webSocketPath is the request path of a ws:// or wss:// server URL
// written without one: the path most brokers serve MQTT on. Mosquitto
// accepts any path; write "ws://host:port/" to request "/".
const webSocketPath = "/mqtt"

// errNoMQTTSubprotocol reports a WebSocket server that did not agree to
// speak MQTT.
var errNoMQTTSubprotocol = errors.New("client: websocket: the server did not accept the \"mqtt\" subprotocol")

// webSocketTarget completes sv, parsed from u, for a ws:// or wss:// URL:
// its request path, and a canonical name that keeps the path, since two
// paths on one host may well be two brokers.
func webSocketTarget(sv server, u *url.URL) server {
	sv.path = u.EscapedPath()
	if sv.path == "" {
		sv.path = webSocketPath
	}
	if u.RawQuery != "" {
		sv.path += "?" + u.RawQuery
	}
	scheme := "ws"
	if sv.tls {
		scheme = "wss"
	}
	sv.canonical = scheme + "://" + sv.addr + sv.path
	return sv
}

// dialWebSocket opens a WebSocket connection to sv and returns it as a
// net.Conn carrying binary frames. The dial honours ctx; the connection
// itself lives until it is closed. No HTTP proxy is used.
func (c *Client) dialWebSocket(ctx context.Context, sv server) (net.Conn, error) {
	tr := &http.Transport{DialContext: (&net.Dialer{}).DialContext, ForceAttemptHTTP2: false}
	if sv.tls {
		cfg, err := c.tlsConfig(sv)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	defer tr.CloseIdleConnections()
	// The canonical URL is rebuilt from the URL's parts, so credentials
	// written in the configured URL never reach the HTTP layer or its
	// errors.
	ws, resp, err := websocket.Dial(ctx, sv.canonical, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		Subprotocols:    []string{"mqtt"},
		CompressionMode: websocket.CompressionDisabled,
	})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("client: websocket: %w", err)
	}
	if ws.Subprotocol() != "mqtt" {
		ws.CloseNow() // not a close handshake with a server that is no MQTT broker

		return nil, errNoMQTTSubprotocol
	}
	// The connection's context must outlive the dial: closing the
	// net.Conn is what ends it.
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}
