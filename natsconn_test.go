package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/outboxrelay/outboxrelay/config"
)

// TestRedactURLs: every entry of a server list is masked, not only the
// first (config.Redact of the whole list shows the second password).
func TestRedactURLs(t *testing.T) {
	c := config.NATS{URL: "nats://a:pw-one@h1:4222, nats://b:pw-two@h2:4222,tok-three@h3:4222"}
	got := redactURLs(c)
	for _, secret := range []string{"pw-one", "pw-two", "tok-three"} {
		if strings.Contains(got, secret) {
			t.Errorf("redactURLs(%q) = %q: shows %q", c.URL, got, secret)
		}
	}
	if want := "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222,xxxxx@h3:4222"; got != want {
		t.Errorf("redactURLs = %q, want %q", got, want)
	}
}

// TestScrubNATS: the password, the token and URL credentials are masked in
// any text, raw and URL-encoded.
func TestScrubNATS(t *testing.T) {
	c := config.NATS{URL: "nats://u:url%2Fpw@h:4222,nats://url-token@h2", User: "u", Password: "p/w+1", Token: "tok-9"}
	in := "a p/w+1 b p%2Fw%2B1 c tok-9 d url/pw e url%2Fpw f url-token g u"
	got := scrubNATS(in, c)
	want := "a xxxxx b xxxxx c xxxxx d xxxxx e xxxxx f xxxxx g u"
	if got != want {
		t.Errorf("scrubNATS(%q) = %q, want %q", in, got, want)
	}
}

// TestNATSFix: each failure users meet gets the fix for their settings.
func TestNATSFix(t *testing.T) {
	withCA := config.NATS{TLS: config.TLS{CA: "/etc/ca.pem"}}
	cases := []struct {
		err  error
		cfg  config.NATS
		want string
	}{
		{nats.ErrAuthorization, config.NATS{User: "u", Password: "p"}, "check nats.user and nats.password"},
		{nats.ErrAuthorization, config.NATS{Token: "t"}, "check nats.token"},
		{nats.ErrAuthorization, config.NATS{Creds: "/c"}, "nats.creds"},
		{nats.ErrAuthorization, config.NATS{NKey: "/k"}, "nats.nkey"},
		{nats.ErrAuthorization, config.NATS{URL: "nats://u:p@h"}, "credentials in nats.url"},
		{nats.ErrAuthorization, config.NATS{}, "the server requires authentication"},
		{fmt.Errorf("nats: %w", nats.ErrAuthExpired), config.NATS{Creds: "/c"}, "expired or were revoked"},
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), withCA, "set nats.tls.ca to the CA that signed the server's certificate (/etc/ca.pem did not)"},
		{x509.UnknownAuthorityError{}, config.NATS{}, "set nats.tls.ca"},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}, withCA, "does not list the host in nats.url"},
		{nats.ErrSecureConnWanted, withCA, "remove nats.tls"},
		{errors.New("remote error: tls: certificate required"), withCA, "set nats.tls.cert and nats.tls.key"},
		{errors.New("remote error: tls: bad certificate"), config.NATS{TLS: config.TLS{CA: "a", Cert: "b", Key: "c"}}, "rejected the client certificate"},
		{fmt.Errorf("open /c: %w", fs.ErrNotExist), config.NATS{Creds: "/c"}, "check the file paths"},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), config.NATS{}, "check nats.url"},
		{nats.ErrNoServers, config.NATS{}, "check nats.url"},
		{errors.New("nats: permissions violation for publish to \"outbox.a.b\""), config.NATS{}, "allow the relay's NATS user to publish"},
		{errors.New("something else"), config.NATS{}, ""},
	}
	for _, c := range cases {
		got := natsFix(c.err, c.cfg)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("natsFix(%v, %+v) = %q, want it to contain %q", c.err, c.cfg, got, c.want)
		}
	}
}
