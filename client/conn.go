package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
)

// conn is one network connection and its goroutines: a reader, a writer
// and, with keep alive on, a pinger.
type conn struct {
	c  *Client
	nc net.Conn
	r  *packets.Reader

	// Write side: packets are encoded straight into wbuf under wmu, and the
	// writer swaps the buffer out and writes it whole, so packets queued
	// while a write is in progress go out together in one syscall.
	wmu      sync.Mutex
	wcond    *sync.Cond
	wbuf     []byte
	wclosing bool // a final DISCONNECT is queued: write it, then close
	wclosed  bool
	lastNum  uint64        // the number of the last numbered write appended to wbuf
	handed   uint64        // the number of the last numbered write handed to the network
	wroom    chan struct{} // closed when the writer next takes the buffer
	wlimit   int           // Config.MaxWriteBuffer

	lastWrite atomic.Int64 // unix nanoseconds
	lastRead  atomic.Int64
	paused    atomic.Bool // the reader waits for the application (Config.MaxInboundBytes)

	closeOnce sync.Once
	done      chan struct{} // closed when the connection is closed
	readDone  chan struct{} // closed when the reader has ended
	errMu     sync.Mutex
	err       error // why the connection ended
	wg        sync.WaitGroup

	// Fields below are guarded by Client.mu.
	gen       uint64     // the engine's generation of this connection
	ready     bool       // CONNACK processed; the session may send
	reauth    chan error // a re-authentication in progress
	keepAlive time.Duration
}

func newConn(c *Client, nc net.Conn) *conn {
	cn := &conn{c: c, nc: nc, done: make(chan struct{}), readDone: make(chan struct{}),
		wlimit: c.cfg.MaxWriteBuffer}
	cn.wcond = sync.NewCond(&cn.wmu)
	now := time.Now().UnixNano()
	cn.lastRead.Store(now)
	cn.lastWrite.Store(now)
	return cn
}

// write queues p for the writer, and reports false when the connection
// takes no more packets. A packet that cannot be encoded is a bug of the
// caller: it is logged and dropped rather than corrupting the stream.
func (cn *conn) write(p packets.Packet) bool { return cn.writeNumbered(p, 0) }

// writeNumbered writes p, the engine's numbered write num (0 for a packet
// of the client's own): once the writer hands the buffer holding it to the
// network, handedOver counts it.
func (cn *conn) writeNumbered(p packets.Packet, num uint64) bool {
	cn.wmu.Lock()
	if cn.wclosing || cn.wclosed {
		cn.wmu.Unlock()
		return false
	}
	n := len(cn.wbuf)
	if n >= cn.wlimit && p.Type() != packets.PUBLISH {
		// QoS 1 and 2 PUBLISHes are bounded by the server's Receive
		// Maximum and QoS 0 ones checked by bufferFull; what else piles
		// up here (acknowledgements of a flood) says the server does not
		// read what it asks for.
		cn.wmu.Unlock()
		cn.close(ErrServerNotReading)
		return false
	}
	b, err := packets.Append(cn.wbuf, p)
	if err != nil {
		cn.wmu.Unlock()
		cn.c.log.Error("encode packet", "type", engine.TypeName(p.Type()), "err", err)
		return false
	}
	cn.wbuf = b
	if num != 0 {
		cn.lastNum = num
	}
	if n == 0 {
		cn.wcond.Signal()
	}
	cn.wmu.Unlock()
	return true
}

// bufferFull reports whether the write buffer holds Config.MaxWriteBuffer
// bytes or more: a QoS 0 publish then fails with ErrBufferFull.
func (cn *conn) bufferFull() bool {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return len(cn.wbuf) >= cn.wlimit
}

// room returns a channel closed when the writer next takes the buffer for
// the network (or the connection ends).
func (cn *conn) room() <-chan struct{} {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if cn.wroom == nil {
		cn.wroom = make(chan struct{})
		if cn.wclosed {
			close(cn.wroom)
		}
	}
	return cn.wroom
}

// handedOver returns the number of the last numbered write handed to the
// network: a packet in a buffer that never was cannot have reached the
// server. Once the connection has ended the answer is final.
func (cn *conn) handedOver() uint64 {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.handed
}

// Closed reports whether the connection has closed (engine.Link).
func (cn *conn) Closed() bool { return cn.isClosed() }

// writeLoop writes whatever has been queued, in as few writes as possible.
func (cn *conn) writeLoop() {
	defer cn.wg.Done()
	var spare []byte
	for {
		cn.wmu.Lock()
		for len(cn.wbuf) == 0 && !cn.wclosing && !cn.wclosed {
			cn.wcond.Wait()
		}
		if cn.wclosed || (cn.wclosing && len(cn.wbuf) == 0) {
			closing := !cn.wclosed
			cn.wmu.Unlock()
			if closing {
				cn.linger()
			}
			cn.close(nil)
			return
		}
		buf := cn.wbuf
		cn.handed = cn.lastNum
		if cn.wroom != nil {
			close(cn.wroom)
			cn.wroom = nil
		}
		if cap(spare) > 1<<20 {
			spare = nil // do not keep a huge buffer after one large packet
		}
		cn.wbuf = spare[:0]
		closing := cn.wclosing
		cn.wmu.Unlock()
		if !closing { // a final DISCONNECT keeps the shorter deadline shutdown set
			_ = cn.nc.SetWriteDeadline(time.Now().Add(cn.c.cfg.WriteTimeout))
		}
		_, err := cn.nc.Write(buf)
		spare = buf[:0]
		if err != nil {
			cn.close(fmt.Errorf("client: write: %w", err))
			return
		}
		cn.lastWrite.Store(time.Now().UnixNano())
	}
}

// linger ends a connection whose last packet (DISCONNECT) has been
// written: it shuts our sending side and waits, briefly, for the server to
// close its own, so that unread data does not turn our close into a reset
// that could destroy the DISCONNECT before the server reads it.
func (cn *conn) linger() {
	if cw, ok := cn.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-cn.readDone:
	case <-t.C:
	}
}

// fail ends the connection because of err. With code set, a DISCONNECT
// carrying it is sent first (MQTT-3.14.4-1: nothing after it).
func (cn *conn) fail(err error, code packets.ReasonCode, sendDisconnect bool) {
	cn.setErr(err)
	if !sendDisconnect {
		cn.close(err)
		return
	}
	if code.IsError() {
		cn.c.log.Warn("ending the connection with DISCONNECT", "reason_code", fmt.Sprintf("0x%02x", byte(code)),
			"reason", code.String(), "err", err)
	}
	cn.shutdown(&packets.Disconnect{ReasonCode: code})
}

// shutdown sends d as the last packet and closes the connection once it
// is written (or after a second, when the peer does not read).
func (cn *conn) shutdown(d *packets.Disconnect) {
	cn.wmu.Lock()
	if cn.wclosing || cn.wclosed {
		cn.wmu.Unlock()
		return
	}
	if b, err := packets.Append(cn.wbuf, d); err == nil {
		cn.wbuf = b
	}
	cn.wclosing = true
	_ = cn.nc.SetWriteDeadline(time.Now().Add(time.Second))
	cn.wcond.Signal()
	cn.wmu.Unlock()
}

func (cn *conn) setErr(err error) {
	if err == nil {
		return
	}
	cn.errMu.Lock()
	if cn.err == nil {
		cn.err = err
	}
	cn.errMu.Unlock()
}

// Err returns why the connection ended.
func (cn *conn) Err() error {
	cn.errMu.Lock()
	defer cn.errMu.Unlock()
	if cn.err == nil {
		return ErrConnectionLost
	}
	return cn.err
}

// close closes the socket at once; the reader and writer then end.
func (cn *conn) close(err error) {
	cn.setErr(err)
	cn.closeOnce.Do(func() {
		_ = cn.nc.Close()
		cn.wmu.Lock()
		cn.wclosed = true
		cn.wcond.Broadcast()
		if cn.wroom != nil {
			close(cn.wroom)
			cn.wroom = nil
		}
		cn.wmu.Unlock()
		close(cn.done)
	})
}

// closing reports whether a final DISCONNECT has been queued.
func (cn *conn) closing() bool {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.wclosing
}

func (cn *conn) isClosed() bool {
	select {
	case <-cn.done:
		return true
	default:
		return false
	}
}

// readLoop reads packets until the connection ends and hands each to the
// client. It never blocks on the application: delivery is queued.
func (cn *conn) readLoop() {
	defer cn.wg.Done()
	defer close(cn.readDone)
	for {
		p, err := cn.r.Read()
		if err == nil && cn.closing() {
			continue // MQTT-3.14.4-2: after our DISCONNECT, only drain
		}
		if err != nil {
			var pe *packets.Error
			switch {
			case errors.As(err, &pe):
				// MQTT-3.14.1-1 and §4.13: a malformed or oversize packet
				// ends the connection with the reason the codec names.
				cn.fail(fmt.Errorf("client: bad packet from server: %w", err), packets.CodeOf(err), true)
			case errors.Is(err, io.EOF):
				cn.fail(wrap(ErrConnectionLost, errClosedByServer), 0, false)
			default:
				cn.fail(fmt.Errorf("client: read: %w", err), 0, false)
			}
			return
		}
		cn.lastRead.Store(time.Now().UnixNano())
		if err := cn.c.handlePacket(cn, p); err != nil {
			var pe *protoError
			if errors.As(err, &pe) {
				cn.fail(err, pe.Code, true)
			} else {
				cn.fail(err, 0, false)
			}
			return
		}
		if p.Type() == packets.PUBLISH {
			cn.c.throttle(cn)
			cn.lastRead.Store(time.Now().UnixNano()) // a pause is not the server's silence
		}
	}
}

// protoError is a protocol violation by the server: the connection ends
// with a DISCONNECT carrying its code.
type protoError = engine.ProtocolError

// keepAliveLoop sends PINGREQ when the link has been quiet in either
// direction (MQTT-3.1.2-20) and ends the connection when the server does
// not answer within the keep alive period.
func (cn *conn) keepAliveLoop() {
	defer cn.wg.Done()
	ka := cn.keepAlive
	tick := ka / 4
	t := time.NewTimer(tick)
	defer t.Stop()
	var pingSent int64
	for {
		select {
		case <-cn.done:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		if cn.paused.Load() {
			// We are not reading: the server's answer could not be seen.
			pingSent = 0
			t.Reset(tick)
			continue
		}
		lr, lw := cn.lastRead.Load(), cn.lastWrite.Load()
		if pingSent != 0 {
			if lr >= pingSent {
				pingSent = 0
			} else if time.Duration(now-pingSent) >= ka {
				cn.fail(ErrKeepAliveTimeout, packets.KeepAliveTimeout, true)
				return
			}
		}
		if pingSent == 0 && (time.Duration(now-lw) >= ka*3/4 || time.Duration(now-lr) >= ka*3/4) {
			pingSent = now
			cn.write(&packets.Pingreq{})
		}
		cn.c.refreshMeta()
		t.Reset(tick)
	}
}

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
