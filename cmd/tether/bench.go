package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/store"
)

const benchSynopsis = `tether bench [-h HOST] [-p PORT | -L URL] [options]

Publishes through the broker with every combination of --publishers, --qos,
--store and --size, one case after another, and prints for each case the
rate (msg/s), the latency of one publish from PublishAsync to its
acknowledgement (p50 and p99; for QoS 0, until written), and the
allocations of the process per message (runtime.MemStats before and after).
Each publisher is a client of its own with --window publishes outstanding;
all publishers of a case share one store. The connection options
(broker, credentials, TLS) are those of tether pub and tether sub, and
apply to every publisher. bolt and sqlite without a path use a file in a
temporary directory, removed afterwards. The figures are those of this
machine and broker: use them to size a deployment, not as absolute
claims.`

// benchOpts is the command line of tether bench.
type benchOpts struct {
	conn       connOpts
	publishers string
	qos        string
	stores     string
	sizes      string
	count      int
	window     int
	pipeline   int
	topic      string
	dir        string
	quiet      bool
	interval   time.Duration
}

// benchCase is one combination of the command line's lists.
type benchCase struct {
	publishers int
	qos        byte
	store      string
	size       int
}

func (c benchCase) String() string {
	return fmt.Sprintf("%d pub × QoS %d × %s × %d B", c.publishers, c.qos, c.store, c.size)
}

// benchResult is one case's figures.
type benchResult struct {
	benchCase
	msgs         int
	elapsed      time.Duration
	p50, p99     time.Duration
	allocsPerMsg float64
	bytesPerMsg  float64
	err          error
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := benchOpts{publishers: "1", qos: "1", stores: "memory", sizes: "64", count: 10000, window: 20, topic: "tether/bench", interval: time.Second}
	s := o.conn.commandOptions("tether bench", false, "")
	s.str("", "publishers", "LIST", "publisher counts, comma-separated (default 1)", &o.publishers)
	s.str("q", "qos", "LIST", "QoS levels, comma-separated (default 1)", &o.qos)
	s.str("", "store", "LIST", "stores, comma-separated: memory, bolt, sqlite, bolt:PATH, sqlite:PATH, redis://HOST:PORT (default memory)", &o.stores)
	s.str("s", "size", "LIST", "payload sizes in bytes, comma-separated (default 64)", &o.sizes)
	s.int("n", "count", "N", "messages per publisher per case (default 10000)", &o.count, 1, 1<<30)
	s.int("w", "window", "W", "publishes each publisher keeps outstanding (default 20); beyond the broker's Receive Maximum they wait in the client's queue, and their latency counts the wait", &o.window, 1, 1<<20)
	s.int("", "commit-pipeline", "N", "store batches each client keeps on their way at once with a Redis store (default 2; 1: one at a time, better for a Redis on the same small host)", &o.pipeline, 1, 64)
	s.str("t", "topic", "TOPIC", "topic prefix (default tether/bench); each publisher adds /N", &o.topic)
	s.str("", "dir", "DIR", "directory for bolt and sqlite files without a path (default: a temporary one)", &o.dir)
	s.dur("", "progress", "SECS", "interval of the progress lines on standard error (default 1s)", &o.interval)
	s.flag("", "quiet", "no progress lines", &o.quiet)
	pos, ok, err := o.conn.parseArgs(s, args, stdout, benchSynopsis)
	if !ok {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("tether bench: unexpected argument %q", pos[0])
	}
	cases, err := o.cases()
	if err != nil {
		return err
	}
	// Every client of every case connects as this Config says (servers,
	// credentials, TLS); a bad TLS file fails here, as in pub and sub.
	base, err := o.conn.config()
	if err != nil {
		return err
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "tether-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	var results []benchResult
	for i, c := range cases {
		if !o.quiet {
			fmt.Fprintf(stderr, "case %d/%d: %v\n", i+1, len(cases), c)
		}
		r := o.runCase(ctx, base, c, i, stderr)
		results = append(results, r)
		if r.err != nil || ctx.Err() != nil {
			break // the next cases would fail the same way
		}
	}
	printBench(stdout, results)
	for _, r := range results {
		if r.err != nil {
			return fmt.Errorf("bench %v: %w", r.benchCase, r.err)
		}
	}
	return ctx.Err()
}

// cases expands the command line's lists into their combinations.
func (o *benchOpts) cases() ([]benchCase, error) {
	ints := func(name, list string, lo, hi int) ([]int, error) {
		var out []int
		for _, f := range strings.Split(list, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < lo || n > hi {
				return nil, usageErrorf("tether bench: %s: want whole numbers from %d to %d, not %q", name, lo, hi, f)
			}
			out = append(out, n)
		}
		return out, nil
	}
	pubs, err := ints("--publishers", o.publishers, 1, 10000)
	if err != nil {
		return nil, err
	}
	qoss, err := ints("--qos", o.qos, 0, 2)
	if err != nil {
		return nil, err
	}
	sizes, err := ints("--size", o.sizes, 0, 16<<20)
	if err != nil {
		return nil, err
	}
	var stores []string
	for _, f := range strings.Split(o.stores, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "memory", f == "bolt", f == "sqlite", strings.HasPrefix(f, "bolt:"), strings.HasPrefix(f, "sqlite:"),
			strings.HasPrefix(f, "redis://"), strings.HasPrefix(f, "rediss://"), strings.HasPrefix(f, "unix://"):
			stores = append(stores, f)
		default:
			return nil, usageErrorf("tether bench: --store: unknown store %q: want memory, bolt, sqlite, bolt:PATH, sqlite:PATH or redis://HOST:PORT", f)
		}
	}
	var out []benchCase
	for _, st := range stores {
		for _, q := range qoss {
			for _, sz := range sizes {
				for _, p := range pubs {
					out = append(out, benchCase{publishers: p, qos: byte(q), store: st, size: sz})
				}
			}
		}
	}
	return out, nil
}

// openBenchStore opens the store of case number i: bolt and sqlite without
// a path get a fresh file in dir.
func (o *benchOpts) openBenchStore(spec string, i int) (store.SessionStore, error) {
	switch spec {
	case "bolt", "sqlite":
		spec = fmt.Sprintf("%s:%s", spec, filepath.Join(o.dir, fmt.Sprintf("case%d.%s", i, spec)))
	}
	return openStore(spec)
}

// runCase runs one case: its publishers connect, each with base (the
// connection options' Config) completed, then publish together; the
// case's time runs from the first publish to the last completion.
func (o *benchOpts) runCase(ctx context.Context, base client.Config, c benchCase, i int, stderr io.Writer) benchResult {
	res := benchResult{benchCase: c}
	st, err := o.openBenchStore(c.store, i)
	if err != nil {
		res.err = fmt.Errorf("store %s: %w", o.conn.red.redact(c.store), err)
		return res
	}
	defer st.Close()
	run := randomHex(4)
	clients := make([]*client.Client, 0, c.publishers)
	defer func() {
		for _, cl := range clients {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = cl.Disconnect(dctx, 0)
			cancel()
			cl.Close()
		}
	}()
	for p := 0; p < c.publishers; p++ {
		cfg := base
		cfg.ClientID = fmt.Sprintf("tether-bench-%s-%d-%d", run, i, p)
		cfg.Store = st
		cfg.CleanStart = true
		cfg.SessionExpiry = time.Hour
		cfg.CommitPipeline = o.pipeline
		cl, err := client.New(cfg)
		if err != nil {
			res.err = err
			return res
		}
		clients = append(clients, cl)
		cctx, cancel := context.WithTimeout(ctx, o.conn.timeout)
		err = cl.Connect(cctx)
		cancel()
		if err != nil {
			res.err = connectExit(err)
			return res
		}
	}

	total := c.publishers * o.count
	lat := make([][]time.Duration, c.publishers)
	for p := range lat {
		lat[p] = make([]time.Duration, 0, o.count)
	}
	var done atomic.Int64
	stopProgress := make(chan struct{})
	var progressWG sync.WaitGroup
	if !o.quiet && o.interval > 0 {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			benchProgress(stderr, o.interval, total, &done, stopProgress)
		}()
	}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	errs := make(chan error, c.publishers)
	var wg sync.WaitGroup
	for p, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- benchPublisher(ctx, cl, c, fmt.Sprintf("%s/%d", o.topic, p), o.count, o.window, &lat[p], &done)
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(t0)
	runtime.ReadMemStats(&after)
	close(stopProgress)
	progressWG.Wait()
	close(errs)
	for err := range errs {
		if err != nil && res.err == nil {
			res.err = err
		}
	}
	res.msgs = int(done.Load())
	if res.msgs > 0 {
		res.allocsPerMsg = float64(after.Mallocs-before.Mallocs) / float64(res.msgs)
		res.bytesPerMsg = float64(after.TotalAlloc-before.TotalAlloc) / float64(res.msgs)
	}
	all := make([]time.Duration, 0, res.msgs)
	for _, l := range lat {
		all = append(all, l...)
	}
	res.p50, res.p99 = percentile(all, 0.50), percentile(all, 0.99)
	return res
}

// benchPublisher publishes n messages through cl, keeping window
// outstanding; a second goroutine waits for each in order and records its
// latency from PublishAsync to completion.
func benchPublisher(ctx context.Context, cl *client.Client, c benchCase, topic string, n, window int, lat *[]time.Duration, done *atomic.Int64) error {
	type sent struct {
		t  *client.Token
		at time.Time
	}
	pending := make(chan sent, window)
	slots := make(chan struct{}, window) // one per publish outstanding
	waitErr := make(chan error, 1)
	go func() {
		var first error
		for s := range pending {
			select {
			case <-s.t.Done():
				<-slots
			case <-ctx.Done():
				if first == nil {
					first = ctx.Err()
				}
				continue
			}
			if err := s.t.Err(); err != nil {
				if first == nil {
					first = err
				}
				continue
			}
			*lat = append(*lat, time.Since(s.at))
			done.Add(1)
		}
		waitErr <- first
	}()
	m := &client.Message{Topic: topic, QoS: c.qos, Payload: make([]byte, c.size)}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		at := time.Now()
		t := cl.PublishAsync(m)
		select {
		case pending <- sent{t, at}:
		case <-ctx.Done():
		}
	}
	close(pending)
	return <-waitErr
}

// benchProgress prints a progress line every interval until stop closes.
func benchProgress(w io.Writer, interval time.Duration, total int, done *atomic.Int64, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last, lastAt := int64(0), time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			d := done.Load()
			rate := float64(d-last) / now.Sub(lastAt).Seconds()
			fmt.Fprintf(w, "  %d/%d messages (%.0f%%), %.0f msg/s\n", d, total, 100*float64(d)/float64(total), rate)
			last, lastAt = d, now
		}
	}
}

// percentile returns the q-quantile of d (sorting it), or 0 for none.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// printBench writes the results as a table.
func printBench(w io.Writer, results []benchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "publishers\tqos\tstore\tsize\tmessages\tmsg/s\tp50\tp99\tallocs/msg\tB/msg\t")
	for _, r := range results {
		if r.err != nil && r.msgs == 0 {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%d\tfailed\t\t\t\t\t\t\n", r.publishers, r.qos, storeLabel(r.store), r.size)
			continue
		}
		rate := 0.0
		if r.elapsed > 0 {
			rate = float64(r.msgs) / r.elapsed.Seconds()
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%.0f\t%v\t%v\t%.1f\t%.0f\t\n", r.publishers, r.qos, storeLabel(r.store), r.size,
			r.msgs, rate, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.allocsPerMsg, r.bytesPerMsg)
	}
	tw.Flush()
}

// storeLabel is the store's kind, without a path or a URL's credentials.
func storeLabel(spec string) string {
	kind, _, _ := strings.Cut(spec, ":")
	return kind
}
