-- pgobs operations, version 0007: settings, retention by pgobs.run_maintenance() (which pg_cron
-- can call with no Python process), a view of the queue per observer, and a COMMENT on every
-- table and column an operator reads, so that \d+ explains them.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0007_operations.sql`.
BEGIN;

-- Settings SQL users, pg_cron and pgobs all read. Durations are intervals in Postgres syntax
-- with a unit ('7 days', '90 minutes'); NULL means "keep for ever" (or "off").
CREATE TABLE pgobs.settings (
    key   text PRIMARY KEY,
    value text
);
INSERT INTO pgobs.settings (key, value) VALUES
    ('events_retention', '7 days'),
    ('audit_retention', '90 days'),
    ('listeners_retention', '1 day'),
    ('dlq_retention', NULL),
    ('maintenance_interval', '5 minutes'),
    ('maintenance_runner', 'leader');

COMMENT ON TABLE pgobs.settings IS
    'operator settings read by pgobs.run_maintenance() and the listener; change them with '
    'UPDATE pgobs.settings SET value = ... WHERE key = ...; read one with pgobs.setting(key)';
COMMENT ON COLUMN pgobs.settings.key IS
    'events_retention, audit_retention, listeners_retention, dlq_retention (NULL: keep dead '
    'letters until an operator acts), maintenance_interval (how often the leading listener runs '
    'maintenance when pg_cron does not), maintenance_runner (leader or pg_cron)';
COMMENT ON COLUMN pgobs.settings.value IS
    'an interval with a unit for durations (''7 days''); NULL: keep for ever';

-- A setting's value; an unknown key is an error, not NULL, so a typo cannot read as "keep".
CREATE FUNCTION pgobs.setting(setting_key text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found_value text;
BEGIN
    SELECT s.value INTO found_value FROM pgobs.settings AS s WHERE s.key = setting_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgobs.settings has no setting %', quote_literal(setting_key)
            USING ERRCODE = 'undefined_object',
                  HINT = 'the settings are: ' || (SELECT string_agg(key, ', ' ORDER BY key)
                                                  FROM pgobs.settings);
    END IF;
    RETURN found_value;
END;
$$;

-- A duration setting as an interval (NULL when unset). A value Postgres would read some other
-- way than meant is refused with its fix: '7' is 7 seconds to Postgres, so a unit is required.
CREATE FUNCTION pgobs.setting_interval(setting_key text) RETURNS interval
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw text := pgobs.setting(setting_key);
    parsed interval;
BEGIN
    IF raw IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        parsed := raw::interval;
    EXCEPTION WHEN OTHERS THEN  -- any value Postgres cannot read as an interval
        parsed := NULL;
    END;
    IF parsed IS NULL OR raw !~ '[[:alpha:]]' THEN
        RAISE EXCEPTION 'pgobs.settings: % = % is not an interval with a unit',
            setting_key, quote_literal(raw)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('UPDATE pgobs.settings SET value = ''7 days'' WHERE key = %L, '
                                'or NULL to keep for ever', setting_key);
    END IF;
    IF parsed < interval '0' THEN
        RAISE EXCEPTION 'pgobs.settings: % = % is negative', setting_key, quote_literal(raw)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('UPDATE pgobs.settings SET value = ''7 days'' WHERE key = %L',
                                setting_key);
    END IF;
    -- The steps subtract it from now(): '10000 years' reaches before any timestamp.
    BEGIN
        PERFORM now() - parsed;
    EXCEPTION WHEN datetime_field_overflow THEN
        RAISE EXCEPTION 'pgobs.settings: % = % is too long', setting_key, quote_literal(raw)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('UPDATE pgobs.settings SET value = ''7 days'' WHERE key = %L, '
                                'or NULL to keep for ever', setting_key);
    END;
    RETURN parsed;
END;
$$;

-- Events every listener has fanned out, older than events_retention, that no pending job still
-- reads (a claim reads its event by id). "Fanned out" is read from each listener's stored
-- checkpoint snapshot (0004): an event whose transaction is visible in it was fanned out. The
-- transaction of an event not visible there was still open, or had not begun, when that
-- listener last wrote its checkpoint, and its events stay. While any listener id that ever led
-- (pgobs.leadership) has no checkpoint yet, it would read from the start, and nothing goes.
-- Retire a listener id for good by deleting its rows from pgobs.checkpoints and
-- pgobs.leadership, or it keeps every event it has not read.
--
-- Batches walk events_txid_id from the oldest transaction, resuming after the last key seen, so
-- no batch rereads what an earlier one deleted. The walk stops at the first event younger than
-- the retention: created_at is when its transaction began, and a transaction's id comes with
-- its first write, so events after that one are younger too, except those of a transaction that
-- began long before its first write; they go on a later run. One run at a time removes events
-- (an advisory lock a second run skips the step on, rather than wait); nothing else ever
-- updates, deletes or locks an event row, so no writer or listener waits on these deletes, and
-- each row is deleted by the ctid the batch just read, without a second index lookup.
CREATE FUNCTION pgobs.maintain_events(dry_run boolean, batch_size integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := now() - pgobs.setting_interval('events_retention');
    below_all xid8;     -- every transaction below this is visible in every checkpoint
    none_above xid8;    -- no transaction at or above this is visible in every checkpoint
    after_txid xid8 := '0';
    after_id bigint := 0;
    candidates tid[];
    seen integer;
    stopped boolean;
    last_txid xid8;
    last_id bigint;
    done bigint;
    removed bigint := 0;
BEGIN
    IF cutoff IS NULL THEN
        RETURN 0;  -- events_retention unset: keep every event
    END IF;
    IF NOT dry_run AND NOT pg_try_advisory_xact_lock(2024061503, 1) THEN
        RETURN 0;  -- another run is removing events: leave them to it
    END IF;
    LOOP
        -- Read per batch: checkpoints only move forward, and a listener id may appear.
        SELECT min(pg_snapshot_xmin(c.snapshot)), min(pg_snapshot_xmax(c.snapshot))
        INTO below_all, none_above
        FROM pgobs.checkpoints AS c;
        IF none_above IS NULL OR EXISTS (
            SELECT FROM pgobs.leadership AS l
            WHERE NOT EXISTS (SELECT FROM pgobs.checkpoints AS c
                              WHERE c.listener_id = l.listener_id)
        ) THEN
            RETURN removed;
        END IF;

        SELECT array_agg(b.ctid) FILTER (WHERE NOT b.young_seen AND b.fanned_out),
               count(*), bool_or(b.young_seen),
               (array_agg(b.txid ORDER BY b.txid DESC, b.id DESC)
                   FILTER (WHERE NOT b.young_seen))[1],
               (array_agg(b.id ORDER BY b.txid DESC, b.id DESC)
                   FILTER (WHERE NOT b.young_seen))[1]
        INTO candidates, seen, stopped, last_txid, last_id
        FROM (
            SELECT w.ctid, w.id, w.txid,
                   bool_or(w.created_at >= cutoff) OVER (ORDER BY w.txid, w.id) AS young_seen,
                   w.txid < below_all OR NOT EXISTS (
                       SELECT FROM pgobs.checkpoints AS c
                       WHERE NOT pg_visible_in_snapshot(w.txid, c.snapshot)) AS fanned_out
            FROM (
                SELECT e.ctid, e.id, e.txid, e.created_at FROM pgobs.events AS e
                WHERE e.txid < none_above AND (e.txid, e.id) > (after_txid, after_id)
                ORDER BY e.txid, e.id
                LIMIT batch_size
            ) AS w
        ) AS b;

        IF candidates IS NOT NULL THEN
            -- By ctid, found a moment ago: the rows are not read again through an index.
            IF dry_run THEN
                SELECT count(*) INTO done FROM pgobs.events AS e
                WHERE e.ctid = ANY(candidates)
                  AND NOT EXISTS (SELECT FROM pgobs.jobs AS j WHERE j.event_id = e.id);
            ELSE
                DELETE FROM pgobs.events AS e
                WHERE e.ctid = ANY(candidates)
                  AND NOT EXISTS (SELECT FROM pgobs.jobs AS j WHERE j.event_id = e.id);
                GET DIAGNOSTICS done = ROW_COUNT;
            END IF;
            removed := removed + done;
        END IF;

        EXIT WHEN seen < batch_size OR stopped OR last_txid IS NULL;
        after_txid := last_txid;
        after_id := last_id;
    END LOOP;
    RETURN removed;
END;
$$;

-- Audit rows older than audit_retention, walked by id (rows are written in time order) up to
-- the first younger one, one run at a time. Migration 0008 replaces this step with the trail's
-- partition drops.
CREATE FUNCTION pgobs.maintain_audit(dry_run boolean, batch_size integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := now() - pgobs.setting_interval('audit_retention');
    after_id bigint := 0;
    last_id bigint;
    candidates tid[];
    seen integer;
    done bigint;
    removed bigint := 0;
BEGIN
    IF cutoff IS NULL THEN
        RETURN 0;
    END IF;
    IF NOT dry_run AND NOT pg_try_advisory_xact_lock(2024061503, 2) THEN
        RETURN 0;  -- another run is removing audit rows
    END IF;
    LOOP
        SELECT array_agg(w.ctid) FILTER (WHERE NOT w.young_seen), count(*),
               max(w.id) FILTER (WHERE NOT w.young_seen)
        INTO candidates, seen, last_id
        FROM (
            SELECT a.ctid, a.id, bool_or(a.at >= cutoff) OVER (ORDER BY a.id) AS young_seen
            FROM (SELECT ctid, id, at FROM pgobs.audit WHERE id > after_id ORDER BY id
                  LIMIT batch_size) AS a
        ) AS w;
        done := coalesce(cardinality(candidates), 0);
        IF done > 0 AND NOT dry_run THEN
            DELETE FROM pgobs.audit WHERE ctid = ANY(candidates);
            GET DIAGNOSTICS done = ROW_COUNT;
        END IF;
        removed := removed + done;
        EXIT WHEN seen < batch_size OR coalesce(cardinality(candidates), 0) < seen;
        after_id := last_id;
    END LOOP;
    RETURN removed;
END;
$$;

-- Rows of a table keyed by text with an expires_at (pgobs.dedup, pgobs.cache) past it, walked by
-- (expires_at, key) in batches; a row another session holds is left for the next run.
CREATE FUNCTION pgobs.expire_keyed(tbl regclass, key name, dry_run boolean, batch_size integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    after_at timestamptz := '-infinity';
    after_key text := '';
    keys text[];
    last_at timestamptz;
    done bigint;
    removed bigint := 0;
BEGIN
    LOOP
        EXECUTE format(
            'SELECT array_agg(k ORDER BY expires_at, k), max(expires_at) FROM ('
            '  SELECT %1$I AS k, expires_at FROM %2$s'
            '  WHERE expires_at < now() AND (expires_at, %1$I) > ($1, $2)'
            '  ORDER BY expires_at, %1$I LIMIT $3) AS b', key, tbl)
        INTO keys, last_at USING after_at, after_key, batch_size;
        done := coalesce(cardinality(keys), 0);
        EXIT WHEN done = 0;
        IF NOT dry_run THEN
            EXECUTE format(
                'WITH doomed AS ('
                '  SELECT %1$I FROM %2$s WHERE %1$I = ANY($1) AND expires_at < now()'
                '  FOR UPDATE SKIP LOCKED)'
                'DELETE FROM %2$s AS t USING doomed WHERE t.%1$I = doomed.%1$I', key, tbl)
            USING keys;
            GET DIAGNOSTICS done = ROW_COUNT;
        END IF;
        removed := removed + done;
        EXIT WHEN cardinality(keys) < batch_size;
        after_at := last_at;
        after_key := keys[cardinality(keys)];
    END LOOP;
    RETURN removed;
END;
$$;

-- Dedup fingerprints past expires_at.
CREATE FUNCTION pgobs.maintain_dedup(dry_run boolean, batch_size integer) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pgobs.expire_keyed('pgobs.dedup', 'fingerprint', dry_run, batch_size)
$$;

-- Cached lookups past expires_at.
CREATE FUNCTION pgobs.maintain_cache(dry_run boolean, batch_size integer) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pgobs.expire_keyed('pgobs.cache', 'key', dry_run, batch_size)
$$;

-- Rows of stopped listener instances whose last heartbeat is older than listeners_retention.
CREATE FUNCTION pgobs.maintain_listeners(dry_run boolean, batch_size integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := now() - pgobs.setting_interval('listeners_retention');
    done bigint;
    removed bigint := 0;
BEGIN
    IF cutoff IS NULL THEN
        RETURN 0;
    END IF;
    IF dry_run THEN
        SELECT count(*) INTO removed FROM pgobs.listeners
        WHERE state = 'stopped' AND last_heartbeat < cutoff;
        RETURN removed;
    END IF;
    LOOP
        WITH doomed AS (
            SELECT instance_id FROM pgobs.listeners
            WHERE state = 'stopped' AND last_heartbeat < cutoff
            LIMIT batch_size FOR UPDATE SKIP LOCKED
        )
        DELETE FROM pgobs.listeners AS l USING doomed WHERE l.instance_id = doomed.instance_id;
        GET DIAGNOSTICS done = ROW_COUNT;
        removed := removed + done;
        EXIT WHEN done < batch_size;
    END LOOP;
    RETURN removed;
END;
$$;

-- Dead letters older than dlq_retention; none while it is unset (the default): dead letters
-- are kept until an operator retries or purges them.
CREATE FUNCTION pgobs.maintain_dlq(dry_run boolean, batch_size integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := now() - pgobs.setting_interval('dlq_retention');
    after_at timestamptz := '-infinity';
    after_id bigint := 0;
    ids bigint[];
    last_at timestamptz;
    done bigint;
    removed bigint := 0;
BEGIN
    IF cutoff IS NULL THEN
        RETURN 0;
    END IF;
    LOOP
        SELECT array_agg(d.id ORDER BY d.failed_at, d.id), max(d.failed_at)
        INTO ids, last_at
        FROM (SELECT id, failed_at FROM pgobs.dlq
              WHERE failed_at < cutoff AND (failed_at, id) > (after_at, after_id)
              ORDER BY failed_at, id LIMIT batch_size) AS d;
        done := coalesce(cardinality(ids), 0);
        EXIT WHEN done = 0;
        IF NOT dry_run THEN
            WITH doomed AS (
                SELECT id FROM pgobs.dlq WHERE id = ANY(ids) FOR UPDATE SKIP LOCKED
            )
            DELETE FROM pgobs.dlq AS d USING doomed WHERE d.id = doomed.id;
            GET DIAGNOSTICS done = ROW_COUNT;
        END IF;
        removed := removed + done;
        EXIT WHEN cardinality(ids) < batch_size;
        after_at := last_at;
        after_id := ids[cardinality(ids)];
    END LOOP;
    RETURN removed;
END;
$$;

-- Every retention step, in the caller's transaction, and what each removed (or, with dry_run,
-- would remove). Each step replaces only itself in a later migration (same signature). The
-- steps whose rows workers also write (dedup, cache) run last, so that the row locks a worker
-- could meet are held for the shortest time before the commit. Every setting is checked first:
-- a bad one fails the whole run before anything is removed.
CREATE FUNCTION pgobs.run_maintenance(dry_run boolean DEFAULT false, batch_size integer DEFAULT 10000)
RETURNS TABLE (
    events bigint, audit bigint, listeners bigint, dlq bigint, cache bigint, dedup bigint,
    took interval
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    started timestamptz := clock_timestamp();
    setting_key text;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'pgobs.run_maintenance: batch_size must be at least 1, got %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dry_run IS NULL THEN  -- each step would read NULL its own way
        RAISE EXCEPTION 'pgobs.run_maintenance: dry_run must be true or false, got NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH setting_key IN ARRAY ARRAY['events_retention', 'audit_retention',
                                       'listeners_retention', 'dlq_retention'] LOOP
        PERFORM pgobs.setting_interval(setting_key);
    END LOOP;
    events := pgobs.maintain_events(dry_run, batch_size);
    audit := pgobs.maintain_audit(dry_run, batch_size);
    listeners := pgobs.maintain_listeners(dry_run, batch_size);
    dlq := pgobs.maintain_dlq(dry_run, batch_size);
    cache := pgobs.maintain_cache(dry_run, batch_size);
    dedup := pgobs.maintain_dedup(dry_run, batch_size);
    took := clock_timestamp() - started;
    RETURN NEXT;
END;
$$;

-- The queue per observer, without reading leases or run_at by hand: ready jobs are due (new,
-- or a retry whose backoff has passed) and wait for a worker; running ones are leased, and
-- stalled among them once the lease has passed (the rescuer hands them back); retrying ones
-- wait out their backoff until next_retry_at.
CREATE VIEW pgobs.job_counts AS
SELECT j.observer,
       count(*) FILTER (WHERE j.state = 'available'
                           OR (j.state = 'scheduled' AND j.run_at <= now())) AS ready,
       count(*) FILTER (WHERE j.state = 'running') AS running,
       count(*) FILTER (WHERE j.state = 'running' AND j.leased_until < now()) AS stalled,
       count(*) FILTER (WHERE j.state = 'scheduled' AND j.run_at > now()) AS retrying,
       count(*) AS total,
       now() - min(j.run_at) FILTER (WHERE j.state = 'available'
                                        OR (j.state = 'scheduled' AND j.run_at <= now()))
           AS oldest_ready_age,
       now() - min(j.created_at) AS oldest_age,
       min(j.run_at) FILTER (WHERE j.state = 'scheduled' AND j.run_at > now()) AS next_retry_at
FROM pgobs.jobs AS j
GROUP BY j.observer;

COMMENT ON VIEW pgobs.job_counts IS
    'pending jobs per observer: ready (due, waiting for a worker), running (leased; stalled: '
    'the lease passed, the rescuer hands it back), retrying (waiting out a backoff)';
COMMENT ON COLUMN pgobs.job_counts.oldest_ready_age IS
    'how long the longest-waiting ready job has been due: a growing value means too few workers';
COMMENT ON COLUMN pgobs.job_counts.oldest_age IS 'age of the oldest pending job';
COMMENT ON COLUMN pgobs.job_counts.next_retry_at IS 'when the next retry falls due';

REVOKE ALL ON FUNCTION pgobs.setting(text), pgobs.setting_interval(text),
    pgobs.maintain_events(boolean, integer), pgobs.maintain_audit(boolean, integer),
    pgobs.maintain_dedup(boolean, integer), pgobs.maintain_cache(boolean, integer),
    pgobs.expire_keyed(regclass, name, boolean, integer),
    pgobs.maintain_listeners(boolean, integer), pgobs.maintain_dlq(boolean, integer),
    pgobs.run_maintenance(boolean, integer) FROM PUBLIC;

-- Rights of the roles of 0005, when they exist: operators read the view and the settings,
-- change settings and run maintenance; the leading listener (pgobs_worker) runs maintenance
-- when pg_cron does not, and reads but does not change the settings.
DO $$
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('pgobs_operator', 'pgobs_worker')) = 2 THEN
        GRANT SELECT, INSERT, UPDATE ON pgobs.settings TO pgobs_operator;
        GRANT SELECT ON pgobs.job_counts TO pgobs_operator;
        GRANT EXECUTE ON FUNCTION pgobs.setting(text), pgobs.setting_interval(text),
            pgobs.run_maintenance(boolean, integer) TO pgobs_operator, pgobs_worker;
        REVOKE INSERT, UPDATE, DELETE ON pgobs.settings FROM pgobs_worker;
    END IF;
END;
$$;

-- What each table and column holds, for \d+ and for anyone querying with plain SQL.
COMMENT ON TABLE pgobs.schema_migrations IS 'the migrations applied, by version (pgobs migrate)';

COMMENT ON TABLE pgobs.events IS
    'captured row changes and custom events (pgobs.emit), in (txid, id) order; removed by '
    'pgobs.run_maintenance() once every listener fanned them out and events_retention passed';
COMMENT ON COLUMN pgobs.events.id IS 'the event id jobs, dead letters and the audit trail name';
COMMENT ON COLUMN pgobs.events.txid IS
    'the writing transaction; listeners fan an event out once it is visible in their snapshot';
COMMENT ON COLUMN pgobs.events.entity_type IS
    'what changed: the entity: of observers.yaml (by default the table name)';
COMMENT ON COLUMN pgobs.events.entity_id IS
    'the changed row''s key (the primary key or the columns track() was given), as text';
COMMENT ON COLUMN pgobs.events.event_type IS 'INSERT, UPDATE, DELETE, TRUNCATE or a custom type';
COMMENT ON COLUMN pgobs.events.data IS 'the row after the change (NULL for DELETE)';
COMMENT ON COLUMN pgobs.events.old_data IS 'the row before the change (UPDATE and DELETE)';
COMMENT ON COLUMN pgobs.events.changed_fields IS 'UPDATE: the columns whose value changed';
COMMENT ON COLUMN pgobs.events.tenant IS 'the writer''s pgobs.tenant setting, if it set one';
COMMENT ON COLUMN pgobs.events.actor IS 'the writer''s pgobs.actor setting, if it set one';
COMMENT ON COLUMN pgobs.events.created_at IS 'when the writing transaction began';

COMMENT ON TABLE pgobs.checkpoints IS
    'per listener_id, what the leader has fanned out: every event whose transaction is visible '
    'in snapshot, plus, while a slice is drained, those of target up to (last_txid, event_id)';
COMMENT ON COLUMN pgobs.checkpoints.listener_id IS 'the listener id (pgobs worker --listener-id)';
COMMENT ON COLUMN pgobs.checkpoints.snapshot IS
    'every event of a transaction visible in this snapshot has been fanned out';
COMMENT ON COLUMN pgobs.checkpoints.target IS
    'the snapshot being caught up to while a slice is drained; NULL otherwise';
COMMENT ON COLUMN pgobs.checkpoints.last_txid IS 'transaction of the last event fanned out';
COMMENT ON COLUMN pgobs.checkpoints.event_id IS 'id of the last event fanned out';
COMMENT ON COLUMN pgobs.checkpoints.last_processed_at IS 'created_at of the last event fanned out';
COMMENT ON COLUMN pgobs.checkpoints.updated_at IS 'when the leader last wrote this checkpoint';

COMMENT ON TABLE pgobs.listeners IS
    'one row per listener process (candidate); stopped rows go after listeners_retention';
COMMENT ON COLUMN pgobs.listeners.instance_id IS 'host:pid:random of the process';
COMMENT ON COLUMN pgobs.listeners.listener_id IS 'candidates of one listener_id elect one leader';
COMMENT ON COLUMN pgobs.listeners.state IS
    'initializing, connecting, running, recovering (lost its session) or stopped';
COMMENT ON COLUMN pgobs.listeners.is_leader IS 'whether this process is fanning events out';
COMMENT ON COLUMN pgobs.listeners.last_heartbeat IS
    'written every second; a stale one with state running means the process died';
COMMENT ON COLUMN pgobs.listeners.events_processed IS 'events this process has fanned out';
COMMENT ON COLUMN pgobs.listeners.lag_events IS
    'the leader''s count of committed events not fanned out yet (capped)';
COMMENT ON COLUMN pgobs.listeners.lag_seconds IS 'age of the oldest event not fanned out yet';

COMMENT ON TABLE pgobs.leadership IS
    'per listener_id: its leader lock key and the leader''s proof of life';
COMMENT ON COLUMN pgobs.leadership.lock_key IS
    'the leader holds pg_advisory_lock(2024061501, lock_key)';
COMMENT ON COLUMN pgobs.leadership.leader_pid IS 'backend pid of the leader''s session';
COMMENT ON COLUMN pgobs.leadership.beat_at IS
    'the fan-out loop''s last beat; a standby fences a leader silent for --leader-stale-seconds';

COMMENT ON TABLE pgobs.jobs IS
    'pending action runs, one per event and matching action; deleted when done or '
    'dead-lettered. pgobs.job_counts sums them per observer and state';
COMMENT ON COLUMN pgobs.jobs.event_id IS 'the event (pgobs.events.id) the action runs for';
COMMENT ON COLUMN pgobs.jobs.observer IS 'the observer''s name in observers.yaml';
COMMENT ON COLUMN pgobs.jobs.action_type IS 'webhook, slack, email, database or python';
COMMENT ON COLUMN pgobs.jobs.payload IS
    'the event as JSON for a job retried from the DLQ (its event may be gone); else NULL';
COMMENT ON COLUMN pgobs.jobs.priority IS 'higher runs first among ready jobs';
COMMENT ON COLUMN pgobs.jobs.run_at IS 'when the job is due (a retry: after its backoff)';
COMMENT ON COLUMN pgobs.jobs.max_attempts IS 'attempts before the job is dead-lettered';
COMMENT ON COLUMN pgobs.jobs.locked_by IS 'the worker running it (state running)';
COMMENT ON COLUMN pgobs.jobs.last_error IS 'the last attempt''s error';
COMMENT ON COLUMN pgobs.jobs.errors IS 'every failed attempt: its error, kind and time';
COMMENT ON COLUMN pgobs.jobs.created_at IS 'when the listener created the job';

COMMENT ON TABLE pgobs.dlq IS
    'dead letters: jobs out of attempts or failed permanently, kept until retried (pgobs dlq '
    'retry, SELECT pgobs.retry_dead_letters(ids)) or removed (pgobs dlq purge, dlq_retention)';
COMMENT ON COLUMN pgobs.dlq.job_id IS 'the id the job had in pgobs.jobs';
COMMENT ON COLUMN pgobs.dlq.event_id IS 'the event the action ran for';
COMMENT ON COLUMN pgobs.dlq.observer IS 'the observer''s name in observers.yaml';
COMMENT ON COLUMN pgobs.dlq.action_index IS 'the action''s position in its observer';
COMMENT ON COLUMN pgobs.dlq.action_type IS 'webhook, slack, email, database or python';
COMMENT ON COLUMN pgobs.dlq.event IS 'the whole event, as the action saw it';
COMMENT ON COLUMN pgobs.dlq.payload IS
    'the job''s payload when it had one (a job retried from the DLQ before); NULL otherwise';
COMMENT ON COLUMN pgobs.dlq.priority IS 'the job''s priority, kept for a retry';
COMMENT ON COLUMN pgobs.dlq.attempts IS 'attempts made';
COMMENT ON COLUMN pgobs.dlq.max_attempts IS 'attempts allowed (a retry starts afresh)';
COMMENT ON COLUMN pgobs.dlq.last_error IS 'the last attempt''s error';
COMMENT ON COLUMN pgobs.dlq.error_kind IS
    'transient (out of attempts: retrying later may work) or permanent (e.g. a 4xx answer, '
    'a PermanentError: fix the cause before retrying)';
COMMENT ON COLUMN pgobs.dlq.errors IS 'every attempt''s error, kind and time, oldest first';
COMMENT ON COLUMN pgobs.dlq.created_at IS 'when the job was created';
COMMENT ON COLUMN pgobs.dlq.failed_at IS 'when it was dead-lettered';

COMMENT ON TABLE pgobs.dedup IS 'deduplication fingerprints; expired rows go by run_maintenance()';
COMMENT ON COLUMN pgobs.dedup.fingerprint IS 'what identifies a duplicate';
COMMENT ON COLUMN pgobs.dedup.expires_at IS 'after this the fingerprint no longer deduplicates';
COMMENT ON TABLE pgobs.cache IS 'cached lookups (unlogged); expired rows go by run_maintenance()';
COMMENT ON COLUMN pgobs.cache.key IS 'the lookup and its arguments';
COMMENT ON COLUMN pgobs.cache.value IS 'the cached result';
COMMENT ON COLUMN pgobs.cache.expires_at IS 'after this the entry is not used';

COMMENT ON TABLE pgobs.circuits IS 'circuit breaker state per target, shared by every worker';
COMMENT ON COLUMN pgobs.circuits.target IS 'the endpoint (host) the breaker guards';
COMMENT ON COLUMN pgobs.circuits.state IS
    'closed (calls go through), open (calls are deferred) or half_open (a trial call)';
COMMENT ON COLUMN pgobs.circuits.failures IS 'consecutive failures counted';
COMMENT ON COLUMN pgobs.circuits.successes IS 'consecutive successes counted in half_open';
COMMENT ON COLUMN pgobs.circuits.opened_at IS 'when the circuit last opened';

COMMENT ON TABLE pgobs.audit IS
    'the trail of events and outcomes, searchable (search); rows go after audit_retention';
COMMENT ON COLUMN pgobs.audit.at IS 'when it happened';
COMMENT ON COLUMN pgobs.audit.kind IS 'what the row records (event: an event''s fan-out)';
COMMENT ON COLUMN pgobs.audit.status IS 'the outcome (error: an observer could not judge it)';
COMMENT ON COLUMN pgobs.audit.message IS 'the outcome in words';
COMMENT ON COLUMN pgobs.audit.search IS 'full-text search over the other columns';

COMMENT ON TABLE pgobs.capture_state IS
    'capture''s state within one statement (unlogged, internal): rows live for one statement';

INSERT INTO pgobs.schema_migrations (version) VALUES ('0007');
COMMIT;
