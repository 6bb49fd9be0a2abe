package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tethermq/tether/internal/testenv"
)

func TestParseWebSocketServer(t *testing.T) {
	for _, tc := range []struct {
		url, canonical, addr, path string
		tls                        bool
	}{
		{"ws://Broker.example", "ws://broker.example:80/mqtt", "broker.example:80", "/mqtt", false},
		{"wss://broker.example", "wss://broker.example:443/mqtt", "broker.example:443", "/mqtt", true},
		{"WSS://broker.example:8443/", "wss://broker.example:8443/", "broker.example:8443", "/", true},
		{"ws://127.0.0.1:9001/ws/mqtt?tenant=a", "ws://127.0.0.1:9001/ws/mqtt?tenant=a", "127.0.0.1:9001", "/ws/mqtt?tenant=a", false},
		{"ws://user:secret@h:1/p", "ws://h:1/p", "h:1", "/p", false},
	} {
		sv, err := parseServer(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if sv.canonical != tc.canonical || sv.addr != tc.addr || sv.path != tc.path || sv.tls != tc.tls {
			t.Errorf("%s: got %+v", tc.url, sv)
		}
		if strings.Contains(sv.canonical, "secret") {
			t.Errorf("%s: canonical %q keeps the password", tc.url, sv.canonical)
		}
	}
	if _, err := parseServer("wsx://h:1"); err == nil || !strings.Contains(err.Error(), "ws or wss") {
		t.Errorf("unknown scheme: %v", err)
	}
}

// TestWebSocketMosquitto runs every QoS, payloads spanning many WebSocket
// frames both ways and a reconnection over Mosquitto's own websockets
// listener.
//
// Mosquitto 2.0.11 sends to a WebSocket client at about 40 KB/s (measured
// here: 200 KiB in 4.8 s, 1 MiB in 25 s, against milliseconds over TCP),
// while it reads from one at full speed; so the large message the broker
// sends is 128 KiB, and the 512 KiB one goes from client to broker and is
// received over TCP.
func TestWebSocketMosquitto(t *testing.T) {
	b := broker(t, testenv.WithWebSockets())
	ws := b.WebSocketURL()
	col := subscriber(t, ws, "ws/#")
	tcpCol := subscriber(t, b.URL(), "big/#")
	pub := start(t, Config{Servers: []string{ws}, ClientID: uniqueID(t), SessionExpiry: time.Hour})
	if got := pub.key.Server; !strings.HasPrefix(got, "ws://127.0.0.1:") || !strings.HasSuffix(got, "/mqtt") {
		t.Errorf("session key server %q, want ws://127.0.0.1:PORT/mqtt", got)
	}
	for qos := byte(0); qos <= 2; qos++ {
		if err := pub.Publish(ctxT(t, 10*time.Second), &Message{Topic: "ws/x", QoS: qos, Payload: []byte{qos}}); err != nil {
			t.Fatalf("publish qos %d: %v", qos, err)
		}
	}
	medium := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	if err := pub.Publish(ctxT(t, 20*time.Second), &Message{Topic: "ws/medium", QoS: 2, Payload: medium}); err != nil {
		t.Fatalf("publish 128 KiB: %v", err)
	}
	large := bytes.Repeat([]byte("fedcba9876543210"), 32<<10) // 512 KiB, many frames
	if err := pub.Publish(ctxT(t, 20*time.Second), &Message{Topic: "big/one", QoS: 1, Payload: large}); err != nil {
		t.Fatalf("publish 512 KiB: %v", err)
	}
	msgs := col.waitFor(t, 4, 30*time.Second)
	for i := range 3 {
		if m := msgs[i]; m.Topic != "ws/x" || m.QoS != byte(i) || !bytes.Equal(m.Payload, []byte{byte(i)}) {
			t.Errorf("message %d: %+v", i, m)
		}
	}
	if !bytes.Equal(msgs[3].Payload, medium) {
		t.Errorf("128 KiB payload arrived as %d bytes, not equal", len(msgs[3].Payload))
	}
	if got := tcpCol.waitFor(t, 1, 30*time.Second); !bytes.Equal(got[0].Payload, large) {
		t.Errorf("512 KiB payload arrived as %d bytes, not equal", len(got[0].Payload))
	}

	// A broker restart drops the WebSocket; the client comes back over it
	// and its subscriber's session too.
	b.Restart()
	if err := pub.Publish(ctxT(t, 20*time.Second), &Message{Topic: "ws/after", QoS: 1, Payload: []byte("again")}); err != nil {
		t.Fatalf("publish after the broker restarted: %v", err)
	}
}

// TestWebSocketRefusesNonMQTT: a WebSocket server that does not agree to
// the mqtt subprotocol (MQTT-6.0.0-4) is not spoken to.
func TestWebSocketRefusesNonMQTT(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil) // no subprotocol chosen
		if err != nil {
			return
		}
		c.CloseNow()
	}))
	defer srv.Close()
	c, err := New(Config{Servers: []string{"ws://" + srv.Listener.Addr().String()}, ClientID: uniqueID(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Connect(ctxT(t, 2*time.Second))
	if !errors.Is(err, errNoMQTTSubprotocol) {
		t.Fatalf("connect: %v, want errNoMQTTSubprotocol", err)
	}
}

// testPKI is a CA with a server and a client certificate, as PEM files.
type testPKI struct {
	dir                             string
	ca, serverCert, serverKey       string
	clientCert, clientKey, otherCA  string
	otherClientCert, otherClientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	p := testPKI{dir: dir}
	caKey, caCert, caDER := pkiCA(t, "tether test CA")
	p.ca = pkiWrite(t, dir, "ca.pem", "CERTIFICATE", caDER)
	p.serverCert, p.serverKey = pkiLeaf(t, dir, "server", caCert, caKey, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = pkiLeaf(t, dir, "client", caCert, caKey, x509.ExtKeyUsageClientAuth)
	otherKey, otherCert, otherDER := pkiCA(t, "another CA")
	p.otherCA = pkiWrite(t, dir, "other-ca.pem", "CERTIFICATE", otherDER)
	p.otherClientCert, p.otherClientKey = pkiLeaf(t, dir, "other-client", otherCert, otherKey, x509.ExtKeyUsageClientAuth)
	return p
}

var pkiSerial int64

func pkiCA(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkiSerial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(pkiSerial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func pkiLeaf(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkiSerial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(pkiSerial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{"broker.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pkiWrite(t, dir, name+".pem", "CERTIFICATE", der), pkiWrite(t, dir, name+"-key.pem", "EC PRIVATE KEY", kb)
}

func pkiWrite(t *testing.T, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	// Mosquitto may run as another user: the test files must be readable.
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMutualTLSFiles connects to a Mosquitto that requires a client
// certificate, with the CA, certificate and key given as Config file
// fields, and checks each way it must fail.
func TestMutualTLSFiles(t *testing.T) {
	p := newTestPKI(t)
	b := broker(t, testenv.WithTLS(testenv.MosquittoTLS{CAFile: p.ca, CertFile: p.serverCert, KeyFile: p.serverKey, RequireCertificate: true}))
	url := b.TLSURL()
	good := Config{Servers: []string{url}, ClientID: uniqueID(t), TLSCAFile: p.ca, TLSCertFile: p.clientCert, TLSKeyFile: p.clientKey}
	c := start(t, good)
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "mtls", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}

	// The certificate names broker.test as well: TLSServerName checks
	// against it while the URL holds an address.
	named := good
	named.ClientID, named.TLSServerName = uniqueID(t), "broker.test"
	start(t, named)

	attempt := func(cfg Config) error {
		t.Helper()
		cfg.ClientID = uniqueID(t)
		cfg.ReconnectBackoff = Backoff{Min: time.Minute, Max: time.Minute}
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		return d.Connect(ctxT(t, 3*time.Second))
	}
	noCert := good
	noCert.TLSCertFile, noCert.TLSKeyFile = "", ""
	if err := attempt(noCert); err == nil {
		t.Error("connected without a client certificate to a broker that requires one")
	}
	wrongClient := good
	wrongClient.TLSCertFile, wrongClient.TLSKeyFile = p.otherClientCert, p.otherClientKey
	if err := attempt(wrongClient); err == nil {
		t.Error("connected with a client certificate of another CA")
	}
	wrongCA := good
	wrongCA.TLSCAFile = p.otherCA
	var uerr x509.UnknownAuthorityError
	if err := attempt(wrongCA); !errors.As(err, &uerr) {
		t.Errorf("connect trusting another CA: %v, want an unknown authority error", err)
	}
	wrongName := good
	wrongName.TLSServerName = "elsewhere.test"
	var herr x509.HostnameError
	if err := attempt(wrongName); !errors.As(err, &herr) {
		t.Errorf("connect with server name elsewhere.test: %v, want a hostname error", err)
	}
	insecure := good
	insecure.TLSCAFile, insecure.TLSInsecureSkipVerify = p.otherCA, true
	if err := attempt(insecure); err != nil {
		t.Errorf("connect with verification off: %v", err)
	}
	missing := good
	missing.TLSKeyFile = filepath.Join(p.dir, "absent.pem")
	if err := attempt(missing); !errors.Is(err, ErrTLSFiles) {
		t.Errorf("connect with a missing key file: %v, want ErrTLSFiles", err)
	}
	if err := CheckTLSFiles(missing); !errors.Is(err, ErrTLSFiles) {
		t.Errorf("CheckTLSFiles with a missing key file: %v, want ErrTLSFiles", err)
	}
	half := good
	half.TLSKeyFile = ""
	if err := CheckTLSFiles(half); !errors.Is(err, ErrTLSFiles) {
		t.Errorf("CheckTLSFiles with a certificate and no key: %v, want ErrTLSFiles", err)
	}
	if err := CheckTLSFiles(good); err != nil {
		t.Errorf("CheckTLSFiles: %v", err)
	}
}

// TestSecureWebSocket connects over wss:// with the TLS file options: a
// TLS WebSocket endpoint (Mosquitto's websockets listener is plain here)
// relays the MQTT bytes to Mosquitto, and the client must verify it with
// TLSCAFile and TLSServerName, then run a QoS 2 exchange through it.
func TestSecureWebSocket(t *testing.T) {
	p := newTestPKI(t)
	b := broker(t)
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	var relays sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		relays.Add(1)
		defer relays.Done()
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			return
		}
		nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
		defer nc.Close()
		up, err := net.Dial("tcp", b.Addr())
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(nc, up); nc.Close() }()
		_, _ = io.Copy(up, nc)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer func() { srv.CloseClientConnections(); srv.Close(); relays.Wait() }()
	url := "wss://" + srv.Listener.Addr().String() + "/mqtt"

	col := subscriber(t, b.URL(), "wss/#")
	c := start(t, Config{Servers: []string{url}, ClientID: uniqueID(t), TLSCAFile: p.ca, TLSServerName: "broker.test"})
	if !strings.HasPrefix(c.key.Server, "wss://127.0.0.1:") {
		t.Errorf("session key server %q", c.key.Server)
	}
	if err := c.Publish(ctxT(t, 10*time.Second), &Message{Topic: "wss/x", QoS: 2, Payload: []byte("secure")}); err != nil {
		t.Fatal(err)
	}
	if got := col.waitFor(t, 1, 10*time.Second); string(got[0].Payload) != "secure" {
		t.Fatalf("got %q", got[0].Payload)
	}
	c.Close()

	// Without the CA the server's certificate is not trusted.
	d, err := New(Config{Servers: []string{url}, ClientID: uniqueID(t), ReconnectBackoff: Backoff{Min: time.Minute, Max: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var uerr x509.UnknownAuthorityError
	if err := d.Connect(ctxT(t, 3*time.Second)); !errors.As(err, &uerr) {
		t.Fatalf("wss without the CA: %v, want an unknown authority error", err)
	}
}
