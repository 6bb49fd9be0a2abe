package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/tethermq/tether/packets"
)

// Reauthenticate runs a re-authentication (MQTT v5 §4.12.1) with
// Config.Auth on the current connection and waits for its outcome.
func (c *Client) Reauthenticate(ctx context.Context) error {
	a := c.cfg.Auth
	if a == nil {
		return ErrNoAuthenticator
	}
	data, err := a.Start()
	if err != nil {
		return fmt.Errorf("client: authenticator: %w", err)
	}
	c.mu.Lock()
	cn := c.conn
	if cn == nil || !cn.ready {
		c.mu.Unlock()
		return ErrNotConnected
	}
	if cn.reauth != nil {
		c.mu.Unlock()
		return errors.New("client: a re-authentication is already in progress")
	}
	done := make(chan error, 1)
	cn.reauth = done
	cn.write(&packets.Auth{ReasonCode: packets.ReAuthenticate,
		Properties: packets.Properties{AuthMethod: a.Method(), AuthData: data}})
	c.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleAuth runs a re-authentication the client started.
func (c *Client) handleAuth(cn *conn, p *packets.Auth) error {
	c.mu.Lock()
	done := cn.reauth
	c.mu.Unlock()
	a := c.cfg.Auth
	if done == nil || a == nil {
		return &protoError{Code: packets.ProtocolError, Msg: "AUTH without re-authentication in progress"}
	}
	finish := func(err error) {
		c.mu.Lock()
		if cn.reauth == done {
			cn.reauth = nil
			done <- err
		}
		c.mu.Unlock()
	}
	switch p.ReasonCode {
	case packets.Success:
		finish(a.Finish(p.Properties.AuthData))
	case packets.ContinueAuthentication:
		data, err := a.Continue(p.Properties.AuthData)
		if err != nil {
			finish(fmt.Errorf("client: authenticator: %w", err))
			return fmt.Errorf("client: re-authentication: %w", err)
		}
		cn.write(&packets.Auth{ReasonCode: packets.ContinueAuthentication,
			Properties: packets.Properties{AuthMethod: a.Method(), AuthData: data}})
	default:
		return &protoError{Code: packets.ProtocolError, Msg: "unexpected AUTH reason " + p.ReasonCode.String()}
	}
	return nil
}
