package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// connFlags are the flags every connecting command shares.
type connFlags struct {
	broker, clientID, storeSpec, username, password string
	expiry                                          time.Duration
}

func (f *connFlags) register(fs *flag.FlagSet, defaultID string) {
	fs.StringVar(&f.broker, "broker", "mqtt://127.0.0.1:1883", "broker URL (mqtt://, mqtts://); comma-separated for failover")
	fs.StringVar(&f.clientID, "id", defaultID, "ClientID")
	fs.StringVar(&f.storeSpec, "store", "memory", "session store: memory, bolt:PATH, sqlite:PATH or redis://HOST:PORT")
	fs.StringVar(&f.username, "username", "", "username")
	fs.StringVar(&f.password, "password", "", "password")
	fs.DurationVar(&f.expiry, "expiry", time.Hour, "session expiry interval")
}

// open returns a client configured from the flags, and its store.
func (f *connFlags) open(stderr io.Writer, mod func(*client.Config)) (*client.Client, store.SessionStore, error) {
	st, err := openStore(f.storeSpec)
	if err != nil {
		return nil, nil, err
	}
	cfg := client.Config{
		Servers:       strings.Split(f.broker, ","),
		ClientID:      f.clientID,
		Store:         st,
		SessionExpiry: f.expiry,
		Username:      f.username,
		OnConnectionLost: func(err error) {
			fmt.Fprintln(stderr, "tether: connection lost:", err)
		},
	}
	if f.password != "" {
		cfg.Password = []byte(f.password)
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return c, st, nil
}

func runPub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tether pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, "tether-pub")
	topic := fs.String("topic", "", "topic to publish to (required)")
	qos := fs.Uint("qos", 1, "QoS: 0, 1 or 2")
	retain := fs.Bool("retain", false, "retain the message")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the broker")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *topic == "" || fs.NArg() != 1 || *qos > 2 {
		fs.Usage()
		return errors.New("pub needs -topic, a QoS of 0 to 2 and exactly one message argument")
	}
	c, st, err := cf.open(stderr, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		return err
	}
	msg := &client.Message{Topic: *topic, Payload: []byte(fs.Arg(0)), QoS: byte(*qos), Retain: *retain}
	if err := c.Publish(ctx, msg); err != nil {
		return err
	}
	return c.Disconnect(ctx, packets.Success)
}

func runSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tether sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, "tether-sub")
	topic := fs.String("topic", "#", "topic filter")
	qos := fs.Uint("qos", 1, "maximum QoS: 0, 1 or 2")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *qos > 2 {
		return errors.New("sub: QoS must be 0, 1 or 2")
	}
	got := make(chan struct{}, 1)
	received := 0
	c, st, err := cf.open(stderr, func(cfg *client.Config) {
		cfg.OnMessage = func(m *client.Message) {
			fmt.Fprintf(stdout, "%s\t%s\n", m.Topic, m.Payload)
			received++
			if *count > 0 && received == *count {
				got <- struct{}{}
			}
		}
	})
	if err != nil {
		return err
	}
	defer st.Close()
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		return err
	}
	sub := client.Subscription{Filter: *topic}
	sub.QoS = byte(*qos)
	codes, err := c.Subscribe(ctx, sub)
	if err != nil {
		return err
	}
	if len(codes) == 1 && codes[0].IsError() {
		return fmt.Errorf("subscribe %q refused: %s", *topic, codes[0])
	}
	select {
	case <-ctx.Done():
	case <-got:
	}
	return c.Disconnect(context.WithoutCancel(ctx), packets.Success)
}

func runSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tether sessions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	spec := fs.String("store", "", "session store: bolt:PATH, sqlite:PATH or redis://HOST:PORT (required)")
	server := fs.String("server", "", "the session's server (for clear)")
	id := fs.String("id", "", "the session's ClientID (for clear)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *spec == "" {
		fs.Usage()
		return errors.New("sessions needs -store")
	}
	st, err := openStore(*spec)
	if err != nil {
		return err
	}
	defer st.Close()
	switch verb := fs.Arg(0); verb {
	case "", "list":
		lister, ok := st.(store.Lister)
		if !ok {
			return fmt.Errorf("store %q cannot list its sessions", *spec)
		}
		keys, err := lister.Sessions(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "SERVER\tCLIENTID\tOUTBOUND\tINBOUND")
		for _, k := range keys {
			recs, err := st.Load(ctx, k)
			if err != nil && !errors.Is(err, store.ErrCorrupt) {
				return err
			}
			var out, in int
			for _, r := range recs {
				switch r.Dir {
				case store.Outbound:
					out++
				case store.Inbound:
					in++
				}
			}
			fmt.Fprintf(stdout, "%s\t%s\t%d\t%d\n", k.Server, k.ClientID, out, in)
			if err != nil {
				fmt.Fprintln(stderr, "tether:", err)
			}
		}
		return nil
	case "clear":
		if *server == "" || *id == "" {
			return errors.New("sessions clear needs -server and -id")
		}
		return st.Clear(ctx, store.Key{Server: *server, ClientID: *id})
	default:
		return fmt.Errorf("sessions: unknown verb %q: want list or clear", verb)
	}
}
