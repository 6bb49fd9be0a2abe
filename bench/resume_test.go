package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// The session-resume benchmarks set up a stored backlog, which takes far
// longer than the measurement: run them one iteration at a time, e.g.
//
//	GOWORK=off go test -run '^$' -bench 'Resume|HeapPerStored' -benchtime 1x -timeout 60m
//
// The 1,000,000-message bolt case runs only with TETHER_BENCH_HUGE=1
// (make bench-resume sets it).
var (
	resumeWindow  = flag.Int("resume.window", 20, "the broker's max_inflight_messages during the resume benchmarks")
	resumePayload = flag.Int("resume.payload", 64, "payload bytes of the backlog's messages")
	resumeLoad    = flag.Int("resume.loadwindow", 0, "the resuming client's Config.LoadWindow (0: its default)")
)

// benchEnv is the broker and Redis of one benchmark.
type benchEnv struct {
	dir      string
	mosq     *Server
	redisURL string
}

func newBenchEnv(b *testing.B, window int, redis bool) *benchEnv {
	b.Helper()
	requireServers(b)
	e := &benchEnv{dir: b.TempDir()}
	var err error
	if e.mosq, err = StartMosquitto(e.dir, window); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.mosq.Close)
	if redis {
		rd, err := StartRedis(e.dir)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(rd.Close)
		e.redisURL = "redis://" + rd.Addr
	}
	return e
}

// backlogConfig is the client configuration of the backlog's session.
func (e *benchEnv) backlogConfig(id string, st store.SessionStore, n int) client.Config {
	return client.Config{
		Servers: []string{"mqtt://" + e.mosq.Addr}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		MaxQueued: n + 1, MaxQueuedBytes: 1 << 34, KeepAlive: time.Minute, LoadWindow: *resumeLoad,
	}
}

// fillBacklog stores n QoS 1 messages in the session id of st by
// publishing them on a client that never connects, then closes the
// client: what a process that queued them and crashed leaves behind.
func (e *benchEnv) fillBacklog(b *testing.B, st store.SessionStore, id, topic string, n int) {
	b.Helper()
	c, err := client.New(e.backlogConfig(id, st, n))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	ring := make([]*client.Token, 4096)
	body := payload(*resumePayload)
	for i := 0; i < n; i++ {
		if t := ring[i%len(ring)]; t != nil {
			if err := t.WaitStored(ctx); err != nil {
				b.Fatalf("message %d not stored: %v", i, err)
			}
		}
		ring[i%len(ring)] = c.PublishAsync(&client.Message{Topic: topic, QoS: 1, Payload: body})
	}
	for _, t := range ring {
		if t != nil {
			if err := t.WaitStored(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// peakMem samples the heap every 5 ms until stopped.
type peakMem struct {
	stop chan struct{}
	wg   sync.WaitGroup
	heap atomic.Uint64 // peak HeapAlloc
	sys  atomic.Uint64 // peak Sys - HeapReleased: memory taken from the OS
}

func startPeakMem() *peakMem {
	p := &peakMem{stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		var ms runtime.MemStats
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > p.heap.Load() {
				p.heap.Store(ms.HeapAlloc)
			}
			if v := ms.Sys - ms.HeapReleased; v > p.sys.Load() {
				p.sys.Store(v)
			}
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *peakMem) done() { close(p.stop); p.wg.Wait() }

// resumeResult is one resumption's figures.
type resumeResult struct {
	connect, first, drained time.Duration // from client.New
	peakHeap, peakSys       uint64
}

// resume starts a client on the stored backlog of n messages and measures
// it until a QoS 0 subscriber (a raw connection, so that the subscriber is
// never the bottleneck) has received them all.
func (e *benchEnv) resume(b *testing.B, st store.SessionStore, id, topic string, n int) resumeResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	sub, err := rawDial(ctx, e.mosq.Addr, id+"-sub")
	if err != nil {
		b.Fatal(err)
	}
	defer sub.close()
	first := make(chan time.Time, 1)
	subDone, subErr, err := rawSubscribeFirst(ctx, sub, topic, n, first)
	if err != nil {
		b.Fatal(err)
	}
	var res resumeResult
	cfg := e.backlogConfig(id, st, n)

	runtime.GC()
	pm := startPeakMem()
	b.StartTimer()
	t0 := time.Now()
	c, err := client.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	res.connect = time.Since(t0)
	select {
	case at := <-first:
		res.first = at.Sub(t0)
	case <-ctx.Done():
		b.Fatal("no message resent")
	}
	if err := ctxWait(ctx, subDone); err != nil {
		b.Fatalf("drain: %v", err)
	}
	if *subErr != nil {
		b.Fatal(*subErr)
	}
	res.drained = time.Since(t0)
	b.StopTimer()
	pm.done()
	res.peakHeap, res.peakSys = pm.heap.Load(), pm.sys.Load()
	return res
}

// rawSubscribeFirst subscribes at QoS 0 and counts n messages, sending the
// arrival time of the first on first.
func rawSubscribeFirst(ctx context.Context, rc *rawConn, filter string, n int, first chan<- time.Time) (chan struct{}, *error, error) {
	if err := rc.write(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter}}}, true); err != nil {
		return nil, nil, err
	}
	if p, err := rc.r.Read(); err != nil {
		return nil, nil, err
	} else if _, ok := p.(*packets.Suback); !ok {
		return nil, nil, fmt.Errorf("SUBACK expected, got %v", p)
	}
	done, errp := make(chan struct{}), new(error)
	go func() {
		defer close(done)
		got := 0
		for got < n {
			p, err := rc.r.Read()
			if err != nil {
				*errp = err
				return
			}
			if _, ok := p.(*packets.Publish); ok {
				if got == 0 {
					first <- time.Now()
				}
				got++
			}
		}
	}()
	return done, errp, nil
}

func benchResume(b *testing.B, kind string, n int) {
	e := newBenchEnv(b, *resumeWindow, kind == "redis")
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id, topic := fmt.Sprintf("resume-%s-%d-%d", kind, n, i), fmt.Sprintf("resume/%s/%d", kind, i)
		st, err := OpenStore(kind, e.dir, e.redisURL, id)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		e.fillBacklog(b, st, id, topic, n)
		b.Logf("%s: %d messages stored in %v", kind, n, time.Since(t0).Round(time.Millisecond))
		// A new process: the store reopened.
		st.Close()
		if st, err = OpenStore(kind, e.dir, e.redisURL, id); err != nil {
			b.Fatal(err)
		}
		r := e.resume(b, st, id, topic, n)
		st.Close()
		b.ReportMetric(r.connect.Seconds(), "s-to-connect")
		b.ReportMetric(r.first.Seconds(), "s-to-first-resend")
		b.ReportMetric(float64(n)/(r.drained-r.first).Seconds(), "drain-msg/s")
		b.ReportMetric(float64(r.peakHeap)/(1<<20), "peak-heap-MB")
		b.ReportMetric(float64(r.peakSys)/(1<<20), "peak-sys-MB")
	}
}

// BenchmarkResume100k: a process restarting on a stored backlog of
// 100,000 QoS 1 messages, per durable store: time to CONNACK, time to
// the first resend reaching a subscriber, drain rate, peak memory.
func BenchmarkResume100k(b *testing.B) {
	for _, kind := range []string{"bolt", "sqlite", "redis"} {
		b.Run(kind, func(b *testing.B) { benchResume(b, kind, 100_000) })
	}
}

// BenchmarkResume1M is BenchmarkResume100k with 1,000,000 messages; it
// runs with TETHER_BENCH_HUGE=1.
func BenchmarkResume1M(b *testing.B) {
	if os.Getenv("TETHER_BENCH_HUGE") != "1" {
		b.Skip("set TETHER_BENCH_HUGE=1 to store and resume 1,000,000 messages")
	}
	for _, kind := range []string{"bolt", "sqlite", "redis"} {
		b.Run(kind, func(b *testing.B) { benchResume(b, kind, 1_000_000) })
	}
}

// BenchmarkHeapPerStoredMessage: the heap a client holds for a stored
// backlog of 100,000 messages once it has loaded the session
// (Client.Pending loads it without connecting), the store's own memory
// excluded (bolt: a memory map; sqlite: its page cache, outside the Go
// heap). held-heap-MB is what the default LoadWindow of 1,024 messages
// holds, the same whatever the backlog. What each message of the window
// costs is the slope between that and a window of 4,096 (heap-B/held-msg,
// and beyond its payload), so the client's fixed part (fixed-heap-KB,
// the window's share subtracted) does not count in it; the windows'
// bytes are far below the 8 MiB bound.
func BenchmarkHeapPerStoredMessage(b *testing.B) {
	const n, small, large = 100_000, 1024, 4096
	for _, kind := range []string{"bolt", "sqlite"} {
		b.Run(kind, func(b *testing.B) {
			e := newBenchEnv(b, *resumeWindow, false)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				id := fmt.Sprintf("heap-%s-%d", kind, i)
				st, err := OpenStore(kind, e.dir, "", id)
				if err != nil {
					b.Fatal(err)
				}
				e.fillBacklog(b, st, id, "heap/"+id, n)
				st.Close()
				b.StartTimer()
				hs := heldHeap(b, e, kind, id, n, small)
				hl := heldHeap(b, e, kind, id, n, large)
				per := (hl - hs) / (large - small)
				b.ReportMetric(hs/(1<<20), "held-heap-MB")
				b.ReportMetric(per, "heap-B/held-msg")
				b.ReportMetric(per-float64(*resumePayload), "heap-B/held-msg-beyond-payload")
				b.ReportMetric((hs-per*small)/(1<<10), "fixed-heap-KB")
			}
		})
	}
}

// heldHeap returns the heap a client with LoadWindow window holds once it
// has loaded session id, a backlog of n messages.
func heldHeap(b *testing.B, e *benchEnv, kind, id string, n, window int) float64 {
	st, err := OpenStore(kind, e.dir, "", id)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cfg := e.backlogConfig(id, st, n)
	cfg.LoadWindow = window
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := client.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p, err := c.Pending(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if len(p) != n {
		b.Fatalf("Pending lists %d messages, want %d", len(p), n)
	}
	p = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c)
	return float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
}
