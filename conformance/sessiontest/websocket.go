package sessiontest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"github.com/tethermq/tether/faultproxy"
)

// MQTT over WebSocket in the session suite (Options.WebSocket).
//
// The fault proxy cuts connections at exact MQTT packets, which it finds
// by parsing the byte stream; inside WebSocket frames that stream is
// split and framed, so the proxy cannot sit on the WebSocket leg without
// learning WebSocket. Instead the WebSocket leg is put in front of it:
//
//	client --ws://--> wsFront --tcp--> fault proxy --tcp--> broker
//
// The front relays the bytes of binary messages both ways and ends one
// side when the other ends, so every cut the proxy makes (before or after
// a packet, either direction, refusals, black holes) reaches the client as
// the end of its WebSocket, after exactly the bytes the proxy let through.
// The client's WebSocket transport is thereby under every case of the
// suite; the broker's own websockets listener is tested by the client's
// tests (client/websocket_test.go) instead.

// wsFronts maps a case's fault proxy to the URL of its WebSocket front.
var wsFronts sync.Map // *faultproxy.Proxy → string

// url returns the URL a case's clients dial to reach the broker through
// p: the proxy's own, or, with Options.WebSocket, the ws:// URL of
// a front started for p on first use and closed when the case ends.
func (s *sess) url(p *faultproxy.Proxy) string {
	if !s.r.opts.WebSocket {
		return p.URL()
	}
	if u, ok := wsFronts.Load(p); ok {
		return u.(string)
	}
	f, err := startWSFront(p.Addr())
	if err != nil {
		s.t.Fatalf("sessiontest: websocket front: %v", err)
	}
	u := "ws://" + f.ln.Addr().String() + "/mqtt"
	wsFronts.Store(p, u)
	s.t.Cleanup(func() {
		f.close()
		wsFronts.Delete(p)
	})
	return u
}

// wsFront accepts MQTT over WebSocket and relays each connection to a TCP
// address.
type wsFront struct {
	ln     net.Listener
	srv    *http.Server
	target string

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // the server loop and every handler
}

func startWSFront(target string) (*wsFront, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &wsFront{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve)}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		_ = f.srv.Serve(ln)
	}()
	return f, nil
}

// track registers c for close; it reports false once the front is closed.
func (f *wsFront) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *wsFront) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

// enter counts a handler in; it reports false once the front is closed.
func (f *wsFront) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
}

func (f *wsFront) serve(w http.ResponseWriter, r *http.Request) {
	if !f.enter() {
		return
	}
	defer f.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		return
	}
	if ws.Subprotocol() != "mqtt" {
		ws.Close(websocket.StatusPolicyViolation, "mqtt subprotocol required")
		return
	}
	client := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	if !f.track(client) {
		client.Close()
		return
	}
	defer f.untrack(client)
	defer client.Close()
	// A refused or failed dial ends the WebSocket at once, as a refused
	// TCP connection would end the attempt.
	upstream, err := net.Dial("tcp", f.target)
	if err != nil {
		return
	}
	if !f.track(upstream) {
		upstream.Close()
		return
	}
	defer f.untrack(upstream)
	defer upstream.Close()
	done := make(chan struct{})
	go func() {
		// Server to client: every byte the proxy let through is written
		// before the WebSocket closes.
		_, _ = io.Copy(client, upstream)
		client.Close()
		close(done)
	}()
	_, err = io.Copy(upstream, client)
	if tc, ok := upstream.(*net.TCPConn); ok && (err == nil || errors.Is(err, io.EOF)) {
		_ = tc.CloseWrite()
	} else {
		upstream.Close()
	}
	<-done
}

// close stops the front and ends every relayed connection.
func (f *wsFront) close() {
	_ = f.srv.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
