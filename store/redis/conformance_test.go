package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// deployment is one Redis (a server or a cluster) shared by the checks of a
// test: each check gets its own key prefix, which is all the isolation a
// store needs, so no check pays for starting a server.
type deployment struct {
	t       testing.TB
	cluster bool
	addrs   []string
	admins  []*goredis.Client // one per node, as the default user

	mu    sync.Mutex
	users int
}

func standalone(t testing.TB) *deployment {
	srv := testenv.Redis(t)
	return newDeployment(t, false, []string{srv.Addr()})
}

func cluster(t testing.TB) *deployment {
	c := testenv.RedisCluster(t)
	return newDeployment(t, true, c.Addrs())
}

func newDeployment(t testing.TB, isCluster bool, addrs []string) *deployment {
	d := &deployment{t: t, cluster: isCluster, addrs: addrs}
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a, ContextTimeoutEnabled: true})
		d.admins = append(d.admins, c)
	}
	t.Cleanup(func() {
		for _, c := range d.admins {
			_ = c.Close()
		}
	})
	return d
}

// admin runs a command on every node as the default user.
func (d *deployment) admin(ctx context.Context, args ...any) error {
	for _, c := range d.admins {
		if err := c.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("%v on %s: %w", args, c.Options().Addr, err)
		}
	}
	return nil
}

// newUser creates a Redis user of its own for one handle, so that the test
// can cut that handle off (Partition) without touching the others.
func (d *deployment) newUser(ctx context.Context) (user, pass string, err error) {
	d.mu.Lock()
	d.users++
	n := d.users
	d.mu.Unlock()
	user = fmt.Sprintf("h%d-%s", n, randomHex(4))
	pass = randomHex(8)
	err = d.admin(ctx, "acl", "setuser", user, "on", ">"+pass, "~*", "&*", "+@all")
	return user, pass, err
}

// client returns a client of the deployment logged in as user.
func (d *deployment) client(user, pass string) goredis.UniversalClient {
	if d.cluster {
		return goredis.NewClusterClient(&goredis.ClusterOptions{
			Addrs: d.addrs, Username: user, Password: pass, ContextTimeoutEnabled: true,
		})
	}
	return goredis.NewClient(&goredis.Options{
		Addr: d.addrs[0], Username: user, Password: pass, ContextTimeoutEnabled: true,
	})
}

// partition cuts user off: its connections are killed and new ones are
// refused at AUTH, as a network partition or a dead host would.
func (d *deployment) partition(user string) (heal func()) {
	ctx := context.Background()
	if err := d.admin(ctx, "acl", "setuser", user, "off"); err != nil {
		d.t.Errorf("partition: %v", err)
	}
	if err := d.admin(ctx, "client", "kill", "user", user); err != nil {
		d.t.Errorf("partition: %v", err)
	}
	return func() {
		if err := d.admin(ctx, "acl", "setuser", user, "on"); err != nil {
			d.t.Errorf("heal: %v", err)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// handle is a store opened by a test on a client of its own; closing it
// closes the client too.
type handle struct {
	*Store
	user string
	once sync.Once
}

// Close closes the store and then its client.
func (h *handle) Close() error {
	err := h.Store.Close()
	h.once.Do(func() {
		if cerr := h.Client().Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// open returns a handle on the deployment under prefix, as its own user.
func (d *deployment) open(ctx context.Context, opts Options) (*handle, error) {
	user, pass, err := d.newUser(ctx)
	if err != nil {
		return nil, err
	}
	rdb := d.client(user, pass)
	s, err := New(rdb, &opts)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return &handle{Store: s, user: user}, nil
}

// harness is one check's storage: a fresh prefix on the deployment.
type harness struct {
	d      *deployment
	prefix string
}

var _ conformance.Partitioner = (*harness)(nil)

func (d *deployment) maker() conformance.HarnessMaker {
	return func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		return &harness{d: d, prefix: "conf-" + randomHex(6)}, nil
	}
}

func (h *harness) MakeStore(ctx context.Context) (store.SessionStore, error) {
	return h.d.open(ctx, Options{Prefix: h.prefix})
}

// Capabilities: durable per the server's own policy (appendfsync,
// replication), which no trace of this process can show.
func (h *harness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{Durable: true, SharedHandles: true, ServerDurability: true}
}

// ChildConfig returns "standalone|addr|prefix" or "cluster|addr,addr,...|prefix",
// which openChild opens in a child process.
func (h *harness) ChildConfig() string {
	kind := "standalone"
	if h.d.cluster {
		kind = "cluster"
	}
	return kind + "|" + strings.Join(h.d.addrs, ",") + "|" + h.prefix
}

// Damage damages session k behind the store's back, as the default user:
// Truncate shortens its largest record's value, FlipBytes flips bytes in
// the middle of it, DropKey deletes that record's value and leaves its
// index entry.
func (h *harness) Damage(ctx context.Context, k store.Key, kind conformance.DamageKind) error {
	rdb := h.d.client("", "")
	defer rdb.Close()
	keys := (&Store{prefix: h.prefix}).keys(k)
	all, err := rdb.HGetAll(ctx, keys.rec).Result()
	if err != nil {
		return err
	}
	field, val := "", ""
	for f, v := range all {
		if len(v) > len(val) {
			field, val = f, v
		}
	}
	if field == "" {
		return fmt.Errorf("damage: session %s holds no record", k)
	}
	b := []byte(val)
	switch kind {
	case conformance.Truncate:
		b = b[:len(b)/2]
	case conformance.FlipBytes:
		b[len(b)/2] ^= 0xff
		b[len(b)/2+1] ^= 0x0f
	case conformance.DropKey:
		return rdb.HDel(ctx, keys.rec, field).Err()
	default:
		return conformance.ErrCannotDamage
	}
	return rdb.HSet(ctx, keys.rec, field, b).Err()
}

func (h *harness) Close() {}

func (h *harness) Partition(s store.SessionStore) (heal func()) {
	return h.d.partition(s.(*handle).user)
}

// runOptions lets a child process of the suite open a harness's storage.
var runOptions = conformance.Options{OpenChild: openChild}

// TestConformance runs the store suite on a standalone server. A child
// process of the suite starts no server: it opens the parent's.
func TestConformance(t *testing.T) {
	if conformance.IsChild() {
		conformance.Run(t, nil, runOptions)
		return
	}
	conformance.Run(t, standalone(t).maker(), runOptions)
}

// TestCluster runs on one 3-master cluster: starting one takes seconds.
func TestCluster(t *testing.T) {
	if conformance.IsChild() {
		t.Run("Conformance", func(t *testing.T) { conformance.Run(t, nil, runOptions) })
		return
	}
	d := cluster(t)
	t.Run("Conformance", func(t *testing.T) { conformance.Run(t, d.maker(), runOptions) })
	t.Run("WaitReplicas", func(t *testing.T) { testClusterWaitReplicas(t, d.addrs) })
	t.Run("KeySlots", func(t *testing.T) { testClusterKeySlots(t, d.addrs) })
}

func BenchmarkConformance(b *testing.B) {
	conformance.Bench(b, standalone(b).maker())
}

func BenchmarkConformanceCluster(b *testing.B) {
	conformance.Bench(b, cluster(b).maker())
}
