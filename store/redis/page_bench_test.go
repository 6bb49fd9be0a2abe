package redis

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// pageBenchRecords is the size of the session BenchmarkPageBlocking reads.
const pageBenchRecords = 100_000

// BenchmarkPageBlocking measures what reading a session of 100,000
// records of 100 bytes costs the other clients of the same Redis, which
// wait while a page's script runs. Load reads it with one call, Scan with
// pages of store.DefaultScanLimit until next is 0. Besides ns/op (the
// whole read), each reports:
//
//   - worst-ping-µs: the longest round trip of a PING sent in a tight loop
//     on a connection of its own meanwhile: what a page costs every other
//     client, network and scheduling on this machine included (run the
//     probe with nothing else to read to know the machine's own share);
//   - p50-page-µs and worst-page-µs: the median and the longest run of a
//     page's script, from SLOWLOG;
//   - server-µs/op and pages/op: the Redis time of the scripts per read,
//     from INFO commandstats, and their number.
func BenchmarkPageBlocking(b *testing.B) {
	srv := testenv.Redis(b)
	ctx := context.Background()
	s, err := Open(srv.URL(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "backlog"}
	if err := s.Clear(ctx, k); err != nil {
		b.Fatal(err)
	}
	fillSession(b, s, k, pageBenchRecords, 100)
	b.Run("Load", func(b *testing.B) {
		measureBlocking(b, srv.Addr(), func() int {
			recs, err := s.Load(ctx, k)
			if err != nil {
				b.Fatal(err)
			}
			return len(recs)
		})
	})
	b.Run("Scan", func(b *testing.B) {
		measureBlocking(b, srv.Addr(), func() int {
			return scanAll(b, s, k, store.DefaultScanLimit)
		})
	})
}

// fillSession writes n records of size-byte packets, Seqs 1 to n, into
// session k.
func fillSession(tb testing.TB, s *Store, k store.Key, n, size int) {
	tb.Helper()
	ctx := context.Background()
	packet := []byte(strings.Repeat("p", size))
	const batch = 1000
	ops := make([]store.Op, 0, batch)
	for i := 1; i <= n; i++ {
		ops = append(ops, store.Put(store.Record{Seq: uint64(i), Dir: store.Outbound, ID: uint16(i), Packet: packet}))
		if len(ops) == batch || i == n {
			if err := s.Apply(ctx, k, ops...); err != nil {
				tb.Fatalf("Apply: %v", err)
			}
			ops = ops[:0]
		}
	}
}

// scanAll reads session k with Scan, limit records a page, and returns the
// number of records read.
func scanAll(tb testing.TB, s *Store, k store.Key, limit int) int {
	n := 0
	for from := uint64(0); ; {
		recs, next, err := s.Scan(context.Background(), k, from, limit)
		if err != nil {
			tb.Fatal(err)
		}
		n += len(recs)
		if next == 0 {
			return n
		}
		from = next
	}
}

// measureBlocking runs read in a benchmark loop while a probe pings the
// server at addr, and reports the figures BenchmarkPageBlocking describes.
// read returns how many records it read, which must be pageBenchRecords.
func measureBlocking(b *testing.B, addr string, read func() int) {
	ctx := context.Background()
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	defer admin.Close()
	if err := loadScript.Load(ctx, admin).Err(); err != nil { // no NOSCRIPT round in the figures
		b.Fatal(err)
	}
	for _, args := range [][]any{
		{"config", "set", "slowlog-log-slower-than", "20"}, // µs: scripts, never a PING
		{"config", "set", "slowlog-max-len", "100000"},
		{"slowlog", "reset"},
		{"config", "resetstat"},
	} {
		if err := admin.Do(ctx, args...).Err(); err != nil {
			b.Fatalf("%v: %v", args, err)
		}
	}
	probe := startPingProbe(addr)
	defer probe.stop() // when read fails the test
	n := 0
	for b.Loop() {
		if got := read(); got != pageBenchRecords {
			b.Fatalf("read %d records, want %d", got, pageBenchRecords)
		}
		n++
	}
	worstPing, err := probe.stop()
	if err != nil {
		b.Fatalf("ping probe: %v", err)
	}
	b.ReportMetric(float64(worstPing.Microseconds()), "worst-ping-µs")

	logs, err := admin.SlowLogGet(ctx, -1).Result()
	if err != nil {
		b.Fatalf("slowlog get: %v", err)
	}
	var pages []time.Duration
	for _, l := range logs {
		if len(l.Args) > 0 && strings.HasPrefix(strings.ToLower(l.Args[0]), "eval") {
			pages = append(pages, l.Duration)
		}
	}
	if len(pages) > 0 {
		// On a busy machine the worst is often another process holding
		// the CPU that Redis needed; the median is not.
		slices.Sort(pages)
		b.ReportMetric(float64(pages[len(pages)/2].Microseconds()), "p50-page-µs")
		b.ReportMetric(float64(pages[len(pages)-1].Microseconds()), "worst-page-µs")
	}

	info, err := admin.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatalf("info: %v", err)
	}
	calls, usec := scriptStats(info)
	b.ReportMetric(float64(usec)/float64(n), "server-µs/op")
	b.ReportMetric(float64(calls)/float64(n), "pages/op")
}

// scriptStats sums the calls and the microseconds of EVAL and EVALSHA in
// the reply of INFO commandstats.
func scriptStats(info string) (calls, usec int64) {
	for _, line := range strings.Split(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_eval") {
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			key, val, _ := strings.Cut(f, "=")
			v, _ := strconv.ParseInt(val, 10, 64)
			switch key {
			case "calls":
				calls += v
			case "usec":
				usec += v
			}
		}
	}
	return calls, usec
}

// pingProbe sends PING on a connection of its own, one after the other,
// and keeps the longest round trip.
type pingProbe struct {
	quit  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	worst time.Duration // written by the probe's goroutine, read after wg.Wait
	err   error         // likewise
}

func startPingProbe(addr string) *pingProbe {
	p := &pingProbe{quit: make(chan struct{})}
	c := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: 1})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer c.Close()
		ctx := context.Background()
		for {
			select {
			case <-p.quit:
				return
			default:
			}
			t0 := time.Now()
			if err := c.Ping(ctx).Err(); err != nil {
				p.err = err
				return
			}
			p.worst = max(p.worst, time.Since(t0))
		}
	}()
	return p
}

// stop ends the probe and returns its longest round trip.
func (p *pingProbe) stop() (time.Duration, error) {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
	return p.worst, p.err
}
