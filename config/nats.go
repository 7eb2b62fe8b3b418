package config

// NATS says where and how events are published.
type NATS struct {
	// URL is one server URL or a comma-separated list; see URLs.
	URL string `yaml:"url"`
	// Stream is the JetStream stream, created if missing.
	Stream string `yaml:"stream"`
	// Subject is the subject template, e.g.
	// "outbox.{aggregate_type}.{aggregate_id}".
	Subject string `yaml:"subject"`
	// Partitions is N for the {partition} placeholder: a stable hash of
	// the aggregate id modulo N. 0 when no template uses it.
	Partitions int `yaml:"partitions"`

	// At most one of: Creds, NKey, User with Password, Token.
	Creds    string `yaml:"creds"` // path to a .creds file (JWT and seed)
	NKey     string `yaml:"nkey"`  // path to an NKey seed file
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Token    string `yaml:"token"`

	TLS TLS `yaml:"tls"`

	// Format is FormatNative or FormatCloudEvents: the CloudEvents
	// attributes as ce- headers too (docs/consuming.md, "CloudEvents").
	Format      string      `yaml:"format"`
	CloudEvents CloudEvents `yaml:"cloudevents"`
}

// The values of nats.format.
const (
	FormatNative      = "native"
	FormatCloudEvents = "cloudevents"
)

// CloudEvents sets attributes for nats.format: cloudevents.
type CloudEvents struct {
	// Source is ce-source for every event; empty for the default,
	// /postgres/<database>/<schema.table> (or
	// /postgres/<database>/pg_logical_emit_message/<prefix> for message
	// events).
	Source string `yaml:"source"`
	// DataContentType is ce-datacontenttype for every event; empty for
	// the payload column's type.
	DataContentType string `yaml:"datacontenttype"`
}

// TLS holds the paths of the files for TLS to NATS. CA alone verifies the
// server; Cert and Key (both or neither) add a client certificate.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}
