-- pgobs schema, version 0001: every table of the data path.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0001_schema.sql`.
BEGIN;

CREATE SCHEMA IF NOT EXISTS pgobs;

CREATE TABLE IF NOT EXISTS pgobs.schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Captured row changes and custom events. txid is the writer's transaction: the listener only
-- reads events whose transaction has ended (txid < snapshot xmin), in (txid, id) order.
CREATE TABLE pgobs.events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    entity_type    text NOT NULL,
    entity_id      text,
    event_type     text NOT NULL,
    data           jsonb,
    old_data       jsonb,
    changed_fields text[],
    tenant         text,
    actor          text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_txid_id ON pgobs.events (txid, id);
CREATE INDEX events_created_at ON pgobs.events USING brin (created_at);

-- One row per listener_id: the last event fanned out, as (txid, event_id).
CREATE TABLE pgobs.checkpoints (
    listener_id       text PRIMARY KEY,
    txid              xid8 NOT NULL DEFAULT '0',
    event_id          bigint NOT NULL DEFAULT 0,
    last_processed_at timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per running listener candidate (any number per listener_id; one of them leads).
CREATE TABLE pgobs.listeners (
    instance_id      text PRIMARY KEY,
    listener_id      text NOT NULL,
    host             text NOT NULL,
    pid              integer NOT NULL,
    state            text NOT NULL CHECK (state IN
                         ('initializing', 'connecting', 'running', 'recovering', 'stopped')),
    is_leader        boolean NOT NULL DEFAULT false,
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_heartbeat   timestamptz NOT NULL DEFAULT now(),
    events_processed bigint NOT NULL DEFAULT 0,
    lag_events       bigint NOT NULL DEFAULT 0,
    lag_seconds      double precision NOT NULL DEFAULT 0
);

-- One row per pending action run. run_at is when it is due; a claim sets locked_by and a lease
-- (locked_until) that the worker's heartbeat extends. Finished rows are deleted.
CREATE TABLE pgobs.jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     bigint NOT NULL,
    observer     text NOT NULL,
    action_index integer NOT NULL,
    action_type  text NOT NULL,
    payload      jsonb,
    priority     smallint NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5,
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    errors       jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now()
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);
-- Claims walk this index: only unleased rows, in priority then due order.
CREATE INDEX jobs_claimable ON pgobs.jobs (priority DESC, run_at) WHERE locked_until IS NULL;
-- The rescuer finds expired leases here.
CREATE INDEX jobs_leased ON pgobs.jobs (locked_until) WHERE locked_until IS NOT NULL;

-- Jobs that used up their attempts or failed permanently. Meant to be queried with plain SQL.
CREATE TABLE pgobs.dlq (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       bigint NOT NULL,
    event_id     bigint NOT NULL,
    observer     text NOT NULL,
    action_index integer NOT NULL,
    action_type  text NOT NULL,
    event        jsonb NOT NULL,
    payload      jsonb,
    priority     smallint NOT NULL DEFAULT 0,
    attempts     integer NOT NULL,
    max_attempts integer NOT NULL,
    last_error   text,
    error_kind   text NOT NULL CHECK (error_kind IN ('transient', 'permanent')),
    errors       jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dlq_observer_failed_at ON pgobs.dlq (observer, failed_at);
CREATE INDEX dlq_failed_at ON pgobs.dlq (failed_at);

-- Deduplication fingerprints and cached results; both expire.
CREATE TABLE pgobs.dedup (
    fingerprint text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX dedup_expires_at ON pgobs.dedup (expires_at);

CREATE UNLOGGED TABLE pgobs.cache (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX cache_expires_at ON pgobs.cache (expires_at);

-- Circuit breaker state per target, shared by every worker of the fleet.
CREATE TABLE pgobs.circuits (
    target     text PRIMARY KEY,
    state      text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures   integer NOT NULL DEFAULT 0,
    successes  integer NOT NULL DEFAULT 0,
    opened_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Whether each leader waits for a wake-up. A transaction that sends NOTIFY takes a cluster-wide
-- lock at commit (with 8 writers it halved their commit rate here), so writers notify only while
-- some leader waits; a busy leader reads on without being woken, and polls when idle.
CREATE UNLOGGED TABLE pgobs.listener_wakeups (
    listener_id text PRIMARY KEY,
    waiting     boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The searchable trail of events and outcomes.
CREATE TABLE pgobs.audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    status      text NOT NULL,
    event_id    bigint,
    observer    text,
    action_type text,
    entity_type text,
    entity_id   text,
    event_type  text,
    message     text,
    details     jsonb,
    search      tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            coalesce(kind, '') || ' ' || coalesce(status, '') || ' ' ||
            coalesce(observer, '') || ' ' || coalesce(action_type, '') || ' ' ||
            coalesce(entity_type, '') || ' ' || coalesce(entity_id, '') || ' ' ||
            coalesce(event_type, '') || ' ' || coalesce(message, ''))
    ) STORED
);
CREATE INDEX audit_search ON pgobs.audit USING gin (search);
CREATE INDEX audit_event_id ON pgobs.audit (event_id);
CREATE INDEX audit_at ON pgobs.audit USING brin (at);

INSERT INTO pgobs.schema_migrations (version) VALUES ('0001');
COMMIT;
