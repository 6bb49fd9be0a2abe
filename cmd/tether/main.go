// Command tether publishes, subscribes, inspects stored sessions and runs a
// demonstration of sessions that survive connection cuts and crashes.
//
// Usage:
//
//	tether pub -t TOPIC -m MSG [options]   publish, as mosquitto_pub
//	tether sub -t FILTER [options]         print messages, as mosquitto_sub
//	tether sessions list|show|clear --store SPEC
//	tether demo [options]                  the zero-setup demo
//	tether bench [options]                 publish rate, latency and allocations
//
// pub and sub take mosquitto_pub's and mosquitto_sub's options (-h is the
// host; --help prints help), plus --store for a session that survives the
// process. A store is named by a SPEC: "memory", "bolt:PATH",
// "sqlite:PATH" or a redis:// URL.
//
// Exit codes: 0 done; 1 failed; 2 bad command line; 3 no connection to the
// broker; 4 connection refused by the broker; 5 publish or subscription
// refused by the broker; 27 sub -W ran out of time.
package main

import (
	"context"
	"errors"
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
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		printError(os.Stderr, err)
	}
	os.Exit(exitCode(err))
}

// printError writes err for a person: secrets redacted, terminal
// controls (from a server's Reason String, say) escaped.
func printError(w io.Writer, err error) {
	msg := (&redactor{}).redact(err.Error())
	if errors.Is(err, errUsage) {
		msg = strings.TrimPrefix(msg, errUsage.Error()+": ")
	}
	fmt.Fprintln(w, "tether:", escapeTerminal([]byte(msg), false))
}

const usage = `usage: tether COMMAND [options]

commands:
  pub       publish (mosquitto_pub's options; -h is the host, --help the help)
  sub       subscribe and print messages (mosquitto_sub's options)
  sessions  list, show or clear the sessions in a store
  demo      the zero-setup demo: QoS 2 messages through cut connections and a crash
  bench     publishers × QoS × store × payload size: msg/s, p50/p99 latency, allocations

A store is "memory", "bolt:PATH", "sqlite:PATH" or a redis:// URL.
Exit codes: 0 done, 1 failed, 2 bad command line, 3 no connection,
4 connection refused, 5 publish or subscription refused, 27 sub -W timed out.
`

// run dispatches one command line; main is a thin shell around it so tests
// can drive every command.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: exitUsage}
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "pub":
		return runPub(ctx, args[1:], stdin, stdout, stderr)
	case "sub":
		return runSub(ctx, args[1:], stdout, stderr)
	case "sessions":
		return runSessions(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageErrorf("unknown command %q", args[0])
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
