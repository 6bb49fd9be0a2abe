package client

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
)

// conn is one network connection and its goroutines: a reader, a writer
// and, with keep alive on, a pinger.
type conn struct {
	h  connHooks
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

// connHooks is what a connection needs of its client. The connection's
// goroutines call them holding none of its own locks.
type connHooks struct {
	log          *slog.Logger
	writeLimit   int           // Config.MaxWriteBuffer
	writeTimeout time.Duration // Config.WriteTimeout
	// handle takes one packet read; an error ends the connection (with a
	// DISCONNECT carrying its code, for a *protoError).
	handle func(*conn, packets.Packet) error
	// throttle runs after each PUBLISH read: it returns once the
	// application has caught up (Config.MaxInboundBytes).
	throttle func(*conn)
	// tick runs at every keep-alive tick.
	tick func()
}

// hooks returns the client's side of a connection.
func (c *Client) hooks() connHooks {
	return connHooks{log: c.log, writeLimit: c.cfg.MaxWriteBuffer, writeTimeout: c.cfg.WriteTimeout,
		handle: c.handlePacket, throttle: c.throttle, tick: c.refreshMeta}
}

func newConn(h connHooks, nc net.Conn) *conn {
	cn := &conn{h: h, nc: nc, done: make(chan struct{}), readDone: make(chan struct{}), wlimit: h.writeLimit}
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
		cn.h.log.Error("encode packet", "type", engine.TypeName(p.Type()), "err", err)
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
			_ = cn.nc.SetWriteDeadline(time.Now().Add(cn.h.writeTimeout))
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
		cn.h.log.Warn("ending the connection with DISCONNECT", "reason_code", fmt.Sprintf("0x%02x", byte(code)),
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
		if err := cn.h.handle(cn, p); err != nil {
			var pe *protoError
			if errors.As(err, &pe) {
				cn.fail(err, pe.Code, true)
			} else {
				cn.fail(err, 0, false)
			}
			return
		}
		if p.Type() == packets.PUBLISH {
			cn.h.throttle(cn)
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
		cn.h.tick()
		t.Reset(tick)
	}
}
