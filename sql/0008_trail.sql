-- pgobs schema, version 0008: the trail, every event and outcome, searchable for its retention.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0008_trail.sql`.
--
-- One record per event (kind 'event': written by the fan-out that reads it, with the observers
-- it matched and a bounded copy of its data) and one per outcome (kind 'action': written by the
-- statements that already write completions, retries and dead letters). Events leave
-- pgobs.events after their own, shorter retention; the trail keeps what search needs of them.
-- Partitioned by day (UTC) so retention drops whole partitions (pgobs.maintain_audit), never
-- deletes rows. pgobs.audit, which held only fan-out errors and on_failure: log drops, is folded
-- in: its rows move here and the name stays as a view of those records.
BEGIN;

CREATE TABLE pgobs.trail (
    at          timestamptz NOT NULL DEFAULT now(),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind        text NOT NULL CHECK (kind IN ('event', 'action')),
    status      text NOT NULL,
    event_id    bigint,
    job_id      bigint,
    entity_type text,
    entity_id   text,
    event_type  text,
    tenant      text,
    actor       text,
    observer    text,
    observers   text[],
    action      text,
    action_type text,
    attempt     integer,
    status_code integer,
    duration_ms double precision,
    next_run_at timestamptz,
    message     text,
    data        jsonb NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (at);

COMMENT ON TABLE pgobs.trail IS
    'every event (kind event) and action outcome (kind action), searchable with pgobs search; '
    'partitioned by UTC day, retention by pgobs.maintain_audit (setting audit_retention)';
COMMENT ON COLUMN pgobs.trail.status IS
    'event: received (no observer matched), matched, error (an observer could not judge it); '
    'action: delivered, retried, failed (dead-lettered), dropped (on_failure: log), '
    'deduplicated, deferred, retried_from_dlq';
COMMENT ON COLUMN pgobs.trail.observers IS 'event records: every observer the event matched';
COMMENT ON COLUMN pgobs.trail.data IS
    'event records: the event''s data (only its short top-level values past 8 kB); else {}';
COMMENT ON COLUMN pgobs.trail.txid IS
    'the writing transaction: the Elasticsearch shipper reads records in commit-safe order';

-- Full text sees the record's message and the string and number values of its event's data,
-- as lowercase runs of letters and digits. The Elasticsearch shipper sends this same text.
-- These functions of generated columns qualify their names instead of pinning search_path, so
-- the planner can inline them (a pinned one is called per record, at a third more cost).
CREATE FUNCTION pgobs.trail_text(message text, data jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.btrim(pg_catalog.regexp_replace(pg_catalog.lower(
        coalesce(message, '') OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) coalesce(
            (SELECT pg_catalog.string_agg(v OPERATOR(pg_catalog.#>>) '{}', ' ')
             FROM pg_catalog.jsonb_path_query(data, 'strict $.**') AS v
             WHERE pg_catalog.jsonb_typeof(v) IN ('string', 'number')), '')),
        '[^[:alnum:]]+', ' ', 'g'))
$$;

-- An event record's matched observers as terms (below).
CREATE FUNCTION pgobs.trail_observer_terms(observers text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.array_agg('observer=' OPERATOR(pg_catalog.||) o)
    FROM pg_catalog.unnest(observers) AS o
$$;

-- terms: every keyword and whole-number field as 'field=value', so that one GIN index answers
-- any field:value (an index per field would cost every record a dozen index writes). Written
-- inline, not as a function: a function call per record cost more than the rest of its insert.
-- Most records (deliveries) have no message and no data, and cost no text search at all.
ALTER TABLE pgobs.trail
    ADD COLUMN terms text[] GENERATED ALWAYS AS (array_remove(ARRAY[
        'kind=' || kind, 'status=' || status, 'entity_type=' || entity_type,
        'entity_id=' || entity_id, 'event_type=' || event_type, 'tenant=' || tenant,
        'actor=' || actor, 'observer=' || observer, 'action=' || action,
        'action_type=' || action_type, 'event_id=' || event_id, 'job_id=' || job_id,
        'attempt=' || attempt, 'status_code=' || status_code], NULL)
        || CASE WHEN observers IS NOT NULL THEN pgobs.trail_observer_terms(observers) END
    ) STORED,
    ADD COLUMN search tsvector GENERATED ALWAYS AS (CASE
        WHEN message IS NULL AND data = '{}'::jsonb THEN ''::tsvector
        ELSE to_tsvector('simple'::regconfig, pgobs.trail_text(message, data)) END) STORED;

CREATE INDEX trail_terms ON pgobs.trail USING gin (terms);
CREATE INDEX trail_search ON pgobs.trail USING gin (search);
CREATE INDEX trail_data ON pgobs.trail USING gin (data jsonb_path_ops);
CREATE INDEX trail_at ON pgobs.trail USING brin (at);
CREATE INDEX trail_txid_id ON pgobs.trail (txid, id);

-- Rows whose day has no partition yet (maintenance has not run for a week) land here rather
-- than fail the statement that writes them; pgobs.trail_partition moves them out.
CREATE TABLE pgobs.trail_default PARTITION OF pgobs.trail DEFAULT;
COMMENT ON TABLE pgobs.trail_default IS
    'trail records of days without a partition yet; pgobs.trail_partition(day) moves them out';

-- An event's data as the trail keeps it: whole up to 8 kB, else its short top-level values
-- (the fan-out calls it only for the big ones, and keeps the others as they are).
CREATE FUNCTION pgobs.trail_data(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN data IS NULL OR pg_catalog.jsonb_typeof(data) <> 'object' THEN '{}'::jsonb
        WHEN pg_catalog.pg_column_size(data) <= 8192 THEN data
        ELSE coalesce((SELECT pg_catalog.jsonb_object_agg(e.key, e.value)
                       FROM pg_catalog.jsonb_each(data) AS e
                       WHERE pg_catalog.jsonb_typeof(e.value) NOT IN ('object', 'array')
                         AND pg_catalog.octet_length(e.value::text) <= 256), '{}'::jsonb)
    END
$$;

-- The partition of one UTC day, created if missing (returns its name). Records of that day
-- that wait in the default partition move into it.
CREATE FUNCTION pgobs.trail_partition(day date) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name text := 'trail_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass('pgobs.' || name) IS NOT NULL THEN
        RETURN name;
    END IF;
    IF EXISTS (SELECT 1 FROM pgobs.trail_default WHERE at >= lo AND at < hi) THEN
        EXECUTE format('CREATE TABLE pgobs.%I (LIKE pgobs.trail INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)', name);
        EXECUTE format(
            'WITH moved AS (DELETE FROM pgobs.trail_default WHERE at >= $1 AND at < $2 '
            'RETURNING at, id, txid, kind, status, event_id, job_id, entity_type, entity_id, '
            'event_type, tenant, actor, observer, observers, action, action_type, attempt, '
            'status_code, duration_ms, next_run_at, message, data) '
            'INSERT INTO pgobs.%I (at, id, txid, kind, status, event_id, job_id, entity_type, '
            'entity_id, event_type, tenant, actor, observer, observers, action, action_type, '
            'attempt, status_code, duration_ms, next_run_at, message, data) '
            'OVERRIDING SYSTEM VALUE SELECT * FROM moved', name) USING lo, hi;
        EXECUTE format('ALTER TABLE pgobs.trail ATTACH PARTITION pgobs.%I '
                       'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE pgobs.%I PARTITION OF pgobs.trail '
                       'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    END IF;
    EXECUTE format('COMMENT ON TABLE pgobs.%I IS %L', name,
                   'the trail records of ' || day || ' (UTC); dropped whole by maintain_audit');
    RETURN name;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.trail_partition(date) FROM PUBLIC;

-- The trail's retention: 'audit_retention' of pgobs.settings (migration 0007: checked there,
-- NULL keeps for ever), else 90 days. Read by name at run time, so this migration stands on
-- its own as well.
CREATE FUNCTION pgobs.trail_retention() RETURNS interval
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found interval;
BEGIN
    IF to_regprocedure('pgobs.setting_interval(text)') IS NOT NULL THEN
        EXECUTE 'SELECT pgobs.setting_interval($1)' INTO found USING 'audit_retention';
        RETURN found;
    END IF;
    RETURN interval '90 days';
END;
$$;

-- The maintenance step for the trail (pgobs.run_maintenance calls it; it replaces 0007's,
-- which deleted pgobs.audit rows): drops every partition whose whole day is past the retention
-- (at most batch_size of them a call), deletes expired records from the default partition, and
-- creates the partitions of the next 7 days. Returns the partitions dropped, or that would be
-- when dry_run (which changes nothing). A second run at once skips the step, as in 0007.
CREATE OR REPLACE FUNCTION pgobs.maintain_audit(dry_run boolean, batch_size integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := now() - pgobs.trail_retention();
    part record;
    dropped bigint := 0;
BEGIN
    IF NOT dry_run AND NOT pg_try_advisory_xact_lock(2024061503, 2) THEN
        RETURN 0;  -- another run is at it
    END IF;
    IF NOT dry_run THEN
        PERFORM pgobs.trail_partition((now() AT TIME ZONE 'UTC')::date + d)
        FROM generate_series(0, 7) AS d;
    END IF;
    IF cutoff IS NULL THEN
        RETURN 0;  -- audit_retention NULL: kept for ever
    END IF;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'pgobs.trail'::regclass AND c.relname ~ '^trail_p\d{8}$'
          AND (to_date(substr(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
              <= cutoff
        ORDER BY c.relname
        LIMIT greatest(batch_size, 1)
    LOOP
        dropped := dropped + 1;
        IF NOT dry_run THEN
            EXECUTE format('DROP TABLE pgobs.%I', part.relname);
        END IF;
    END LOOP;
    IF NOT dry_run THEN
        DELETE FROM pgobs.trail_default WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM pgobs.trail_default WHERE at < cutoff LIMIT greatest(batch_size, 1)));
    END IF;
    RETURN dropped;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.maintain_audit(boolean, integer) FROM PUBLIC;

SELECT pgobs.trail_partition((now() AT TIME ZONE 'UTC')::date + d) FROM generate_series(-1, 7) AS d;

-- An operator's retry of dead letters leaves a record of each (status retried_from_dlq), in
-- the statement that moves them back to the queue.
CREATE OR REPLACE FUNCTION pgobs.retry_dead_letters(ids bigint[]) RETURNS SETOF bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH taken AS (
        DELETE FROM pgobs.dlq WHERE id = ANY(ids) RETURNING *
    ), queued AS (
        INSERT INTO pgobs.jobs (event_id, observer, action, action_index, action_type, payload,
                                priority, max_attempts, errors)
        SELECT event_id, observer, action, action_index, action_type, coalesce(payload, event),
               priority, max_attempts,
               errors || jsonb_build_array(jsonb_build_object('retried_from_dlq', id, 'at', now()))
        FROM taken
        RETURNING id, event_id, observer, action, action_type, errors
    ), trailed AS (
        INSERT INTO pgobs.trail (kind, status, event_id, job_id, entity_type, entity_id,
                                 event_type, tenant, actor, observer, action, action_type,
                                 attempt, message)
        SELECT 'action', 'retried_from_dlq', q.event_id, q.id, t.event ->> 'entity_type',
               t.event ->> 'entity_id', t.event ->> 'event_type', t.event ->> 'tenant',
               t.event ->> 'actor', q.observer, q.action, q.action_type, t.attempts,
               'dead letter ' || t.id || ' queued again as job ' || q.id || ' by ' || session_user
        FROM queued AS q
        JOIN taken AS t ON (q.errors -> -1 ->> 'retried_from_dlq')::bigint = t.id
    )
    SELECT id FROM queued
$$;
REVOKE EXECUTE ON FUNCTION pgobs.retry_dead_letters(bigint[]) FROM PUBLIC;

-- For outcomes decided before a job runs or without one (deduplicated, deferred by an open
-- circuit): a statement records them by calling this in one of its CTEs, with the envelope
-- taken from each event. Returns how many records it wrote.
CREATE FUNCTION pgobs.record_trail(
    status text, event_ids bigint[], observers text[], actions text[], action_types text[],
    messages text[]
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    written integer;
BEGIN
    IF status NOT IN ('delivered', 'retried', 'failed', 'dropped', 'deduplicated', 'deferred',
                      'retried_from_dlq') THEN
        RAISE EXCEPTION 'pgobs.record_trail: % is not an outcome status', status;
    END IF;
    INSERT INTO pgobs.trail (kind, status, event_id, entity_type, entity_id, event_type, tenant,
                             actor, observer, action, action_type, message)
    SELECT 'action', status, r.event_id, e.entity_type, e.entity_id, e.event_type, e.tenant,
           e.actor, r.observer, r.action, r.action_type, r.message
    FROM unnest(event_ids, observers, actions, action_types, messages)
         AS r(event_id, observer, action, action_type, message)
    LEFT JOIN LATERAL (
        SELECT ev.entity_type, ev.entity_id, ev.event_type, ev.tenant, ev.actor
        FROM pgobs.events AS ev WHERE ev.id = r.event_id LIMIT 1
    ) AS e ON true;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.record_trail(text, bigint[], text[], text[], text[], text[])
    FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION pgobs.trail_observer_terms(text[]), pgobs.trail_text(text, jsonb),
    pgobs.trail_data(jsonb), pgobs.trail_retention() FROM PUBLIC;

-- The Elasticsearch shipper's progress: the last record shipped, in (txid, id) order (records
-- are read only once every transaction that could still write an earlier one has ended), and
-- the records Elasticsearch rejected (a mapping conflict), skipped so they never block the rest.
CREATE TABLE pgobs.trail_shipping (
    sink       text PRIMARY KEY,
    txid       xid8 NOT NULL DEFAULT '0',
    id         bigint NOT NULL DEFAULT 0,
    shipped    bigint NOT NULL DEFAULT 0,
    rejected   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE pgobs.trail_rejects (
    sink        text NOT NULL,
    trail_id    bigint NOT NULL,
    at          timestamptz NOT NULL,
    error       text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, trail_id)
);
CREATE INDEX trail_rejects_rejected_at ON pgobs.trail_rejects (rejected_at);
COMMENT ON TABLE pgobs.trail_shipping IS
    'per sink: the last trail record shipped, in (txid, id) order, and how many were shipped';
COMMENT ON TABLE pgobs.trail_rejects IS
    'trail records a sink rejected (a mapping conflict), with its error; skipped, not retried';

-- The old audit rows, and its name as a view of the same kinds of record.
INSERT INTO pgobs.trail (at, kind, status, event_id, observer, action_type, entity_type,
                         entity_id, event_type, message, attempt)
SELECT at, kind, CASE WHEN kind = 'action' THEN 'dropped' ELSE status END, event_id, observer,
       action_type, entity_type, entity_id, event_type, message,
       (details ->> 'attempts')::integer
FROM pgobs.audit;
DROP TABLE pgobs.audit;
CREATE VIEW pgobs.audit AS
SELECT id, at, kind, status, event_id, observer, action_type, entity_type, entity_id,
       event_type, message, search
FROM pgobs.trail
WHERE status IN ('error', 'dropped');
COMMENT ON VIEW pgobs.audit IS
    'fan-out errors and on_failure: log drops, as pgobs.audit held them before 0008; '
    'pgobs.trail has every record';

-- The operator reads the trail (pgobs search); the worker writes it (default privileges of
-- 0005 cover tables created from now on).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgobs_operator') THEN
        GRANT SELECT ON pgobs.trail, pgobs.audit TO pgobs_operator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgobs_worker') THEN
        GRANT SELECT, INSERT ON pgobs.trail TO pgobs_worker;
        GRANT SELECT ON pgobs.audit TO pgobs_worker;
        -- Writing a record computes its generated columns with these.
        GRANT EXECUTE ON FUNCTION
            pgobs.record_trail(text, bigint[], text[], text[], text[], text[]),
            pgobs.trail_observer_terms(text[]), pgobs.trail_text(text, jsonb),
            pgobs.trail_data(jsonb) TO pgobs_worker;
    END IF;
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0008');
COMMIT;
