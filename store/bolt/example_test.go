package bolt_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
)

func Example() {
	dir, err := os.MkdirTemp("", "tether-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := bolt.Open(filepath.Join(dir, "sessions.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx := context.Background()
	k := store.Key{Server: "tcp://broker.example:1883", ClientID: "sensor-1"}
	// A QoS 2 PUBLISH, then its replacement by the PUBREL: one atomic batch.
	if err := s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 7, Packet: []byte("PUBLISH")})); err != nil {
		log.Fatal(err)
	}
	if err := s.Apply(ctx, k, store.Delete(1), store.Put(store.Record{Seq: 2, Dir: store.Outbound, ID: 7, Packet: []byte("PUBREL")})); err != nil {
		log.Fatal(err)
	}
	recs, err := s.Load(ctx, k)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Println(r.Seq, r.Dir, r.ID, string(r.Packet))
	}
	// Output: 2 outbound 7 PUBREL
}
