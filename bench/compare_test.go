package bench

import (
	"context"
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
		if res.Commit[kind] <= 0 {
			t.Errorf("commit latency of %s not measured", kind)
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
