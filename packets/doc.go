// Package packets is the MQTT v5 wire format: every control packet, its
// properties and reason codes, with validation on both encode and decode.
//
// Append and Size encode; Decode reads one packet from a byte slice and
// Reader reads packets one at a time from a stream. Both sides apply the
// same rules, so whatever Decode accepts, Append can write back, and a
// packet Append refuses would be refused by a peer too. Every violation is
// an *Error that names, through errors.Is, the kind of violation (one
// exported sentinel per kind) and carries the reason code a DISCONNECT or
// CONNACK should report for it.
//
// ValidTopicName and ValidTopicFilter apply the topic rules on their own,
// for callers that check before building a packet. Properties.SetPresent
// and Properties.Has tell a property sent with its zero value from an
// absent one, so that what Decode reads, Append writes back unchanged.
//
// Decoding takes memory in proportion to the packet: a Reader allocates a
// body as its bytes arrive, not as its header announces, and Limits bound
// the repeated properties whose decoded form is larger than their
// encoding.
//
// The package does no I/O beyond the io.Reader it is given, keeps no
// state between packets, and never panics on any input.
package packets
