-- pgobs circuits, version 0009: the circuit breaker's state, shared by every worker of the fleet.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0009_circuits.sql`.
BEGIN;

-- One row per target (a URL's origin, an SMTP server, a SQL function, a handler, or a circuit
-- key). Workers add up their calls per target and report them every second, or at once after a
-- failure (circuit_sync in queries.sql); the failure rate is a sliding window made of two
-- buckets (the current one and the one before, weighted by how much of it is still inside the
-- window), so one row per target is all it takes. When it opens, its jobs wait for probe_at
-- without spending attempts. From probe_at on, one worker of the whole fleet takes the probe
-- (probe_by, until probe_until: a probe whose worker died is taken again after that); a failed
-- probe doubles open_s (up to the circuit's max_open_for), success_threshold good ones close it.
-- The columns of 0001: failures (of the current bucket), successes (good probes while
-- half-open), opened_at (when the outage began), updated_at.
ALTER TABLE pgobs.circuits
    ADD COLUMN requests      integer NOT NULL DEFAULT 0,
    ADD COLUMN prev_requests integer NOT NULL DEFAULT 0,
    ADD COLUMN prev_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN bucket_start  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN window_s      float8 NOT NULL DEFAULT 30,
    ADD COLUMN open_s        float8 NOT NULL DEFAULT 0,
    ADD COLUMN probe_at      timestamptz,
    ADD COLUMN probe_by      text,
    ADD COLUMN probe_until   timestamptz,
    ADD COLUMN failed_probes integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error    text;

-- Every worker updates its targets' rows about once a second: keep the updates HOT.
ALTER TABLE pgobs.circuits SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);

COMMENT ON TABLE pgobs.circuits IS
    'circuit breaker state per target, shared by every worker (pgobs circuits list|reset)';
COMMENT ON COLUMN pgobs.circuits.target IS
    'what the breaker guards: a URL origin, smtp://host:port, sql:function, python:handler, or '
    'an action''s circuit.key';
COMMENT ON COLUMN pgobs.circuits.state IS
    'closed (calls go through), open (jobs wait for probe_at without spending attempts) or '
    'half_open (one worker of the fleet probes)';
COMMENT ON COLUMN pgobs.circuits.requests IS 'calls reported in the current bucket (closed only)';
COMMENT ON COLUMN pgobs.circuits.failures IS
    'transient failures among them (timeouts, network errors, 408/425/429/5xx, a handler that raised)';
COMMENT ON COLUMN pgobs.circuits.prev_requests IS
    'calls of the bucket before; they count for the part of it still inside the window';
COMMENT ON COLUMN pgobs.circuits.prev_failures IS 'failures of the bucket before';
COMMENT ON COLUMN pgobs.circuits.bucket_start IS 'when the current bucket began';
COMMENT ON COLUMN pgobs.circuits.window_s IS 'the window the failure rate is judged over, seconds';
COMMENT ON COLUMN pgobs.circuits.successes IS 'good probes in a row while half_open';
COMMENT ON COLUMN pgobs.circuits.opened_at IS 'when the circuit last opened (the outage began)';
COMMENT ON COLUMN pgobs.circuits.open_s IS
    'how long it stays open before a probe, seconds; doubled by each failed probe; 0 after a reset';
COMMENT ON COLUMN pgobs.circuits.probe_at IS 'open: when one worker may probe';
COMMENT ON COLUMN pgobs.circuits.probe_by IS 'half_open: the worker granted the probe';
COMMENT ON COLUMN pgobs.circuits.probe_until IS
    'half_open: when the grant lapses (its worker died) and another worker may probe';
COMMENT ON COLUMN pgobs.circuits.failed_probes IS 'probes that failed since it last opened';
COMMENT ON COLUMN pgobs.circuits.last_error IS 'the last transient failure reported';
COMMENT ON COLUMN pgobs.circuits.updated_at IS 'when a worker last changed the row';

INSERT INTO pgobs.schema_migrations (version) VALUES ('0009');
COMMIT;
