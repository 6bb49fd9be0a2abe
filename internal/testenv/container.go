package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Container images used when no local binary is found.
const (
	mosquittoImage = "eclipse-mosquitto:2"
	redisImage     = "redis:7"
)

// containerTimeout bounds pulling and starting one container (the helper
// has its own bound of the same length), and removing it.
const containerTimeout = 3 * time.Minute

var (
	dockerOnce   sync.Once
	dockerOK     bool
	dockerReason string
)

// dockerAvailable reports whether a Docker engine answers a ping within a
// couple of seconds, and if not, why. The answer is computed once per test
// binary; it never starts testcontainers machinery when no engine is there.
func dockerAvailable() (bool, string) {
	dockerOnce.Do(func() { dockerOK, dockerReason = pingDocker() })
	return dockerOK, dockerReason
}

// pingDocker calls GET /_ping on DOCKER_HOST, or on the usual socket paths.
func pingDocker() (bool, string) {
	var hosts []string
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		hosts = append(hosts, h)
	} else {
		hosts = append(hosts, "unix:///var/run/docker.sock")
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			hosts = append(hosts, "unix://"+filepath.Join(d, "docker.sock"))
		}
		if home, err := os.UserHomeDir(); err == nil {
			hosts = append(hosts,
				"unix://"+filepath.Join(home, ".docker", "run", "docker.sock"),
				"unix://"+filepath.Join(home, ".docker", "desktop", "docker.sock"))
		}
	}
	var reasons []string
	for _, h := range hosts {
		if err := pingDockerHost(h); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		return true, ""
	}
	return false, "no Docker engine: " + strings.Join(reasons, "; ")
}

// pingDockerHost pings one Docker endpoint (unix:// or tcp://).
func pingDockerHost(host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return fmt.Errorf("testenv: DOCKER_HOST %q: %w", host, err)
	}
	var dial func(ctx context.Context, _, _ string) (net.Conn, error)
	base := "http://docker"
	switch u.Scheme {
	case "unix":
		if _, err := os.Stat(u.Path); err != nil {
			return fmt.Errorf("testenv: %s: %w", u.Path, err)
		}
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", u.Path)
		}
	case "tcp":
		if os.Getenv("DOCKER_TLS_VERIFY") != "" {
			// TLS setups are left to testcontainers: a plain TCP connect is
			// the cheap check.
			c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
			if err != nil {
				return fmt.Errorf("testenv: docker %s: %w", host, err)
			}
			return c.Close()
		}
		base = "http://" + u.Host
	default:
		return fmt.Errorf("testenv: docker host %q: unsupported scheme", host)
	}
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	resp, err := client.Get(base + "/_ping")
	if err != nil {
		return fmt.Errorf("testenv: docker %s: %w", host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("testenv: docker %s: ping: %s", host, resp.Status)
	}
	return nil
}

// containersHelper is the helper program (see helper.go) that starts
// containers through testcontainers-go, a module of its own so that
// testcontainers stays out of tether's module graph.
const containersHelper = "internal/testenv/containers"

// runContainer starts a container through the containers helper with the
// given arguments, registers its removal at the end of the test, and
// returns what the helper printed as ready: the host endpoint of its -port,
// or "-".
func runContainer(t testing.TB, image string, args ...string) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "container.log")
	h, err := startHelper(containersHelper, logPath, containerTimeout+time.Minute, append([]string{"-image", image}, args...)...)
	if err != nil {
		t.Fatalf("testenv: start container %s: %v", image, err)
	}
	t.Cleanup(func() {
		h.stop(containerTimeout)
		if t.Failed() {
			t.Logf("testenv: container %s helper log (the test failed):\n%s", image, tail(logPath, 30))
		}
	})
	return h.Addr
}

// mosquittoContainer starts Mosquitto in a container and returns its
// address.
func mosquittoContainer(t testing.TB, cfg MosquittoConfig) string {
	t.Helper()
	conf := mosquittoConf(cfg, mosquittoConfPaths{
		listener: "listener 1883",
		dataDir:  "/mosquitto/data/",
		logDest:  "log_dest stdout",
	})
	confPath := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("testenv: mosquitto container config: %v", err)
	}
	return runContainer(t, mosquittoImage,
		"-file", confPath+":/mosquitto/config/mosquitto.conf",
		"-port", "1883/tcp",
		"-wait-port", "1883/tcp")
}

// redisContainer starts Redis in a container and returns its address.
func redisContainer(t testing.TB, cfg RedisConfig) string {
	t.Helper()
	args := []string{"-port", "6379/tcp", "-wait-log", "Ready to accept connections", "--",
		"redis-server", "--appendonly", "yes", "--appendfsync", "always", "--save", ""}
	addr := runContainer(t, redisImage, append(args, cfg.Args...)...)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := waitReady(ctx, nil, redisReady(addr)); err != nil {
		t.Fatalf("testenv: redis container: %v", err)
	}
	return addr
}

// clusterContainer runs the three cluster nodes in one redis:7 container on
// the host's network, so that the addresses the nodes announce are the ones
// the test dials. That needs a Docker engine on this host (Linux, or Docker
// Desktop with host networking enabled).
func clusterContainer(t testing.TB) []string {
	t.Helper()
	ports, err := freePorts(2 * clusterNodes)
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	var addrs []string
	for i := range clusterNodes {
		p, bus := ports[2*i], ports[2*i+1]
		addr := loopback(p)
		addrs = append(addrs, addr)
		fmt.Fprintf(&script, "mkdir -p /data/%d && redis-server --port %d --cluster-port %d --bind 127.0.0.1 --dir /data/%d "+
			"--cluster-enabled yes --cluster-config-file nodes.conf --save '' --appendonly no --protected-mode no --daemonize yes\n",
			p, p, bus, p)
	}
	for _, a := range addrs {
		_, port, _ := net.SplitHostPort(a)
		fmt.Fprintf(&script, "until redis-cli -p %s ping; do sleep 0.1; done\n", port)
	}
	fmt.Fprintf(&script, "redis-cli --cluster create %s --cluster-replicas 0 --cluster-yes\n", strings.Join(addrs, " "))
	script.WriteString("echo testenv-cluster-created\nexec sleep infinity\n")
	runContainer(t, redisImage,
		"-entrypoint-sh", script.String(),
		"-host-network",
		"-wait-log", "testenv-cluster-created")
	if err := waitClusterOK(addrs); err != nil {
		t.Fatalf("testenv: redis cluster container: %v", err)
	}
	return addrs
}
