-- Run once by the postgres image on an empty data directory (it runs every
-- file in /docker-entrypoint-initdb.d as POSTGRES_USER, a superuser, in
-- POSTGRES_DB). e2e/container_test.go applies this same file to the test
-- Postgres, so keep it plain SQL without psql meta-commands.

-- The relay's role. REPLICATION lets it create its slot and stream the WAL.
-- The password is the demo's; use your own (and a secret) anywhere else.
CREATE ROLE relay WITH LOGIN REPLICATION PASSWORD 'relay';

-- The outbox table, as in testdata/outbox.sql (Debezium's column names, the
-- relay's default mapping). The service writes one row per event in the same
-- transaction as its business change.
CREATE TABLE public.outbox (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- A business table for the producer, as in `make demo`.
CREATE TABLE public.orders (
    id       text    PRIMARY KEY,
    customer text    NOT NULL,
    total    numeric NOT NULL,
    status   text    NOT NULL
);

-- On its first start the relay runs CREATE PUBLICATION outboxrelay FOR TABLE
-- public.outbox. Postgres allows that to a role with CREATE on the database
-- that owns the table, so the relay owns the outbox table here. The service
-- (POSTGRES_USER, a superuser in this demo) writes to it regardless; a
-- non-superuser service needs GRANT INSERT ON public.outbox TO <service>.
--
-- To keep the relay to REPLICATION only, create the publication here instead
-- (as the superuser) and drop the next two statements:
--   CREATE PUBLICATION outboxrelay FOR TABLE public.outbox;
ALTER TABLE public.outbox OWNER TO relay;
DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON DATABASE %I TO relay', current_database());
END
$$;
