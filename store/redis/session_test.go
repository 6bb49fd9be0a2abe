package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/conformance/sessiontest"
	"github.com/tethermq/tether/store"
)

// openChild opens, in a child process, the storage ChildConfig describes,
// as the default user; closing the store closes its client.
func openChild(ctx context.Context, config string) (store.SessionStore, error) {
	parts := strings.Split(config, "|")
	if len(parts) != 3 {
		return nil, fmt.Errorf("redis: bad child config %q", config)
	}
	addrs := strings.Split(parts[1], ",")
	var rdb goredis.UniversalClient
	if parts[0] == "cluster" {
		rdb = goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	} else {
		rdb = goredis.NewClient(&goredis.Options{Addr: addrs[0], ContextTimeoutEnabled: true})
	}
	s, err := New(rdb, &Options{Prefix: parts[2]})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return &handle{Store: s}, nil
}

// sessionMaker is maker with a prefix of its own: the conformance harness,
// whose ChildConfig a crash case's child opens.
func (d *deployment) sessionMaker() conformance.HarnessMaker {
	return func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		return &harness{d: d, prefix: "sess-" + randomHex(6)}, nil
	}
}

var sessionOptions = sessiontest.Options{OpenChild: openChild}

// TestSession runs the end-to-end session suite on a standalone Redis,
// crash cases included. The child process of a crash case starts no
// server: it opens the parent's.
func TestSession(t *testing.T) {
	var maker conformance.HarnessMaker
	if !conformance.IsSessionChild() {
		maker = standalone(t).sessionMaker()
	}
	sessiontest.Run(t, maker, sessionOptions)
}

// TestSessionCluster runs the end-to-end session suite on a 3-master Redis
// Cluster, crash cases included.
func TestSessionCluster(t *testing.T) {
	var maker conformance.HarnessMaker
	if !conformance.IsSessionChild() {
		maker = cluster(t).sessionMaker()
	}
	sessiontest.Run(t, maker, sessionOptions)
}
