package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tethermq/tether/store"
)

// Config is a comparative run.
type Config struct {
	N        int      // messages per measurement
	Window   int      // W: publishes outstanding, and the broker's max_inflight_messages
	Payload  int      // bytes per message
	Repeat   int      // rounds, each measuring every cell once; medians over rounds are reported
	Only     []string // client names to run (raw always runs); empty means all
	Dir      string   // working directory; empty means a temporary one
	Progress io.Writer
	// RedisLatency, when not zero, puts a proxy between the clients and
	// Redis that holds every chunk of bytes that long in each direction:
	// a Redis across a network, for a Redis on this machine.
	RedisLatency time.Duration
	// CommitPipeline is tether's Config.CommitPipeline (0: its default).
	CommitPipeline int
}

// Case is one column of the comparison.
type Case struct {
	Name     string
	QoS      byte
	EndToEnd bool
}

// Cases are the columns: QoS 1 and 2 publish, and end to end.
var Cases = []Case{{"QoS 1 publish", 1, false}, {"QoS 2 publish", 2, false}, {"QoS 1 end to end", 1, true}, {"QoS 2 end to end", 2, true}}

// qos2 is the index in Cases of the QoS 2 publish, which the bound
// W/(R+2C) predicts.
const qos2 = 1

// Result holds each round's measurements and their summary. A failed cell
// holds its error, is not run again, and has no summary (rate 0, no
// ratio); the other cells go on.
type Result struct {
	Config  Config
	Clients []string
	Runs    map[string][][]float64     // client → case → msg/s per round; 0 where not measured
	Commit  map[string][]time.Duration // store kind → C per round; 0 where not measured
	Err     map[string][]error         // client → case → the error that ended the cell
	Mosq    string                     // the broker's version line

	// Summary, from summarize.
	Rate   map[string][]float64 // client → case → median msg/s over rounds
	Ratio  map[string][]Spread  // client → case → ratio to raw's msg/s in the same round
	R      time.Duration        // median over rounds of W / raw's QoS 2 rate
	Bounds map[string]Bound     // store kind → the QoS 2 bound
}

// Spread summarizes values taken one per round: their median and range
// over the N rounds that have one.
type Spread struct {
	Med, Min, Max float64
	N             int
}

func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	return Spread{Med: median(v), Min: slices.Min(v), Max: slices.Max(v), N: len(v)}
}

// format prints the median followed by unit and, if the rounds differ,
// the range: "0.85× (0.78–0.93)".
func (s Spread) format(unit string) string {
	if s.Min == s.Max {
		return fmt.Sprintf("%.2f%s", s.Med, unit)
	}
	return fmt.Sprintf("%.2f%s (%.2f–%.2f)", s.Med, unit, s.Min, s.Max)
}

// Bound is the QoS 2 bound W/(R+2C) of a durable store, computed per round
// from that round's R and C; each figure is the median over rounds.
type Bound struct {
	C        time.Duration // single-record commit latency
	Rate     float64       // W/(R+2C), msg/s
	Ratio    float64       // W/(R+2C) / raw's QoS 2 rate
	Measured Spread        // the store's QoS 2 publish rate / W/(R+2C)
}

// Compare runs every client through every case against one private
// Mosquitto (and one Redis, for the Redis store), in cfg.Repeat rounds so
// that the machine's drift moves raw and the clients alike: each round
// runs every case once for each client, in an order rotating from round
// to round, and measures each durable store's C after its QoS 2 publishes.
func Compare(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Repeat <= 0 {
		cfg.Repeat = 3
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "tether-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	mosq, err := StartMosquitto(cfg.Dir, cfg.Window)
	if err != nil {
		return nil, err
	}
	defer mosq.Close()
	var redisURL string
	clients := selectClients(cfg.Only)
	for _, c := range clients {
		if c.Name == "tether/redis" {
			rd, err := StartRedis(cfg.Dir)
			if err != nil {
				return nil, err
			}
			defer rd.Close()
			redisURL = "redis://" + rd.Addr
			if cfg.RedisLatency > 0 {
				p, err := startLatencyProxy(rd.Addr, cfg.RedisLatency)
				if err != nil {
					return nil, err
				}
				defer p.Close()
				redisURL = "redis://" + p.Addr()
			}
			break
		}
	}
	res := &Result{Config: cfg, Runs: map[string][][]float64{}, Commit: map[string][]time.Duration{},
		Err: map[string][]error{}, Mosq: MosquittoVersion()}
	var kinds []string // the durable stores selected
	for _, c := range clients {
		res.Clients = append(res.Clients, c.Name)
		res.Runs[c.Name] = make([][]float64, len(Cases))
		for ci := range Cases {
			res.Runs[c.Name][ci] = make([]float64, cfg.Repeat)
		}
		res.Err[c.Name] = make([]error, len(Cases))
		if kind, ok := strings.CutPrefix(c.Name, "tether/"); ok && kind != "memory" {
			kinds = append(kinds, kind)
			res.Commit[kind] = make([]time.Duration, cfg.Repeat)
		}
	}
	run := 0
	for round := range cfg.Repeat {
		for ci, cs := range Cases {
			for i := range clients {
				c := clients[(i+round)%len(clients)]
				if res.Err[c.Name][ci] != nil {
					continue
				}
				run++
				r := Run{Addr: mosq.Addr, QoS: cs.QoS, N: cfg.N, Window: cfg.Window, Payload: cfg.Payload,
					Dir: cfg.Dir, RedisURL: redisURL, ID: fmt.Sprintf("r%d", run), CommitPipeline: cfg.CommitPipeline}
				f := c.Publish
				if cs.EndToEnd {
					f = c.EndToEnd
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
				d, err := f(rctx, r)
				cancel()
				if err != nil {
					res.Err[c.Name][ci] = err
					fmt.Fprintf(cfg.Progress, "%-20s %-17s round %d: %v\n", c.Name, cs.Name, round+1, err)
					continue
				}
				rate := float64(cfg.N) / d.Seconds()
				res.Runs[c.Name][ci][round] = rate
				fmt.Fprintf(cfg.Progress, "%-20s %-17s round %d: %8.0f msg/s\n", c.Name, cs.Name, round+1, rate)
			}
			if ci != qos2 {
				continue
			}
			for _, kind := range kinds {
				d, err := CommitLatency(ctx, kind, cfg.Dir, redisURL, 50)
				if err != nil {
					fmt.Fprintf(cfg.Progress, "commit latency of %s, round %d: %v\n", kind, round+1, err)
					continue
				}
				res.Commit[kind][round] = d
				fmt.Fprintf(cfg.Progress, "%-38s round %d: C = %v\n", "commit latency of "+kind, round+1, d.Round(time.Microsecond))
			}
		}
	}
	res.summarize()
	return res, nil
}

// summarize computes the summary from the rounds: per cell, the median
// rate and the ratio to raw's rate in the same round; R; and per durable
// store and round, W/(R+2C) from that round's R and C, and the store's
// QoS 2 publish rate over it.
func (res *Result) summarize() {
	W := float64(res.Config.Window)
	rate := func(name string, ci, round int) float64 { // 0 if not measured or the cell failed
		if res.Err[name][ci] != nil {
			return 0
		}
		return res.Runs[name][ci][round]
	}
	res.Rate, res.Ratio = map[string][]float64{}, map[string][]Spread{}
	for _, name := range res.Clients {
		res.Rate[name] = make([]float64, len(Cases))
		res.Ratio[name] = make([]Spread, len(Cases))
		for ci := range Cases {
			var rates, ratios []float64
			for round := range res.Runs[name][ci] {
				r := rate(name, ci, round)
				if r <= 0 {
					continue
				}
				rates = append(rates, r)
				if raw := rate("raw", ci, round); raw > 0 {
					ratios = append(ratios, r/raw)
				}
			}
			res.Rate[name][ci] = median(rates)
			res.Ratio[name][ci] = spread(ratios)
		}
	}
	var rs []float64
	for round := range res.Runs["raw"][qos2] {
		if raw := rate("raw", qos2, round); raw > 0 {
			rs = append(rs, W/raw)
		}
	}
	res.R = seconds(median(rs))
	res.Bounds = map[string]Bound{}
	for kind, cs := range res.Commit {
		var commits, bounds, ratios, measured []float64
		for round, C := range cs {
			raw := rate("raw", qos2, round)
			if C <= 0 || raw <= 0 {
				continue
			}
			// R, one QoS 2 exchange without a store, from the raw
			// publisher: it completes W exchanges per R.
			bound := W / (W/raw + 2*C.Seconds())
			commits, bounds, ratios = append(commits, C.Seconds()), append(bounds, bound), append(ratios, bound/raw)
			if got := rate("tether/"+kind, qos2, round); got > 0 {
				measured = append(measured, got/bound)
			}
		}
		if len(bounds) > 0 {
			res.Bounds[kind] = Bound{C: seconds(median(commits)), Rate: median(bounds), Ratio: median(ratios), Measured: spread(measured)}
		}
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func selectClients(only []string) []Client {
	var out []Client
	for _, c := range Clients() {
		if c.Name == "raw" || len(only) == 0 || slices.Contains(only, c.Name) {
			out = append(out, c)
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// CommitLatency returns C for a store of kind: the median latency of one
// Apply putting one 100-byte record, over n commits (after 10 unmeasured
// ones). It is what a QoS 2 PUBLISH, and again its PUBREL, waits for
// before it may be sent.
func CommitLatency(ctx context.Context, kind, dir, redisURL string, n int) (time.Duration, error) {
	st, err := OpenStore(kind, dir, redisURL, fmt.Sprintf("commit-%d", time.Now().UnixNano()))
	if err != nil {
		return 0, err
	}
	defer st.Close()
	k := store.Key{Server: "mqtt://127.0.0.1:1", ClientID: "commit-latency"}
	pkt := payload(100)
	lat := make([]float64, 0, n)
	for i := 0; i < n+10; i++ {
		t0 := time.Now()
		if err := st.Apply(ctx, k, store.Put(store.Record{Seq: uint64(i) + 1, Dir: store.Outbound, ID: uint16(i%65535 + 1), Packet: pkt})); err != nil {
			return 0, err
		}
		if i >= 10 {
			lat = append(lat, float64(time.Since(t0)))
		}
	}
	return time.Duration(median(lat)), nil
}

// MosquittoVersion returns the local mosquitto's version line, or "".
func MosquittoVersion() string {
	bin, err := findBinary("mosquitto")
	if err != nil {
		return ""
	}
	out, _ := execOutput(bin, "-h")
	line, _, _ := strings.Cut(out, "\n")
	return strings.TrimSpace(line)
}

// Print writes the table: median msg/s and the median and range of the
// per-round ratio to raw, per case; then C and the QoS 2 bound W/(R+2C)
// for each durable store.
func (res *Result) Print(w io.Writer) {
	cfg := res.Config
	fmt.Fprintf(w, "%s; W=%d (max_inflight_messages, publishes outstanding), %d × %d B per run, %d rounds;\n"+
		"median msg/s, and median (min–max) over rounds of the ratio to raw in the same round\n\n",
		res.Mosq, cfg.Window, cfg.N, cfg.Payload, cfg.Repeat)
	if cfg.RedisLatency > 0 {
		fmt.Fprintf(w, "Redis behind a proxy holding bytes %v each way\n", cfg.RedisLatency)
	}
	if cfg.CommitPipeline > 0 {
		fmt.Fprintf(w, "tether's CommitPipeline %d\n", cfg.CommitPipeline)
	}
	if cfg.RedisLatency > 0 || cfg.CommitPipeline > 0 {
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "client\t")
	for _, cs := range Cases {
		fmt.Fprintf(tw, "%s\t", cs.Name)
	}
	fmt.Fprintln(tw)
	for _, name := range res.Clients {
		fmt.Fprintf(tw, "%s\t", name)
		for ci := range Cases {
			if err := res.Err[name][ci]; err != nil {
				fmt.Fprint(tw, "failed\t")
				continue
			}
			fmt.Fprintf(tw, "%.0f msg/s", res.Rate[name][ci])
			if q := res.Ratio[name][ci]; q.N > 0 {
				fmt.Fprintf(tw, " %s", q.format("×"))
			}
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if len(res.Bounds) > 0 {
		fmt.Fprintf(w, "\nQoS 2 bound W/(R+2C): W=%d, R=%v (W / raw QoS 2 rate); per round, medians over rounds\n",
			cfg.Window, res.R.Round(time.Microsecond))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "store\tC\tW/(R+2C)\tmeasured QoS 2\tmeasured / bound\t")
		res.eachBound(func(name, kind string, b Bound, m string) {
			got := "failed"
			if res.Err[name][qos2] == nil {
				got = fmt.Sprintf("%.0f msg/s", res.Rate[name][qos2])
			}
			fmt.Fprintf(tw, "%s\t%v\t%.0f msg/s\t%s\t%s\t\n", kind, b.C.Round(time.Microsecond), b.Rate, got, m)
		})
		tw.Flush()
	}
	for _, name := range res.Clients {
		for ci, err := range res.Err[name] {
			if err != nil {
				fmt.Fprintf(w, "%s, %s: %v\n", name, Cases[ci].Name, err)
			}
		}
	}
}

// eachBound calls f, in the clients' order, for each durable store with a
// QoS 2 bound: its client name, store kind, bound, and measured / bound
// as printed ("–" when not measured).
func (res *Result) eachBound(f func(name, kind string, b Bound, measured string)) {
	for _, name := range res.Clients {
		kind, ok := strings.CutPrefix(name, "tether/")
		b, has := res.Bounds[kind]
		if !ok || !has {
			continue
		}
		m := "–"
		if b.Measured.N > 0 {
			m = b.Measured.format("")
		}
		f(name, kind, b, m)
	}
}

// PrintMarkdown writes the ratios to raw as the README's Markdown tables:
// clients by case, then C and the QoS 2 bound as ratios to raw's QoS 2.
// Each ratio is the median over rounds of the ratio in one round.
func (res *Result) PrintMarkdown(w io.Writer) {
	cfg := res.Config
	fmt.Fprintf(w, "%s, W = %d, %d × %d B per run, %d rounds; median over rounds of the ratio to raw in the same round:\n\n",
		res.Mosq, cfg.Window, cfg.N, cfg.Payload, cfg.Repeat)
	if cfg.RedisLatency > 0 {
		fmt.Fprintf(w, "(Redis behind a proxy holding bytes %v each way.)\n\n", cfg.RedisLatency)
	}
	fmt.Fprint(w, "| client |")
	for _, cs := range Cases {
		fmt.Fprintf(w, " %s |", cs.Name)
	}
	fmt.Fprint(w, "\n| --- |")
	for range Cases {
		fmt.Fprint(w, " --- |")
	}
	fmt.Fprintln(w)
	for _, name := range res.Clients {
		fmt.Fprintf(w, "| %s |", strings.Replace(name, "/", ", ", 1))
		for ci := range Cases {
			switch q := res.Ratio[name][ci]; {
			case res.Err[name][ci] != nil:
				fmt.Fprint(w, " failed |")
			case q.N > 0:
				fmt.Fprintf(w, " %.2f |", q.Med)
			default:
				fmt.Fprint(w, " – |")
			}
		}
		fmt.Fprintln(w)
	}
	if len(res.Bounds) == 0 {
		return
	}
	fmt.Fprintf(w, "\nR = %v.\n\n| store | C | W / (R + 2C), as a ratio to raw's QoS 2 | measured QoS 2, ratio to raw | measured / bound (range) |\n| --- | --- | --- | --- | --- |\n",
		res.R.Round(10*time.Microsecond))
	res.eachBound(func(name, kind string, b Bound, m string) {
		got := "failed"
		if res.Err[name][qos2] == nil {
			got = fmt.Sprintf("%.2f", res.Ratio[name][qos2].Med)
		}
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f | %s | %s |\n", kind, float64(b.C)/float64(time.Millisecond), b.Ratio, got, m)
	})
}
