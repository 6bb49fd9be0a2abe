package redis_test

import (
	"context"
	"errors"
	"log"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/redis"
)

// Open a store on one Redis server and write a record.
func ExampleOpen() {
	s, err := redis.Open("redis://localhost:6379/0", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	k := store.Key{Server: "tcp://broker.example:1883", ClientID: "sensor-7"}
	err = s.Apply(context.Background(), k, store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte{0x32}}))
	if errors.Is(err, store.ErrUnavailable) {
		log.Print("Redis is down; the batch may or may not have been applied")
	}
}

// Share sessions through a Redis Cluster; the application keeps the client.
func ExampleNew_cluster() {
	rdb := goredis.NewClusterClient(&goredis.ClusterOptions{
		Addrs:                 []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"},
		ContextTimeoutEnabled: true,
	})
	defer rdb.Close()
	s, err := redis.New(rdb, &redis.Options{Prefix: "myapp"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	_ = s
}

// Own a session before driving it, and stop when the lease is lost.
func ExampleStore_Acquire() {
	s, err := redis.Open("redis://localhost:6379/0", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	k := store.Key{Server: "tcp://broker.example:1883", ClientID: "orders"}
	// Wait for the instance that holds it to release it or die.
	lease, err := s.Acquire(ctx, k, store.LeaseOptions{TTL: 10 * time.Second, Wait: true})
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(context.Background())
	select {
	case <-lease.Lost():
		// Another instance took over: every write of ours now fails with
		// store.ErrSessionTaken. Stop using the session.
	case <-ctx.Done():
	}
}
