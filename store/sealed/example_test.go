package sealed_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
	"github.com/tethermq/tether/store/sealed"
)

// This example wraps a store, writes a record, shows that the inner store
// holds only ciphertext, and reads it back; then a keyring without the key
// reports the record as corrupt.
func Example() {
	ctx := context.Background()
	// In an application the keys come from a secrets manager: 32 random
	// bytes each.
	key1 := []byte("0123456789abcdef0123456789abcdef")
	inner := memory.New() // or bolt.Open, sqlite.Open, redis.Open: any store

	s, err := sealed.New(inner, sealed.Options{
		Keyring: sealed.Keyring{Current: 1, Keys: map[uint32][]byte{1: key1}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	// The store is used as any other, for example as client.Config.Store.
	k := store.Key{Server: "tcp://broker.example:1883", ClientID: "sensor-17"}
	err = s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte("a PUBLISH packet")}))
	if err != nil {
		log.Fatal(err)
	}

	raw, _ := inner.Load(ctx, k)
	id, _ := sealed.KeyID(raw[0].Packet)
	fmt.Printf("inner store: %d bytes sealed with key %d\n", len(raw[0].Packet), id)

	recs, _ := s.Load(ctx, k)
	fmt.Printf("sealed store: %q\n", recs[0].Packet)

	other, _ := sealed.New(inner, sealed.Options{
		Keyring: sealed.Keyring{Current: 2, Keys: map[uint32][]byte{2: []byte("another key of thirty-two bytes!")}},
	})
	_, err = other.Load(ctx, k)
	var corrupt *store.CorruptError
	fmt.Println(errors.As(err, &corrupt), corrupt.Seqs, errors.Is(err, sealed.ErrUnknownKey))
	// Output:
	// inner store: 61 bytes sealed with key 1
	// sealed store: "a PUBLISH packet"
	// true [1] true
}
