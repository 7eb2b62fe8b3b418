package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/config"
)

// defaultConfigPath is where the container image expects the config.
const defaultConfigPath = "/etc/outboxrelay/config.yaml"

// healthcheck GETs a running relay's /readyz and returns nil only on 200. It
// exists because the container image has no curl: Docker's HEALTHCHECK and
// Kubernetes exec probes run `outboxrelay healthcheck`.
//
// Every failure, a bad flag or config included, is a plain error (exit code
// 1), never a usageError: Docker reserves exit code 2 of a health check.
func healthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "config file whose http.listen the relay serves on")
	rawURL := fs.String("url", "", "URL to GET instead, e.g. http://127.0.0.1:8080/readyz (no path means /readyz)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck takes only -config FILE, -url URL and -timeout D, not %q", fs.Arg(0))
	}
	target, err := readyURL(*path, *rawURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: -url %q: %w", target, err)
	}
	// Straight to the relay: an HTTP_PROXY meant for the outside world must
	// not answer for it.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("not ready: GET %s: no answer within %s", target, *timeout)
		}
		return fmt.Errorf("not ready: GET %s: %w (is the relay running, and is http.listen the address it serves on?)", target, unwrapURLError(err))
	}
	defer resp.Body.Close()
	why := firstLine(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: GET %s: %s: %s", target, resp.Status, why)
	}
	fmt.Fprintf(stdout, "ready: %s\n", why)
	return nil
}

// readyURL returns rawURL (with /readyz when it has no path) or, when it is
// empty, the /readyz URL of the http.listen address in the config at path.
func readyURL(path, rawURL string) (string, error) {
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("healthcheck: -url %q is not an http(s) URL; write e.g. http://127.0.0.1:8080/readyz", rawURL)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/readyz"
		}
		return u.String(), nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return "", fmt.Errorf("healthcheck: %w (pass -config FILE, or -url URL)", err)
	}
	addr, err := dialAddr(cfg.HTTP.Listen)
	if err != nil {
		return "", fmt.Errorf("healthcheck: %s: %w", path, err)
	}
	return "http://" + addr + "/readyz", nil
}

// dialAddr turns a listen address into one to connect to: a wildcard host
// (0.0.0.0, [::] or none, as in ":8080") becomes the loopback address of the
// same family, since the check runs next to the relay.
func dialAddr(listen string) (string, error) {
	if listen == "" {
		return "", errors.New(`http.listen is "", so the relay serves no /readyz: set http.listen (e.g. 0.0.0.0:8080 in a container), or pass -url`)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("http.listen %q: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// firstLine returns the first line of the relay's answer (its reason),
// bounded, so the check prints one line.
func firstLine(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 512))
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if s == "" {
		return "(no reason given)"
	}
	return s
}

// unwrapURLError drops the *url.Error wrapper, which repeats the method and
// URL the message already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
