// consume.mjs reads outboxrelay's events from JetStream with nats.js and
// checks each against the relay's contract (docs/consuming.md): the subject
// <prefix>.<aggregate type>.<aggregate id>, the Outbox-* headers, a JSON
// payload, and commit order. It prints one JSON line per event and a summary
// line, and exits 1 if any event broke the contract.
//
//   NATS_URL=nats://127.0.0.1:4222 STREAM=OUTBOX node consume.mjs
//
// Environment: NATS_URL, STREAM (default OUTBOX), DURABLE (default
// nats-js-example), SUBJECT_PREFIX (default outbox, the first token of
// nats.subject), EXPECT (read this many events, then stop; default: stop
// once the consumer has caught up with the stream).
import { connect } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";

const url = process.env.NATS_URL || "nats://127.0.0.1:4222";
const stream = process.env.STREAM || "OUTBOX";
const durable = process.env.DURABLE || "nats-js-example";
const prefix = process.env.SUBJECT_PREFIX || "outbox";
const expect = process.env.EXPECT ? Number(process.env.EXPECT) : undefined;

// escape is the relay's subject-token escaping (subject.Escape): '.', '*',
// '>', '%', white space and bytes outside printable ASCII become %XX.
function escape(v) {
  let out = "";
  for (const b of Buffer.from(v, "utf8")) {
    out += b <= 0x20 || b >= 0x7f || b === 0x2e || b === 0x2a || b === 0x3e || b === 0x25
      ? "%" + b.toString(16).toUpperCase().padStart(2, "0")
      : String.fromCharCode(b);
  }
  return out;
}

// position is where an event sits in the commit order: the transaction's
// commit LSN (X/Y in hex), then its index in the transaction.
function position(lsn, txSeq) {
  const m = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/.exec(lsn);
  if (!m || !/^[1-9][0-9]*$/.test(txSeq)) return undefined;
  return ((BigInt("0x" + m[1]) << 32n) | BigInt("0x" + m[2])) * (1n << 32n) + BigInt(txSeq);
}

const nc = await connect({ servers: url, name: "outboxrelay-nats-js-example" });
const jsm = await jetstreamManager(nc);
// A durable pull consumer with explicit acks: a restart of this program
// goes on where it stopped. Nats-Msg-Id (the event id) recognises a repeat.
await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit });
const consumer = await jetstream(nc).consumers.get(stream, durable);

const seen = new Set();
const aggregates = new Map(); // aggregate -> position of its last event
let events = 0, duplicates = 0, problems = 0, last;
const problem = (seq, text) => {
  problems++;
  console.log(JSON.stringify({ problem: { seq, text } }));
};

const messages = await consumer.consume({ max_messages: 256 });
if (expect === 0) messages.stop();
for await (const m of messages) {
  const h = (k) => (m.headers ? m.headers.get(k) : "");
  const id = h("Nats-Msg-Id");
  const ev = {
    seq: m.seq,
    subject: m.subject,
    id,
    type: h("Outbox-Event-Type"),
    aggregate_type: h("Outbox-Aggregate-Type"),
    aggregate_id: h("Outbox-Aggregate-Id"),
    commit_lsn: h("Outbox-Commit-LSN"),
    tx_seq: h("Outbox-Tx-Seq"),
    commit_time: h("Outbox-Commit-Time"),
  };
  if (seen.has(id)) {
    duplicates++; // handled already: ack it and do nothing else
  } else {
    seen.add(id);
    events++;
    if (!id || h("Outbox-Event-Id") !== id) problem(m.seq, `Nats-Msg-Id ${id} and Outbox-Event-Id ${h("Outbox-Event-Id")} differ`);
    if (!ev.type || !ev.aggregate_type || !ev.aggregate_id) problem(m.seq, "an Outbox-Event-Type, -Aggregate-Type or -Aggregate-Id header is missing");
    const want = `${prefix}.${escape(ev.aggregate_type)}.${escape(ev.aggregate_id)}`;
    if (m.subject !== want) problem(m.seq, `subject ${m.subject}, want ${want}`);
    if (Number.isNaN(Date.parse(ev.commit_time))) problem(m.seq, `Outbox-Commit-Time ${ev.commit_time} is not a time`);
    const pos = position(ev.commit_lsn, ev.tx_seq);
    if (pos === undefined) {
      problem(m.seq, `bad Outbox-Commit-LSN ${ev.commit_lsn} or Outbox-Tx-Seq ${ev.tx_seq}`);
    } else {
      if (last !== undefined && pos <= last) problem(m.seq, `${ev.commit_lsn}#${ev.tx_seq} is not after the event before it`);
      last = pos;
      const key = `${ev.aggregate_type}/${ev.aggregate_id}`;
      if (aggregates.has(key) && pos <= aggregates.get(key)) problem(m.seq, `aggregate ${key} out of order`);
      aggregates.set(key, pos);
    }
    try {
      ev.payload = m.json();
    } catch (err) {
      problem(m.seq, `payload is not JSON: ${err.message}`);
    }
    console.log(JSON.stringify({ event: ev }));
  }
  m.ack();
  if (expect !== undefined ? events >= expect : m.info.pending === 0) messages.stop();
}
await nc.drain();
console.log(JSON.stringify({ summary: { events, aggregates: aggregates.size, duplicates, problems } }));
process.exitCode = problems > 0 ? 1 : 0;
