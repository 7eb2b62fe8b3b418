package natsconn

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestRedactURLs: every entry of a server list is masked, not only the
// first (config.Redact of the whole list shows the second password).
func TestRedactURLs(t *testing.T) {
	c := Options{URLs: []string{"nats://a:pw-one@h1:4222", "nats://b:pw-two@h2:4222", "tok-three@h3:4222"}}
	got := redactURLs(c)
	for _, secret := range []string{"pw-one", "pw-two", "tok-three"} {
		if strings.Contains(got, secret) {
			t.Errorf("redactURLs(%q) = %q: shows %q", c.URLs, got, secret)
		}
	}
	if want := "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222,xxxxx@h3:4222"; got != want {
		t.Errorf("redactURLs = %q, want %q", got, want)
	}
}

// TestScrubNATS: the password, the token and URL credentials are masked in
// any text, raw and URL-encoded.
func TestScrubNATS(t *testing.T) {
	c := Options{URLs: []string{"nats://u:url%2Fpw@h:4222", "nats://url-token@h2"}, User: "u", Password: "p/w+1", Token: "tok-9"}
	in := "a p/w+1 b p%2Fw%2B1 c tok-9 d url/pw e url%2Fpw f url-token g u"
	got := scrubNATS(in, c)
	want := "a xxxxx b xxxxx c xxxxx d xxxxx e xxxxx f xxxxx g u"
	if got != want {
		t.Errorf("scrubNATS(%q) = %q, want %q", in, got, want)
	}
}

// TestNATSFix: each failure users meet gets the fix for their settings.
func TestNATSFix(t *testing.T) {
	withCA := Options{CA: "/etc/ca.pem"}
	cases := []struct {
		err  error
		cfg  Options
		want string
	}{
		{nats.ErrAuthorization, Options{User: "u", Password: "p"}, "check nats.user and nats.password"},
		{nats.ErrAuthorization, Options{Token: "t"}, "check nats.token"},
		{nats.ErrAuthorization, Options{Creds: "/c"}, "nats.creds"},
		{nats.ErrAuthorization, Options{NKey: "/k"}, "nats.nkey"},
		{nats.ErrAuthorization, Options{URLs: []string{"nats://u:p@h"}}, "credentials in nats.url"},
		{nats.ErrAuthorization, Options{}, "the server requires authentication"},
		{fmt.Errorf("nats: %w", nats.ErrAuthExpired), Options{Creds: "/c"}, "expired or were revoked"},
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), withCA, "set nats.tls.ca to the CA that signed the server's certificate (/etc/ca.pem did not)"},
		{x509.UnknownAuthorityError{}, Options{}, "set nats.tls.ca"},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}, withCA, "does not list the host in nats.url"},
		{nats.ErrSecureConnWanted, withCA, "remove nats.tls"},
		{errors.New("remote error: tls: certificate required"), withCA, "set nats.tls.cert and nats.tls.key"},
		{errors.New("remote error: tls: bad certificate"), Options{CA: "a", Cert: "b", Key: "c"}, "rejected the client certificate"},
		{fmt.Errorf("open /c: %w", fs.ErrNotExist), Options{Creds: "/c"}, "check the file paths"},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), Options{}, "check nats.url"},
		{nats.ErrNoServers, Options{}, "check nats.url"},
		{errors.New("nats: permissions violation for publish to \"outbox.a.b\""), Options{}, "allow the relay's NATS user to publish"},
		{errors.New("something else"), Options{}, ""},
	}
	for _, c := range cases {
		got := natsFix(c.err, c.cfg)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("natsFix(%v, %+v) = %q, want it to contain %q", c.err, c.cfg, got, c.want)
		}
	}
}

// TestConnectErrorKeepsCause: the error says where, what (secrets masked)
// and the fix, and still matches the cause with errors.Is.
func TestConnectErrorKeepsCause(t *testing.T) {
	o := Options{URLs: []string{"nats://u:s3cret@h:4222"}, User: "u", Password: "s3cret"}
	err := error(connectError(fmt.Errorf("nats: %w (s3cret)", nats.ErrAuthorization), o))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("errors.Is(%v, nats.ErrAuthorization) = false", err)
	}
	want := "connect to NATS at nats://u:xxxxx@h:4222: nats: nats: authorization violation (xxxxx): check nats.user and nats.password against the server's authorization"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestDialNoServer: check's single attempt at a port nobody listens on
// fails at once, with the fix and the cause.
func TestDialNoServer(t *testing.T) {
	_, err := Dial(Options{URLs: []string{"nats://127.0.0.1:1"}})
	var ce *ConnectError
	if !errors.As(err, &ce) || !errors.Is(err, nats.ErrNoServers) || !strings.Contains(err.Error(), "check nats.url") {
		t.Fatalf("Dial to a closed port: %v; want a *ConnectError wrapping nats.ErrNoServers with the fix", err)
	}
}
