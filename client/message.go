package client

import (
	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
)

// Message is an MQTT application message, outbound or inbound.
type Message struct {
	// Ref is the application's own name for an outbound QoS 1 or 2 message
	// (an outbox row's key, say). It is never sent: it is kept in the store
	// with the message, through its PUBREL stage too, and reported by
	// Client.Pending and Config.OnSessionLost, so that an application
	// resuming after a crash can tell which of its messages the library
	// still holds.
	Ref string

	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties packets.Properties
	// Dup is set on inbound messages the server marked as redelivered.
	Dup bool

	// PacketID is the inbound message's packet identifier (0 for QoS 0).
	PacketID uint16

	// Inbound QoS>0 messages only; in is guarded by Client.mu.
	c  *Client
	cn *conn
	in engine.Inbound
}

// Ack acknowledges an inbound message when Config.ManualAck is set. Acks go
// out in the order the messages arrived (MQTT-4.6.0-2, MQTT-4.6.0-3): the
// acknowledgement of a message waits for those of the messages before it.
// After the connection a QoS 1 message came on has dropped, Ack returns
// ErrNotConnected and changes nothing: the server sends the message again.
// A QoS 2 message acknowledged after its connection dropped is recorded in
// the session, so that the server's redelivery is answered without being
// delivered again; Ack then returns nil (ErrSessionLost when the session
// has been discarded meanwhile).
// Acknowledging a QoS 0 message, an outbound message or one already
// acknowledged does nothing.
func (m *Message) Ack() error {
	if m.cn == nil {
		return nil
	}
	return m.ack()
}
