package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/tethermq/tether/packets"
)

// rawConn is a minimal MQTT v5 connection: packets encoded with tether's
// packets package, written through one buffer under a mutex, read by one
// goroutine. No store, no session, no retries: the baseline every client
// is compared with.
type rawConn struct {
	c   net.Conn
	br  *bufio.Reader
	r   *packets.Reader
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
}

// rawDial connects and exchanges CONNECT/CONNACK.
func rawDial(ctx context.Context, addr, id string) (*rawConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	rc := &rawConn{c: c, br: br, r: packets.NewReader(br, 0), w: bufio.NewWriterSize(c, 64<<10)}
	if err := rc.write(&packets.Connect{CleanStart: true, KeepAlive: 0, ClientID: id}, true); err != nil {
		c.Close()
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	p, err := rc.r.Read()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raw: read CONNACK: %w", err)
	}
	ca, ok := p.(*packets.Connack)
	if !ok || ca.ReasonCode != 0 {
		c.Close()
		return nil, fmt.Errorf("raw: CONNACK expected, got %v", p)
	}
	_ = c.SetReadDeadline(time.Time{})
	return rc, nil
}

// write encodes p into the buffer, and flushes it when flush is set.
func (rc *rawConn) write(p packets.Packet, flush bool) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.writeLocked(p, flush)
}

func (rc *rawConn) writeLocked(p packets.Packet, flush bool) error {
	var err error
	rc.buf, err = packets.Append(rc.buf[:0], p)
	if err != nil {
		return err
	}
	if _, err := rc.w.Write(rc.buf); err != nil {
		return err
	}
	if flush {
		return rc.w.Flush()
	}
	return nil
}

func (rc *rawConn) flush() error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.w.Flush()
}

func (rc *rawConn) close() {
	_ = rc.write(&packets.Disconnect{}, true)
	rc.c.Close()
}

// rawPublish publishes n messages at qos keeping up to window outstanding.
// Packet identifiers cycle through 1..window, which the window keeps
// unique among outstanding publishes.
func rawPublish(ctx context.Context, rc *rawConn, topic string, qos byte, n, window int, payload []byte) error {
	if qos == 0 {
		for i := 0; i < n; i++ {
			if err := rc.write(&packets.Publish{Topic: topic, Payload: payload}, false); err != nil {
				return err
			}
		}
		return rc.flush()
	}
	slots := make(chan uint16, window)
	for id := 1; id <= window; id++ {
		slots <- uint16(id)
	}
	readErr := make(chan error, 1)
	go func() {
		done := 0
		for done < n {
			p, err := rc.r.Read()
			if err != nil {
				readErr <- err
				return
			}
			a, ok := p.(*packets.Ack)
			if !ok {
				continue
			}
			if a.ReasonCode >= 0x80 {
				readErr <- fmt.Errorf("raw: %v refused with %#x", a.Kind, byte(a.ReasonCode))
				return
			}
			switch {
			case a.Kind == packets.PUBREC:
				if err := rc.write(&packets.Ack{Kind: packets.PUBREL, PacketID: a.PacketID}, true); err != nil {
					readErr <- err
					return
				}
			case a.Kind == packets.PUBACK && qos == 1, a.Kind == packets.PUBCOMP && qos == 2:
				done++
				slots <- a.PacketID
			}
		}
		readErr <- nil
	}()
	pub := &packets.Publish{Topic: topic, Payload: payload, QoS: qos}
	for i := 0; i < n; i++ {
		var id uint16
		select {
		case id = <-slots:
		default:
			// The window is full: send what is buffered, then wait.
			if err := rc.flush(); err != nil {
				return err
			}
			select {
			case id = <-slots:
			case err := <-readErr:
				return errOr(err, errors.New("raw: reader stopped"))
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		pub.PacketID = id
		if err := rc.write(pub, false); err != nil {
			return err
		}
	}
	if err := rc.flush(); err != nil {
		return err
	}
	select {
	case err := <-readErr:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// rawSubscribe subscribes at qos and returns once the SUBACK is in; done
// is closed once n messages have arrived, or when reading fails (with the
// error in *errp).
func rawSubscribe(ctx context.Context, rc *rawConn, filter string, qos byte, n int) (done chan struct{}, errp *error, err error) {
	if err := rc.write(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, SubscribeOptions: packets.SubscribeOptions{QoS: qos}}}}, true); err != nil {
		return nil, nil, err
	}
	p, err := rc.r.Read()
	if err != nil {
		return nil, nil, err
	}
	if sa, ok := p.(*packets.Suback); !ok || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != packets.ReasonCode(qos) {
		return nil, nil, fmt.Errorf("raw: SUBACK granting QoS %d expected, got %v", qos, p)
	}
	done = make(chan struct{})
	errp = new(error)
	go func() {
		defer close(done)
		got := 0
		for got < n {
			p, err := rc.r.Read()
			if err != nil {
				*errp = err
				return
			}
			switch p := p.(type) {
			case *packets.Publish:
				got++
				// Acks are flushed when nothing more is buffered to read,
				// as a pipelined client would.
				var ack packets.Packet
				switch p.QoS {
				case 1:
					ack = &packets.Ack{Kind: packets.PUBACK, PacketID: p.PacketID}
				case 2:
					ack = &packets.Ack{Kind: packets.PUBREC, PacketID: p.PacketID}
				}
				if ack != nil {
					if err := rc.write(ack, rc.br.Buffered() == 0); err != nil {
						*errp = err
						return
					}
				}
			case *packets.Ack:
				if p.Kind == packets.PUBREL {
					if err := rc.write(&packets.Ack{Kind: packets.PUBCOMP, PacketID: p.PacketID}, rc.br.Buffered() == 0); err != nil {
						*errp = err
						return
					}
				}
			}
		}
	}()
	return done, errp, nil
}
