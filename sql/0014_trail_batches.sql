-- pgobs schema, version 0014: deliveries are recorded per batch, one trail record per group.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0014_trail_batches.sql`.
--
-- A record per delivered job cost the outcome statement 30 us a job (a heap row, its generated
-- terms and some fifteen index entries): it halved the queue's throughput. The statement that
-- writes a batch's outcomes now writes one 'delivered' record per (observer, action, envelope)
-- of the batch, with its jobs in arrays (batch_*): a job costs its three terms (event_id,
-- job_id, entity_id), not a record. pgobs.trail_records shows one row per job, as before, and
-- is what search, the Elasticsearch shipper and `pgobs debug-event` read.
--
-- The terms column is rebuilt to hold every job's terms: this rewrites the trail once (it
-- holds a week of records at most on most deployments; a big one migrates in a quiet hour).
BEGIN;

ALTER TABLE pgobs.trail
    ADD COLUMN batch_event_ids    bigint[],
    ADD COLUMN batch_job_ids      bigint[],
    ADD COLUMN batch_entity_ids   text[],
    ADD COLUMN batch_attempts     integer[],
    ADD COLUMN batch_status_codes integer[],
    ADD COLUMN batch_durations_ms double precision[],
    ADD COLUMN batch_terms        text[];
COMMENT ON COLUMN pgobs.trail.batch_job_ids IS
    'a batch record (delivered): its jobs, with the batch_* arrays in step; '
    'pgobs.trail_records has one row per job';
COMMENT ON COLUMN pgobs.trail.batch_terms IS
    'a batch record: its jobs'' own terms (event_id, job_id, entity_id, attempt, status_code), '
    'as the statement that writes it computes them (a function here cost 5 us a job)';

-- A record's terms ('field=value', as 0008 wrote them inline): the generated column and the
-- rows of trail_records use this one list. Qualified names, no pinned search_path: inlined.
CREATE FUNCTION pgobs.trail_terms(
    kind text, status text, entity_type text, entity_id text, event_type text, tenant text,
    actor text, observer text, action text, action_type text, event_id bigint, job_id bigint,
    attempt integer, status_code integer
) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.array_remove(ARRAY[
        'kind=' OPERATOR(pg_catalog.||) kind, 'status=' OPERATOR(pg_catalog.||) status,
        'entity_type=' OPERATOR(pg_catalog.||) entity_type,
        'entity_id=' OPERATOR(pg_catalog.||) entity_id,
        'event_type=' OPERATOR(pg_catalog.||) event_type, 'tenant=' OPERATOR(pg_catalog.||) tenant,
        'actor=' OPERATOR(pg_catalog.||) actor, 'observer=' OPERATOR(pg_catalog.||) observer,
        'action=' OPERATOR(pg_catalog.||) action,
        'action_type=' OPERATOR(pg_catalog.||) action_type,
        'event_id=' OPERATOR(pg_catalog.||) event_id::text,
        'job_id=' OPERATOR(pg_catalog.||) job_id::text,
        'attempt=' OPERATOR(pg_catalog.||) attempt::text,
        'status_code=' OPERATOR(pg_catalog.||) status_code::text], NULL)
$$;

-- The terms column, rebuilt with every job of a batch record (its GIN index goes with it).
ALTER TABLE pgobs.trail DROP COLUMN terms;
ALTER TABLE pgobs.trail
    ADD COLUMN terms text[] GENERATED ALWAYS AS (
        pgobs.trail_terms(kind, status, entity_type, entity_id, event_type, tenant, actor,
                          observer, action, action_type, event_id, job_id, attempt, status_code)
        || CASE WHEN observers IS NOT NULL THEN pgobs.trail_observer_terms(observers) END
        || batch_terms
    ) STORED;
CREATE INDEX trail_terms ON pgobs.trail USING gin (terms);
COMMENT ON COLUMN pgobs.trail.terms IS
    'every field of the record as field=value (a batch record: of each of its jobs), for the '
    'GIN index pgobs search uses';

-- One row per job: a batch record's jobs each as a row of their own (seq 1, 2, ...), every
-- other record as it is (seq 0). terms are the row's own; record_terms, search and data are
-- the stored record's, so a filter on them is answered by the trail's indexes first.
CREATE VIEW pgobs.trail_records AS
SELECT t.at, t.id, coalesce(b.seq, 0)::integer AS seq, t.txid, t.kind, t.status,
       coalesce(b.event_id, t.event_id) AS event_id, coalesce(b.job_id, t.job_id) AS job_id,
       t.entity_type, coalesce(b.entity_id, t.entity_id) AS entity_id, t.event_type, t.tenant,
       t.actor, t.observer, t.observers, t.action, t.action_type,
       coalesce(b.attempt, t.attempt) AS attempt,
       coalesce(b.status_code, t.status_code) AS status_code,
       coalesce(b.duration_ms, t.duration_ms) AS duration_ms, t.next_run_at, t.message, t.data,
       CASE WHEN b.seq IS NULL THEN t.terms
            ELSE pgobs.trail_terms(t.kind, t.status, t.entity_type, b.entity_id, t.event_type,
                                   t.tenant, t.actor, t.observer, t.action, t.action_type,
                                   b.event_id, b.job_id, b.attempt, b.status_code) END AS terms,
       t.terms AS record_terms, t.search
FROM pgobs.trail AS t
LEFT JOIN LATERAL unnest(t.batch_event_ids, t.batch_job_ids, t.batch_entity_ids,
                         t.batch_attempts, t.batch_status_codes, t.batch_durations_ms)
     WITH ORDINALITY AS b(event_id, job_id, entity_id, attempt, status_code, duration_ms, seq)
     ON true;
COMMENT ON VIEW pgobs.trail_records IS
    'pgobs.trail with one row per job: a batch record (delivered) as a row per job, seq 1, 2, '
    '...; filter on record_terms, search or data to use the trail''s indexes';

-- The same text as 0008's without a subquery, so the planner inlines it (0008's was called per
-- record and walked the data with a set-returning function: 8 us of an event record's 30). The
-- values come as one JSON array, in the same order; its escapes (\n, \", \\, \u0001) become
-- spaces, as the characters they stand for would.
CREATE OR REPLACE FUNCTION pgobs.trail_text(message text, data jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.btrim(pg_catalog.regexp_replace(pg_catalog.lower(
        coalesce(message, '') OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||)
        coalesce(pg_catalog.regexp_replace(pg_catalog.jsonb_path_query_array(data,
            'strict $.** ? (@.type() == "string" || @.type() == "number")')::text,
            '\\(?:u[0-9a-fA-F]{4}|.)', ' ', 'g'), '')),
        '[^[:alnum:]]+', ' ', 'g'))
$$;

-- An event record's matched observers as terms, as 0008's, without its subquery (inlined: the
-- call cost an event record 8 us). Observer names have no control characters (the config's
-- rule), so unit separators split them; a NULL in the list is skipped (0008 made it a NULL
-- term, which nothing could match).
CREATE OR REPLACE FUNCTION pgobs.trail_observer_terms(observers text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.cardinality(pg_catalog.array_remove(observers, NULL)) > 0 THEN pg_catalog.string_to_array(
        'observer=' OPERATOR(pg_catalog.||)
        pg_catalog.array_to_string(observers, E'\x1fobserver='), E'\x1f') END
$$;

-- A day's partition, as 0008's, moving the records that wait in the default partition with
-- every stored column the trail has (0008 listed its own, and dropped a batch record's jobs).
CREATE OR REPLACE FUNCTION pgobs.trail_partition(day date) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name text := 'trail_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    columns text;
BEGIN
    IF to_regclass('pgobs.' || name) IS NOT NULL THEN
        RETURN name;
    END IF;
    IF EXISTS (SELECT 1 FROM pgobs.trail_default WHERE at >= lo AND at < hi) THEN
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO columns
        FROM pg_attribute AS a
        WHERE a.attrelid = 'pgobs.trail'::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attgenerated = '';
        EXECUTE format('CREATE TABLE pgobs.%I (LIKE pgobs.trail INCLUDING DEFAULTS '
                       'INCLUDING GENERATED INCLUDING CONSTRAINTS)', name);
        EXECUTE format(
            'WITH moved AS (DELETE FROM pgobs.trail_default WHERE at >= $1 AND at < $2 '
            'RETURNING %1$s) INSERT INTO pgobs.%2$I (%1$s) OVERRIDING SYSTEM VALUE '
            'SELECT * FROM moved', columns, name) USING lo, hi;
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

-- The shipper's cursor and its rejects name a job of a batch record by its seq.
ALTER TABLE pgobs.trail_shipping ADD COLUMN seq integer NOT NULL DEFAULT 0;
ALTER TABLE pgobs.trail_rejects ADD COLUMN seq integer NOT NULL DEFAULT 0;
ALTER TABLE pgobs.trail_rejects DROP CONSTRAINT trail_rejects_pkey;
ALTER TABLE pgobs.trail_rejects ADD PRIMARY KEY (sink, trail_id, seq);

-- Nothing of pgobs is PUBLIC's to call: a role that reads trail_records needs EXECUTE on
-- trail_terms too (create_roles grants it to the operator and the worker).
REVOKE EXECUTE ON FUNCTION
    pgobs.trail_terms(text, text, text, text, text, text, text, text, text, text, bigint, bigint,
                      integer, integer)
    FROM PUBLIC;

-- create_roles() as 0013 left it, plus the view, the function that computes its terms, and the
-- shipping cursor and rejects for the operator.
CREATE OR REPLACE FUNCTION pgobs.create_roles() RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['pgobs_app', 'pgobs_operator', 'pgobs_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it at the same moment
            END;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA pgobs TO %I', role_name);
        EXECUTE format('GRANT SELECT ON pgobs.schema_migrations TO %I', role_name);
    END LOOP;
    -- The application: custom events, with or without an idempotency key (0010).
    GRANT EXECUTE ON FUNCTION pgobs.emit(text, text, text, jsonb),
        pgobs.emit(text, text, text, jsonb, text) TO pgobs_app;

    -- The operator: reads the pipeline, the trail and where it ships (pgobs status), retries
    -- and purges dead letters, changes the settings and runs maintenance (0007, 0008, 0014).
    GRANT SELECT ON pgobs.events, pgobs.jobs, pgobs.dlq, pgobs.audit, pgobs.trail,
        pgobs.trail_records, pgobs.trail_shipping, pgobs.trail_rejects, pgobs.checkpoints,
        pgobs.listeners, pgobs.circuits, pgobs.job_counts TO pgobs_operator;
    GRANT EXECUTE ON FUNCTION pgobs.retry_dead_letters(bigint[]) TO pgobs_operator;
    GRANT DELETE ON pgobs.dlq TO pgobs_operator;
    GRANT SELECT, INSERT, UPDATE ON pgobs.settings TO pgobs_operator;

    -- The worker: the queue, checkpoints, dead letters, the trail, the dedup, cache and circuit
    -- tables; it reads events through the listener's functions (0004, 0010) and writes trail
    -- records through record_trail (0008).
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgobs TO pgobs_worker;
    GRANT EXECUTE ON FUNCTION
        pgobs.slice_events(pg_snapshot, pg_snapshot, xid8, bigint, integer),
        pgobs.read_events(pg_snapshot, pg_snapshot, xid8, bigint, integer, bigint),
        pgobs.record_trail(text, bigint[], text[], text[], text[], text[]),
        pgobs.trail_observer_terms(text[]), pgobs.trail_text(text, jsonb),
        pgobs.trail_data(jsonb)
        TO pgobs_worker;
    -- Computing a record's terms (writing it, or reading pgobs.trail_records).
    GRANT EXECUTE ON FUNCTION
        pgobs.trail_terms(text, text, text, text, text, text, text, text, text, text, bigint,
                          bigint, integer, integer)
        TO pgobs_worker, pgobs_operator;
    REVOKE INSERT, UPDATE, DELETE ON pgobs.events FROM pgobs_worker;
    REVOKE ALL ON pgobs.capture_state FROM pgobs_worker;
    REVOKE INSERT, UPDATE, DELETE ON pgobs.schema_migrations FROM pgobs_worker;
    REVOKE INSERT, UPDATE, DELETE ON pgobs.settings FROM pgobs_worker;
    REVOKE UPDATE, DELETE ON pgobs.trail FROM pgobs_worker;
    REVOKE INSERT, UPDATE, DELETE ON pgobs.trail_records FROM pgobs_worker;

    -- Both run maintenance (the leading listener does when pg_cron does not).
    GRANT EXECUTE ON FUNCTION pgobs.setting(text), pgobs.setting_interval(text),
        pgobs.run_maintenance(boolean, integer) TO pgobs_operator, pgobs_worker;

    -- Tables of later migrations are the queue's and the worker's to use as well.
    ALTER DEFAULT PRIVILEGES IN SCHEMA pgobs
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO pgobs_worker;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.create_roles() FROM PUBLIC;

DO $$
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('pgobs_app', 'pgobs_operator', 'pgobs_worker')) = 3
    THEN
        PERFORM pgobs.create_roles();
    END IF;
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0014');
COMMIT;
