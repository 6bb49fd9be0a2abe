package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// Sentinel errors, testable with errors.Is.
var (
	// ErrClosed is returned by a closed Client.
	ErrClosed = errors.New("client: closed")
	// ErrNotConnected is returned when an operation needs a connection
	// that is not there, such as an Ack after the connection dropped.
	ErrNotConnected = engine.ErrNotConnected
	// ErrConnectionLost fails requests waiting for an answer on a
	// connection that dropped (Subscribe, Unsubscribe, Reauthenticate).
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrQoSNotSupported: the QoS is above the server's Maximum QoS.
	ErrQoSNotSupported = errors.New("client: QoS not supported by the server")
	// ErrRetainNotSupported: the server does not support retained messages.
	ErrRetainNotSupported = errors.New("client: retain not supported by the server")
	// ErrPacketTooLarge: the packet exceeds the server's Maximum Packet Size.
	ErrPacketTooLarge = engine.ErrPacketTooLarge
	// ErrWildcardNotSupported: the server does not support wildcard filters.
	ErrWildcardNotSupported = errors.New("client: wildcard subscriptions not supported by the server")
	// ErrSharedNotSupported: the server does not support shared subscriptions.
	ErrSharedNotSupported = errors.New("client: shared subscriptions not supported by the server")
	// ErrSubIDNotSupported: the server does not support subscription identifiers.
	ErrSubIDNotSupported = errors.New("client: subscription identifiers not supported by the server")
	// ErrSessionLost fails publishes whose messages were in flight when the
	// session was discarded (see Config.OnSessionLost).
	ErrSessionLost = engine.ErrSessionLost
	// ErrSessionTaken is returned when another process took the session's
	// lease in the store; the client stops.
	ErrSessionTaken = store.ErrSessionTaken
	// ErrKeepAliveTimeout ends a connection whose server stayed silent.
	ErrKeepAliveTimeout = errors.New("client: keep alive timeout: server did not answer")
	// ErrInvalidMessage: the message cannot be published (bad QoS, empty
	// or wildcard topic).
	ErrInvalidMessage = errors.New("client: invalid message")
	// ErrQueueFull: the queue of unfinished messages is full
	// (Config.MaxQueued, MaxQueuedBytes) and Config.FailWhenQueueFull is
	// set, or the context ended while waiting for room.
	ErrQueueFull = errors.New("client: publish queue full")
	// ErrBufferFull: a QoS 0 message found the write buffer (or the queue
	// of messages waiting for a connection) full; see
	// Config.MaxWriteBuffer.
	ErrBufferFull = errors.New("client: write buffer full")
	// ErrServerNotReading ends a connection whose server lets the
	// client's acknowledgements pile up past Config.MaxWriteBuffer.
	ErrServerNotReading = errors.New("client: server is not reading: write buffer full")
	// ErrNoAuthenticator: Reauthenticate without Config.Auth.
	ErrNoAuthenticator = errors.New("client: no authenticator configured")
)

// ReasonError reports a negative acknowledgement or a refusal by the
// server: a CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, AUTH or
// DISCONNECT carrying an error reason code. Use errors.As.
type ReasonError struct {
	Packet packets.Type       // the packet that carried the code
	Code   packets.ReasonCode // the reason code
	Reason string             // the server's Reason String, if any
}

// Error describes the refusal.
func (e *ReasonError) Error() string {
	s := fmt.Sprintf("client: %s: %s (0x%02x)", engine.TypeName(e.Packet), e.Code, byte(e.Code))
	if e.Packet == packets.DISCONNECT {
		s = fmt.Sprintf("client: server sent DISCONNECT: %s (0x%02x)", e.Code, byte(e.Code))
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// errClosedByServer is why a connection the server closed without a
// DISCONNECT ended.
var errClosedByServer = errors.New("closed by the server")

// wrap returns an error matching both outer and cause (errors.Is, As)
// whose text names each once: "client: connection lost: server sent
// DISCONNECT: ..." rather than repeating the package prefix at every level.
func wrap(outer, cause error) error {
	if cause == nil {
		return outer
	}
	if errors.Is(cause, outer) {
		return cause
	}
	return &wrapped{outer: outer, cause: cause}
}

type wrapped struct{ outer, cause error }

func (w *wrapped) Error() string {
	return w.outer.Error() + ": " + strings.TrimPrefix(w.cause.Error(), "client: ")
}

func (w *wrapped) Unwrap() []error { return []error{w.outer, w.cause} }
