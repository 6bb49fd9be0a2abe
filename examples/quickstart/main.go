// Command quickstart connects to an MQTT broker, subscribes to a topic,
// publishes a few messages at QoS 1 and prints what comes back.
//
//	go run ./examples/quickstart -broker mqtt://localhost:1883
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store/memory"
)

func main() {
	broker := flag.String("broker", "mqtt://localhost:1883", "broker URL (mqtt://, mqtts://)")
	topic := flag.String("topic", "tether/quickstart", "topic to use")
	n := flag.Int("n", 3, "messages to publish")
	flag.Parse()
	if err := run(*broker, *topic, *n); err != nil {
		log.Fatal(err)
	}
}

func run(broker, topic string, n int) error {
	got := make(chan *client.Message, n)
	c, err := client.New(client.Config{
		Servers:       []string{broker},
		ClientID:      fmt.Sprintf("tether-quickstart-%d", os.Getpid()),
		Store:         memory.New(),
		SessionExpiry: time.Minute,
		OnMessage:     func(m *client.Message) { got <- m },
		OnConnectionLost: func(err error) {
			log.Printf("connection lost: %v (reconnecting)", err)
		},
	})
	if err != nil {
		return err
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		return err
	}
	if _, err := c.Subscribe(ctx, client.Subscription{Filter: topic, SubscribeOptions: packets.SubscribeOptions{QoS: 1}}); err != nil {
		return err
	}
	for i := range n {
		msg := &client.Message{Topic: topic, QoS: 1, Payload: fmt.Appendf(nil, "hello %d", i)}
		if err := c.Publish(ctx, msg); err != nil {
			return err
		}
	}
	for range n {
		select {
		case m := <-got:
			fmt.Printf("received %s: %s\n", m.Topic, m.Payload)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
