// Command compare runs tether's comparative benchmark: tether with each
// store, two other Go MQTT clients and a minimal pipelined raw publisher,
// against one private Mosquitto with the same window W for all, and prints
// msg/s and the ratio to raw. It measures in -repeat rounds, each running
// every client once per case in an order rotating from round to round, and
// prints medians over rounds of the rate and of the ratio to raw in the
// same round (with the range of the ratio).
//
//	go run ./cmd/compare [-n 20000] [-w 20] [-size 64] [-repeat 3] [-only tether/bolt,...] [-redis-latency 250us] [-markdown]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/tethermq/tether/bench"
)

func main() {
	var cfg bench.Config
	var only string
	flag.IntVar(&cfg.N, "n", 20000, "messages per measurement")
	flag.IntVar(&cfg.Window, "w", 20, "W: publishes outstanding, and the broker's max_inflight_messages")
	flag.IntVar(&cfg.Payload, "size", 64, "payload bytes")
	flag.IntVar(&cfg.Repeat, "repeat", 3, "rounds: each runs every client once per case, and measures each store's C; medians over rounds are printed")
	flag.StringVar(&only, "only", "", "comma-separated clients to run besides raw (default all)")
	flag.DurationVar(&cfg.RedisLatency, "redis-latency", 0, "hold the bytes between the clients and Redis this long each way (a Redis across a network)")
	flag.IntVar(&cfg.CommitPipeline, "commit-pipeline", 0, "tether's Config.CommitPipeline: store batches on their way at once with Redis (0: its default, 2)")
	quiet := flag.Bool("q", false, "no progress lines")
	markdown := flag.Bool("markdown", false, "print the ratios as Markdown tables (the README's form)")
	flag.Parse()
	if only != "" {
		cfg.Only = strings.Split(only, ",")
	}
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	if cfg.N <= 0 || cfg.Window <= 0 || cfg.Window > 65535 || cfg.Payload < 0 {
		fmt.Fprintln(os.Stderr, "compare: -n and -w must be positive, -w at most 65535, -size not negative")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := bench.Compare(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
	if *markdown {
		res.PrintMarkdown(os.Stdout)
		return
	}
	res.Print(os.Stdout)
}
