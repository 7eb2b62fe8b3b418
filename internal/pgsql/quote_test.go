package pgsql

import "testing"

func TestQuote(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Literal("it's"), `'it''s'`},
		{Ident(`a"b`), `"a""b"`},
		{Qualified("app.outbox"), `"app"."outbox"`},
		{Qualified("outbox"), `"public"."outbox"`},
		{Qualified(`my schema.Out"box`), `"my schema"."Out""box"`},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
}
