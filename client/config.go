package client

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// Config configures a Client. The zero value of every optional field means
// the default documented on it.
type Config struct {
	// Servers lists the brokers to connect to, in order of preference, as
	// URLs: mqtt:// or tcp:// for plain TCP (port 1883 by default),
	// mqtts://, tls:// or ssl:// for TLS (port 8883 by default), ws:// and
	// wss:// for MQTT over WebSocket (ports 80 and 443, path /mqtt by
	// default). At least
	// one is required. Each server has its own session in the store, since
	// an MQTT session lives on one server. Credentials in a URL
	// (mqtt://user:pass@host) are sent to that server in place of Username
	// and Password; errors and logs show such URLs with the password
	// hidden.
	Servers []string

	// Cluster, when set, names one session for every server in Servers:
	// they are the nodes of one clustered broker that shares sessions
	// between its nodes (EMQX, HiveMQ, VerneMQ and the like). Failing over
	// from one node to another then continues the session — PUBRELs and
	// DUP resends with their original packet identifiers, inbound records
	// — instead of moving unfinished messages to a new session as new
	// messages (which is right for independent brokers, and would
	// duplicate QoS 2 messages and strand PUBRELs in a cluster). The store
	// keys the session by "cluster:" + Cluster and the ClientID. A node
	// that answers Session Present 0 has lost the session, as any server
	// can (Config.OnSessionLost).
	Cluster string

	// ClientID names the session on the server and in the store. Required:
	// a session that survives reconnects needs a stable name.
	ClientID string

	// Store keeps the session state. Nil means a new in-memory store, whose
	// state survives reconnects but not the end of the process.
	Store store.SessionStore

	// CleanStart discards any stored session, locally and on the server, on
	// the first connection this Client makes. Later reconnections always
	// continue the session.
	CleanStart bool

	// SessionExpiry is how long the server and the client keep the session
	// after the network connection closes. It is sent in whole seconds. Zero
	// means the session ends with the connection: messages in flight when a
	// connection drops are then reported lost on the next connection (and
	// republished when RepublishLost is set), though messages never sent are
	// kept and sent. NeverExpire (or more than math.MaxUint32 seconds) keeps
	// the session until it is cleaned.
	SessionExpiry time.Duration

	// KeepAlive is the longest time between two packets the client sends;
	// when the link is idle the client sends PINGREQ, and a server that
	// stays silent for KeepAlive after a PINGREQ is taken for dead and the
	// connection dropped. Zero means 60s; a negative value turns keep alive
	// off. Sent in whole seconds (at least 1). A Server Keep Alive in
	// CONNACK takes precedence (MQTT-3.2.2-21).
	KeepAlive time.Duration

	// Username and Password authenticate the client. The password is never
	// logged. A nil Password sends none.
	Username string
	Password []byte

	// Will is the message the server publishes when the connection ends
	// without a normal DISCONNECT; nil means none.
	Will *Will

	// ReceiveMaximum is how many QoS 1 and 2 messages the server may have
	// unacknowledged towards this client at once. Zero means 1024.
	ReceiveMaximum uint16

	// CrashWindow bounds the inbound QoS 1 and 2 messages handed to
	// OnMessage whose acknowledgement is not out yet — for QoS 2, whose
	// inbound record is not yet durable. Those are the messages a crash of
	// the process can deliver to the application a second time; while the
	// window is full, later messages wait (without disconnecting) until
	// earlier acknowledgements are out. With ManualAck it is also how many
	// messages the application can hold unacknowledged at once. Zero means
	// 32; it is at most ReceiveMaximum.
	CrashWindow int

	// StrictReceiveMaximum disconnects, with reason 0x93, a server that
	// sends more unacknowledged QoS 1 and 2 messages than ReceiveMaximum.
	// It is off by default because Mosquitto 2.0 (2.0.11 at least) exceeds
	// the client's Receive Maximum when it sends the messages it queued for
	// a session, right after a reconnection: a strict client is then
	// disconnected again on every reconnection and never drains its
	// backlog. Without it the overrun is logged once per connection and
	// accepted; 65,535 unacknowledged messages (the protocol's bound) still
	// end the connection with 0x93.
	StrictReceiveMaximum bool

	// MaximumPacketSize is the largest packet the client accepts, announced
	// to the server in CONNECT (which then does not send larger ones). Zero
	// means 1 MiB; math.MaxUint32 allows anything the protocol does (256
	// MiB). A larger packet ends the connection with reason 0x95. It bounds
	// what one packet from the server can make the client hold.
	MaximumPacketSize uint32

	// TopicAliasMaximum is the highest inbound topic alias the client
	// accepts. Zero means none.
	TopicAliasMaximum uint16

	// OutboundTopicAliases lets the client replace repeated topics of
	// outgoing PUBLISH packets by aliases, within the server's Topic Alias
	// Maximum. Stored messages always keep their full topic.
	OutboundTopicAliases bool

	// ConnectTimeout bounds the dial and the CONNECT/CONNACK exchange of one
	// attempt. Zero means 10s.
	ConnectTimeout time.Duration

	// ReconnectBackoff bounds the wait between connection attempts, which
	// doubles from Min up to Max, with jitter, and goes back to Min after a
	// connection that lasted at least as long as the wait before it. Zero
	// values mean 100ms and 30s.
	ReconnectBackoff Backoff

	// TLSConfig configures mqtts:// connections. Nil means the defaults of
	// crypto/tls, with certificate verification on. ServerName is set from
	// the URL when empty.
	TLSConfig *tls.Config

	// TLSCAFile, TLSCertFile, TLSKeyFile, TLSServerName and
	// TLSInsecureSkipVerify complete TLSConfig (or the defaults, when it
	// is nil) for mqtts:// and wss:// servers. TLSCAFile names a PEM file
	// of the certificate authorities to trust instead of the system's;
	// TLSCertFile and TLSKeyFile (both or neither) name the PEM client
	// certificate and key for mutual TLS. The files are read on each
	// connection attempt, so renewed certificates are used on the next
	// one; a missing or unparsable file fails the attempt with an error
	// wrapping ErrTLSFiles. TLSServerName overrides the name the server's
	// certificate is checked against (by default the URL's host).
	// TLSInsecureSkipVerify turns certificate verification off: for tests
	// only, since anyone on the path can then read and change the session.
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSServerName         string
	TLSInsecureSkipVerify bool

	// Auth runs enhanced authentication (MQTT v5 §4.12); nil means none.
	Auth Authenticator

	// ManualAck makes the application acknowledge each inbound QoS 1 and 2
	// message with Message.Ack. By default a message is acknowledged when
	// OnMessage returns.
	ManualAck bool

	// OnMessageTx, instead of OnMessage, handles each inbound message inside
	// a transaction of the store, which must implement store.Transactor
	// (store/bolt: a *bbolt.Tx; store/sqlite: the *sql.Conn of a BEGIN
	// IMMEDIATE transaction): the application's writes through tx and, for
	// QoS 2, the message's inbound record commit together. A QoS 2 message
	// then reaches the application's data exactly once, across crashes of
	// the process included: a crash before the commit rolls both back and
	// the server's redelivery runs the handler again; after it, the
	// redelivery is only answered. QoS 1 messages are at least once, as
	// ever (their acknowledgement follows the commit); QoS 0 at most once.
	// An error (or a panic) from the handler rolls the transaction back
	// and refuses the message: PUBACK or PUBREC with reason 0x80, after
	// which the server does not send it again. A store error drops the
	// connection so the server redelivers. Messages are handled one at a
	// time, in order. Not with ManualAck or OnMessage.
	OnMessageTx func(m *Message, tx any) error

	// OnMessage receives every inbound message, one at a time and in order,
	// on a goroutine of its own: a handler that blocks delays later messages
	// but never keep alive or the acknowledgements of earlier ones. Nil
	// drops messages (QoS 1 and 2 are still acknowledged).
	OnMessage func(*Message)

	// MaxQueuedQoS0 bounds the inbound QoS 0 messages waiting for OnMessage;
	// beyond it they are dropped and logged. Zero means 10000.
	MaxQueuedQoS0 int

	// MaxInboundBytes bounds the inbound messages the client holds for the
	// application (waiting for OnMessage, or for a free place under our
	// Receive Maximum), counted in bytes of topic, payload and properties.
	// Beyond it the client stops reading from the network until OnMessage
	// catches up, so a slow handler slows the server down (TCP's own flow
	// control) instead of growing memory. Keep alive does not end a
	// connection for the time reading is paused. Zero means 64 MiB.
	MaxInboundBytes int

	// MaxQueued and MaxQueuedBytes bound the outbound messages the client
	// holds: QoS 1 and 2 messages not yet completed (queued, in flight, or
	// awaiting PUBCOMP, including a stored backlog) and QoS 0 messages
	// waiting for a connection (QueueQoS0). Bytes count topic, payload and
	// properties. A publish that finds the queue full waits for room
	// (PublishAsync without a limit, Publish and PublishStored within their
	// context), or fails with ErrQueueFull when FailWhenQueueFull is set.
	// Zero means 100,000 messages and 256 MiB.
	MaxQueued         int
	MaxQueuedBytes    int
	FailWhenQueueFull bool

	// LoadWindow bounds the stored messages a client resuming a session
	// holds in memory, with a store that reads sessions in pages
	// (store.Scanner: every store of this module): it connects once the
	// first pages are read and keeps at most LoadWindow queued messages
	// (or 8 MiB of them) loaded ahead of those sent, reading the rest from
	// the store as the queue drains. Zero means 1,024. A store without a
	// Scanner is loaded whole.
	LoadWindow int

	// CommitPipeline is how many store batches may be on their way at once
	// with a store that implements store.Pipeliner (Redis): a batch that a
	// QoS 2 PUBLISH or PUBREL waits for is sent while the one before it is
	// still being applied, instead of after it. It pays where the store is
	// across a network (QoS 2 publishing through a Redis a few
	// milliseconds away ran a third faster); with Redis on the same small
	// host, busy with its own work, the extra scripts cost more than the
	// wait they save: set 1 there, for one batch at a time. Zero means 2. Ignored with a store
	// that is not a Pipeliner, and with OnMessageTx.
	CommitPipeline int

	// MaxWriteBuffer bounds the bytes waiting to be written to the network.
	// A QoS 0 publish that finds it full fails with ErrBufferFull
	// (Publish waits for room, within its context); QoS 0 messages queued
	// while disconnected count against MaxQueuedBytes instead. QoS 1 and 2
	// messages are bounded by the server's Receive Maximum. When
	// the acknowledgements and other packets the client must send find it
	// full, the server is not reading: the connection ends with
	// ErrServerNotReading. Zero means 4 MiB.
	MaxWriteBuffer int

	// WriteTimeout bounds each write to the network: a server that stops
	// reading for that long loses the connection. Zero means 30s.
	WriteTimeout time.Duration

	// OnConnect is called after every successful CONNACK.
	OnConnect func(*ConnectInfo)

	// OnConnectionLost is called when an established connection ends for
	// any reason but Disconnect or Close. The error tells why; it matches
	// ErrSessionTaken when the store's lease was lost, after which the
	// client does not reconnect.
	OnConnectionLost func(error)

	// OnServerDisconnect is called with the DISCONNECT the server sent,
	// before OnConnectionLost.
	OnServerDisconnect func(*packets.Disconnect)

	// OnSessionLost is called when stored state was discarded because the
	// server no longer had the session (Session Present 0) or the session
	// expired locally. It lists the outbound messages that were in flight
	// and may not have been delivered. When RepublishLost is set they are
	// published again as new messages (republished is true); otherwise their
	// Publish calls fail with ErrSessionLost, possibly before the call: it
	// comes once the new connection is set up.
	OnSessionLost func(lost []*Message, republished bool)

	// OnCorrupt is called when loading the session found records that
	// cannot be used: reported corrupt by the store, or not a valid record
	// of this client. The session goes on without them; they stay in the
	// store, and any packet identifier they hold stays out of use, until
	// Client.DiscardCorrupt removes them. Every such load is also logged at
	// Error level.
	OnCorrupt func(*store.CorruptError)

	// RepublishLost republishes lost outbound messages as new messages:
	// at least once for QoS 1, and possibly twice for QoS 2.
	RepublishLost bool

	// QueueQoS0 stores QoS 0 messages published while disconnected and
	// sends them on reconnection. By default such a Publish fails with
	// ErrNotConnected.
	QueueQoS0 bool

	// WaitForLease makes the client wait for the store's session lease
	// when another process holds it, instead of failing at once with
	// ErrSessionTaken. Only stores that implement store.Owner have leases.
	WaitForLease bool

	// LeaseTTL is passed to store.Owner.Acquire; zero means the store's
	// default.
	LeaseTTL time.Duration

	// Properties holds further CONNECT properties: User properties,
	// RequestProblemInfo, RequestResponseInfo. Fields the client sets from
	// this Config (Session Expiry, Receive Maximum, Maximum Packet Size,
	// Topic Alias Maximum, authentication) are overwritten.
	Properties packets.Properties

	// Logger receives the client's logs. Nil means silent.
	Logger *slog.Logger
}

// NeverExpire is the SessionExpiry of a session the server keeps forever.
const NeverExpire = time.Duration(0xFFFFFFFF) * time.Second

// Backoff bounds the wait between reconnection attempts.
type Backoff struct {
	Min, Max time.Duration
}

// Will is the message the server publishes for the client when its
// connection ends abnormally.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties packets.Properties // Will properties, such as WillDelay
}

// Authenticator runs an enhanced authentication method (MQTT v5 §4.12),
// on connection and on Client.Reauthenticate.
type Authenticator interface {
	// Method returns the Authentication Method name.
	Method() string
	// Start returns the Authentication Data of the CONNECT, or of the AUTH
	// that starts a re-authentication.
	Start() ([]byte, error)
	// Continue answers the server's challenge (an AUTH with reason 0x18)
	// with the next Authentication Data.
	Continue(challenge []byte) ([]byte, error)
	// Finish sees the Authentication Data of the successful CONNACK or AUTH;
	// an error ends the connection.
	Finish(data []byte) error
}

// ConnectInfo describes an established connection.
type ConnectInfo struct {
	// Server is the canonical URL of the server connected to.
	Server string
	// SessionPresent is the server's Session Present flag.
	SessionPresent bool
	// Resent is how many stored PUBLISH and PUBREL packets are being resent.
	Resent int
	// Connack is the server's CONNACK.
	Connack *packets.Connack
}
