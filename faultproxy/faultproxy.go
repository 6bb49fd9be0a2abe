// Package faultproxy is a TCP proxy for MQTT that injects faults at an exact
// packet: it can cut a connection just before or just after a given packet,
// stop forwarding (a black hole), delay a packet, or refuse new connections
// as if the server were down.
//
// The proxy frames the byte stream of each direction into MQTT control
// packets using only the fixed header (the packet type and the remaining
// length) and forwards whole packets; it decodes them only for the auditor
// (see Audit), and forwards them unchanged either way. A stream whose
// framing is malformed is cut. Each packet is written to its peer in one
// write, so a packet is either forwarded whole or not at all.
//
// A cut ends both TCP connections with an orderly end of stream right after
// the last packet forwarded, never with a reset: a reset can destroy data
// the peer has received but not yet read, which would turn a CutAfter into
// a CutBefore. Everything a peer sends after the cut is read and dropped.
//
// Audit turns on a wire auditor: the proxy then also decodes every packet
// it carries and checks the client's behaviour against the MQTT v5 rules
// visible on the wire (see Auditor). Forwarding is unchanged.
//
// Faults are armed with Inject and count matching packets across all
// connections, so a test can say "the second PUBACK the broker sends" even
// when the client reconnects in between. Each fault fires once.
//
// Typical use in a test:
//
//	p, err := faultproxy.Start(broker.Addr())
//	...
//	defer p.Close()
//	inj := p.Inject(faultproxy.Fault{
//		Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 1,
//		Action: faultproxy.CutAfter,
//	})
//	// connect the client to p.URL(), publish at QoS 1 ...
//	<-inj.Fired() // the client got the PUBACK, then lost its connection
package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/tethermq/tether/packets"
)

// Direction is the direction a packet travels through the proxy.
type Direction int

// The two directions.
const (
	ClientToServer Direction = iota // from the client that connected to the proxy, to the target
	ServerToClient                  // from the target, to the client
)

// String returns "ClientToServer" or "ServerToClient".
func (d Direction) String() string {
	switch d {
	case ClientToServer:
		return "ClientToServer"
	case ServerToClient:
		return "ServerToClient"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Action is what a fault does to the packet it matches.
type Action int

// The actions a Fault can take.
const (
	// CutBefore closes both sides of the connection instead of forwarding
	// the packet: the peer never sees it.
	CutBefore Action = iota
	// CutAfter forwards the packet whole, then closes both sides. The
	// peer's answer to that packet (a PUBREC to a PUBLISH, say) may still
	// get through if it is quicker than the cut; a test that needs the
	// answer lost injects CutBefore on the answer instead.
	CutAfter
	// Blackhole drops the packet and stops forwarding in both directions,
	// keeping both TCP connections open until the proxy cuts them (CutAll,
	// Close) or one of the peers closes its side. Packets that arrive in the
	// meantime are read and discarded.
	Blackhole
	// Delay holds the packet for Fault.Delay, then forwards it. Later packets
	// in the same direction of that connection wait behind it, so the order
	// is kept.
	Delay
)

// String returns the action's name.
func (a Action) String() string {
	switch a {
	case CutBefore:
		return "CutBefore"
	case CutAfter:
		return "CutAfter"
	case Blackhole:
		return "Blackhole"
	case Delay:
		return "Delay"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Fault describes one fault to inject.
type Fault struct {
	Dir  Direction    // the direction the packet travels
	Type packets.Type // the packet type to match; 0 matches any packet
	// Nth picks the matching packet the fault applies to, counted from
	// the moment the fault is injected, across all connections: 1 is the
	// next matching packet. Values below 1 mean 1.
	Nth    int
	Action Action
	Delay  time.Duration // how long Delay holds the packet
}

// Injection is an armed fault. It fires once.
type Injection struct {
	f     Fault
	seen  int // matching packets counted so far; guarded by Proxy.mu
	fired chan struct{}
}

// Fired returns a channel that is closed once the fault has been applied:
// for CutBefore and CutAfter once both peers have been sent the end of the
// stream (so any read either peer makes after what it has already been
// sent sees the connection closed), for Blackhole once forwarding has
// stopped, for Delay once the held packet has been forwarded (or dropped
// because the connection ended during the delay).
func (i *Injection) Fired() <-chan struct{} { return i.fired }

// Fault returns the fault the injection was armed with.
func (i *Injection) Fault() Fault { return i.f }

// Proxy forwards the connections it accepts to a target address, applying
// the injected faults. Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close; bounds dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the proxy started

	mu       sync.Mutex // guards the fields below
	conns    map[*conn]struct{}
	faults   []*Injection // armed, in injection order
	refuse   bool
	accepted int
	closed   bool
	auditor  *Auditor // set by Audit; audits the connections accepted after
}

// dialTimeout bounds the connection to the target for each accepted
// connection.
const dialTimeout = 5 * time.Second

// Start listens on a free loopback port and forwards every connection it
// accepts to target (host:port).
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*conn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's listening address, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns the proxy's address as "mqtt://127.0.0.1:PORT".
func (p *Proxy) URL() string { return "mqtt://" + p.Addr() }

// Inject arms a fault. It counts matching packets from now on, across all
// connections, and fires once. When several armed faults match the same
// packet, the one injected first that has reached its Nth packet applies;
// a later one that reached its Nth on that packet applies to the next
// matching packet instead.
func (p *Proxy) Inject(f Fault) *Injection {
	if f.Nth < 1 {
		f.Nth = 1
	}
	inj := &Injection{f: f, fired: make(chan struct{})}
	p.mu.Lock()
	p.faults = append(p.faults, inj)
	p.mu.Unlock()
	return inj
}

// CutAll cuts every current connection: forwarding stops and each peer
// gets the end of the stream right after what it was already sent. The
// sockets themselves are closed once the peers close theirs (at most a
// second later).
func (p *Proxy) CutAll() {
	for _, c := range p.snapshot() {
		c.cut()
	}
}

// snapshot returns the current connections.
func (p *Proxy) snapshot() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

// SetRefuse sets whether new connections are refused: while refuse is
// true, the proxy accepts each new connection and closes it at once, as a
// server that is down or restarting would. Current connections are kept.
func (p *Proxy) SetRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// Conns returns the number of connections accepted so far, refused ones
// included.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops listening, cuts every connection, and waits until every
// goroutine of the proxy has returned. Faults not yet fired never fire.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	err := p.ln.Close()
	for _, c := range p.snapshot() {
		c.closeNow()
	}
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}

// acceptLoop accepts connections until the listener is closed.
func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (such as too many open files):
			// back off a little and keep serving.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		p.accepted++
		if p.refuse || p.closed {
			p.mu.Unlock()
			_ = client.Close()
			continue
		}
		c := &conn{p: p, id: p.accepted, aud: p.auditor, client: client, done: make(chan struct{})}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go c.run()
	}
}

// conn is one proxied connection.
type conn struct {
	p      *Proxy
	id     int      // 1 for the first connection accepted, and so on
	aud    *Auditor // nil unless auditing was on when it was accepted
	client net.Conn
	server net.Conn // set once the dial succeeded; guarded by Proxy.mu

	cutOnce sync.Once
	done    chan struct{} // closed by cut

	blackholed bool // guarded by Proxy.mu
}

// run dials the target, then forwards the client's packets to the server
// while a second goroutine forwards the other way. Once both directions
// have ended it closes both sockets.
func (c *conn) run() {
	p := c.p
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		if c.aud != nil {
			c.aud.closed(c.id)
		}
	}()
	dctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	var d net.Dialer
	server, err := d.DialContext(dctx, "tcp", p.target)
	cancel()
	if err != nil {
		c.cut()
		_ = c.client.Close()
		return
	}
	p.mu.Lock()
	c.server = server
	p.mu.Unlock()
	defer server.Close()
	defer c.client.Close()
	select {
	case <-c.done: // cut while dialling
		return
	default:
	}
	s2c := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(s2c)
		c.pipe(ServerToClient, server, c.client)
	}()
	c.pipe(ClientToServer, c.client, server)
	<-s2c
}

// isBlackholed reports whether a Blackhole fault stopped this connection.
func (c *conn) isBlackholed() bool {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return c.blackholed
}

// drainTimeout bounds how long a cut connection waits for its peers to
// close their sides.
const drainTimeout = time.Second

// cut ends the connection on both sides: it stops forwarding and sends
// each peer an end of stream after whatever was already written to it.
// The sockets are closed once the peers have closed theirs, or after
// drainTimeout: closing a socket whose peer's data is still unread would
// reset the connection, and a reset may destroy the last packet forwarded
// before the peer has read it. Safe to call more than once and from any
// goroutine.
func (c *conn) cut() {
	c.cutOnce.Do(func() {
		close(c.done)
		c.p.mu.Lock()
		server := c.server
		c.p.mu.Unlock()
		deadline := time.Now().Add(drainTimeout)
		for _, s := range []net.Conn{c.client, server} {
			if s == nil {
				continue
			}
			if tc, ok := s.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			_ = s.SetReadDeadline(deadline)
		}
	})
}

// closeNow cuts the connection and closes both sockets at once, without
// waiting for the peers.
func (c *conn) closeNow() {
	c.cut()
	_ = c.client.Close()
	c.p.mu.Lock()
	server := c.server
	c.p.mu.Unlock()
	if server != nil {
		_ = server.Close()
	}
}

// cutDone reports whether the connection has been cut.
func (c *conn) cutDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// maxRemaining is the largest remaining length a variable byte integer can
// carry (MQTT v5 §1.5.5).
const maxRemaining = 268_435_455

// errMalformed reports a stream that is not a sequence of MQTT packets.
var errMalformed = errors.New("faultproxy: malformed packet framing")

// readPacket reads one whole packet (fixed header included) into buf and
// returns it with its type.
func readPacket(r *bufio.Reader, buf []byte) ([]byte, packets.Type, error) {
	first, err := r.ReadByte()
	if err != nil {
		return nil, 0, err
	}
	typ := packets.Type(first >> 4)
	if typ == 0 {
		return nil, 0, errMalformed
	}
	buf = append(buf[:0], first)
	remaining, shift := 0, 0
	for i := 0; ; i++ {
		if i == 4 {
			return nil, 0, errMalformed
		}
		b, err := r.ReadByte()
		if err != nil {
			return nil, 0, noEOF(err)
		}
		buf = append(buf, b)
		remaining |= int(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			if i > 0 && b == 0 {
				return nil, 0, errMalformed // not the minimal encoding
			}
			break
		}
	}
	if remaining > maxRemaining {
		return nil, 0, errMalformed
	}
	header := len(buf)
	buf = append(buf, make([]byte, remaining)...)
	if _, err := io.ReadFull(r, buf[header:]); err != nil {
		return nil, 0, noEOF(err)
	}
	return buf, typ, nil
}

// noEOF turns an end of stream inside a packet into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// pipe forwards packets from src to dst until either side fails or the
// connection is cut, applying the armed faults. It then cuts the
// connection, since MQTT has no use for a half-open one, and reads and
// discards what src still sends until src closes or the drain deadline
// passes.
func (c *conn) pipe(dir Direction, src, dst net.Conn) {
	r := bufio.NewReaderSize(src, 32<<10)
	c.forward(dir, r, dst)
	c.cut()
	_, _ = io.Copy(io.Discard, r)
}

// forward is the forwarding loop of pipe.
func (c *conn) forward(dir Direction, r *bufio.Reader, dst net.Conn) {
	var buf []byte
	for {
		pkt, typ, err := readPacket(r, buf)
		if err != nil {
			return
		}
		if dir == ClientToServer {
			// What the client sent, whatever becomes of it.
			c.audit(dir, pkt)
		}
		if c.cutDone() {
			return
		}
		buf = pkt
		inj, drop := c.p.match(c, dir, typ)
		if drop {
			continue
		}
		if inj == nil {
			c.auditServer(dir, pkt)
			if _, err := dst.Write(pkt); err != nil {
				return
			}
			continue
		}
		switch inj.f.Action {
		case CutBefore:
			c.cut()
			close(inj.fired)
			return
		case CutAfter:
			c.auditServer(dir, pkt)
			_, _ = dst.Write(pkt)
			c.cut()
			close(inj.fired)
			return
		case Blackhole:
			// match has already marked the connection: this packet and
			// every later one, both ways, is dropped.
			close(inj.fired)
		case Delay:
			timer := time.NewTimer(inj.f.Delay)
			select {
			case <-timer.C:
				if !c.isBlackholed() {
					c.auditServer(dir, pkt)
					_, err = dst.Write(pkt)
				}
			case <-c.done:
				timer.Stop()
				err = net.ErrClosed
			}
			close(inj.fired)
			if err != nil {
				return
			}
		default:
			// An unknown action forwards the packet unchanged.
			close(inj.fired)
			c.auditServer(dir, pkt)
			if _, err := dst.Write(pkt); err != nil {
				return
			}
		}
	}
}

// audit passes a packet to the auditor, if auditing is on.
func (c *conn) audit(dir Direction, pkt []byte) {
	if c.aud != nil {
		c.aud.observe(c.id, dir, pkt)
	}
}

// auditServer audits a server-to-client packet about to be forwarded: the
// client cannot react to it before it is written, so auditing it now keeps
// the auditor's view of the exchange in step with the client's.
func (c *conn) auditServer(dir Direction, pkt []byte) {
	if dir == ServerToClient {
		c.audit(dir, pkt)
	}
}

// match counts the packet against the armed faults and returns the one to
// apply, if any. drop reports that the connection is black-holed and the
// packet must be discarded (it is then not counted).
func (p *Proxy) match(c *conn, dir Direction, typ packets.Type) (inj *Injection, drop bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.blackholed {
		return nil, true
	}
	kept := p.faults[:0]
	for _, f := range p.faults {
		if f.f.Dir == dir && (f.f.Type == 0 || f.f.Type == typ) {
			f.seen++
			if inj == nil && f.seen >= f.f.Nth {
				inj = f
				continue // fired: no longer armed
			}
		}
		kept = append(kept, f)
	}
	clear(p.faults[len(kept):])
	p.faults = kept
	if inj != nil && inj.f.Action == Blackhole {
		c.blackholed = true
	}
	return inj, false
}
