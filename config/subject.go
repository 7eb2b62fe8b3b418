package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// placeholders are the names a subject template may use.
var placeholders = []string{"aggregate_type", "aggregate_id", "type", "partition"}

// subjectToken is one '.'-separated token of a subject template: a literal
// (Placeholder == "") or a placeholder with an optional literal prefix and
// suffix, as in "agg-{aggregate_id}".
type subjectToken struct {
	Prefix, Placeholder, Suffix string
}

// parseSubjectTemplate checks a subject template and splits it into tokens.
// The first token must be literal: the stream's subjects are derived from
// the literal prefix. The template must use {aggregate_id} or
// {aggregate_type}, so consumers can filter by aggregate.
func parseSubjectTemplate(s string) ([]subjectToken, error) {
	if s == "" {
		return nil, errors.New(`is required (for example "outbox.{aggregate_type}.{aggregate_id}")`)
	}
	var toks []subjectToken
	aggregate := false
	for i, raw := range strings.Split(s, ".") {
		n := i + 1
		if raw == "" {
			return nil, fmt.Errorf("token %d is empty; tokens are separated by single '.', with none at the start or end", n)
		}
		open, close := strings.IndexByte(raw, '{'), strings.IndexByte(raw, '}')
		var tok subjectToken
		switch {
		case open < 0 && close < 0:
			tok.Prefix = raw
		case open < 0 || close < open:
			return nil, fmt.Errorf("token %d (%q) has an unbalanced brace", n, raw)
		default:
			tok = subjectToken{Prefix: raw[:open], Placeholder: raw[open+1 : close], Suffix: raw[close+1:]}
			if strings.ContainsAny(tok.Placeholder, "{") || strings.ContainsAny(tok.Suffix, "{}") {
				return nil, fmt.Errorf("token %d (%q) has more than one placeholder or an unbalanced brace; use one placeholder per token", n, raw)
			}
			if !isPlaceholder(tok.Placeholder) {
				name := "{" + tok.Placeholder + "}"
				if !isPrintableASCII(name) {
					name = strconv.Quote(name)
				}
				return nil, fmt.Errorf("unknown placeholder %s (%s)", name, placeholderHint(tok.Placeholder))
			}
		}
		if r, bad := badSubjectRune(tok.Prefix + tok.Suffix); bad {
			return nil, fmt.Errorf("token %d (%q) contains %q; subject tokens cannot contain whitespace, '*' or '>'", n, raw, r)
		}
		if i == 0 && tok.Placeholder != "" {
			return nil, fmt.Errorf("the first token must be literal (for example \"outbox.{aggregate_type}.{aggregate_id}\"): the stream's subjects are derived from the literal prefix")
		}
		if tok.Placeholder == "aggregate_id" || tok.Placeholder == "aggregate_type" {
			aggregate = true
		}
		toks = append(toks, tok)
	}
	if !aggregate {
		return nil, errors.New("must contain {aggregate_id} or {aggregate_type}, so consumers can filter by aggregate and keep its order")
	}
	return toks, nil
}

func isPlaceholder(name string) bool {
	for _, p := range placeholders {
		if p == name {
			return true
		}
	}
	return false
}

func placeholderHint(name string) string {
	if best := nearest(strings.ReplaceAll(name, "-", "_"), placeholders); best != "" {
		return fmt.Sprintf("did you mean {%s}?", best)
	}
	return "known: {aggregate_type}, {aggregate_id}, {type}, {partition}"
}
