// Package natsconn opens the relay's connection to NATS, for run (one that
// reconnects forever) and for check (one attempt per server). It explains
// each failure with the fix, masks every secret in what it says, and keeps
// the cause wrapped so that errors.Is(err, nats.ErrAuthorization) holds.
package natsconn

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/internal/sockio"
)

// Options are the servers, the credentials and the TLS files of the
// connection. Field names follow the nats.* configuration keys, which the
// fixes name.
type Options struct {
	URLs     []string // nats.url, one entry per server
	Creds    string   // nats.creds: a user credentials file
	NKey     string   // nats.nkey: a user nkey seed file
	User     string   // nats.user
	Password string   // nats.password
	Token    string   // nats.token
	CA       string   // nats.tls.ca
	Cert     string   // nats.tls.cert
	Key      string   // nats.tls.key
	Logger   *slog.Logger
}

// ConnectError is a failure to connect: the servers tried, what went
// wrong with every secret masked, the fix when one is known, and the cause.
type ConnectError struct {
	Servers string // nats.url with its credentials masked
	Msg     string // the cause's text, secrets masked
	Fix     string // "" when there is no specific advice
	Err     error
}

func (e *ConnectError) Error() string {
	s := fmt.Sprintf("connect to NATS at %s: %s", e.Servers, e.Msg)
	if e.Fix != "" {
		s += ": " + e.Fix
	}
	return s
}

func (e *ConnectError) Unwrap() error { return e.Err }

func connectError(err error, o Options) *ConnectError {
	return &ConnectError{Servers: redactURLs(o), Msg: scrubNATS(err.Error(), o), Fix: natsFix(err, o), Err: err}
}

// Connect returns a connection that keeps reconnecting forever. It
// succeeds even when no server is up yet: the sink waits for the connection.
// While it cannot connect it logs why, with the fix, once per distinct
// reason (again after natsReportEvery if the reason persists).
func Connect(c Options) (*nats.Conn, error) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts, err := natsOptions(c)
	if err != nil {
		return nil, err
	}
	w := &natsWatch{cfg: c, log: log, closed: make(chan struct{})}
	opts = append(opts,
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// nats.go gives up for good after the same server refuses the
		// credentials twice, which would leave the relay up but unable to
		// publish until restarted. Keep trying, as for any other failure:
		// the credentials may be fixed on the server's side.
		nats.IgnoreAuthErrorAbort(),
		// No reconnect buffer: a publish while disconnected fails at once,
		// and the sink resumes its chain from the stream after reconnecting.
		nats.ReconnectBufSize(-1),
		// Notice a frozen or unreachable server within seconds, not minutes.
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(3),
		nats.FlusherTimeout(5*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", w.scrub(err.Error()))
			}
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			w.connected()
			log.Info("connected to NATS", "server", ServerURL(nc))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			w.connected()
			log.Info("reconnected to NATS", "server", ServerURL(nc))
		}),
		// Called for a failed dial; a refused handshake or login is only
		// seen through LastError (see natsWatch.run).
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { w.report(err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if fix := natsFix(err, c); fix != "" {
				log.Warn("NATS error", "err", w.scrub(err.Error()), "fix", fix)
				return
			}
			log.Warn("NATS error", "err", w.scrub(err.Error()))
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(w.closed) }),
		nats.SetCustomDialer(sockDialer{net.Dialer{Timeout: nats.DefaultTimeout}}),
	)
	nc, err := nats.Connect(strings.Join(c.URLs, ","), opts...)
	if err != nil {
		return nil, connectError(err, c)
	}
	go w.run(nc)
	return nc, nil
}

// Dial connects with the same authentication and TLS options as Connect,
// but tries each server once and does not reconnect: a preflight must
// report a server it cannot reach, not wait for it. Its error has
// Connect's words.
func Dial(c Options) (*nats.Conn, error) {
	opts, err := natsOptions(c)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("outboxrelay check"), nats.Timeout(5*time.Second), nats.NoReconnect())
	nc, err := nats.Connect(strings.Join(c.URLs, ","), opts...)
	if err != nil {
		return nil, connectError(err, c)
	}
	return nc, nil
}

// sockDialer dials TCP with nats.go's default timeout, and makes the
// socket's reads and writes raw system calls (package sockio). nats.go
// still does the TLS handshake over it when the server asks for TLS.
type sockDialer struct{ d net.Dialer }

func (s sockDialer) Dial(network, address string) (net.Conn, error) {
	c, err := s.d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return sockio.Wrap(c), nil
}

// natsOptions turns the auth and TLS settings into connection options.
func natsOptions(c Options) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("outboxrelay")}
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			// The error names the file and says what is wrong with it; it
			// never quotes the seed.
			return nil, fmt.Errorf("config: nats.nkey: read seed file %q: %w (it must hold a user nkey seed, starting with SU)", c.NKey, err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	return opts, nil
}

// natsReportEvery is how often a reason that persists is logged again.
const natsReportEvery = time.Minute

// natsWatch logs why the connection is down, without repeating itself on
// every reconnect attempt.
type natsWatch struct {
	cfg    Options
	log    *slog.Logger
	closed chan struct{}

	mu     sync.Mutex
	last   string
	lastAt time.Time
}

// run polls the connection's last error while it is not connected:
// nats.go reports a failed TLS handshake or a refused login through no
// callback before the first successful connection.
func (w *natsWatch) run(nc *nats.Conn) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.closed:
			return
		case <-t.C:
		}
		if nc.IsConnected() {
			continue
		}
		if err := nc.LastError(); err != nil {
			w.report(err)
		}
	}
}

func (w *natsWatch) report(err error) {
	msg := w.scrub(err.Error())
	fix := natsFix(err, w.cfg)
	// One reason often comes in several wordings (with the ports of each
	// attempt, or as a TLS alert or a closed connection): the fix is the key.
	key := fix
	if key == "" {
		key = digitsRE.ReplaceAllString(msg, "")
	}
	now := time.Now()
	w.mu.Lock()
	repeat := key == w.last && now.Sub(w.lastAt) < natsReportEvery
	if !repeat {
		w.last, w.lastAt = key, now
	}
	w.mu.Unlock()
	if repeat {
		return
	}
	attrs := []any{"servers", redactURLs(w.cfg), "err", msg}
	if fix != "" {
		attrs = append(attrs, "fix", fix)
	}
	w.log.Error("cannot connect to NATS; retrying", attrs...)
}

var digitsRE = regexp.MustCompile(`[0-9]+`)

// DownReason says why nc is not connected, with the fix, or "" when it is
// connected or nats.go does not know (between attempts to dial).
func DownReason(nc *nats.Conn, c Options) string {
	if nc.IsConnected() {
		return ""
	}
	err := nc.LastError()
	if err == nil {
		return ""
	}
	why := scrubNATS(err.Error(), c)
	if fix := natsFix(err, c); fix != "" {
		why += ": " + fix
	}
	return why
}

func (w *natsWatch) connected() {
	w.mu.Lock()
	w.last = ""
	w.mu.Unlock()
}

// scrub masks every secret of the NATS settings in s. Errors from nats.go
// and the standard library do not carry them as far as we know (a URL
// parse error quotes the URL, but config rejects such URLs first); this
// keeps it so whatever they say.
func (w *natsWatch) scrub(s string) string { return scrubNATS(s, w.cfg) }

func scrubNATS(s string, c Options) string {
	var secrets []string
	add := func(v string) {
		if v == "" {
			return
		}
		secrets = append(secrets, v, url.QueryEscape(v), url.PathEscape(v))
	}
	add(c.Password)
	add(c.Token)
	for _, raw := range c.URLs {
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok {
				add(pw)
			} else {
				add(u.User.Username()) // a bare user name is a token
			}
		}
	}
	for _, v := range secrets {
		if len(v) >= 3 { // masking a one- or two-letter secret would mangle the text and hide nothing
			s = strings.ReplaceAll(s, v, "xxxxx")
		}
	}
	return s
}

// ServerURL is the URL of the server nc is connected to, safe to show.
// nc.ConnectedUrlRedacted masks a password but not a token
// (nats://TOKEN@host), so it is not enough.
func ServerURL(nc *nats.Conn) string { return config.Redact(nc.ConnectedUrl()) }

// redactURLs returns nats.url with the credentials of each entry masked.
func redactURLs(c Options) string {
	urls := make([]string, len(c.URLs))
	for i, u := range c.URLs {
		urls[i] = config.Redact(u)
	}
	return strings.Join(urls, ",")
}

// natsFix says how to fix a failure to connect or authenticate, or "" if
// there is no specific advice.
func natsFix(err error, c Options) string {
	var unknownCA x509.UnknownAuthorityError
	var wrongHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	msg := err.Error()
	switch {
	case errors.Is(err, nats.ErrAuthorization):
		return natsAuthFix(c)
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return "the server says the credentials expired or were revoked: issue new ones and point nats.creds at them"
	case errors.As(err, &unknownCA):
		if c.CA == "" {
			return "no CA this system trusts signed the server's certificate: set nats.tls.ca to the CA that signed the server's certificate"
		}
		return "set nats.tls.ca to the CA that signed the server's certificate (" + c.CA + " did not)"
	case errors.As(err, &wrongHost):
		return "the server's certificate does not list the host in nats.url: connect with a host name it lists, or reissue the certificate for this host"
	case errors.As(err, &invalid):
		return "the server's certificate is not valid now or not for a server: renew it"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "nats.tls is set but the server does not offer TLS: enable TLS on the server, or remove nats.tls"
	case strings.Contains(msg, "tls: certificate required"), strings.Contains(msg, "tls: bad certificate"),
		strings.Contains(msg, "tls: unknown certificate authority"),
		// nats-server closes the connection when it rejects the client's
		// certificate; the client may see that before the TLS alert.
		strings.Contains(msg, "connection closed by remote after TLS handshake"):
		if c.Cert == "" {
			return "the server requires a client certificate: set nats.tls.cert and nats.tls.key"
		}
		return "the server rejected the client certificate in nats.tls.cert: use one signed by a CA the server trusts (its tls.ca_file)"
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return "check the file paths in nats.creds, nats.nkey and nats.tls, and that the relay can read them"
	case strings.Contains(msg, "permissions violation"):
		return "allow the relay's NATS user to publish to the stream's subjects and to $JS.API.>, and to subscribe to _INBOX.>"
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "no such host"), strings.Contains(msg, "i/o timeout"),
		errors.Is(err, nats.ErrNoServers):
		return "check nats.url, and that nats-server is running and reachable from here"
	}
	return ""
}

func natsAuthFix(c Options) string {
	switch {
	case c.Creds != "":
		return "the server refused the user in nats.creds: check that the file holds a user of an account the server's resolver knows, signed by its operator"
	case c.NKey != "":
		return "the server refused the nkey in nats.nkey: check that the server's authorization lists the public key of this seed"
	case c.User != "":
		return "check nats.user and nats.password against the server's authorization"
	case c.Token != "":
		return "check nats.token against the server's authorization token"
	case strings.Contains(strings.Join(c.URLs, ","), "@"):
		return "check the credentials in nats.url"
	}
	return "the server requires authentication: set nats.creds, nats.nkey, nats.user and nats.password, or nats.token"
}
