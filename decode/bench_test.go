package decode_test

import (
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/decode"
)

// BenchmarkDecodeInsert decodes a Debezium-shaped insert with a ~300-byte
// JSON payload: the relay's hot path, run once per outbox row.
func BenchmarkDecodeInsert(b *testing.B) {
	payload := `{"orderId":"7f9c2a1e-4b3d-4e8f-9a6b-2c1d0e9f8a7b","customerId":"c-102934",` +
		`"lines":[{"sku":"SKU-0001","qty":2,"price":"19.99"},{"sku":"SKU-0417","qty":1,"price":"249.00"}],` +
		`"currency":"EUR","total":"288.98","shipping":{"method":"express","country":"DE"},` +
		`"createdAt":"2024-05-06T07:08:09.123456Z"}`
	payload += strings.Repeat(" ", max(0, 300-len(payload)))
	ins := debeziumRow("5d2c1f0e-7a4b-4c1e-9f3a-0b1c2d3e4f50", "order", "7f9c2a1e-4b3d-4e8f-9a6b-2c1d0e9f8a7b",
		"OrderCreated", payload)
	d := decode.NewDecoder(debezium)
	for _, m := range [][]byte{debeziumRelation(), beginMsg(0x100, time.Unix(0, 0), 1)} {
		if _, err := d.Decode(m); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(ins)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := d.Decode(ins)
		if err != nil || res.Kind != decode.KindEvent {
			b.Fatal(res.Kind, err)
		}
	}
}
