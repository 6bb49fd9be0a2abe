package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ErrTLSFiles reports a CA, certificate or key file named in the Config
// that cannot be read or parsed.
var ErrTLSFiles = errors.New("client: tls files")

// tlsConfig returns the TLS configuration for a connection to sv: a clone
// of Config.TLSConfig, completed by the TLS file fields and the server
// name. The files are read on every dial, so that renewed certificates are
// picked up on the next connection.
func (c *Client) tlsConfig(sv server) (*tls.Config, error) {
	cfg := c.cfg.TLSConfig.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if err := applyTLSFiles(cfg, c.cfg.TLSCAFile, c.cfg.TLSCertFile, c.cfg.TLSKeyFile); err != nil {
		return nil, err
	}
	if c.cfg.TLSServerName != "" {
		cfg.ServerName = c.cfg.TLSServerName
	}
	if cfg.ServerName == "" {
		cfg.ServerName = sv.host
	}
	if c.cfg.TLSInsecureSkipVerify {
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

// applyTLSFiles loads the named PEM files into cfg: caFile replaces the
// trusted roots, certFile and keyFile (both or neither) add a client
// certificate.
func applyTLSFiles(cfg *tls.Config, caFile, certFile, keyFile string) error {
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("%w: CA file: %w", ErrTLSFiles, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%w: CA file %s: no PEM certificate in it", ErrTLSFiles, caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return fmt.Errorf("%w: a client certificate needs both TLSCertFile and TLSKeyFile", ErrTLSFiles)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("%w: client certificate: %w", ErrTLSFiles, err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	return nil
}

// CheckTLSFiles reads and parses the TLS files named in cfg, so that a
// command line tool can report a bad file before it connects; the client
// itself reads them on every dial.
func CheckTLSFiles(cfg Config) error {
	return applyTLSFiles(&tls.Config{}, cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile)
}
