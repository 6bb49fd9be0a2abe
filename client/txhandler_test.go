package client

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/sqlite"
)

// The child of TestTxHandlerExactlyOnce: a subscriber whose transactional
// handler inserts every message into the application's own table in the
// store's database, until it is killed.
const (
	envTxChild   = "TETHER_TX_CHILD"  // backend:path
	envTxBroker  = "TETHER_TX_BROKER" // broker URL
	txChildTopic = "tx/exactly-once"
)

func init() {
	if spec := os.Getenv(envTxChild); spec != "" {
		if err := runTxChild(spec, os.Getenv(envTxBroker)); err != nil {
			fmt.Fprintln(os.Stderr, "tx child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
}

func openTxStore(spec string) (store.SessionStore, error) {
	backend, path, _ := cutSpec(spec)
	switch backend {
	case "bolt":
		return bolt.Open(path, nil)
	case "sqlite":
		st, err := sqlite.Open(path, nil)
		if err != nil {
			return nil, err
		}
		_, err = st.DB().Exec("CREATE TABLE IF NOT EXISTS app_messages (payload TEXT NOT NULL)")
		return st, err
	}
	return nil, fmt.Errorf("unknown backend %q", backend)
}

func cutSpec(spec string) (string, string, bool) {
	for i := range spec {
		if spec[i] == ':' {
			return spec[:i], spec[i+1:], true
		}
	}
	return spec, "", false
}

// insertTx is the application's handler: one row (sqlite) or one value
// under a fresh key (bolt) per delivery, so a duplicate shows as two.
func insertTx(m *Message, tx any) error {
	switch tx := tx.(type) {
	case *sql.Conn:
		_, err := tx.ExecContext(context.Background(), "INSERT INTO app_messages (payload) VALUES (?)", string(m.Payload))
		return err
	case *bbolt.Tx:
		b, err := tx.CreateBucketIfNotExists([]byte("app_messages"))
		if err != nil {
			return err
		}
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		return b.Put(binary.BigEndian.AppendUint64(nil, n), m.Payload)
	}
	return fmt.Errorf("unexpected transaction %T", tx)
}

func runTxChild(spec, url string) error {
	st, err := openTxStore(spec)
	if err != nil {
		return err
	}
	c, err := New(Config{Servers: []string{url}, ClientID: "tx-child", Store: st, SessionExpiry: time.Hour,
		OnMessageTx: insertTx, ReconnectBackoff: Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		// A killed child's lease (sqlite is an Owner) lapses after its TTL.
		WaitForLease: true, LeaseTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		return err
	}
	if _, err := c.Subscribe(ctx, Subscription{Filter: txChildTopic, SubscribeOptions: subOpts(2)}); err != nil {
		return err
	}
	select {} // until killed
}

// readApp returns how many times each payload reached the application's
// table.
func readApp(t *testing.T, spec string) map[string]int {
	t.Helper()
	st, err := openTxStore(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got := map[string]int{}
	switch s := st.(type) {
	case *sqlite.Store:
		rows, err := s.DB().Query("SELECT payload FROM app_messages")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				t.Fatal(err)
			}
			got[p]++
		}
	case *bolt.Store:
		err := s.DB().View(func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("app_messages"))
			if b == nil {
				return nil
			}
			return b.ForEach(func(_, v []byte) error {
				got[string(v)]++
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// TestTxHandlerExactlyOnce: a subscriber whose transactional handler
// writes each QoS 2 message into its own table in the store's database is
// killed with SIGKILL again and again while 5,000 messages stream in;
// afterwards the table holds every message exactly once — the
// application's writes and the inbound record commit together, so no
// crash can separate them. Duplicates the broker causes by resending a
// PUBLISH after its PUBREL (a known Mosquitto 2.0.11 fault, MQTT-4.3.3-6
// on the server's side, which no client can tell from a new message) are
// counted by the wire auditor and reported apart.
func TestTxHandlerExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 loop: not in -short")
	}
	for _, backend := range []string{"bolt", "sqlite"} {
		t.Run(backend, func(t *testing.T) { testTxHandlerExactlyOnce(t, backend) })
	}
}

func testTxHandlerExactlyOnce(t *testing.T, backend string) {
	const n, kills = 5000, 20
	b := broker(t)
	px, audit := auditedProxy(t, b.Addr())
	spec := backend + ":" + filepath.Join(t.TempDir(), "app."+backend)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spawn := func() *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envTxChild+"="+spec, envTxBroker+"="+px.URL())
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	// The first child makes the subscription, which the broker keeps for
	// the children after it (same ClientID, Session Expiry one hour).
	child := spawn()
	eventually(t, 30*time.Second, "the child subscribed", func() bool {
		return audit.Count(faultproxy.ServerToClient, packets.SUBACK) > 0
	})
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t) + "-pub"})
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	var toks []*Token
	next := 0
	connacks := func() int { return audit.Count(faultproxy.ServerToClient, packets.CONNACK) }
	for k := range kills {
		if k > 0 {
			before := connacks()
			child = spawn()
			// Killed while it works, not while it waits for the lease a
			// killed predecessor left.
			eventually(t, 30*time.Second, "the child connected", func() bool { return connacks() > before })
		}
		for range n / kills {
			toks = append(toks, pub.PublishAsync(&Message{Topic: txChildTopic, QoS: 2, Payload: []byte(strconv.Itoa(next))}))
			next++
		}
		time.Sleep(time.Duration(20+r.IntN(200)) * time.Millisecond)
		kill(child)
	}
	for i, tok := range toks {
		if err := tok.Wait(ctxT(t, 60*time.Second)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// The last child drains what the broker kept for the session, until
	// nothing more comes for a while.
	before := connacks()
	child = spawn()
	eventually(t, 30*time.Second, "the last child connected", func() bool { return connacks() > before })
	// Done when every message has had its PUBCOMP and nothing moved for a
	// while, or nothing moved for long (then the check below says what is
	// missing).
	last, quiet := -1, time.Now()
	for {
		time.Sleep(100 * time.Millisecond)
		now := audit.Count(faultproxy.ServerToClient, packets.PUBLISH) + audit.Count(faultproxy.ServerToClient, packets.PUBREL)
		if now != last {
			last, quiet = now, time.Now()
		}
		done := audit.Count(faultproxy.ClientToServer, packets.PUBCOMP) >= n
		if (done && time.Since(quiet) > time.Second) || time.Since(quiet) > 15*time.Second {
			break
		}
	}
	kill(child)

	got := readApp(t, spec)
	excused := 0
	for _, v := range audit.Violations() {
		if v.By == faultproxy.ServerToClient && v.Rule == "MQTT-4.3.3-6" {
			excused++
		}
	}
	missing, dups := 0, 0
	for i := range n {
		switch c := got[strconv.Itoa(i)]; {
		case c == 0:
			missing++
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("wire: %d PUBLISH to the child, %d PUBREC, %d PUBREL, %d PUBCOMP", audit.Count(faultproxy.ServerToClient, packets.PUBLISH),
		audit.Count(faultproxy.ClientToServer, packets.PUBREC), audit.Count(faultproxy.ServerToClient, packets.PUBREL),
		audit.Count(faultproxy.ClientToServer, packets.PUBCOMP))
	t.Logf("%s: %d messages, %d kills: %d distinct in the application's table, %d missing, %d duplicates (%d resends after PUBREL by the broker)",
		backend, n, kills, len(got), missing, dups, excused)
	if missing > 0 {
		t.Errorf("%d messages never reached the application's table", missing)
	}
	if dups > excused {
		t.Errorf("%d duplicates in the application's table, %d explained by the broker", dups, excused)
	}
	if err := audit.Err(); err != nil {
		t.Errorf("the client broke a rule: %v", err)
	}
}
