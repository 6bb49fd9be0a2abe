// Command tether publishes, subscribes, inspects stored sessions and runs a
// demonstration of sessions that survive connection cuts and crashes.
//
// Usage:
//
//	tether demo [flags]                         run the zero-setup demo
//	tether pub -broker URL -topic T [flags] MSG publish one message
//	tether sub -broker URL -topic F [flags]     print messages as they arrive
//	tether sessions -store SPEC [list|clear]    inspect or clear stored sessions
//
// A store is named by a SPEC: "memory", "bolt:PATH", "sqlite:PATH" or a
// redis:// URL. Run a command with -h for its flags.
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

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/memory"
	"github.com/tethermq/tether/store/redis"
	"github.com/tethermq/tether/store/sqlite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "tether:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: tether COMMAND [flags]

commands:
  demo      run the zero-setup demo: QoS 2 messages through cut connections and a crash
  pub       publish one message
  sub       subscribe and print messages
  sessions  list or clear the sessions in a store

A store is "memory", "bolt:PATH", "sqlite:PATH" or a redis:// URL.
`

// run dispatches one command line; main is a thin shell around it so tests
// can drive every command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "pub":
		return runPub(ctx, args[1:], stdout, stderr)
	case "sub":
		return runSub(ctx, args[1:], stdout, stderr)
	case "sessions":
		return runSessions(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// openStore opens the store a SPEC names.
func openStore(spec string) (store.SessionStore, error) {
	switch {
	case spec == "memory":
		return memory.New(), nil
	case strings.HasPrefix(spec, "bolt:"):
		return bolt.Open(strings.TrimPrefix(spec, "bolt:"), nil)
	case strings.HasPrefix(spec, "sqlite:"):
		return sqlite.Open(strings.TrimPrefix(spec, "sqlite:"), nil)
	case strings.HasPrefix(spec, "redis://"), strings.HasPrefix(spec, "rediss://"), strings.HasPrefix(spec, "unix://"):
		return redis.Open(spec, nil)
	}
	return nil, fmt.Errorf("unknown store %q: want memory, bolt:PATH, sqlite:PATH or redis://HOST:PORT", spec)
}
