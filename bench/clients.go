package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahostate "github.com/eclipse/paho.golang/paho/session/state"
	pahofile "github.com/eclipse/paho.golang/paho/store/file"
	pahomem "github.com/eclipse/paho.golang/paho/store/memory"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/memory"
	"github.com/tethermq/tether/store/redis"
	"github.com/tethermq/tether/store/sqlite"
)

// Run is one measurement: n messages of Payload bytes at QoS, Window
// publishes outstanding, against the broker at Addr.
type Run struct {
	Addr     string
	QoS      byte
	N        int
	Window   int
	Payload  int
	Dir      string // a fresh directory for file stores
	RedisURL string // the Redis store's server, redis://127.0.0.1:PORT
	ID       string // unique among runs: client ids and topics derive from it
	// CommitPipeline is tether's Config.CommitPipeline (0: its default).
	CommitPipeline int
}

func (r Run) topic() string { return "bench/" + r.ID }

// Client is one publisher under comparison.
type Client struct {
	Name string
	// Publish publishes r.N messages and returns the time from the first
	// publish to the last acknowledgement (the connection excluded).
	Publish func(ctx context.Context, r Run) (time.Duration, error)
	// EndToEnd publishes r.N messages to a subscriber of the same kind and
	// returns the time from the first publish to the last delivery.
	EndToEnd func(ctx context.Context, r Run) (time.Duration, error)
}

// Clients returns every client compared, raw first.
func Clients() []Client {
	cs := []Client{{Name: "raw", Publish: rawPub, EndToEnd: rawE2E}}
	for _, s := range StoreKinds {
		s := s
		cs = append(cs, Client{Name: "tether/" + s,
			Publish:  func(ctx context.Context, r Run) (time.Duration, error) { return tetherPub(ctx, r, s) },
			EndToEnd: func(ctx context.Context, r Run) (time.Duration, error) { return tetherE2E(ctx, r, s) },
		})
	}
	for _, s := range []string{"memory", "file"} {
		s := s
		cs = append(cs, Client{Name: "paho.golang/" + s,
			Publish:  func(ctx context.Context, r Run) (time.Duration, error) { return pahoPub(ctx, r, s) },
			EndToEnd: func(ctx context.Context, r Run) (time.Duration, error) { return pahoE2E(ctx, r, s) },
		})
	}
	cs = append(cs, Client{Name: "paho.mqtt.golang", Publish: mqtt3Pub, EndToEnd: mqtt3E2E})
	return cs
}

// StoreKinds are tether's stores, by the names OpenStore takes.
var StoreKinds = []string{"memory", "bolt", "sqlite", "redis"}

// OpenStore opens a fresh store of kind: files go in dir, Redis keys under
// a prefix of their own.
func OpenStore(kind, dir, redisURL, prefix string) (store.SessionStore, error) {
	switch kind {
	case "memory":
		return memory.New(), nil
	case "bolt":
		return bolt.Open(filepath.Join(dir, prefix+".bolt"), nil)
	case "sqlite":
		return sqlite.Open(filepath.Join(dir, prefix+".sqlite"), nil)
	case "redis":
		if redisURL == "" {
			return nil, errors.New("bench: the redis store needs a Redis server")
		}
		return redis.Open(redisURL, &redis.Options{Prefix: "bench-" + prefix})
	}
	return nil, fmt.Errorf("bench: unknown store %q", kind)
}

// payload returns n bytes of a fixed pattern.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// --- raw ---

func rawPub(ctx context.Context, r Run) (time.Duration, error) {
	rc, err := rawDial(ctx, r.Addr, r.ID+"-pub")
	if err != nil {
		return 0, err
	}
	defer rc.close()
	t0 := time.Now()
	err = rawPublish(ctx, rc, r.topic(), r.QoS, r.N, r.Window, payload(r.Payload))
	return time.Since(t0), err
}

func rawE2E(ctx context.Context, r Run) (time.Duration, error) {
	sub, err := rawDial(ctx, r.Addr, r.ID+"-sub")
	if err != nil {
		return 0, err
	}
	defer sub.close()
	done, errp, err := rawSubscribe(ctx, sub, r.topic(), r.QoS, r.N)
	if err != nil {
		return 0, err
	}
	rc, err := rawDial(ctx, r.Addr, r.ID+"-pub")
	if err != nil {
		return 0, err
	}
	defer rc.close()
	t0 := time.Now()
	if err := rawPublish(ctx, rc, r.topic(), r.QoS, r.N, r.Window, payload(r.Payload)); err != nil {
		return 0, err
	}
	if err := ctxWait(ctx, done); err != nil {
		return 0, err
	}
	return time.Since(t0), *errp
}

// --- tether ---

// tetherClient connects a tether client with a fresh store of kind.
func tetherClient(ctx context.Context, r Run, kind, role string, onMsg func(*client.Message)) (*client.Client, error) {
	st, err := OpenStore(kind, r.Dir, r.RedisURL, r.ID+"-"+role)
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{
		Servers: []string{"mqtt://" + r.Addr}, ClientID: r.ID + "-" + role, Store: st,
		CleanStart: true, SessionExpiry: time.Hour, OnMessage: onMsg,
		ReceiveMaximum: uint16(min(r.Window, 65535)), CommitPipeline: r.CommitPipeline,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		st.Close()
		return nil, err
	}
	tetherStores.Store(c, st)
	return c, nil
}

// tetherStores maps each client tetherClient made to its store, which
// closeTether closes.
var tetherStores sync.Map // *client.Client → store.SessionStore

func subOpts(qos byte) packets.SubscribeOptions { return packets.SubscribeOptions{QoS: qos} }

func closeTether(c *client.Client) {
	_ = c.Disconnect(context.Background(), 0)
	c.Close()
	if st, ok := tetherStores.LoadAndDelete(c); ok {
		st.(store.SessionStore).Close()
	}
}

// TetherPublish publishes r.N messages through c keeping r.Window tokens
// outstanding.
func TetherPublish(ctx context.Context, c *client.Client, r Run) error {
	ring := make([]*client.Token, r.Window)
	m := &client.Message{Topic: r.topic(), QoS: r.QoS, Payload: payload(r.Payload)}
	for i := 0; i < r.N; i++ {
		if t := ring[i%len(ring)]; t != nil {
			if err := t.Wait(ctx); err != nil {
				return err
			}
		}
		ring[i%len(ring)] = c.PublishAsync(m)
	}
	for _, t := range ring {
		if t != nil {
			if err := t.Wait(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

func tetherPub(ctx context.Context, r Run, kind string) (time.Duration, error) {
	c, err := tetherClient(ctx, r, kind, "pub", nil)
	if err != nil {
		return 0, err
	}
	defer closeTether(c)
	t0 := time.Now()
	err = TetherPublish(ctx, c, r)
	return time.Since(t0), err
}

func tetherE2E(ctx context.Context, r Run, kind string) (time.Duration, error) {
	var got atomic.Int64
	done := make(chan struct{})
	sub, err := tetherClient(ctx, r, kind, "sub", func(*client.Message) {
		if got.Add(1) == int64(r.N) {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	defer closeTether(sub)
	if _, err := sub.Subscribe(ctx, client.Subscription{Filter: r.topic(), SubscribeOptions: subOpts(r.QoS)}); err != nil {
		return 0, err
	}
	pub, err := tetherClient(ctx, r, kind, "pub", nil)
	if err != nil {
		return 0, err
	}
	defer closeTether(pub)
	t0 := time.Now()
	if err := TetherPublish(ctx, pub, r); err != nil {
		return 0, err
	}
	if err := ctxWait(ctx, done); err != nil {
		return 0, fmt.Errorf("subscriber got %d of %d: %w", got.Load(), r.N, err)
	}
	return time.Since(t0), nil
}

// --- paho.golang ---

func pahoClient(ctx context.Context, r Run, kind, role string, onMsg func()) (*paho.Client, error) {
	sess, err := pahoSession(r, kind, role)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: conn, Session: sess}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(paho.PublishReceived) (bool, error) { onMsg(); return true, nil },
		}
	}
	c := paho.NewClient(cfg)
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: r.ID + "-" + role, CleanStart: true, KeepAlive: 60,
		Properties: &paho.ConnectProperties{ReceiveMaximum: ptr(uint16(min(r.Window, 65535)))}})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("paho.golang: CONNACK %#x", ca.ReasonCode)
	}
	return c, nil
}

func ptr[T any](v T) *T { return &v }

func pahoSession(r Run, kind, role string) (*pahostate.State, error) {
	if kind == "memory" {
		return pahostate.New(pahomem.New(), pahomem.New()), nil
	}
	dir := filepath.Join(r.Dir, "paho-"+r.ID+"-"+role)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cs, err := pahofile.New(dir, "client-", ".pkt")
	if err != nil {
		return nil, err
	}
	ss, err := pahofile.New(dir, "server-", ".pkt")
	if err != nil {
		return nil, err
	}
	return pahostate.New(cs, ss), nil
}

// pahoPublishAll publishes r.N messages from r.Window goroutines, each
// waiting for its publish to complete: r.Window outstanding.
func pahoPublishAll(ctx context.Context, c *paho.Client, r Run) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, r.Window)
	body := payload(r.Payload)
	for w := 0; w < r.Window; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(r.N) {
				if _, err := c.Publish(ctx, &paho.Publish{Topic: r.topic(), QoS: r.QoS, Payload: body}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func closePaho(c *paho.Client) {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
	}
}

func pahoPub(ctx context.Context, r Run, kind string) (time.Duration, error) {
	c, err := pahoClient(ctx, r, kind, "pub", nil)
	if err != nil {
		return 0, err
	}
	defer closePaho(c)
	t0 := time.Now()
	err = pahoPublishAll(ctx, c, r)
	return time.Since(t0), err
}

func pahoE2E(ctx context.Context, r Run, kind string) (time.Duration, error) {
	var got atomic.Int64
	done := make(chan struct{})
	sub, err := pahoClient(ctx, r, kind, "sub", func() {
		if got.Add(1) == int64(r.N) {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	defer closePaho(sub)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: r.topic(), QoS: r.QoS}}}); err != nil {
		return 0, err
	}
	pub, err := pahoClient(ctx, r, kind, "pub", nil)
	if err != nil {
		return 0, err
	}
	defer closePaho(pub)
	t0 := time.Now()
	if err := pahoPublishAll(ctx, pub, r); err != nil {
		return 0, err
	}
	if err := ctxWait(ctx, done); err != nil {
		return 0, fmt.Errorf("subscriber got %d of %d: %w", got.Load(), r.N, err)
	}
	return time.Since(t0), nil
}

// --- paho.mqtt.golang (MQTT 3.1.1) ---

func mqtt3Client(ctx context.Context, r Run, role string) (mqtt3.Client, error) {
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + r.Addr).SetClientID(r.ID + "-" + role).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).SetKeepAlive(60 * time.Second)
	c := mqtt3.NewClient(o)
	t := c.Connect()
	if err := waitMQTT3(ctx, t); err != nil {
		return nil, err
	}
	return c, nil
}

func waitMQTT3(ctx context.Context, t mqtt3.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mqtt3PublishAll publishes r.N messages keeping r.Window tokens
// outstanding (MQTT 3.1.1 has no Receive Maximum: the client's window is
// the only bound).
func mqtt3PublishAll(ctx context.Context, c mqtt3.Client, r Run) error {
	ring := make([]mqtt3.Token, r.Window)
	body := payload(r.Payload)
	for i := 0; i < r.N; i++ {
		if t := ring[i%len(ring)]; t != nil {
			if err := waitMQTT3(ctx, t); err != nil {
				return err
			}
		}
		ring[i%len(ring)] = c.Publish(r.topic(), r.QoS, false, body)
	}
	for _, t := range ring {
		if t != nil {
			if err := waitMQTT3(ctx, t); err != nil {
				return err
			}
		}
	}
	return nil
}

func mqtt3Pub(ctx context.Context, r Run) (time.Duration, error) {
	c, err := mqtt3Client(ctx, r, "pub")
	if err != nil {
		return 0, err
	}
	defer c.Disconnect(100)
	t0 := time.Now()
	err = mqtt3PublishAll(ctx, c, r)
	return time.Since(t0), err
}

func mqtt3E2E(ctx context.Context, r Run) (time.Duration, error) {
	var got atomic.Int64
	done := make(chan struct{})
	sub, err := mqtt3Client(ctx, r, "sub")
	if err != nil {
		return 0, err
	}
	defer sub.Disconnect(100)
	if err := waitMQTT3(ctx, sub.Subscribe(r.topic(), r.QoS, func(mqtt3.Client, mqtt3.Message) {
		if got.Add(1) == int64(r.N) {
			close(done)
		}
	})); err != nil {
		return 0, err
	}
	pub, err := mqtt3Client(ctx, r, "pub")
	if err != nil {
		return 0, err
	}
	defer pub.Disconnect(100)
	t0 := time.Now()
	if err := mqtt3PublishAll(ctx, pub, r); err != nil {
		return 0, err
	}
	if err := ctxWait(ctx, done); err != nil {
		return 0, fmt.Errorf("subscriber got %d of %d: %w", got.Load(), r.N, err)
	}
	return time.Since(t0), nil
}
