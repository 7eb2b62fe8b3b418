#!/bin/sh
# The compose file's producer: a stand-in for a service that writes its
# business row and its outbox row in one transaction, once a second, like
# `make demo` does. Orders move through created -> paid -> shipped, three
# orders at a time, so several aggregates interleave. Every fifth
# transaction also writes a second event (a note on a customer), to show
# that events of one transaction are published together, in order.
# Connection settings come from PGHOST, PGUSER, PGPASSWORD and PGDATABASE.
set -eu

i=0
while :; do
	order="o-$((1000 + i / 9 * 3 + i % 3))"
	case $(((i / 3) % 3)) in
	0) event=OrderCreated status=created ;;
	1) event=OrderPaid status=paid ;;
	*) event=OrderShipped status=shipped ;;
	esac
	extra=""
	if [ $((i % 5)) -eq 4 ]; then
		extra="INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
		       VALUES ('customer', 'c-' || (:i % 7), 'CustomerNoted', jsonb_build_object('order_id', :'order'));"
	fi
	# -1: one transaction; ON_ERROR_STOP: a failed statement rolls it all back.
	psql -X -q -1 -v ON_ERROR_STOP=1 -v i="$i" -v order="$order" -v event="$event" -v status="$status" <<SQL || { echo "producer: write failed; retrying in 1s" >&2; sleep 1; continue; }
INSERT INTO orders (id, customer, total, status)
VALUES (:'order', 'customer-' || (:i % 7), 10 + (:i % 90), :'status')
ON CONFLICT (id) DO UPDATE SET status = excluded.status;
INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
VALUES ('order', :'order', :'event', jsonb_build_object('order_id', :'order', 'status', :'status', 'seq', :i));
$extra
SQL
	echo "producer: $event $order${extra:+ (+ CustomerNoted)}"
	i=$((i + 1))
	sleep 1
done
