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
	Repeat   int      // measurements per cell; the median is reported
	Only     []string // client names to run (raw always runs); empty means all
	Dir      string   // working directory; empty means a temporary one
	Progress io.Writer
}

// Case is one column of the comparison.
type Case struct {
	Name     string
	QoS      byte
	EndToEnd bool
}

// Cases are the columns: QoS 1 and 2 publish, and end to end.
var Cases = []Case{{"QoS 1 publish", 1, false}, {"QoS 2 publish", 2, false}, {"QoS 1 end to end", 1, true}, {"QoS 2 end to end", 2, true}}

// Result holds the median msg/s per client and case, NaN-free: a failed
// cell holds 0 and its error.
type Result struct {
	Config  Config
	Clients []string
	Rate    map[string][]float64 // client → msg/s per case (index of Cases)
	Err     map[string][]error
	Commit  map[string]time.Duration // store kind → C, median single-Apply latency
	Mosq    string                   // the broker's version line
}

// Compare runs every client through every case against one private
// Mosquitto (and one Redis, for the Redis store).
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
			break
		}
	}
	res := &Result{Config: cfg, Rate: map[string][]float64{}, Err: map[string][]error{}, Commit: map[string]time.Duration{}, Mosq: MosquittoVersion()}
	run := 0
	for _, c := range clients {
		res.Clients = append(res.Clients, c.Name)
		res.Rate[c.Name] = make([]float64, len(Cases))
		res.Err[c.Name] = make([]error, len(Cases))
		for ci, cs := range Cases {
			var rates []float64
			for rep := 0; rep < cfg.Repeat; rep++ {
				run++
				r := Run{Addr: mosq.Addr, QoS: cs.QoS, N: cfg.N, Window: cfg.Window, Payload: cfg.Payload,
					Dir: cfg.Dir, RedisURL: redisURL, ID: fmt.Sprintf("r%d", run)}
				f := c.Publish
				if cs.EndToEnd {
					f = c.EndToEnd
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
				d, err := f(rctx, r)
				cancel()
				if err != nil {
					res.Err[c.Name][ci] = err
					fmt.Fprintf(cfg.Progress, "%-20s %-17s run %d: %v\n", c.Name, cs.Name, rep+1, err)
					break
				}
				rate := float64(cfg.N) / d.Seconds()
				rates = append(rates, rate)
				fmt.Fprintf(cfg.Progress, "%-20s %-17s run %d: %8.0f msg/s\n", c.Name, cs.Name, rep+1, rate)
			}
			if res.Err[c.Name][ci] == nil {
				res.Rate[c.Name][ci] = median(rates)
			}
		}
	}
	for _, c := range clients {
		kind, ok := strings.CutPrefix(c.Name, "tether/")
		if !ok || kind == "memory" {
			continue
		}
		d, err := CommitLatency(ctx, kind, cfg.Dir, redisURL, 200)
		if err != nil {
			fmt.Fprintf(cfg.Progress, "commit latency of %s: %v\n", kind, err)
			continue
		}
		res.Commit[kind] = d
	}
	return res, nil
}

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

// Print writes the table: msg/s and ratio to raw per case, then C and the
// QoS 2 bound W/(R+2C) for each durable store.
func (res *Result) Print(w io.Writer) {
	cfg := res.Config
	fmt.Fprintf(w, "%s; W=%d (max_inflight_messages, publishes outstanding), %d × %d B per run, median of %d\n\n",
		res.Mosq, cfg.Window, cfg.N, cfg.Payload, cfg.Repeat)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "client\t")
	for _, cs := range Cases {
		fmt.Fprintf(tw, "%s\t", cs.Name)
	}
	fmt.Fprintln(tw)
	raw := res.Rate["raw"]
	for _, name := range res.Clients {
		fmt.Fprintf(tw, "%s\t", name)
		for ci := range Cases {
			if err := res.Err[name][ci]; err != nil {
				fmt.Fprint(tw, "failed\t")
				continue
			}
			r := res.Rate[name][ci]
			if raw[ci] > 0 {
				fmt.Fprintf(tw, "%.0f msg/s %.2f×\t", r, r/raw[ci])
			} else {
				fmt.Fprintf(tw, "%.0f msg/s\t", r)
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if raw[1] <= 0 || len(res.Commit) == 0 {
		return
	}
	// R, one QoS 2 exchange without a store, from the raw publisher:
	// it completes W exchanges per R.
	R := time.Duration(float64(cfg.Window) / raw[1] * float64(time.Second))
	fmt.Fprintf(w, "\nQoS 2 bound W/(R+2C): W=%d, R=%v (W / raw QoS 2 rate)\n", cfg.Window, R.Round(time.Microsecond))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store\tC\tW/(R+2C)\tmeasured QoS 2\tmeasured / bound\t")
	for _, name := range res.Clients {
		kind, ok := strings.CutPrefix(name, "tether/")
		C, has := res.Commit[kind]
		if !ok || !has {
			continue
		}
		bound := float64(cfg.Window) / (R + 2*C).Seconds()
		got := res.Rate[name][1]
		fmt.Fprintf(tw, "%s\t%v\t%.0f msg/s\t%.0f msg/s\t%.2f\t\n", kind, C.Round(time.Microsecond), bound, got, got/bound)
	}
	tw.Flush()
	for _, name := range res.Clients {
		for ci, err := range res.Err[name] {
			if err != nil {
				fmt.Fprintf(w, "%s, %s: %v\n", name, Cases[ci].Name, err)
			}
		}
	}
}

// PrintMarkdown writes the ratios to raw as the README's Markdown tables:
// clients by case, then C and the QoS 2 bound as ratios to raw's QoS 2.
func (res *Result) PrintMarkdown(w io.Writer) {
	cfg := res.Config
	fmt.Fprintf(w, "%s, W = %d, %d × %d B per run, median of %d; ratios to raw in the same run:\n\n",
		res.Mosq, cfg.Window, cfg.N, cfg.Payload, cfg.Repeat)
	fmt.Fprint(w, "| client |")
	for _, cs := range Cases {
		fmt.Fprintf(w, " %s |", cs.Name)
	}
	fmt.Fprint(w, "\n| --- |")
	for range Cases {
		fmt.Fprint(w, " --- |")
	}
	fmt.Fprintln(w)
	raw := res.Rate["raw"]
	for _, name := range res.Clients {
		fmt.Fprintf(w, "| %s |", strings.Replace(name, "/", ", ", 1))
		for ci := range Cases {
			switch {
			case res.Err[name][ci] != nil:
				fmt.Fprint(w, " failed |")
			case raw[ci] > 0:
				fmt.Fprintf(w, " %.2f |", res.Rate[name][ci]/raw[ci])
			default:
				fmt.Fprint(w, " – |")
			}
		}
		fmt.Fprintln(w)
	}
	if raw[1] <= 0 || len(res.Commit) == 0 {
		return
	}
	R := time.Duration(float64(cfg.Window) / raw[1] * float64(time.Second))
	fmt.Fprintf(w, "\nR = %v.\n\n| store | C | W / (R + 2C), as a ratio to raw's QoS 2 | measured QoS 2, ratio to raw | measured / bound |\n| --- | --- | --- | --- | --- |\n",
		R.Round(10*time.Microsecond))
	for _, name := range res.Clients {
		kind, ok := strings.CutPrefix(name, "tether/")
		C, has := res.Commit[kind]
		if !ok || !has {
			continue
		}
		bound := float64(cfg.Window) / (R + 2*C).Seconds()
		got := res.Rate[name][1]
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f | %.2f | %.2f |\n", kind, float64(C)/float64(time.Millisecond), bound/raw[1], got/raw[1], got/bound)
	}
}
