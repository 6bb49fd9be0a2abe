package sealed_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/sealed"
)

// TestClientWrongKeyThenRotation drives a real client against Mosquitto
// over a sealed bolt file: a message queued while offline is stored
// sealed; a client started with the wrong keyring reports the record
// through Config.OnCorrupt, as the client reports a failed checksum, and
// leaves it in place; a client started with the right key, rotated to a
// new current key, then delivers the message, and what it writes carries
// the new key id.
func TestClientWrongKeyThenRotation(t *testing.T) {
	b := testenv.Mosquitto(t)
	path := filepath.Join(t.TempDir(), "sessions.db")
	id := "sealed-e2e-" + randomHex(4)
	topic := "tether/sealed/" + randomHex(4)
	payload := []byte(secretPayload)
	nameKey := testKey(1000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	open := func(kr sealed.Keyring) store.SessionStore {
		t.Helper()
		inner, err := bolt.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return mustNew(t, inner, sealed.Options{Keyring: kr, NameKey: nameKey})
	}
	newClient := func(st store.SessionStore, onCorrupt func(*store.CorruptError)) *client.Client {
		t.Helper()
		c, err := client.New(client.Config{
			Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
			ReconnectBackoff: client.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
			OnCorrupt:        onCorrupt,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// 1. Queued while offline, under key 1.
	st := open(ring(1, 1))
	c := newClient(st, nil)
	tok := c.PublishAsync(&client.Message{Topic: topic, QoS: 1, Payload: payload})
	if err := tok.WaitStored(ctx); err != nil {
		t.Fatalf("the offline publish was not stored: %v", err)
	}
	_ = c.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// 2. The wrong key (another key under another id): the client reports
	// the records and connects with none of them; they stay in the store.
	st = open(sealed.Keyring{Current: 9, Keys: map[uint32][]byte{9: testKey(99)}})
	reported := make(chan *store.CorruptError, 4)
	c = newClient(st, func(e *store.CorruptError) { reported <- e })
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	var badSeqs []uint64
	select {
	case e := <-reported:
		// The client gathers the causes of every bad record into one
		// message, so only the text names the unknown key.
		if !errors.Is(e, store.ErrCorrupt) || !strings.Contains(e.Error(), "key id the keyring lacks") {
			t.Errorf("OnCorrupt got %v, want an unknown key reported as corrupt", e)
		}
		badSeqs = e.Seqs
	case <-ctx.Done():
		t.Fatal("OnCorrupt was not called for records under an unknown key")
	}
	if len(badSeqs) == 0 || !slices.ContainsFunc(badSeqs, func(s uint64) bool { return s != store.MetaSeq }) {
		t.Fatalf("OnCorrupt reported seqs %v, want the queued message's among them", badSeqs)
	}
	_ = c.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// 3. The right key, rotated: key 1 opens the queued message, key 2
	// seals what is written now. A subscriber receives the message. (The
	// meta record the wrong-key client wrote is reported in turn.)
	got := make(chan []byte, 1)
	sub, err := client.New(client.Config{Servers: []string{b.URL()}, ClientID: id + "-sub", CleanStart: true,
		OnMessage: func(m *client.Message) {
			if m.Topic == topic {
				select {
				case got <- append([]byte(nil), m.Payload...):
				default:
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(ctx, client.Subscription{Filter: topic, SubscribeOptions: packets.SubscribeOptions{QoS: 1}}); err != nil {
		t.Fatal(err)
	}
	st = open(ring(2, 1, 2))
	defer st.Close()
	c = newClient(st, func(e *store.CorruptError) { t.Logf("reported: %v", e) })
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if string(p) != string(payload) {
			t.Fatalf("the subscriber got %q, want %q", p, payload)
		}
	case <-ctx.Done():
		t.Fatal("the message queued under key 1 was not delivered after the rotation")
	}
	// The client rewrote its meta record on connecting: under key 2.
	s := st.(interface {
		Inner() store.SessionStore
		InnerKey(store.Key) store.Key
	})
	k := store.Key{Server: "mqtt://" + b.Addr(), ClientID: id}
	raw, err := s.Inner().Load(ctx, s.InnerKey(k))
	if err != nil {
		t.Fatalf("inner Load: %v", err)
	}
	var meta *store.Record
	for i := range raw {
		if raw[i].Seq == store.MetaSeq {
			meta = &raw[i]
		}
	}
	if meta == nil {
		t.Fatalf("no meta record under %v (inner records %d)", k, len(raw))
	}
	if kid, ok := sealed.KeyID(meta.Packet); !ok || kid != 2 {
		t.Errorf("the meta record written after the rotation is sealed with key %d (%v), want 2", kid, ok)
	}
}
