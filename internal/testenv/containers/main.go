// Command containers starts one container through testcontainers-go for
// internal/testenv and holds it until told to stop. It is a module of its
// own so that testcontainers, the Docker client and what they need stay out
// of tether's module graph: testenv builds and runs it only when a service
// is not installed locally and a Docker engine answers.
//
// Usage:
//
//	containers -image IMAGE [-port 1883/tcp] [-file HOST:CONTAINER]...
//	    [-entrypoint-sh SCRIPT] [-wait-port PORT] [-wait-log TEXT]
//	    [-host-network] [-- CMD ARGS...]
//
// Once the container is running and its wait strategy is met, it prints one
// line to standard output, "ready HOST:PORT" (the endpoint of -port, or
// "ready -" without one), then waits for its standard input to close or
// for SIGTERM or SIGINT, removes the container and exits 0. Any failure is
// printed to standard error and exits 1. Should it be killed outright,
// testcontainers' reaper removes the container.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// startTimeout bounds pulling and starting the container.
const startTimeout = 3 * time.Minute

// files collects -file HOST:CONTAINER flags.
type files []testcontainers.ContainerFile

func (f *files) String() string { return fmt.Sprint(len(*f), " files") }

func (f *files) Set(v string) error {
	host, ctr, ok := strings.Cut(v, ":")
	if !ok || host == "" || ctr == "" {
		return errors.New("want HOST:CONTAINER")
	}
	*f = append(*f, testcontainers.ContainerFile{HostFilePath: host, ContainerFilePath: ctr, FileMode: 0o644})
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "containers:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		image       = flag.String("image", "", "image to run (required)")
		port        = flag.String("port", "", "exposed port whose host endpoint is printed, e.g. 1883/tcp")
		entrypoint  = flag.String("entrypoint-sh", "", "run this script with sh -c as the entrypoint")
		waitPort    = flag.String("wait-port", "", "ready once this port listens")
		waitLog     = flag.String("wait-log", "", "ready once the container logs this text")
		hostNetwork = flag.Bool("host-network", false, "use the host's network")
		fs          files
	)
	flag.Var(&fs, "file", "copy HOST:CONTAINER into the container before it starts (repeatable)")
	flag.Parse()
	if *image == "" {
		return errors.New("-image is required")
	}

	var opts []testcontainers.ContainerCustomizer
	if len(fs) > 0 {
		opts = append(opts, testcontainers.WithFiles(fs...))
	}
	if *port != "" {
		opts = append(opts, testcontainers.WithExposedPorts(*port))
	}
	if *entrypoint != "" {
		opts = append(opts, testcontainers.WithEntrypoint("sh", "-c", *entrypoint))
	}
	if args := flag.Args(); len(args) > 0 {
		opts = append(opts, testcontainers.WithCmd(args...))
	}
	if *hostNetwork {
		opts = append(opts, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) { hc.NetworkMode = "host" }))
	}
	switch {
	case *waitPort != "":
		opts = append(opts, testcontainers.WithWaitStrategy(wait.ForListeningPort(*waitPort).WithStartupTimeout(startTimeout)))
	case *waitLog != "":
		opts = append(opts, testcontainers.WithWaitStrategy(wait.ForLog(*waitLog).WithStartupTimeout(startTimeout)))
	}

	// Stop on SIGTERM or SIGINT, or when testenv closes our standard input
	// (its cleanup, or its exit).
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	ctr, err := testcontainers.Run(ctx, *image, opts...)
	cancel()
	remove := func() {
		if ctr == nil {
			return
		}
		rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
		defer rcancel()
		if err := testcontainers.TerminateContainer(ctr, testcontainers.StopContext(rctx)); err != nil {
			fmt.Fprintln(os.Stderr, "containers: remove:", err)
		}
	}
	if err != nil {
		remove()
		return fmt.Errorf("start %s: %w", *image, err)
	}
	addr := "-"
	if *port != "" {
		ectx, ecancel := context.WithTimeout(context.Background(), 30*time.Second)
		addr, err = ctr.PortEndpoint(ectx, *port, "")
		ecancel()
		if err != nil {
			remove()
			return fmt.Errorf("endpoint of %s: %w", *port, err)
		}
	}
	fmt.Printf("ready %s\n", addr)
	select {
	case <-stop:
	case <-sigs:
	}
	remove()
	return nil
}
