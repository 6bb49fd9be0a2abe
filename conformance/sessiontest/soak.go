package sessiontest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
)

// seed returns the seed of the randomised cases: SeedEnv when set, else a
// fresh one. The case logs it, so that a failure can be replayed.
func (s *sess) seed() uint64 {
	if v := os.Getenv(SeedEnv); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			s.t.Logf("seed %d (from %s)", n, SeedEnv)
			return n
		}
	}
	n := rand.Uint64()
	s.t.Logf("seed %d (replay with %s=%d)", n, SeedEnv, n)
	return n
}

// soakSize returns how many messages the soak sends each way, and how
// many cuts it makes.
func (s *sess) soakSize() (msgs, cuts int) {
	msgs = s.r.opts.SoakMessages
	if msgs <= 0 {
		msgs = 20000
		if testing.Short() {
			msgs = 1000
		}
	}
	if v := os.Getenv(SoakEnv); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			msgs = n
		}
	}
	return msgs, max(msgs/50, 4)
}

// soakFaults are the packets the soak cuts at: every packet of a QoS 2
// exchange, both ways.
var soakFaults = []struct {
	dir faultproxy.Direction
	typ packets.Type
}{
	{c2s, packets.PUBLISH}, {s2c, packets.PUBREC}, {c2s, packets.PUBREL}, {s2c, packets.PUBCOMP},
	{s2c, packets.PUBLISH}, {c2s, packets.PUBREC}, {s2c, packets.PUBREL}, {c2s, packets.PUBCOMP},
}

// soak is the seeded chaos soak: the client under test publishes QoS 2
// messages to a subscriber while a peer publishes QoS 2 messages to it,
// and the proxy cuts the connection at random packets (by type, direction
// and ordinal, chosen from the seed). At the end each side has received
// every message of the other exactly once, in order, and the wire audit
// found no rule broken by the client (no packet identifier reused while in
// flight, MQTT-2.2.1-3; no PUBLISH after its PUBREL, MQTT-4.3.3-6; Receive
// Maximum kept, MQTT-3.3.4-7; DUP set on resends, MQTT-3.3.1-1; ...).
//
// The cut points are exact, but where they fall in the stream of messages
// depends on the interleaving of the two publishers, so a seed replays
// the same faults, not always the same history.
func (s *sess) soak() {
	n, cuts := s.soakSize()
	rng := rand.New(rand.NewPCG(s.seed(), 0x7e7e))
	s.t.Logf("%d QoS 2 messages each way, %d cuts", n, cuts)
	out, in := s.newID("tether/soak-out"), s.newID("tether/soak-in")
	sub := s.newInbox()
	s.subscribe(s.peer(s.newID("sub"), sub.handler), out)
	pub := s.peer(s.newID("pub"), nil)

	p, aud := s.proxy()
	st := s.open()
	id := s.newID("soak")
	got := s.newInbox()
	var dupMu sync.Mutex
	conns := 0                    // connections made so far; guarded by dupMu
	dups := map[string][]string{} // how each message was delivered: connection, packet id, DUP
	ws, w := s.watch(st, s.url(p), id)
	cfg := s.clientConfig(s.url(p), id, ws, false)
	cfg.OnConnect = func(*client.ConnectInfo) {
		dupMu.Lock()
		conns++
		dupMu.Unlock()
	}
	cfg.OnMessage = func(m *client.Message) {
		dupMu.Lock()
		dups[string(m.Payload)] = append(dups[string(m.Payload)], fmt.Sprintf("conn %d id %d dup %v", conns, m.PacketID, m.Dup))
		dupMu.Unlock()
		got.handler(m)
	}
	c := s.start(cfg)
	s.subscribe(c, in)

	errs := make(chan error, 2)
	var pubWG sync.WaitGroup
	publish := func(c *client.Client, topic string) {
		defer pubWG.Done()
		const window = 64
		var toks []*client.Token
		wait := func(tok *client.Token) bool {
			if err := tok.Wait(s.ctx); err != nil {
				errs <- fmt.Errorf("publish to %s: %w", topic, err)
				return false
			}
			return true
		}
		for i := range n {
			if len(toks) == window {
				if !wait(toks[0]) {
					return
				}
				toks = toks[1:]
			}
			toks = append(toks, c.PublishAsync(&client.Message{Topic: topic, Payload: []byte(strconv.Itoa(i)), QoS: 2}))
		}
		for _, tok := range toks {
			if !wait(tok) {
				return
			}
		}
	}
	// Arm every cut at once, each at a random ordinal of a random packet
	// type among the first nine tenths of the n packets each type at
	// least carries, so that every cut falls while both flows run. (Armed
	// one after the other, a cut waiting on a flow that has already
	// finished would hold back the rest.)
	var injs []*faultproxy.Injection
	for range cuts {
		f := soakFaults[rng.IntN(len(soakFaults))]
		action := faultproxy.CutBefore
		if rng.IntN(2) == 1 {
			action = faultproxy.CutAfter
		}
		injs = append(injs, p.Inject(faultproxy.Fault{Dir: f.dir, Type: f.typ, Nth: 1 + rng.IntN(max(9*n/10, 1)), Action: action}))
	}

	pubWG.Add(2)
	go publish(c, out)
	go publish(pub, in)
	published := make(chan struct{})
	go func() {
		pubWG.Wait()
		close(published)
	}()

	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	s.wait(published, "both publishers to complete every publish")
	close(errs)
	for err := range errs {
		s.fatalf("%v", err)
	}
	last := want[n-1]
	gotOut := sub.waitFor(s, "the subscriber's last message", func(g []string) bool { return len(g) > 0 && g[len(g)-1] == last })
	gotIn := got.waitFor(s, "the handler's last message", func(g []string) bool { return len(g) > 0 && g[len(g)-1] == last })
	fired := 0
	for _, inj := range injs {
		select {
		case <-inj.Fired():
			fired++
		default:
		}
	}
	s.t.Logf("%d cuts fired; %d PUBLISH resent with DUP", fired, aud.Redelivered())
	if !slices.Equal(gotOut, want) {
		s.fatalf("subscriber: %d messages, want %d exactly once in order; %s", len(gotOut), n, firstDiff(gotOut))
	}
	if !slices.Equal(gotIn, want) {
		dupMu.Lock()
		var twice []string
		for m, d := range dups {
			if len(d) > 1 {
				twice = append(twice, fmt.Sprintf("%s %q", m, d))
			}
		}
		dupMu.Unlock()
		slices.Sort(twice)
		s.fatalf("handler: %d messages, want %d exactly once in order; %s; delivered more than once: %v", len(gotIn), n, firstDiff(gotIn), twice)
	}
	s.waitInbound(w, n)
	_ = c.Close()
	s.checkAudit(aud)
	s.expectNoState(s.reopen(st), s.url(p), id)
}

// firstDiff describes where got first departs from 0, 1, 2, ...
func firstDiff(got []string) string {
	for i, g := range got {
		if g != strconv.Itoa(i) {
			return fmt.Sprintf("position %d holds %q", i, g)
		}
	}
	return fmt.Sprintf("%d messages, all in order", len(got))
}
