package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// demoConfig is what the demo flags set.
type demoConfig struct {
	n         int
	broker    string
	storeKind string
	seed      uint64
	cuts      int
	timeout   time.Duration
	verbose   bool
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tether demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dc demoConfig
	fs.IntVar(&dc.n, "n", 2000, "QoS 2 messages to publish")
	fs.StringVar(&dc.broker, "broker", "", "broker URL; empty starts an embedded broker")
	fs.StringVar(&dc.storeKind, "store", "bolt", "publisher's session store: bolt, sqlite or memory, in a temporary directory")
	fs.Uint64Var(&dc.seed, "seed", 0, "seed of the fault schedule (0: random)")
	fs.IntVar(&dc.cuts, "cuts", 20, "connection cuts on each side")
	fs.DurationVar(&dc.timeout, "timeout", 2*time.Minute, "give up after this long")
	fs.BoolVar(&dc.verbose, "v", false, "log the clients' connections and store writes to standard error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if dc.n < 2 || dc.cuts < 0 {
		return errors.New("demo: -n must be at least 2 and -cuts not negative")
	}
	if dc.seed == 0 {
		dc.seed = rand.Uint64()
	}
	ctx, cancel := context.WithTimeout(ctx, dc.timeout)
	defer cancel()
	return demo(ctx, dc, stdout)
}

// demo publishes dc.n numbered QoS 2 messages from a publisher whose
// connection is cut at random packets of the QoS 2 exchange, and whose
// client instance is thrown away halfway while messages are in flight and
// replaced by a new one on the reopened store. A subscriber whose own
// connection is cut the same way counts what arrives: every message must
// arrive exactly once.
func demo(ctx context.Context, dc demoConfig, out io.Writer) error {
	start := time.Now()
	rng := rand.New(rand.NewPCG(dc.seed, dc.seed^0x7e7e))
	dir, err := makeDemoDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	brokerURL, brokerName := dc.broker, "external"
	if brokerURL == "" {
		b, err := startBroker(dir)
		if err != nil {
			return err
		}
		defer b.stop()
		brokerURL, brokerName = b.url, b.name
	}
	addr, err := hostPort(brokerURL)
	if err != nil {
		return err
	}
	pubProxy, err := faultproxy.Start(addr)
	if err != nil {
		return err
	}
	defer pubProxy.Close()
	subProxy, err := faultproxy.Start(addr)
	if err != nil {
		return err
	}
	defer subProxy.Close()

	spec := "memory"
	if dc.storeKind != "memory" {
		spec = dc.storeKind + ":" + filepath.Join(dir, "session."+dc.storeKind)
	}
	topic := fmt.Sprintf("tether/demo/%d", dc.seed)

	fmt.Fprintf(out, "tether demo: %d QoS 2 messages, connections cut %d times on each side, one client instance replaced mid-flight\n", dc.n, dc.cuts)
	fmt.Fprintf(out, "  broker   %s (%s)\n  store    %s\n  seed     %d\n", brokerName, brokerURL, spec, dc.seed)

	// The subscriber counts every delivery of every message number.
	var (
		mu       sync.Mutex
		seen     = make(map[int]int, dc.n)
		dups     int
		disorder int
		last     = -1
		allIn    = make(chan struct{})
	)
	subStore, err := openStore("memory")
	if err != nil {
		return err
	}
	defer subStore.Close()
	// Connections here are cut every few dozen packets: reconnect at once
	// rather than back off as for a server in trouble.
	backoff := client.Backoff{Min: 10 * time.Millisecond, Max: 250 * time.Millisecond}
	sub, err := client.New(client.Config{
		ReconnectBackoff: backoff,
		Servers:          []string{subProxy.URL()},
		ClientID:         fmt.Sprintf("tether-demo-sub-%d", dc.seed),
		Store:            subStore,
		SessionExpiry:    time.Hour,
		OnMessage: func(m *client.Message) {
			n, err := strconv.Atoi(string(m.Payload))
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			seen[n]++
			if seen[n] > 1 {
				dups++
				return
			}
			if n < last {
				disorder++
			}
			last = n
			if len(seen) == dc.n {
				close(allIn)
			}
		},
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	if err := sub.Connect(ctx); err != nil {
		return fmt.Errorf("subscriber: %w", err)
	}
	s := client.Subscription{Filter: topic}
	s.QoS = 2
	if codes, err := sub.Subscribe(ctx, s); err != nil || codes[0] != packets.GrantedQoS2 {
		return fmt.Errorf("subscriber: subscribe: %v %v", codes, err)
	}

	// Faults: each side gets dc.cuts cuts, one armed after another, at a
	// random packet of the QoS 2 exchange a few packets ahead.
	pubFaults := []faultproxy.Fault{
		{Dir: faultproxy.ClientToServer, Type: packets.PUBLISH, Action: faultproxy.CutAfter},
		{Dir: faultproxy.ClientToServer, Type: packets.PUBLISH, Action: faultproxy.CutBefore},
		{Dir: faultproxy.ServerToClient, Type: packets.PUBREC, Action: faultproxy.CutBefore},
		{Dir: faultproxy.ClientToServer, Type: packets.PUBREL, Action: faultproxy.CutAfter},
		{Dir: faultproxy.ServerToClient, Type: packets.PUBCOMP, Action: faultproxy.CutBefore},
	}
	subFaults := []faultproxy.Fault{
		{Dir: faultproxy.ServerToClient, Type: packets.PUBLISH, Action: faultproxy.CutAfter},
		{Dir: faultproxy.ClientToServer, Type: packets.PUBREC, Action: faultproxy.CutBefore},
		{Dir: faultproxy.ServerToClient, Type: packets.PUBREL, Action: faultproxy.CutAfter},
		{Dir: faultproxy.ClientToServer, Type: packets.PUBCOMP, Action: faultproxy.CutBefore},
	}
	var cutWG sync.WaitGroup
	cutCtx, stopCuts := context.WithCancel(ctx)
	defer func() { stopCuts(); cutWG.Wait() }()
	var pubCuts, subCuts int
	schedule := func(p *faultproxy.Proxy, faults []faultproxy.Fault, seed uint64, count *int) {
		defer cutWG.Done()
		r := rand.New(rand.NewPCG(seed, 1))
		for range dc.cuts {
			f := faults[r.IntN(len(faults))]
			f.Nth = 1 + r.IntN(2*dc.n/(dc.cuts+1)+1)
			select {
			case <-p.Inject(f).Fired():
				*count++
			case <-cutCtx.Done():
				return
			}
		}
	}
	cutWG.Add(2)
	go schedule(pubProxy, pubFaults, rng.Uint64(), &pubCuts)
	go schedule(subProxy, subFaults, rng.Uint64(), &subCuts)

	// The publisher: the first instance publishes every message, then is
	// dropped while about half are still in flight; the second continues
	// from the store.
	var reconnects int
	var logger *slog.Logger
	if dc.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// A memory store does not outlive its process, so the replacement
	// instance shares the first one's store; durable stores are closed and
	// reopened as a restarted process would.
	var shared store.SessionStore
	if spec == "memory" {
		shared = memory.New()
		defer shared.Close()
	}
	newPublisher := func() (*client.Client, store.SessionStore, error) {
		st, err := openStore(spec)
		if shared != nil {
			st, err = nopCloser{shared}, nil
		}
		if err != nil {
			return nil, nil, err
		}
		c, err := client.New(client.Config{
			ReconnectBackoff: backoff,
			Servers:          []string{pubProxy.URL()},
			ClientID:         fmt.Sprintf("tether-demo-pub-%d", dc.seed),
			Store:            st,
			SessionExpiry:    time.Hour,
			OnConnect:        func(*client.ConnectInfo) { mu.Lock(); reconnects++; mu.Unlock() },
			Logger:           logger,
		})
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		if err := c.Connect(ctx); err != nil {
			c.Close()
			st.Close()
			return nil, nil, err
		}
		return c, st, nil
	}
	pub, pubStore, err := newPublisher()
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	tokens := make([]*client.Token, dc.n)
	for i := range dc.n {
		tokens[i] = pub.PublishAsync(&client.Message{Topic: topic, Payload: []byte(strconv.Itoa(i)), QoS: 2})
	}
	if err := tokens[dc.n/2].Wait(ctx); err != nil {
		return fmt.Errorf("publisher: message %d: %w", dc.n/2, err)
	}
	// Throw the first instance away mid-flight: its connection is cut
	// first, so it cannot finish anything cleanly.
	pubProxy.SetRefuse(true)
	pubProxy.CutAll()
	pub.Close()
	pubStore.Close()
	done := 0
	for _, t := range tokens {
		if t.Err() == nil {
			done++
		}
	}
	pubProxy.SetRefuse(false)
	pub, pubStore, err = newPublisher()
	if err != nil {
		return fmt.Errorf("second publisher: %w", err)
	}
	defer pubStore.Close()
	defer pub.Close()
	fmt.Fprintf(out, "  replaced the publisher after %d of %d exchanges had completed\n", done, dc.n)

	select {
	case <-allIn:
	case <-ctx.Done():
	}
	stopCuts()
	cutWG.Wait()
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(out, "  cuts     %d on the publisher's connection, %d on the subscriber's; %d publisher connections\n", pubCuts, subCuts, reconnects)
	fmt.Fprintf(out, "  received %d of %d distinct messages, %d duplicates, %d out of order, in %.1fs\n",
		len(seen), dc.n, dups, disorder, time.Since(start).Seconds())
	switch {
	case len(seen) < dc.n:
		return fmt.Errorf("demo: %d messages missing after %s (seed %d)", dc.n-len(seen), dc.timeout, dc.seed)
	case dups > 0:
		return fmt.Errorf("demo: %d duplicate deliveries (seed %d)", dups, dc.seed)
	}
	fmt.Fprintln(out, "OK: every message arrived exactly once")
	return nil
}

// nopCloser keeps a shared store open when one client instance is done.
type nopCloser struct{ store.SessionStore }

func (nopCloser) Close() error { return nil }

// hostPort returns the host:port of an mqtt:// or tcp:// URL.
func hostPort(url string) (string, error) {
	for _, scheme := range []string{"mqtt://", "tcp://"} {
		if len(url) > len(scheme) && url[:len(scheme)] == scheme {
			return url[len(scheme):], nil
		}
	}
	return "", fmt.Errorf("demo: broker %q: want an mqtt:// URL", url)
}
