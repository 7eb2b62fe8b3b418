package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/outboxrelay/outboxrelay/config"
)

// connectNATS returns a connection that keeps reconnecting forever. It
// succeeds even when no server is up yet: the sink waits for the connection.
func connectNATS(c config.NATS, log *slog.Logger) (*nats.Conn, error) {
	opts, err := natsOptions(c)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// No reconnect buffer: a publish while disconnected fails at once,
		// and the sink resumes its chain from the stream after reconnecting.
		nats.ReconnectBufSize(-1),
		// Notice a frozen or unreachable server within seconds, not minutes.
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(3),
		nats.FlusherTimeout(5*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error", "err", err)
		}),
	)
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", config.Redact(c.URL), err)
	}
	return nc, nil
}

// natsOptions turns the auth and TLS settings into connection options.
func natsOptions(c config.NATS) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("outboxrelay")}
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("config: nats.nkey: read seed file %q: %w", c.NKey, err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CA))
	}
	if c.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(c.TLS.Cert, c.TLS.Key))
	}
	return opts, nil
}
