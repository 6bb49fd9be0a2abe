package bench

import (
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// requireServers skips (fails under TETHER_TEST_REQUIRE=1) without local
// mosquitto and redis-server binaries.
func requireServers(t testing.TB) {
	t.Helper()
	for _, b := range []string{"mosquitto", "redis-server"} {
		if _, err := findBinary(b); err != nil {
			if os.Getenv("TETHER_TEST_REQUIRE") == "1" {
				t.Fatal(err)
			}
			t.Skip(err)
		}
	}
}

// TestCompare runs every client through every case once, briefly, and
// checks that each cell measured a rate and the printed table has them.
func TestCompare(t *testing.T) {
	requireServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Compare(ctx, Config{N: 300, Window: 10, Payload: 16, Repeat: 1, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Clients) != len(Clients()) {
		t.Fatalf("ran %d clients, want %d", len(res.Clients), len(Clients()))
	}
	for _, name := range res.Clients {
		for ci, cs := range Cases {
			if err := res.Err[name][ci]; err != nil {
				t.Errorf("%s, %s: %v", name, cs.Name, err)
			} else if res.Rate[name][ci] <= 0 {
				t.Errorf("%s, %s: rate %v", name, cs.Name, res.Rate[name][ci])
			}
		}
	}
	for _, kind := range []string{"bolt", "sqlite", "redis"} {
		if c := res.Commit[kind]; len(c) != 1 || c[0] <= 0 || res.Bounds[kind].C != c[0] {
			t.Errorf("commit latency of %s: %v, bound %+v", kind, c, res.Bounds[kind])
		}
	}
	var sb strings.Builder
	res.Print(&sb)
	out := sb.String()
	for _, want := range []string{"tether/redis", "paho.mqtt.golang", "1.00×", "W/(R+2C)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	sb.Reset()
	res.PrintMarkdown(&sb)
	md := sb.String()
	for _, want := range []string{"| raw | 1.00 | 1.00 | 1.00 | 1.00 |", "| tether, bolt |", "| redis |"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestSummarize checks the summary of fixed rounds: medians over rounds of
// the rate and of the ratio to raw in the same round (not the ratio of the
// medians), their range, failed cells left out, and the QoS 2 bound from
// each round's R and C.
func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	fail := errors.New("failed")
	res := &Result{
		Config:  Config{Window: 10, Repeat: 3},
		Clients: []string{"raw", "tether/bolt", "paho.mqtt.golang"},
		Runs: map[string][][]float64{
			"raw":              {{1000, 2000, 1500}, {500, 1000, 800}, {100, 200, 300}, {100, 0, 0}},
			"tether/bolt":      {{500, 1000, 1500}, {450, 500, 400}, {110, 200, 270}, {50, 60, 70}},
			"paho.mqtt.golang": {{2000, 2000, 1500}, {500, 0, 0}, {90, 200, 330}, {50, 60, 70}},
		},
		// C of round 3 was not measured: the bound has two rounds.
		Commit: map[string][]time.Duration{"bolt": {5 * ms, 5 * ms / 2, 0}},
		Err: map[string][]error{
			"raw":              {nil, nil, nil, fail},
			"tether/bolt":      {nil, nil, nil, nil},
			"paho.mqtt.golang": {nil, fail, nil, nil},
		},
	}
	res.summarize()
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	for _, c := range []struct {
		name  string
		ci    int
		rate  float64
		ratio Spread
	}{
		{"raw", 0, 1500, Spread{1, 1, 1, 3}},
		{"tether/bolt", 0, 1000, Spread{0.5, 0.5, 1, 3}},
		{"paho.mqtt.golang", 0, 2000, Spread{1, 1, 2, 3}},
		// The ratio of the medians would be 450/800.
		{"tether/bolt", qos2, 450, Spread{0.5, 0.5, 0.9, 3}},
		{"paho.mqtt.golang", qos2, 0, Spread{}},
		{"tether/bolt", 2, 200, Spread{1, 0.9, 1.1, 3}},
		// raw failed: no ratio.
		{"raw", 3, 0, Spread{}},
		{"tether/bolt", 3, 60, Spread{}},
	} {
		what := c.name + ", " + Cases[c.ci].Name
		near(what+": rate", res.Rate[c.name][c.ci], c.rate)
		q := res.Ratio[c.name][c.ci]
		near(what+": ratio", q.Med, c.ratio.Med)
		near(what+": min", q.Min, c.ratio.Min)
		near(what+": max", q.Max, c.ratio.Max)
		if q.N != c.ratio.N {
			t.Errorf("%s: ratio over %d rounds, want %d", what, q.N, c.ratio.N)
		}
	}
	// R: 10/500, 10/1000, 10/800 s. Bound: 10/(20+10 ms) = 333⅓ msg/s,
	// 10/(10+5 ms) = 666⅔; measured/bound 450/333⅓ = 1.35, 500/666⅔ = 0.75.
	if res.R != 12500*time.Microsecond {
		t.Errorf("R = %v, want 12.5ms", res.R)
	}
	b := res.Bounds["bolt"]
	if b.C != 3750*time.Microsecond {
		t.Errorf("C = %v, want 3.75ms", b.C)
	}
	near("bound", b.Rate, 500)
	near("bound / raw", b.Ratio, 2.0/3)
	near("measured / bound", b.Measured.Med, 1.05)
	near("measured / bound, min", b.Measured.Min, 0.75)
	near("measured / bound, max", b.Measured.Max, 1.35)

	var sb strings.Builder
	res.Print(&sb)
	for _, want := range []string{"1500 msg/s 1.00×", "450 msg/s 0.50× (0.50–0.90)", "R=12.5ms", "3.75ms", "500 msg/s", "1.05 (0.75–1.35)"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}
	sb.Reset()
	res.PrintMarkdown(&sb)
	for _, want := range []string{"| raw | 1.00 | 1.00 | 1.00 | failed |", "| tether, bolt | 0.50 | 0.50 | 1.00 | – |",
		"| paho.mqtt.golang | 1.00 | failed | 1.00 | – |", "| bolt | 3.75 ms | 0.67 | 0.50 | 1.05 (0.75–1.35) |"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("Markdown lacks %q:\n%s", want, sb.String())
		}
	}
}

// TestRawPublishWindow checks the raw publisher against the broker it
// measures: every QoS 1 and 2 message published with a window reaches a
// raw subscriber, in one piece.
func TestRawPublishWindow(t *testing.T) {
	requireServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mosq, err := StartMosquitto(t.TempDir(), 5)
	if err != nil {
		t.Fatal(err)
	}
	defer mosq.Close()
	for _, qos := range []byte{1, 2} {
		d, err := rawE2E(ctx, Run{Addr: mosq.Addr, QoS: qos, N: 1000, Window: 5, Payload: 32, ID: "raw" + string('0'+qos)})
		if err != nil {
			t.Fatalf("QoS %d: %v", qos, err)
		}
		if d <= 0 {
			t.Fatalf("QoS %d: duration %v", qos, d)
		}
	}
}
