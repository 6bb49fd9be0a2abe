package client

import (
	"testing"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

func subOpts(qos byte) packets.SubscribeOptions { return packets.SubscribeOptions{QoS: qos} }

func TestPublishSubscribeAllQoS(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "t/#")
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), SessionExpiry: time.Hour})
	for qos := byte(0); qos <= 2; qos++ {
		if err := pub.Publish(ctxT(t, 5*time.Second), &Message{Topic: "t/x", QoS: qos, Payload: []byte{qos}}); err != nil {
			t.Fatalf("publish qos %d: %v", qos, err)
		}
	}
	msgs := col.waitFor(t, 3, 5*time.Second)
	for i, m := range msgs {
		if m.Topic != "t/x" || m.QoS != byte(i) || string(m.Payload) != string([]byte{byte(i)}) {
			t.Errorf("message %d: %+v", i, m)
		}
	}
	// Deletions after PUBACK/PUBCOMP ride in the next batch: wait for it.
	eventually(t, 5*time.Second, "records deleted", func() bool {
		return countDir(records(t, pub.st, b.URL(), pub.cfg.ClientID), store.Outbound) == 0
	})
}
