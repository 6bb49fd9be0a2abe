package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// server is one parsed entry of Config.Servers.
type server struct {
	canonical string // scheme://host:port, the session key's Server
	addr      string // host:port
	host      string
	tls       bool
	path      string // WebSocket request path (with query); "" for MQTT over TCP or TLS

	// Credentials from the URL (mqtt://user:pass@host), which take
	// precedence over Config.Username and Config.Password for this server.
	user    string
	pass    []byte
	hasUser bool
	hasPass bool
}

// redactURL hides the password of a URL-like string, for errors and logs;
// it works on strings url.Parse refuses too.
func redactURL(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return s
	}
	colon := strings.Index(rest[:at], ":")
	if colon < 0 {
		return s
	}
	return s[:i+3] + rest[:colon+1] + "xxxxx" + rest[at:]
}

func parseServer(s string) (server, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL, password included
		}
		return server{}, fmt.Errorf("client: server %q: %w", redactURL(s), err)
	}
	s = u.Redacted()
	var sv server
	if u.User != nil {
		sv.user, sv.hasUser = u.User.Username(), true
		if p, ok := u.User.Password(); ok {
			sv.pass, sv.hasPass = []byte(p), true
		}
	}
	port := ""
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "tls", "ssl":
		port, sv.tls = "8883", true
	case "ws", "wss":
		port, sv.tls = "80", strings.EqualFold(u.Scheme, "wss")
		if sv.tls {
			port = "443"
		}
	default:
		return server{}, fmt.Errorf("client: server %q: unsupported scheme %q (want mqtt, tcp, mqtts, tls, ssl, ws or wss)", s, u.Scheme)
	}
	sv.host = strings.ToLower(u.Hostname())
	if sv.host == "" {
		return server{}, fmt.Errorf("client: server %q: no host", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return server{}, fmt.Errorf("client: server %q: port %s out of range 1-65535", s, p)
		}
		port = p
	}
	sv.addr = net.JoinHostPort(sv.host, port)
	scheme := "mqtt"
	if sv.tls {
		scheme = "mqtts"
	}
	sv.canonical = scheme + "://" + sv.addr
	if strings.HasPrefix(strings.ToLower(u.Scheme), "ws") {
		sv = webSocketTarget(sv, u)
	}
	return sv, nil
}

// dial opens the network connection to sv.
func (c *Client) dial(ctx context.Context, sv server) (net.Conn, error) {
	if sv.path != "" {
		return c.dialWebSocket(ctx, sv)
	}
	var d net.Dialer
	if !sv.tls {
		return d.DialContext(ctx, "tcp", sv.addr)
	}
	cfg, err := c.tlsConfig(sv)
	if err != nil {
		return nil, err
	}
	td := tls.Dialer{NetDialer: &d, Config: cfg}
	return td.DialContext(ctx, "tcp", sv.addr)
}
