package client

import (
	"sync"

	"github.com/tethermq/tether/client/internal/engine"
)

// delivery runs OnMessage on its own goroutine, in arrival order, so that
// a slow handler never blocks the reader (keep alive and acks go on).
// Inbound QoS>0 messages are bounded by our Receive Maximum; QoS 0 ones by
// Config.MaxQueuedQoS0, beyond which they are dropped and logged.
type delivery struct {
	c      *Client
	mu     sync.Mutex
	q      []*Message
	n0     int           // QoS 0 messages in q
	bytes  int           // estimated memory of the messages in q
	room   chan struct{} // closed when a message leaves q; nil when nobody waits
	wake   chan struct{}
	quit   chan struct{}
	exited chan struct{}
	closed bool
}

func newDelivery(c *Client) *delivery {
	return &delivery{c: c, wake: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{})}
}

func (d *delivery) push(m *Message) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	if m.QoS == 0 {
		if d.n0 >= d.c.cfg.MaxQueuedQoS0 {
			d.mu.Unlock()
			d.c.flood.warn("inbound QoS 0 message dropped: delivery queue full", "topic", m.Topic)
			return
		}
		d.n0++
	}
	d.q = append(d.q, m)
	d.bytes += msgBytes(m)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// stop ends delivery and waits for the handler running, if any.
func (d *delivery) stop() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.q, d.bytes = nil, 0
	if d.room != nil {
		close(d.room)
		d.room = nil
	}
	d.mu.Unlock()
	close(d.quit)
	<-d.exited
}

func (d *delivery) run() {
	defer d.c.wg.Done()
	defer close(d.exited)
	for {
		select {
		case <-d.quit:
			return
		default:
		}
		d.mu.Lock()
		var m *Message
		if len(d.q) > 0 {
			m = d.q[0]
			d.q[0] = nil
			d.q = d.q[1:]
			if m.QoS == 0 {
				d.n0--
			}
			d.bytes -= msgBytes(m)
			if len(d.q) == 0 {
				d.q = nil
			}
			if d.room != nil {
				close(d.room)
				d.room = nil
			}
		}
		d.mu.Unlock()
		if m == nil {
			select {
			case <-d.wake:
				continue
			case <-d.quit:
				return
			}
		}
		if m.QoS == 1 && m.cn.isClosed() {
			// Its connection is gone: the server sends it again, so
			// delivering it now would only make a duplicate. (A QoS 2
			// message is delivered: its acknowledgement is kept in the
			// session and answers the redelivery.)
			continue
		}
		if d.c.cfg.OnMessageTx != nil {
			d.c.deliverTx(m)
			continue
		}
		if h := d.c.cfg.OnMessage; h != nil {
			h(m)
		}
		if m.cn != nil && (!d.c.cfg.ManualAck || d.c.cfg.OnMessage == nil) {
			_ = m.ack()
		}
	}
}

// waitRoom returns nil when the queue holds fewer than limit bytes, and
// otherwise a channel closed when a message next leaves it.
func (d *delivery) waitRoom(limit int) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.bytes < limit {
		return nil
	}
	if d.room == nil {
		d.room = make(chan struct{})
	}
	return d.room
}

// msgBytes estimates the memory an inbound message holds: its strings and
// byte slices, and the structures around them.
func msgBytes(m *Message) int { return 256 + engine.ContentCost(m.Topic, m.Payload, &m.Properties) }

// throttle pauses the reader of cn while the inbound messages held for the
// application exceed Config.MaxInboundBytes: the server then meets TCP's
// flow control instead of growing the client's memory.
func (c *Client) throttle(cn *conn) {
	for {
		c.mu.Lock()
		limit := c.cfg.MaxInboundBytes - c.eng.HeldBytes()
		c.mu.Unlock()
		room := c.deliv.waitRoom(max(limit, 0))
		if room == nil {
			return
		}
		cn.paused.Store(true)
		select {
		case <-room:
			cn.paused.Store(false)
		case <-cn.done:
			return
		}
	}
}
