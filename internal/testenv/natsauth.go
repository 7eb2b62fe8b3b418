package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The functions below return NATSOptions for a nats-server that admits only
// clients with the given credentials or certificates: Config holds the
// server side and ClientOptions what a client needs to connect, which the
// readiness probe uses and tests can use for their own connections.

// NATSUserPassword requires the user name and password.
func NATSUserPassword(user, password string) NATSOptions {
	return NATSOptions{
		Config:        fmt.Sprintf("authorization {\n  user: %s\n  password: %s\n}\n", confString(user), confString(password)),
		ClientOptions: []nats.Option{nats.UserInfo(user, password)},
	}
}

// NATSToken requires the token.
func NATSToken(token string) NATSOptions {
	return NATSOptions{
		Config:        fmt.Sprintf("authorization {\n  token: %s\n}\n", confString(token)),
		ClientOptions: []nats.Option{nats.Token(token)},
	}
}

// NATSNKey creates a user nkey, writes its seed to <dir>/user.nk (mode
// 0600), and requires that key. It returns the seed file's path.
func NATSNKey(dir string) (NATSOptions, string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return NATSOptions{}, "", fmt.Errorf("create user nkey: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return NATSOptions{}, "", fmt.Errorf("user nkey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return NATSOptions{}, "", fmt.Errorf("user nkey: %w", err)
	}
	path := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		return NATSOptions{}, "", fmt.Errorf("write nkey seed: %w", err)
	}
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		return NATSOptions{}, "", fmt.Errorf("read back nkey seed %s: %w", path, err)
	}
	return NATSOptions{
		Config:        fmt.Sprintf("authorization {\n  users: [ { nkey: %s } ]\n}\n", confString(pub)),
		ClientOptions: []nats.Option{opt},
	}, path, nil
}

// NATSOperator runs the server in operator (decentralised JWT) mode: it
// creates an operator, a system account and an account "APP" with unlimited
// JetStream, preloaded into a MEMORY resolver, and a user of APP whose JWT
// and seed it writes to <dir>/user.creds (mode 0600). It returns that
// path, which is what nats.creds takes.
func NATSOperator(dir string) (NATSOptions, string, error) {
	fail := func(what string, err error) (NATSOptions, string, error) {
		return NATSOptions{}, "", fmt.Errorf("operator mode: %s: %w", what, err)
	}
	op, err := nkeys.CreateOperator()
	if err != nil {
		return fail("create operator key", err)
	}
	opPub, _ := op.PublicKey()
	_, sysPub, err := newAccount()
	if err != nil {
		return fail("create system account key", err)
	}
	app, appPub, err := newAccount()
	if err != nil {
		return fail("create account key", err)
	}

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "testenv"
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(op)
	if err != nil {
		return fail("sign operator JWT", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(op)
	if err != nil {
		return fail("sign system account JWT", err)
	}
	ac := jwt.NewAccountClaims(appPub)
	ac.Name = "APP"
	// Non-zero storage limits enable JetStream for the account; -1 is unlimited.
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	appJWT, err := ac.Encode(op)
	if err != nil {
		return fail("sign account JWT", err)
	}

	user, err := nkeys.CreateUser()
	if err != nil {
		return fail("create user key", err)
	}
	userPub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "relay"
	userJWT, err := uc.Encode(app)
	if err != nil {
		return fail("sign user JWT", err)
	}
	seed, err := user.Seed()
	if err != nil {
		return fail("user seed", err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		return fail("format creds", err)
	}
	path := filepath.Join(dir, "user.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		return fail("write creds", err)
	}

	var conf strings.Builder
	fmt.Fprintf(&conf, "operator: %s\n", confString(opJWT))
	fmt.Fprintf(&conf, "system_account: %s\n", confString(sysPub))
	conf.WriteString("resolver: MEMORY\nresolver_preload: {\n")
	fmt.Fprintf(&conf, "  %s: %s\n", sysPub, confString(sysJWT))
	fmt.Fprintf(&conf, "  %s: %s\n", appPub, confString(appJWT))
	conf.WriteString("}\n")
	return NATSOptions{
		Config:        conf.String(),
		ClientOptions: []nats.Option{nats.UserCredentials(path)},
	}, path, nil
}

func newAccount() (nkeys.KeyPair, string, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, "", err
	}
	pub, err := kp.PublicKey()
	return kp, pub, err
}

// NATSTLS requires TLS with f's server certificate. With verifyClients the
// server also requires a client certificate signed by f.CA; ClientOptions
// then present f's client certificate.
func NATSTLS(f *TLSFiles, verifyClients bool) NATSOptions {
	var conf strings.Builder
	conf.WriteString("tls {\n")
	fmt.Fprintf(&conf, "  cert_file: %s\n  key_file: %s\n  ca_file: %s\n", confString(f.ServerCert), confString(f.ServerKey), confString(f.CA))
	fmt.Fprintf(&conf, "  verify: %t\n  timeout: 5\n}\n", verifyClients)
	o := NATSOptions{Config: conf.String(), ClientOptions: []nats.Option{nats.RootCAs(f.CA)}}
	if verifyClients {
		o.ClientOptions = append(o.ClientOptions, nats.ClientCert(f.ClientCert, f.ClientKey))
	}
	return o
}

// confString quotes s for a nats-server configuration file.
func confString(s string) string { return strconv.Quote(s) }
