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
