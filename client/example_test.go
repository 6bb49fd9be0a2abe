package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/store/memory"
)

// Connect to a broker with a memory store, publish at QoS 1 and wait for
// the PUBACK. It needs a broker on localhost:1883, so it has no output
// check.
func Example() {
	c, err := client.New(client.Config{
		Servers:       []string{"mqtt://localhost:1883"},
		ClientID:      "example-publisher",
		Store:         memory.New(),
		SessionExpiry: time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, &client.Message{Topic: "greetings", QoS: 1, Payload: []byte("hello")}); err != nil {
		log.Fatal(err)
	}
}

// Subscribe and print what arrives.
func ExampleClient_Subscribe() {
	c, err := client.New(client.Config{
		Servers:  []string{"mqtt://localhost:1883"},
		ClientID: "example-subscriber",
		OnMessage: func(m *client.Message) {
			fmt.Printf("%s: %s\n", m.Topic, m.Payload)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	sub := client.Subscription{Filter: "greetings/#"}
	sub.QoS = 2
	if _, err := c.Subscribe(ctx, sub); err != nil {
		log.Fatal(err)
	}
}

// Publish many messages without waiting for each: they are pipelined up to
// the server's Receive Maximum.
func ExampleClient_PublishAsync() {
	c, err := client.New(client.Config{Servers: []string{"mqtt://localhost:1883"}, ClientID: "example-async"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	var toks []*client.Token
	for i := range 100 {
		toks = append(toks, c.PublishAsync(&client.Message{Topic: "counter", QoS: 1, Payload: fmt.Append(nil, i)}))
	}
	for _, t := range toks {
		if err := t.Wait(ctx); err != nil {
			log.Fatal(err)
		}
	}
}

// outboxRow is a row of an application's own outbox table.
type outboxRow struct {
	ID        string
	Payload   []byte
	HandedOff bool
}

// The outbox pattern: an application keeps the messages it must send in
// its own table, and marks a row as handed over once PublishStored
// returns — the message is then durable in the client's store, and the
// library delivers it whatever happens to the process. A crash before that
// point leaves the row unmarked, and the application publishes it again.
func ExampleClient_PublishStored() {
	c, err := client.New(client.Config{
		Servers:       []string{"mqtt://localhost:1883"},
		ClientID:      "example-outbox",
		Store:         memory.New(), // a durable store (bolt, sqlite, redis) in a real application
		SessionExpiry: time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	outbox := []*outboxRow{{ID: "order-1", Payload: []byte("42")}, {ID: "order-2", Payload: []byte("43")}}
	for _, row := range outbox {
		if row.HandedOff {
			continue
		}
		// Stored even while disconnected: Connect may come later.
		if _, err := c.PublishStored(ctx, &client.Message{Topic: "orders", QoS: 2, Payload: row.Payload, Ref: row.ID}); err != nil {
			log.Fatal(err)
		}
		row.HandedOff = true // in the application's own transaction
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
}

// After a restart, Pending tells which messages the library still holds,
// by the Ref the application gave them, and at which stage.
func ExampleClient_Pending() {
	c, err := client.New(client.Config{Servers: []string{"mqtt://localhost:1883"}, ClientID: "example-outbox",
		Store: memory.New(), SessionExpiry: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	pending, err := c.Pending(context.Background()) // before Connect: what the store holds
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range pending {
		fmt.Printf("%s: %s (packet id %d)\n", p.Ref, p.State, p.PacketID)
	}
}

// The nodes of one clustered broker share sessions: with Cluster set, a
// failover from one node to the other continues the session (PUBRELs and
// resends with their original packet identifiers) instead of starting a
// new one per node.
func ExampleConfig_cluster() {
	c, err := client.New(client.Config{
		Servers:       []string{"mqtts://node-a.example:8883", "mqtts://node-b.example:8883"},
		Cluster:       "orders-cluster",
		ClientID:      "orders-42",
		Store:         memory.New(),
		SessionExpiry: time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
