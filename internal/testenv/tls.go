package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultServerHosts are the names a server certificate is issued for when
// NewTLSFiles is given none: the addresses testenv's servers listen on.
var DefaultServerHosts = []string{"127.0.0.1", "localhost"}

// TLSFiles are the PEM files of a throwaway certificate authority and of two
// certificates it signed, one for a server and one for a client. Keys are
// ECDSA P-256 in PKCS #8; every file is mode 0600.
type TLSFiles struct {
	CA         string // the CA's certificate: what clients and servers trust
	ServerCert string // for ServerHosts, usable for server authentication
	ServerKey  string
	ClientCert string // CN "outboxrelay", usable for client authentication
	ClientKey  string
	// ServerHosts are the DNS names and IP addresses in the server
	// certificate's subject alternative names.
	ServerHosts []string
}

// NewTLSFiles creates a CA and a server and a client certificate in dir
// (created if missing). The server certificate is valid for serverHosts, or
// DefaultServerHosts if none are given. Each call makes a new CA, so the
// files of two calls do not trust each other.
func NewTLSFiles(dir string, serverHosts ...string) (*TLSFiles, error) {
	if len(serverHosts) == 0 {
		serverHosts = DefaultServerHosts
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create TLS directory: %w", err)
	}
	f := &TLSFiles{
		CA:          filepath.Join(dir, "ca.pem"),
		ServerCert:  filepath.Join(dir, "server.pem"),
		ServerKey:   filepath.Join(dir, "server-key.pem"),
		ClientCert:  filepath.Join(dir, "client.pem"),
		ClientKey:   filepath.Join(dir, "client-key.pem"),
		ServerHosts: append([]string(nil), serverHosts...),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "outboxrelay test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := signCert(caTmpl, caTmpl, caKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}

	srv := &x509.Certificate{
		Subject:     pkix.Name{CommonName: serverHosts[0]},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range serverHosts {
		if ip := net.ParseIP(h); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	if err := issue(srv, caCert, caKey, f.ServerCert, f.ServerKey); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cli := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "outboxrelay"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(cli, caCert, caKey, f.ClientCert, f.ClientKey); err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return f, nil
}

// WriteTLSFiles is NewTLSFiles in a directory from t.TempDir().
func WriteTLSFiles(t testing.TB, serverHosts ...string) *TLSFiles {
	t.Helper()
	f, err := NewTLSFiles(t.TempDir(), serverHosts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// issue makes a key for tmpl, has the CA sign it, and writes both.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	der, err := signCert(tmpl, ca, key, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(keyPath, "PRIVATE KEY", keyDER)
}

func signCert(tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// EnableSSL turns on ssl in a running cluster with f's server certificate
// and reloads it, then waits until a connection with sslmode=verify-full
// against f.CA succeeds. The certificate and key are copied into the
// cluster's directory and given to the user that runs Postgres, mode 0600:
// Postgres refuses a key file that other users can read. The setting is
// written with ALTER SYSTEM, so it survives restarts.
func (p *Postgres) EnableSSL(f *TLSFiles) error {
	cert := filepath.Join(p.dir, "server.pem")
	key := filepath.Join(p.dir, "server-key.pem")
	for src, dst := range map[string]string{f.ServerCert: cert, f.ServerKey: key} {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("enable ssl: %w", err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return fmt.Errorf("enable ssl: %w", err)
		}
		if p.user != nil {
			if err := os.Chown(dst, p.user.uid, p.user.gid); err != nil {
				return fmt.Errorf("enable ssl: give %s to OS user %q: %w", dst, p.user.name, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sql := range []string{
		"ALTER SYSTEM SET ssl_cert_file = " + quoteLiteral(cert),
		"ALTER SYSTEM SET ssl_key_file = " + quoteLiteral(key),
		"ALTER SYSTEM SET ssl = on",
		"SELECT pg_reload_conf()",
	} {
		if err := p.Exec(ctx, sql); err != nil {
			return fmt.Errorf("enable ssl: %w", err)
		}
	}
	fi, _ := os.Stat(p.logFile)
	var logStart int64
	if fi != nil {
		logStart = fi.Size()
	}
	// verify-ca checks the chain but not the host name, so this also works
	// with a certificate issued for other hosts.
	dsn := strings.Replace(p.SSLURL("postgres", "", f.CA), "verify-full", "verify-ca", 1)
	err := Poll(10*time.Second, func() (bool, error) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return false, err
		}
		return true, conn.Close(ctx)
	})
	if err != nil {
		return fmt.Errorf("enable ssl: postgres does not accept sslmode=verify-ca connections after reload: %w; its log:\n%s", err, p.logSince(logStart))
	}
	return nil
}

// SSLURL returns the URL of database "postgres" on 127.0.0.1 as user, with
// password if it is not empty, sslmode=verify-full and sslrootcert=ca.
func (p *Postgres) SSLURL(user, password, ca string) string {
	u := url.URL{Scheme: "postgres", Host: fmt.Sprintf("127.0.0.1:%d", p.Port()), Path: "/postgres"}
	u.User = url.User(user)
	if password != "" {
		u.User = url.UserPassword(user, password)
	}
	u.RawQuery = url.Values{"sslmode": {"verify-full"}, "sslrootcert": {ca}}.Encode()
	return u.String()
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
