// Package client is an MQTT v5 client whose session survives reconnects,
// process crashes and failover, by keeping its state in a
// store.SessionStore.
//
// A Client serves one session (one ClientID) and manages its own
// connection: Connect starts a loop that reconnects with exponential
// backoff and jitter, across Config.Servers in order, until Close.
//
// # What is stored, and when
//
// Outbound QoS 2 messages are written to the store before they reach the
// network; a QoS 1 message's record is written while its exchange runs,
// and a PUBACK that comes first takes it back unwritten (see Token.Stored
// for when it is durable). PUBACK or PUBCOMP deletes them; PUBREC replaces
// the PUBLISH by its PUBREL in one atomic batch before the PUBREL is sent.
// An inbound QoS 2 message is recorded before its PUBREC goes out, and the
// record is deleted before the PUBCOMP goes out. Store writes of
// concurrent publishers are grouped: one committer goroutine applies
// everything queued in one Apply, then releases the packets that waited
// for it, in order. With a store that implements store.Pipeliner (Redis),
// a batch that packets wait for is sent while the one before it is still
// on its way, up to two at once. A batch that no packet waits for (records of QoS 1
// messages already sent, deletions of finished ones) is held back up to
// 2 ms, or until the application waits on Token.Stored, so that the
// PUBACKs arriving meanwhile spare those writes.
//
// On reconnection with Session Present 1 the stored PUBLISH (DUP=1) and
// PUBREL packets are resent in their original order before anything new,
// within the server's Receive Maximum. A new Client built on the same store
// (a restarted process) does the same. With Session Present 0 the stored
// state is discarded as the specification asks and the messages that were
// in flight are reported to Config.OnSessionLost (and republished when
// Config.RepublishLost is set).
//
// # Delivery guarantees, and their limits
//
// QoS 1 messages are delivered at least once in both directions. QoS 2
// messages are delivered exactly once across connection losses and across
// process restarts on a durable store, with one window left by the
// protocol: when the process dies after the handler returned and before
// the inbound record is durable, the message is delivered again on
// restart — at most Config.CrashWindow such messages. Config.OnMessageTx
// closes that window on stores that implement store.Transactor: the
// handler's writes and the record commit in one transaction. A server that loses a session and creates a new one on a
// connection attempt whose CONNACK never arrives answers the next attempt
// with Session Present 1 for a session that is not ours; the client cannot
// tell, and resends its messages there as it would anyway.
//
// Messages published while disconnected are stored and sent on
// reconnection, in order (QoS 0 ones only with Config.QueueQoS0, and then
// in memory only).
//
// # Several servers
//
// Each server has its own session key in the store. When the client moves
// to another server, the outbound messages not yet completed move with it
// and are sent there as new messages; PUBRELs and inbound QoS 2 records stay
// with the old server's session. The nodes of one clustered broker, which
// share sessions, are named as one session with Config.Cluster: moving
// between them continues the session.
//
// # Hand-over and pending messages
//
// PublishStored (or Token.Stored) tells when a message is durable in the
// store, from when the library delivers it whatever happens to the
// process; Message.Ref names it in the store, and Client.Pending lists what
// a session still holds. Every bound on memory — MaxQueued,
// MaxQueuedBytes, MaxInboundBytes, MaxWriteBuffer, MaximumPacketSize — is
// a Config field with a documented default.
//
// # Shared stores
//
// When the store implements store.Owner, the client takes the session's
// lease before connecting and gives it up on Close. If the lease is lost,
// or a store write is refused with store.ErrSessionTaken, the client
// disconnects, stops reconnecting and reports ErrSessionTaken.
package client
