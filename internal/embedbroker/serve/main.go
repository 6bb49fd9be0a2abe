// Command serve runs the embedded broker (package embedbroker) as a process
// of its own, for internal/testenv's Mochi: tether's tests run the broker
// this way so that mochi-mqtt stays out of tether's module graph.
//
// Usage:
//
//	serve [-addr 127.0.0.1:0] [-receive-maximum N] [-max-queued N]
//
// Once the broker accepts connections it prints one line to standard
// output, "ready HOST:PORT", then runs until its standard input closes or
// it gets SIGTERM or SIGINT, and closes the broker as Broker.Close does
// (every client gets a DISCONNECT, Server shutting down) before exiting 0.
// A failure to start is printed to standard error and exits 1.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"syscall"

	"github.com/tethermq/tether/internal/embedbroker"
)

func main() {
	var (
		addr    = flag.String("addr", embedbroker.DefaultAddr, "TCP address to listen on")
		recvMax = flag.Uint("receive-maximum", 0, "Receive Maximum announced in CONNACK (0: the default)")
		queued  = flag.Int("max-queued", 0, "QoS 1/2 messages held per session (0: the most mochi allows)")
	)
	flag.Parse()
	if *recvMax > math.MaxUint16 {
		fmt.Fprintf(os.Stderr, "serve: -receive-maximum %d is above %d\n", *recvMax, math.MaxUint16)
		os.Exit(2)
	}
	b, err := embedbroker.Start(embedbroker.Options{Addr: *addr, ReceiveMaximum: uint16(*recvMax), MaxQueued: *queued})
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("ready %s\n", b.Addr())
	select {
	case <-stop:
	case <-sigs:
	}
	_ = b.Close()
}
