-- Run once by the postgres image on an empty data directory (it runs every
-- file in /docker-entrypoint-initdb.d as POSTGRES_USER, a superuser, in
-- POSTGRES_DB, in name order). docker-compose.yml mounts schema/outbox.sql
-- before this file, so the outbox table exists here. e2e/container_test.go
-- applies both files to the test Postgres, so keep them plain SQL without
-- psql meta-commands.

-- The relay's role. REPLICATION lets it create its slot and stream the WAL.
-- The password is the demo's; use your own (and a secret) anywhere else.
CREATE ROLE relay WITH LOGIN REPLICATION PASSWORD 'relay';

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
