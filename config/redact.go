package config

import (
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

const mask = "xxxxx"

var (
	// password=... in a keyword/value connection string: a quoted value
	// (with backslash escapes) or up to the next whitespace.
	kvPasswordRE = regexp.MustCompile(`(?i)\b((?:ssl)?password)(\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)
	// password=... in a URL query: up to the next '&' or '#'.
	queryPasswordRE = regexp.MustCompile(`(?i)([?&](?:ssl)?password)=[^&#]*`)
	quotedRE        = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// Redact returns a Postgres or NATS connection string with any password
// replaced by "xxxxx", for logs and error messages. It handles URLs
// (postgres://user:pw@host/db?password=pw, nats://user:pw@host,
// nats://token@host), scheme-less NATS addresses (user:pw@host:4222) and
// keyword/value strings (host=db password=pw). A malformed URL is masked
// generously rather than risk showing part of a password.
func Redact(s string) string {
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		if strings.ContainsAny(s, "= \t\n") || !strings.Contains(s, "@") {
			return kvPasswordRE.ReplaceAllString(s, "${1}${2}"+mask)
		}
		scheme, rest = "", s // user:password@host:port
	}
	// A NATS URL's bare user name is a token; a Postgres one is not a secret.
	bareUserIsSecret := scheme == "" || natsSchemes[strings.ToLower(scheme)]

	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		rest = redactUserinfo(rest[:at], bareUserIsSecret) + rest[at:]
	} else if at := strings.LastIndexByte(rest, '@'); at >= 0 && !parsesCleanly(s) {
		// An unencoded '/', '?' or '#' in a password moves the '@' out of
		// the authority: mask everything before it.
		rest = mask + rest[at:]
	}
	rest = queryPasswordRE.ReplaceAllString(rest, "${1}="+mask)
	if isURL {
		return scheme + "://" + rest
	}
	return rest
}

func redactUserinfo(ui string, bareUserIsSecret bool) string {
	if user, _, ok := strings.Cut(ui, ":"); ok {
		return user + ":" + mask
	}
	if bareUserIsSecret {
		return mask
	}
	return ui
}

func parsesCleanly(s string) bool {
	_, err := url.Parse(s)
	return err == nil
}

// redactList redacts each entry of a comma-separated URL list.
func redactList(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = Redact(p)
	}
	return strings.Join(parts, ",")
}

// pgParseMessage describes why pgconn could not parse conn, without the
// connection string itself or any password in it. pgconn already masks
// passwords on a best-effort basis; we drop the string it quotes and then
// scrub every password we can find in conn from what is left, in the forms
// an error may quote it.
func pgParseMessage(conn string, err error) string {
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		// "cannot parse `<redacted conn>`: <why>"
		if rest, ok := strings.CutPrefix(msg, "cannot parse `"); ok {
			if i := strings.LastIndex(rest, "`: "); i >= 0 {
				msg = rest[i+len("`: "):]
			}
		}
	}
	msg = strings.ReplaceAll(msg, conn, Redact(conn))
	// pgconn's parse errors quote fragments of a malformed string, which
	// may include part of a password that no redactor can recognise
	// ("unexpected spaces found in ..."): drop quoted fragments longer
	// than one character that come from conn.
	msg = quotedRE.ReplaceAllStringFunc(msg, func(q string) string {
		if uq, err := strconv.Unquote(q); err == nil && len(uq) > 1 && strings.Contains(conn, uq) {
			return `"..."`
		}
		return q
	})
	for _, secret := range secretsIn(conn) {
		for _, form := range []string{secret, strconv.Quote(secret), url.QueryEscape(secret), url.PathEscape(secret)} {
			if form != "" {
				msg = strings.ReplaceAll(msg, form, mask)
			}
		}
	}
	return msg
}

// secretsIn returns the passwords written in a connection string, raw and
// decoded, found the same generous way Redact finds them.
func secretsIn(conn string) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
		if d, err := url.QueryUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
	}
	rest := conn
	if _, r, ok := strings.Cut(conn, "://"); ok {
		rest = r
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		if _, pw, ok := strings.Cut(authority[:at], ":"); ok {
			add(pw)
		}
	}
	// In a malformed URL the password may run past a '/', '?' or '#' up
	// to a later '@'; take its longer pieces too.
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
			add(pw)
			for f := range strings.FieldsFuncSeq(pw, func(r rune) bool { return strings.ContainsRune("/?#@:", r) }) {
				if len(f) >= 4 {
					add(f)
				}
			}
		}
	}
	for _, m := range kvPasswordRE.FindAllStringSubmatch(conn, -1) {
		v := m[3]
		add(v)
		if uq := strings.Trim(v, "'"); uq != v {
			add(uq)
		}
		for f := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == '&' || r == '#' }) {
			add(f)
		}
	}
	return out
}
