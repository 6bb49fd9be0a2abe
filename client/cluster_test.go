package client

import (
	"context"
	"testing"
	"time"

	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// clusterKey is the store key of a Config.Cluster session.
func clusterKey(name, id string) store.Key { return store.Key{Server: "cluster:" + name, ClientID: id} }

func clusterRecords(t *testing.T, st store.SessionStore, k store.Key) []store.Record {
	t.Helper()
	recs, err := st.Load(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// clusterNodes returns two proxies standing for two nodes of one broker,
// both in front of one auditing proxy, whose view of the session is whole
// whichever node the client uses.
func clusterNodes(t *testing.T, addr string) (*faultproxy.Proxy, *faultproxy.Proxy) {
	audit, _ := auditedProxy(t, addr)
	return proxy(t, audit.Addr()), proxy(t, audit.Addr())
}

// TestClusterFailoverOutbound: two addresses of one broker (two proxies in
// front of one Mosquitto, standing for two nodes of a clustered broker)
// under Config.Cluster. The connection to the first is cut at each point of
// an outbound QoS 2 exchange and that node then refuses connections: the
// client continues the same session on the second node — the PUBLISH
// resent with DUP and its original identifier, or the PUBREL — and the
// message arrives exactly once, with no record left behind. Without
// Cluster the unfinished message would be moved as a new message: a
// duplicate after PUBREC, and a PUBREL never sent.
func TestClusterFailoverOutbound(t *testing.T) {
	b := broker(t)
	for _, cp := range outboundCuts {
		t.Run(cp.name, func(t *testing.T) {
			topic := "cluster/out/" + cp.name
			col := subscriber(t, b.URL(), topic)
			n1, n2 := clusterNodes(t, b.Addr())
			st := memory.New()
			id := uniqueID(t)
			infos := make(chan *ConnectInfo, 8)
			c := start(t, Config{Servers: []string{n1.URL(), n2.URL()}, Cluster: "c1", ClientID: id, Store: st,
				SessionExpiry: time.Hour, OnConnect: func(ci *ConnectInfo) { infos <- ci }})
			<-infos
			inj := n1.Inject(faultproxy.Fault{Dir: cp.dir, Type: cp.typ, Nth: 1, Action: cp.act})
			n1.SetRefuse(true) // once cut, the first node is gone
			if err := c.Publish(ctxT(t, 15*time.Second), &Message{Topic: topic, QoS: 2, Payload: []byte("once")}); err != nil {
				t.Fatalf("publish: %v", err)
			}
			waitFired(t, inj)
			col.waitFor(t, 1, 10*time.Second)
			eventually(t, 10*time.Second, "records deleted", func() bool {
				return countDir(clusterRecords(t, st, clusterKey("c1", id)), store.Outbound) == 0
			})
			col.quiet(t, 1, 300*time.Millisecond)
			for {
				select {
				case ci := <-infos:
					if ci.Server == n2.URL() && !ci.SessionPresent {
						t.Fatalf("second node answered Session Present 0")
					}
					continue
				default:
				}
				break
			}
		})
	}
}

// TestClusterFailoverInbound: the same for an inbound QoS 2 exchange: the
// handler sees the message exactly once and the inbound record is gone.
func TestClusterFailoverInbound(t *testing.T) {
	b := broker(t)
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t) + "-pub"})
	for _, cp := range inboundCuts {
		t.Run(cp.name, func(t *testing.T) {
			topic := "cluster/in/" + cp.name
			n1, n2 := clusterNodes(t, b.Addr())
			st := memory.New()
			id := uniqueID(t)
			col := newCollector()
			c := start(t, Config{Servers: []string{n1.URL(), n2.URL()}, Cluster: "c1", ClientID: id, Store: st,
				SessionExpiry: time.Hour, OnMessage: col.handle})
			if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: topic, SubscribeOptions: subOpts(2)}); err != nil {
				t.Fatal(err)
			}
			inj := n1.Inject(faultproxy.Fault{Dir: cp.dir, Type: cp.typ, Nth: 1, Action: cp.act})
			n1.SetRefuse(true)
			if err := pub.Publish(ctxT(t, 5*time.Second), &Message{Topic: topic, QoS: 2, Payload: []byte("once")}); err != nil {
				t.Fatal(err)
			}
			waitFired(t, inj)
			col.waitFor(t, 1, 10*time.Second)
			eventually(t, 10*time.Second, "inbound records deleted", func() bool {
				return countDir(clusterRecords(t, st, clusterKey("c1", id)), store.Inbound) == 0
			})
			col.quiet(t, 1, 300*time.Millisecond)
		})
	}
}
