-- Every statement pgobs runs, by name. Python refers to them through pgobs.db.sqlfiles.query().

-- name: migration_lock
SELECT pg_advisory_lock(hashtext('pgobs.migrate'))

-- name: migration_unlock
SELECT pg_advisory_unlock(hashtext('pgobs.migrate'))

-- name: migrations_table_exists
SELECT to_regclass('pgobs.schema_migrations') IS NOT NULL

-- name: applied_migrations
SELECT version FROM pgobs.schema_migrations ORDER BY version

-- name: listener_session_settings
-- The leader's session: notice a dead peer within seconds, never hang on a lock. A fan-out
-- commit need not wait for its WAL flush: jobs and checkpoint are one transaction, so a server
-- crash loses both or neither, and the events are read again. No loss, no double fan-out.
SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3;
SET lock_timeout = '5s'; SET synchronous_commit = off

-- name: claimer_session_settings
-- A claim lost in a server crash only makes its jobs claimable again, which at-least-once
-- delivery allows; completions keep synchronous commit, so a finished job never runs twice.
-- The claim's filter on known actions has no statistics (nor should the hot table pay for an
-- index on it), and the planner, guessing it rare, would scan and sort the whole queue; the
-- state indexes are always the right plan for a LIMITed claim, so the claimer pins them.
SET synchronous_commit = off; SET enable_seqscan = off; SET enable_sort = off

-- name: leader_lock_key
-- The listener id's own lock key, assigned on first use (see pgobs.leadership in 0006). Two
-- candidates that start at once both get the row the first one made.
WITH found AS (
    SELECT lock_key FROM pgobs.leadership WHERE listener_id = %(listener_id)s
), made AS (
    INSERT INTO pgobs.leadership (listener_id)
    SELECT %(listener_id)s WHERE NOT EXISTS (SELECT FROM found)
    ON CONFLICT (listener_id) DO UPDATE SET listener_id = EXCLUDED.listener_id
    RETURNING lock_key
)
SELECT lock_key FROM found UNION ALL SELECT lock_key FROM made

-- name: try_leader_lock
-- The lock and the new leader's first beat in one statement: once the beat names this session,
-- it has the lock. (Before it commits, the beat names the old leader, whose session no longer
-- holds the lock, so no standby can fence the new one in between.)
WITH lock AS MATERIALIZED (
    SELECT pg_try_advisory_lock(2024061501, %(lock_key)s) AS got
), beat AS (
    UPDATE pgobs.leadership AS b SET leader_pid = pg_backend_pid(), beat_at = now()
    FROM lock WHERE lock.got AND b.listener_id = %(listener_id)s
)
SELECT got FROM lock

-- name: leader_beat
-- The leader's fan-out loop proves it is alive, on the session that holds the lock. No row back
-- means the row names another session: this one no longer leads.
UPDATE pgobs.leadership SET beat_at = now()
WHERE listener_id = %(listener_id)s AND leader_pid = pg_backend_pid()
RETURNING 1

-- name: fence_stale_leader
-- A standby ends the leader's session when the leader's fan-out loop has not beaten for
-- stale_s seconds while that session waits on its client: the process is frozen (SIGSTOP, a
-- stalled VM) or cut off. A session busy in a slow statement is left alone, and so is a new
-- leader whose first beat is not visible yet (the beat must name the session holding the lock,
-- and that session must be older than the beat). A statement of the ended session cannot commit
-- any more, so there is never split-brain; its lock frees as its backend exits. ended is NULL
-- when this role may not see the leader's session (another role's, without pg_read_all_stats).
SELECT l.pid, extract(epoch FROM now() - b.beat_at)::float8 AS silent_s,
       CASE WHEN a.wait_event_type = 'Client' THEN pg_terminate_backend(l.pid) END AS ended
FROM pgobs.leadership AS b
JOIN pg_locks AS l
  ON l.locktype = 'advisory' AND l.classid = 2024061501 AND l.objid = b.lock_key::oid
 AND l.objsubid = 2 AND l.granted
 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE b.listener_id = %(listener_id)s
  AND b.leader_pid = l.pid
  AND b.beat_at < now() - make_interval(secs => %(stale_s)s)
  AND (a.backend_start IS NULL  -- hidden from this role: reported, not ended
       OR (a.backend_start <= b.beat_at AND a.wait_event_type = 'Client'))

-- name: load_checkpoint
SELECT snapshot::text, target::text, last_txid::text::bigint, event_id
FROM pgobs.checkpoints WHERE listener_id = %(listener_id)s

-- name: fetch_committed_events
-- The next batch of the slice from the checkpoint's snapshot to `target` (the current snapshot
-- when no slice is being drained; returned in every row): events whose transaction committed
-- since, however old the oldest open transaction is (pgobs.slice_events, pgobs.read_events in
-- 0004). One row with NULL event columns when the slice is empty.
WITH s AS MATERIALIZED (
    SELECT %(snapshot)s::text::pg_snapshot AS prev,
           coalesce(%(target)s::text::pg_snapshot, pg_current_snapshot()) AS cur
)
SELECT s.cur::text AS target, r.id, r.txid::text::bigint AS txid, r.entity_type, r.entity_id,
       r.event_type, r.data, r.old_data, r.changed_fields, r.tenant, r.actor, r.created_at,
       r.idempotency_key, r.size
FROM s LEFT JOIN LATERAL pgobs.read_events(
    s.prev, s.cur, %(txid)s::text::xid8, %(event_id)s, %(limit)s, %(max_bytes)s) AS r ON true

-- name: fan_out
-- One batch's whole write, as one statement on the leader's session (atomic; one round trip):
-- a job per matched action, trail records (every event of trail_event_ids with the observers
-- it matched, and events an observer could not judge), the new checkpoint, and the jobs
-- doorbell (delivered on commit).
-- Jobs come as (event id, action ref, gate); each ref names a row of the actions' catalog, sent
-- once. A job with gate 0 is written; one with gate n only when dedup gate n passes: a 'check'
-- gate claims its fingerprint in pgobs.dedup (new, or expired), unless Redis named a batch as
-- its claimer (claimed_by) and that batch committed (its 'batch:' row); a 'free' gate was
-- claimed in Redis by this batch; a 'skip' gate is a duplicate already. Fingerprints, jobs and
-- checkpoint commit together, so a crash never keeps one without the others. Returns the
-- skipped gates: (event id, observer, fingerprint) of every duplicate, for the trail.
WITH gates AS MATERIALIZED (
    SELECT * FROM unnest(%(gate_fingerprints)b::text[], %(gate_windows)b::float8[],
                         %(gate_modes)b::text[], %(gate_claimed_by)b::text[],
                         %(gate_event_ids)b::bigint[], %(gate_observers)b::text[])
           WITH ORDINALITY AS g(fingerprint, window_s, mode, claimed_by, event_id, observer, n)
), claimed AS (
    INSERT INTO pgobs.dedup AS d (fingerprint, expires_at)
    SELECT g.fingerprint, now() + make_interval(secs => g.window_s) FROM gates AS g
    WHERE g.mode = 'check'
      -- per gate, by primary key: a scan of every live fingerprint per batch cost 9x the fan-out
      AND (g.claimed_by IS NULL
           OR NOT EXISTS (SELECT FROM pgobs.dedup AS b
                          WHERE b.fingerprint = 'batch:' || g.claimed_by
                            AND b.expires_at > now()))
    ON CONFLICT (fingerprint) DO UPDATE SET expires_at = EXCLUDED.expires_at
    WHERE d.expires_at <= now()
    RETURNING d.fingerprint
), passed AS (
    SELECT g.n FROM gates AS g JOIN claimed AS c USING (fingerprint) WHERE g.mode = 'check'
    UNION ALL
    SELECT g.n FROM gates AS g WHERE g.mode = 'free'
), batch AS (
    -- This batch's Redis claims are trusted once it has committed (see pgobs/reliability/dedup).
    INSERT INTO pgobs.dedup AS d (fingerprint, expires_at)
    SELECT 'batch:' || %(batch_id)s::text, now() + make_interval(secs => %(batch_ttl_s)s::float8)
    WHERE %(batch_id)s::text IS NOT NULL
    ON CONFLICT (fingerprint) DO UPDATE SET expires_at = EXCLUDED.expires_at
), new_jobs AS (
    INSERT INTO pgobs.jobs (event_id, observer, action, action_index, action_type, priority,
                            max_attempts)
    SELECT j.event_id, a.observer, a.action, a.action_index, a.action_type, a.priority,
           a.max_attempts
    FROM unnest(%(event_ids)b::bigint[], %(refs)b::int[], %(gates)b::int[])
         WITH ORDINALITY AS j(event_id, ref, gate, n)
    JOIN unnest(%(observers)b::text[], %(actions)b::text[], %(action_indexes)b::int[],
                %(action_types)b::text[], %(priorities)b::smallint[], %(max_attempts)b::int[])
         WITH ORDINALITY AS a(observer, action, action_index, action_type, priority,
                              max_attempts, ref) USING (ref)
    WHERE j.gate = 0 OR j.gate IN (SELECT n FROM passed)
    ORDER BY j.n
    RETURNING event_id, observer
), audited AS (
    INSERT INTO pgobs.trail (kind, status, event_id, observer, entity_type, entity_id,
                             event_type, message)
    SELECT 'event', 'error', a.* FROM unnest(%(audit_event_ids)b::bigint[],
        %(audit_observers)b::text[], %(audit_entity_types)b::text[],
        %(audit_entity_ids)b::text[], %(audit_event_types)b::text[],
        %(audit_messages)b::text[]) AS a
), trailed AS (
    INSERT INTO pgobs.trail (at, kind, status, event_id, entity_type, entity_id, event_type,
                             tenant, actor, observers, data)
    SELECT e.created_at, 'event', CASE WHEN m.observers IS NULL THEN 'received' ELSE 'matched' END,
           e.id, e.entity_type, e.entity_id, e.event_type, e.tenant, e.actor, m.observers,
           CASE WHEN jsonb_typeof(e.data) = 'object' AND pg_column_size(e.data) <= 8192
                THEN e.data ELSE pgobs.trail_data(e.data) END
    FROM pgobs.events AS e
    LEFT JOIN (SELECT event_id, array_agg(DISTINCT observer) AS observers
               FROM new_jobs GROUP BY event_id) AS m ON m.event_id = e.id
    WHERE e.id = ANY(%(trail_event_ids)b::bigint[])
), deduplicated AS (
    -- A duplicate's record, when the trail is on (trail_event_ids names the batch's events).
    INSERT INTO pgobs.trail (kind, status, event_id, entity_type, entity_id, event_type, tenant,
                             actor, observer, message)
    SELECT 'action', 'deduplicated', e.id, e.entity_type, e.entity_id, e.event_type, e.tenant,
           e.actor, g.observer, 'a duplicate within the dedup window (' || g.fingerprint || ')'
    FROM gates AS g JOIN pgobs.events AS e ON e.id = g.event_id
    WHERE g.n NOT IN (SELECT n FROM passed)
      AND g.event_id = ANY(%(trail_event_ids)b::bigint[])
), saved AS (
    INSERT INTO pgobs.checkpoints (listener_id, snapshot, target, last_txid, event_id,
                                   last_processed_at, updated_at)
    VALUES (%(listener_id)s, %(snapshot)s::text::pg_snapshot, %(target)s::text::pg_snapshot,
            %(txid)s::text::xid8, %(event_id)s, %(last_processed_at)s, now())
    ON CONFLICT (listener_id) DO UPDATE
    SET snapshot = EXCLUDED.snapshot, target = EXCLUDED.target, last_txid = EXCLUDED.last_txid,
        event_id = EXCLUDED.event_id, last_processed_at = EXCLUDED.last_processed_at,
        updated_at = now()
    RETURNING 1
), rung AS (
    SELECT pg_notify('pgobs_jobs', '') FROM saved WHERE %(notify)s
)
-- One row with NULLs when nothing was skipped: reading rung's count sends the doorbell always.
SELECT s.event_id, s.observer, s.fingerprint
FROM (SELECT count(*) FROM rung) AS r
LEFT JOIN (SELECT g.event_id, g.observer, g.fingerprint FROM gates AS g
           WHERE g.n NOT IN (SELECT n FROM passed)) AS s ON true

-- name: notify_jobs
SELECT pg_notify('pgobs_jobs', '')

-- name: listener_heartbeat
INSERT INTO pgobs.listeners (instance_id, listener_id, host, pid, state, is_leader,
                             events_processed, lag_events, lag_seconds, last_heartbeat)
VALUES (%(instance_id)s, %(listener_id)s, %(host)s, %(pid)s, %(state)s, %(is_leader)s,
        %(events_processed)s, %(lag_events)s, %(lag_seconds)s, now())
ON CONFLICT (instance_id) DO UPDATE
SET state = EXCLUDED.state, is_leader = EXCLUDED.is_leader,
    events_processed = EXCLUDED.events_processed, lag_events = EXCLUDED.lag_events,
    lag_seconds = EXCLUDED.lag_seconds, last_heartbeat = now()

-- name: retire_stale_listeners
-- Run by the leader: instances of its listener_id that stopped beating (killed) are marked so.
UPDATE pgobs.listeners SET state = 'stopped', is_leader = false
WHERE listener_id = %(listener_id)s AND instance_id <> %(instance_id)s
  AND state <> 'stopped' AND last_heartbeat < now() - interval '10 seconds'

-- name: listener_lag
-- Committed events not yet fanned out (capped), and the age of the oldest one: the rest of the
-- slice being drained, then everything committed since its target (or since the snapshot).
WITH cp AS MATERIALIZED (
    SELECT coalesce(c.snapshot, '3:3:') AS snapshot, c.target,
           CASE WHEN c.target IS NULL THEN '0' ELSE c.last_txid END AS txid,
           CASE WHEN c.target IS NULL THEN 0 ELSE c.event_id END AS event_id,
           pg_current_snapshot() AS cur
    FROM (SELECT 1) AS one
    LEFT JOIN pgobs.checkpoints AS c ON c.listener_id = %(listener_id)s
), pending AS (
    SELECT e.created_at
    FROM cp, pgobs.slice_events(cp.snapshot, coalesce(cp.target, cp.cur), cp.txid, cp.event_id,
                                100000) AS e
    UNION ALL
    SELECT e.created_at
    FROM cp, pgobs.slice_events(cp.target, cp.cur, '0', 0, 100000) AS e
    WHERE cp.target IS NOT NULL
    LIMIT 100000
)
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM pending

-- name: open_event_writers
-- Open transactions, in this database, that have written events (they hold RowExclusiveLock
-- on pgobs.events): their events go out when they commit. Prepared ones have no backend. The
-- start of another role's transaction is visible only with pg_read_all_stats.
SELECT coalesce(a.pid::text, 'none (prepared as ' || quote_literal(p.gid) || ')'),
       current_database(), t.transactionid::text,
       extract(epoch FROM now() - coalesce(a.xact_start, p.prepared))::float8,
       coalesce(a.application_name, '')
FROM pg_locks AS r
JOIN pg_locks AS t
  ON t.locktype = 'transactionid' AND t.virtualtransaction = r.virtualtransaction AND t.granted
LEFT JOIN pg_stat_activity AS a ON a.pid = r.pid
LEFT JOIN pg_prepared_xacts AS p ON p.transaction::text = t.transactionid::text
WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock' AND r.granted
  AND r.relation = 'pgobs.events'::regclass
  AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND r.pid IS DISTINCT FROM pg_backend_pid()
  AND coalesce(a.xact_start, p.prepared) IS NOT NULL
ORDER BY 4 DESC

-- name: track_table
SELECT pgobs.track(%(table)s::regclass, %(entity)s, %(id_column)s)

-- name: untrack_table
SELECT pgobs.untrack(%(table)s::regclass)

-- name: claim_jobs
-- Jobs this worker knows how to run (keys 'observer/action'; '#n' names a job written before
-- actions had identities), due retries first, then available ones by priority; SKIP LOCKED lets
-- any number of workers claim at once. A claim takes a lease and counts a claim, not an attempt:
-- the attempt is counted when the job starts. Both branches read partial indexes that hold only
-- their own state, so a deferred backlog is never scanned; the outer LIMIT stops the second
-- branch from running (or locking) when the first filled the claim. The event rides along (or
-- the payload, for a retried dead letter whose event was purged). = ANY(ARRAY(...)) and
-- LATERAL ... LIMIT 1 pin index lookups: with hash joins a claim scanned whole tables.
WITH claimed AS (
    UPDATE pgobs.jobs AS j
    SET state = 'running', locked_by = %(worker)s,
        leased_until = now() + make_interval(secs => %(lease_s)s),
        attempted_at = NULL, claims = j.claims + 1
    WHERE j.id = ANY(ARRAY(
        SELECT c.id FROM (
            SELECT due.id FROM (
                SELECT s.id FROM pgobs.jobs AS s
                WHERE s.state = 'scheduled' AND s.run_at <= now()
                  AND s.observer || '/' || coalesce(s.action, '#' || s.action_index)
                      = ANY(%(known)s::text[])
                ORDER BY s.run_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED) AS due
            UNION ALL
            SELECT ready.id FROM (
                SELECT a.id FROM pgobs.jobs AS a
                WHERE a.state = 'available'
                  AND a.observer || '/' || coalesce(a.action, '#' || a.action_index)
                      = ANY(%(known)s::text[])
                ORDER BY a.priority DESC, a.id
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED) AS ready
        ) AS c
        LIMIT %(limit)s))
    RETURNING j.id, j.event_id, j.observer, j.action, j.action_index, j.action_type,
              j.attempts, j.max_attempts, j.claims, j.payload
)
SELECT c.id, c.observer, coalesce(c.action, '#' || c.action_index) AS action, c.action_index,
       c.action_type, c.attempts, c.max_attempts, c.claims, c.payload,
       c.event_id, e.entity_type, e.entity_id, e.event_type, e.data, e.old_data,
       e.changed_fields, e.tenant, e.actor, e.created_at,
       -- As received: a compressed value counts its text (stored, it can be 10x smaller).
       CASE WHEN pg_column_compression(e.data) IS NULL THEN coalesce(pg_column_size(e.data), 0)
            ELSE octet_length(e.data::text) END
       + CASE WHEN pg_column_compression(e.old_data) IS NULL
              THEN coalesce(pg_column_size(e.old_data), 0) ELSE octet_length(e.old_data::text) END
       + coalesce(pg_column_size(c.payload), 0) AS size
FROM claimed c
LEFT JOIN LATERAL (
    SELECT * FROM pgobs.events AS ev WHERE ev.id = c.event_id LIMIT 1
) AS e ON true

-- name: write_outcomes
-- Starts and outcomes of a batch in one statement (one round trip, atomic). Every branch
-- touches only jobs still running under this worker's lease and returns the ids it wrote; an id
-- that does not come back was not ours any more (the lease lapsed and the job was rescued),
-- and the caller discards that result. A start sets the attempt it is; completed jobs are
-- deleted; retries wait in 'scheduled' with the error appended; dead letters move to the DLQ in
-- the statement that removes them. Each outcome is a record in pgobs.trail (with its status
-- code and duration), when trail is on, deliveries grouped in batch records (0014); on_failure:
-- log drops always are (nothing else keeps them).
WITH started AS (
    UPDATE pgobs.jobs AS j
    SET attempts = s.attempt, attempted_at = now()
    FROM unnest(%(start_ids)s::bigint[], %(start_attempts)s::int[]) AS s(id, attempt)
    WHERE j.id = s.id AND j.id = ANY(%(start_ids)s::bigint[])
      AND j.locked_by = %(worker)s AND j.state = 'running'
    RETURNING j.id
), completed AS (
    DELETE FROM pgobs.jobs AS j
    USING unnest(%(completed)s::bigint[], %(completed_attempts)s::int[],
                 %(completed_codes)s::int[], %(completed_ms)s::float8[]) AS c(id, attempt, code, ms)
    WHERE j.id = c.id AND j.id = ANY(%(completed)s::bigint[]) AND j.locked_by = %(worker)s
      AND j.state = 'running'
    RETURNING j.id, j.event_id, j.observer, j.action, j.action_type, j.payload, c.attempt,
              c.code, c.ms
), retried AS (
    UPDATE pgobs.jobs AS j
    SET state = CASE WHEN r.delay_s > 0 THEN 'scheduled' ELSE 'available' END,
        locked_by = NULL, leased_until = NULL, attempted_at = NULL, attempts = r.attempt,
        run_at = now() + make_interval(secs => r.delay_s),
        last_error = r.error,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', r.attempt, 'error', r.error, 'kind', 'transient', 'at', now()))
    FROM unnest(%(retry_ids)s::bigint[], %(retry_delays)s::float8[], %(retry_errors)s::text[],
                %(retry_attempts)s::int[], %(retry_codes)s::int[], %(retry_ms)s::float8[])
         AS r(id, delay_s, error, attempt, code, ms)
    WHERE j.id = r.id AND j.id = ANY(%(retry_ids)s::bigint[])
      AND j.locked_by = %(worker)s AND j.state = 'running'
    RETURNING j.id, j.event_id, j.observer, j.action, j.action_type, j.payload, r.attempt,
              r.code, r.ms, j.run_at, r.error
), deferred AS (
    -- Its circuit is open: back to 'scheduled' until the probe time. One that did not run
    -- spends nothing (its claim is taken back too); one that ran and failed while the circuit
    -- opened spent its attempt, which is written with its error, but is never dead-lettered
    -- for it: it runs again once the target is back.
    UPDATE pgobs.jobs AS j
    SET state = 'scheduled', locked_by = NULL, leased_until = NULL, attempted_at = NULL,
        attempts = d.attempt, run_at = now() + make_interval(secs => d.delay_s),
        claims = CASE WHEN d.error IS NULL THEN greatest(j.claims - 1, 0) ELSE j.claims END,
        last_error = coalesce(d.error, j.last_error),
        errors = CASE WHEN d.error IS NULL THEN j.errors
            ELSE j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', d.attempt, 'error', d.error, 'kind', 'transient', 'at', now(),
                'deferred', true)) END
    FROM unnest(%(defer_ids)s::bigint[], %(defer_delays)s::float8[], %(defer_errors)s::text[],
                %(defer_attempts)s::int[]) AS d(id, delay_s, error, attempt)
    WHERE j.id = d.id AND j.id = ANY(%(defer_ids)s::bigint[])
      AND j.locked_by = %(worker)s AND j.state = 'running'
    RETURNING j.id, j.event_id, j.observer, j.action, j.action_type, j.payload, d.attempt,
              j.run_at, coalesce(d.error, 'its circuit is open: waits for the probe') AS error
), failed AS (
    DELETE FROM pgobs.jobs AS j
    USING unnest(%(dead_ids)s::bigint[], %(dead_errors)s::text[], %(dead_kinds)s::text[],
                 %(dead_attempts)s::int[], %(dead_codes)s::int[], %(dead_ms)s::float8[])
         AS r(id, error, kind, attempt, code, ms)
    WHERE j.id = r.id AND j.id = ANY(%(dead_ids)s::bigint[])
      AND j.locked_by = %(worker)s AND j.state = 'running'
    RETURNING j.*, r.error, r.kind, r.attempt, r.code, r.ms
), dead AS (
    INSERT INTO pgobs.dlq (job_id, event_id, observer, action, action_index, action_type, event,
                           payload, priority, attempts, max_attempts, last_error, error_kind,
                           errors, created_at)
    SELECT f.id, f.event_id, f.observer, f.action, f.action_index, f.action_type,
           coalesce((SELECT to_jsonb(e) - 'txid' FROM pgobs.events e WHERE e.id = f.event_id),
                    f.payload, '{}'::jsonb),
           f.payload, f.priority, f.attempt, f.max_attempts, f.error, f.kind,
           f.errors || jsonb_build_array(jsonb_build_object(
               'attempt', f.attempt, 'error', f.error, 'kind', f.kind, 'at', now())),
           f.created_at
    FROM failed f
    RETURNING job_id, observer
), dropped AS (
    DELETE FROM pgobs.jobs AS j
    USING unnest(%(drop_ids)s::bigint[], %(drop_errors)s::text[], %(drop_kinds)s::text[],
                 %(drop_attempts)s::int[], %(drop_codes)s::int[], %(drop_ms)s::float8[])
         AS r(id, error, kind, attempt, code, ms)
    WHERE j.id = r.id AND j.id = ANY(%(drop_ids)s::bigint[])
      AND j.locked_by = %(worker)s AND j.state = 'running'
    RETURNING j.id, j.event_id, j.observer, j.action, j.action_type, j.payload, r.attempt,
              r.code, r.ms, r.error
), outcomes AS (
    SELECT 'delivered' AS status, id, event_id, observer, action, action_type, payload, attempt,
           code, ms, NULL::timestamptz AS next_run_at, NULL::text AS message
    FROM completed WHERE %(trail)s
    UNION ALL
    SELECT 'retried', id, event_id, observer, action, action_type, payload, attempt, code, ms,
           run_at, error
    FROM retried WHERE %(trail)s
    UNION ALL
    SELECT 'failed', id, event_id, observer, action, action_type, payload, attempt, code, ms,
           NULL, error
    FROM failed WHERE %(trail)s
    UNION ALL
    SELECT 'deferred', id, event_id, observer, action, action_type, payload, attempt, NULL,
           NULL, run_at, error
    FROM deferred WHERE %(trail)s
    UNION ALL
    SELECT 'dropped', id, event_id, observer, action, action_type, payload, attempt, code, ms,
           NULL, error
    FROM dropped
), enveloped AS (
    -- The envelope from the event, or from the payload of a retried dead letter whose event
    -- was purged.
    SELECT o.*, coalesce(e.entity_type, o.payload ->> 'entity_type') AS entity_type,
           coalesce(e.entity_id, o.payload ->> 'entity_id') AS entity_id,
           coalesce(e.event_type, o.payload ->> 'event_type') AS event_type,
           coalesce(e.tenant, o.payload ->> 'tenant') AS tenant,
           coalesce(e.actor, o.payload ->> 'actor') AS actor
    FROM outcomes AS o
    LEFT JOIN LATERAL (
        SELECT ev.entity_type, ev.entity_id, ev.event_type, ev.tenant, ev.actor
        FROM pgobs.events AS ev WHERE ev.id = o.event_id LIMIT 1
    ) AS e ON true
), trailed AS (
    INSERT INTO pgobs.trail (kind, status, event_id, job_id, entity_type, entity_id, event_type,
                             tenant, actor, observer, action, action_type, attempt, status_code,
                             duration_ms, next_run_at, message)
    SELECT 'action', o.status, o.event_id, o.id, o.entity_type, o.entity_id, o.event_type,
           o.tenant, o.actor, o.observer, o.action, o.action_type, o.attempt, o.code, o.ms,
           o.next_run_at, o.message
    FROM enveloped AS o WHERE o.status <> 'delivered'
), batched AS (
    -- Deliveries, most of the trail: one record per observer, action and envelope, its jobs in
    -- arrays (0014; pgobs.trail_records has a row per job).
    INSERT INTO pgobs.trail (kind, status, entity_type, event_type, tenant, actor, observer,
                             action, action_type, batch_event_ids, batch_job_ids,
                             batch_entity_ids, batch_attempts, batch_status_codes,
                             batch_durations_ms, batch_terms)
    SELECT 'action', 'delivered', o.entity_type, o.event_type, o.tenant, o.actor, o.observer,
           o.action, o.action_type, array_agg(o.event_id ORDER BY o.id),
           array_agg(o.id ORDER BY o.id), array_agg(o.entity_id ORDER BY o.id),
           array_agg(o.attempt ORDER BY o.id), array_agg(o.code ORDER BY o.id),
           array_agg(o.ms ORDER BY o.id),
           -- the jobs' own terms, as pgobs.trail_terms spells them
           array_agg('event_id=' || o.event_id) FILTER (WHERE o.event_id IS NOT NULL)
           || array_agg('job_id=' || o.id)
           || array_agg('entity_id=' || o.entity_id) FILTER (WHERE o.entity_id IS NOT NULL)
           || array_agg(DISTINCT 'attempt=' || o.attempt) FILTER (WHERE o.attempt IS NOT NULL)
           || array_agg(DISTINCT 'status_code=' || o.code) FILTER (WHERE o.code IS NOT NULL)
    FROM enveloped AS o WHERE o.status = 'delivered'
    GROUP BY o.entity_type, o.event_type, o.tenant, o.actor, o.observer, o.action,
             o.action_type
)
SELECT id, NULL::text FROM started
UNION ALL SELECT id, NULL FROM completed
UNION ALL SELECT id, NULL FROM retried
UNION ALL SELECT id, NULL FROM deferred
UNION ALL SELECT job_id, observer FROM dead
UNION ALL SELECT id, NULL FROM dropped

-- name: extend_leases
-- Returns the ids still ours: a missing one lost its lease and is stopped by the caller.
UPDATE pgobs.jobs SET leased_until = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY(%(ids)s::bigint[]) AND locked_by = %(worker)s AND state = 'running'
RETURNING id

-- name: release_jobs
-- Graceful shutdown: claimed jobs that never started go back as they were (no attempt was
-- counted, and the claim is taken back too).
UPDATE pgobs.jobs
SET state = 'available', locked_by = NULL, leased_until = NULL, claims = greatest(claims - 1, 0)
WHERE id = ANY(%(ids)s::bigint[]) AND locked_by = %(worker)s AND state = 'running'
  AND attempted_at IS NULL
RETURNING id

-- name: dead_letter_expired_jobs
-- A lease that ran out means its worker died or stalled. A job it had started spent that
-- attempt: on its last one it goes to the DLQ here. (A job claimed again after such a rescue
-- has its start written before it runs, so one that kills its worker does spend attempts.)
WITH failed AS (
    DELETE FROM pgobs.jobs AS j
    WHERE j.id = ANY(ARRAY(
        SELECT id FROM pgobs.jobs
        WHERE state = 'running' AND leased_until < now()
          AND attempted_at IS NOT NULL AND attempts >= max_attempts
        LIMIT 1000
        FOR UPDATE SKIP LOCKED))
    RETURNING j.*
), dead AS (
    INSERT INTO pgobs.dlq (job_id, event_id, observer, action, action_index, action_type, event,
                           payload, priority, attempts, max_attempts, last_error, error_kind, errors,
                           created_at)
    SELECT f.id, f.event_id, f.observer, f.action, f.action_index, f.action_type,
           coalesce((SELECT to_jsonb(e) - 'txid' FROM pgobs.events e WHERE e.id = f.event_id),
                    f.payload, '{}'::jsonb),
           f.payload, f.priority, f.attempts, f.max_attempts, m.message, 'transient',
           f.errors || jsonb_build_array(jsonb_build_object(
               'attempt', f.attempts, 'error', m.message, 'kind', 'transient', 'at', now(),
               'worker', f.locked_by)),
           f.created_at
    FROM failed f
    CROSS JOIN LATERAL (SELECT
        'lease expired on the last attempt: the worker running it died or stalled' AS message) AS m
    RETURNING job_id, event_id, observer, action, action_type, attempts, last_error, event
), trailed AS (
    INSERT INTO pgobs.trail (kind, status, event_id, job_id, entity_type, entity_id, event_type,
                             tenant, actor, observer, action, action_type, attempt, message)
    SELECT 'action', 'failed', d.event_id, d.job_id, d.event ->> 'entity_type',
           d.event ->> 'entity_id', d.event ->> 'event_type', d.event ->> 'tenant',
           d.event ->> 'actor', d.observer, d.action, d.action_type, d.attempts, d.last_error
    FROM dead AS d WHERE %(trail)s
)
SELECT observer FROM dead

-- name: rescue_expired_jobs
-- The other expired leases: the job is claimable again. One that had started spent its attempt
-- and gets the error in its history; one that never started spent nothing.
UPDATE pgobs.jobs AS j
SET state = 'available', locked_by = NULL, leased_until = NULL, attempted_at = NULL,
    last_error = CASE WHEN j.attempted_at IS NOT NULL
        THEN 'lease expired: the worker running it died or stalled' ELSE j.last_error END,
    errors = CASE WHEN j.attempted_at IS NOT NULL
        THEN j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'error', 'lease expired: the worker running it died or stalled',
            'kind', 'transient', 'at', now(), 'worker', j.locked_by))
        ELSE j.errors END
WHERE j.id = ANY(ARRAY(
    SELECT id FROM pgobs.jobs
    WHERE state = 'running' AND leased_until < now()
    LIMIT 1000
    FOR UPDATE SKIP LOCKED))
RETURNING id

-- name: register_worker
-- The actions this worker runs, refreshed with its leases (see pgobs.workers in 0003).
INSERT INTO pgobs.workers (worker_id, host, pid, actions)
VALUES (%(worker)s, %(host)s, %(pid)s, %(actions)s)
ON CONFLICT (worker_id) DO UPDATE SET actions = EXCLUDED.actions, last_seen = now()

-- name: unregister_worker
-- A stopped worker's row stays: the actions it knew count as known for a while after (a
-- restart is not a removal); rows a day old go in dead_letter_unknown_actions.
UPDATE pgobs.workers SET last_seen = now() WHERE worker_id = %(worker)s

-- name: dead_letter_unknown_actions
-- Jobs whose action no worker, running or stopped, has known for after_s: removed from the
-- config for good (in a rolling deploy or a restart, a worker that knows it was seen lately).
-- Only while some worker is running (seen within after_s), and only jobs due for after_s.
WITH gone AS (
    DELETE FROM pgobs.workers WHERE last_seen < now() - interval '1 day'
), known AS (
    SELECT DISTINCT unnest(actions) AS action_key FROM pgobs.workers
    WHERE last_seen > now() - make_interval(secs => %(after_s)s)
), failed AS (
    DELETE FROM pgobs.jobs AS j
    WHERE j.id = ANY(ARRAY(
        SELECT id FROM pgobs.jobs AS q
        WHERE q.state IN ('available', 'scheduled')
          AND q.run_at < now() - make_interval(secs => %(after_s)s)
          AND EXISTS (SELECT 1 FROM known)
          AND NOT EXISTS (SELECT 1 FROM known WHERE known.action_key =
                          q.observer || '/' || coalesce(q.action, '#' || q.action_index))
        LIMIT 1000
        FOR UPDATE SKIP LOCKED))
    RETURNING j.*
), dead AS (
    INSERT INTO pgobs.dlq (job_id, event_id, observer, action, action_index, action_type, event,
                           payload, priority, attempts, max_attempts, last_error, error_kind, errors,
                           created_at)
    SELECT f.id, f.event_id, f.observer, f.action, f.action_index, f.action_type,
           coalesce((SELECT to_jsonb(e) - 'txid' FROM pgobs.events e WHERE e.id = f.event_id),
                    f.payload, '{}'::jsonb),
           f.payload, f.priority, f.attempts, f.max_attempts, m.message, 'permanent',
           f.errors || jsonb_build_array(jsonb_build_object(
               'attempt', f.attempts, 'error', m.message, 'kind', 'permanent', 'at', now())),
           f.created_at
    FROM failed f
    CROSS JOIN LATERAL (SELECT 'action ' || coalesce(f.action, '#' || f.action_index)
        || ' of observer ' || f.observer || ' is in no running worker''s config: it was removed or '
        'renamed; restore it in observers.yaml, then pgobs dlq retry' AS message) AS m
    RETURNING job_id, event_id, observer, action, action_type, attempts, last_error, event
), trailed AS (
    INSERT INTO pgobs.trail (kind, status, event_id, job_id, entity_type, entity_id, event_type,
                             tenant, actor, observer, action, action_type, attempt, message)
    SELECT 'action', 'failed', d.event_id, d.job_id, d.event ->> 'entity_type',
           d.event ->> 'entity_id', d.event ->> 'event_type', d.event ->> 'tenant',
           d.event ->> 'actor', d.observer, d.action, d.action_type, d.attempts, d.last_error
    FROM dead AS d WHERE %(trail)s
)
SELECT observer FROM dead

-- name: cache_invalidate
DELETE FROM pgobs.cache WHERE key = ANY(%(keys)s)

-- name: dlq_list
-- Newest first, a page at a time; `after` keeps only those that failed since a moment.
SELECT id, observer, coalesce(action, '#' || action_index) AS action, action_index, action_type,
       event_id, event->>'entity_type' AS entity_type, event->>'entity_id' AS entity_id,
       attempts, max_attempts, error_kind, last_error, failed_at
FROM pgobs.dlq
WHERE (%(observer)s::text IS NULL OR observer = %(observer)s)
  AND (%(after)s::timestamptz IS NULL OR failed_at > %(after)s)
ORDER BY failed_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: dlq_show
SELECT to_jsonb(d) FROM pgobs.dlq AS d WHERE d.id = %(id)s

-- name: dlq_remove
DELETE FROM pgobs.dlq WHERE id = %(id)s RETURNING id

-- name: dlq_stats_by_error
-- Dead letters grouped by their last error's first line (the same failure, whatever the job).
SELECT error_kind, left(split_part(coalesce(last_error, ''), E'\n', 1), 200) AS error,
       count(*), min(failed_at), max(failed_at)
FROM pgobs.dlq
GROUP BY 1, 2
ORDER BY count(*) DESC, 2
LIMIT %(limit)s

-- name: dlq_select_ids
-- The dead letters to retry, and whether each is past its attempts: retried from the DLQ
-- before and failed again, so its history counts more attempts than max_attempts allows
-- (a retry needs --force then: something is still wrong).
SELECT d.id, (SELECT count(*) FROM jsonb_array_elements(d.errors) AS e WHERE e ? 'attempt')
             > d.max_attempts AS past_max
FROM pgobs.dlq AS d
WHERE (%(observer)s::text IS NULL OR d.observer = %(observer)s)
  AND (%(id)s::bigint IS NULL OR d.id = %(id)s)
ORDER BY d.id

-- name: dlq_retry
-- Back to the queue with fresh attempts (pgobs.retry_dead_letters in 0005: the operator role
-- may move dead letters back, not write jobs of its own).
SELECT id FROM pgobs.retry_dead_letters(%(ids)s::bigint[]) AS id

-- name: dlq_stats
SELECT count(*), count(*) FILTER (WHERE error_kind = 'transient'),
       count(*) FILTER (WHERE error_kind = 'permanent'), min(failed_at), max(failed_at)
FROM pgobs.dlq

-- name: dlq_stats_by_observer
SELECT observer, count(*), count(*) FILTER (WHERE error_kind = 'transient'),
       count(*) FILTER (WHERE error_kind = 'permanent'), min(failed_at), max(failed_at)
FROM pgobs.dlq
GROUP BY observer
ORDER BY count(*) DESC, observer

-- name: dlq_count_older
SELECT count(*) FROM pgobs.dlq
WHERE failed_at < now() - %(age)s AND (%(observer)s::text IS NULL OR observer = %(observer)s)

-- name: dlq_purge
DELETE FROM pgobs.dlq
WHERE failed_at < now() - %(age)s AND (%(observer)s::text IS NULL OR observer = %(observer)s)

-- name: wake_lock_session_settings
-- The wake-up lock's session waits as long as writers that skipped NOTIFY stay open.
SET lock_timeout = 0; SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0

-- name: take_wake_lock
-- The leader waits: hold the wake-up lock (see pgobs.wake_listeners in 0004), which waits for
-- every writer that found it free and skipped NOTIFY to end, then wake every leader once.
SELECT pg_advisory_lock(2024061502, 0), pg_notify('pgobs_events', '')

-- name: release_wake_lock
-- The leader reads on: writers may skip NOTIFY.
SELECT pg_advisory_unlock_all()

-- name: cache_get
-- An enrichment cache entry, unless it has expired (maintenance deletes those).
SELECT value FROM pgobs.cache WHERE key = %(key)s AND expires_at > now()

-- name: cache_set
INSERT INTO pgobs.cache (key, value, expires_at)
VALUES (%(key)s, %(value)s::jsonb, now() + make_interval(secs => %(ttl_s)s))
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at

-- name: run_maintenance
-- Every retention step of migration 0007, in one transaction; one row of what each removed.
SELECT events, audit, listeners, dlq, cache, dedup, extract(epoch FROM took)::float8 AS took_s
FROM pgobs.run_maintenance(%(dry_run)s, %(batch_size)s)

-- name: maintenance_plan
-- Whether the leading listener runs maintenance itself (pg_cron does not), and how often.
SELECT pgobs.setting('maintenance_runner'),
       extract(epoch FROM pgobs.setting_interval('maintenance_interval'))::float8

-- name: set_maintenance_runner
UPDATE pgobs.settings SET value = %(runner)s WHERE key = 'maintenance_runner'

-- name: cron_database
-- The database pg_cron runs its jobs from; NULL when the pg_cron library is not loaded.
SELECT current_setting('cron.database_name', true), current_database()

-- name: cron_installed
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron')

-- name: cron_schedule
-- By name: scheduling the same name again replaces its schedule and command (idempotent).
SELECT cron.schedule_in_database(%(job)s, %(schedule)s, %(command)s, %(database)s)

-- name: cron_job
SELECT jobid, schedule FROM cron.job WHERE jobname = %(job)s AND username = current_user

-- name: cron_unschedule
SELECT cron.unschedule(%(jobid)s)

-- name: fleet_gauges
-- The fleet-wide gauges (pgobs.observability.fleet), read once per interval by a leading
-- listener or by `pgobs metrics`: rows of (kind, name, state, value, age in seconds).
-- jobs: per observer and state, with the oldest job's age; dlq: dead letters per observer;
-- heartbeat: the age of the newest heartbeat of each listener id's candidates that have not
-- stopped (it grows when all of them died); lag: each leader's last reported lag in seconds;
-- leaders: each listener id's running leaders, over every candidate row (stopped ones too, so
-- an id whose candidates all stopped cleanly shows 0 until maintenance retires its rows).
-- Only tables pgobs_operator may read, so `pgobs metrics` works with that role.
SELECT 'jobs', observer, state, count(*)::float8,
       extract(epoch FROM now() - min(created_at))::float8
FROM pgobs.jobs GROUP BY observer, state
UNION ALL
SELECT 'dlq', observer, '', count(*)::float8, 0 FROM pgobs.dlq GROUP BY observer
UNION ALL
SELECT 'heartbeat', listener_id, '', extract(epoch FROM now() - max(last_heartbeat))::float8, 0
FROM pgobs.listeners WHERE state <> 'stopped' GROUP BY listener_id
UNION ALL
SELECT 'lag', listener_id, '', max(lag_seconds), 0
FROM pgobs.listeners WHERE is_leader AND state <> 'stopped' GROUP BY listener_id
UNION ALL
SELECT 'leaders', listener_id, '',
       (count(*) FILTER (WHERE is_leader AND state = 'running'))::float8, 0
FROM pgobs.listeners GROUP BY listener_id

-- name: status_listeners
-- Listener instances for `pgobs status`: stopped ones too, so a listener id whose every
-- instance stopped shows as one without a leader (pgobs.run_maintenance removes old rows).
SELECT l.listener_id, l.instance_id, l.host, l.pid, l.state, l.is_leader,
       extract(epoch FROM now() - l.last_heartbeat)::float8 AS heartbeat_age_s,
       l.events_processed, l.started_at, l.lag_events, l.lag_seconds
FROM pgobs.listeners AS l
WHERE %(listener_id)s::text IS NULL OR l.listener_id = %(listener_id)s
ORDER BY l.listener_id, l.is_leader DESC, l.state = 'stopped', l.started_at

-- name: status_jobs
-- Jobs per observer by state: ready (available), running (leased), retrying (scheduled: waiting
-- out a backoff), and the age of the oldest.
SELECT observer,
       count(*) FILTER (WHERE state = 'available') AS ready,
       count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'scheduled') AS retrying,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_s
FROM pgobs.jobs
GROUP BY observer
ORDER BY observer

-- name: status_open_circuits
-- Whole rows, so columns a later migration adds show up without a change here.
SELECT to_jsonb(c) FROM pgobs.circuits AS c WHERE c.state <> 'closed' ORDER BY c.target

-- name: status_sinks
-- Each sink the trail ships to: its counts and how long ago its cursor last moved.
SELECT sink, shipped, rejected, extract(epoch FROM now() - updated_at)::float8
FROM pgobs.trail_shipping ORDER BY sink

-- name: debug_event
SELECT id, entity_type, event_type, data, entity_id, old_data, changed_fields, tenant, actor,
       created_at, txid::text::bigint AS txid
FROM pgobs.events WHERE id = %(id)s

-- name: debug_event_fanned_out
-- Per listener id: whether its checkpoint has passed the event (see pgobs.checkpoints in 0004:
-- visible in the snapshot, or within the slice being drained up to (last_txid, event_id)).
SELECT c.listener_id,
       pg_visible_in_snapshot(e.txid, c.snapshot)
       OR (c.target IS NOT NULL AND pg_visible_in_snapshot(e.txid, c.target)
           AND (e.txid, e.id) <= (c.last_txid, c.event_id)) AS fanned_out
FROM pgobs.events AS e CROSS JOIN pgobs.checkpoints AS c
WHERE e.id = %(id)s
ORDER BY c.listener_id

-- name: debug_event_jobs
-- An operator's look at one event: jobs has no index on event_id (the hot paths never need
-- one), so this scans the queue; fine for a debugging command, never run by workers.
SELECT id, observer, coalesce(action, '#' || action_index) AS action, action_type, state,
       attempts, max_attempts, run_at, locked_by, last_error, errors
FROM pgobs.jobs WHERE event_id = %(id)s
ORDER BY observer, action_index, id

-- name: debug_event_dlq
SELECT id, observer, coalesce(action, '#' || action_index) AS action, action_type, attempts,
       max_attempts, error_kind, last_error, errors, failed_at
FROM pgobs.dlq WHERE event_id = %(id)s
ORDER BY observer, action_index, id

-- name: debug_event_audit
SELECT at, kind, status, observer, action_type, message
FROM pgobs.audit WHERE event_id = %(id)s
ORDER BY at, id

-- name: trail_exists
SELECT to_regclass('pgobs.trail_records') IS NOT NULL

-- name: debug_event_trail
-- Whole rows, so this reads the trail whatever columns it grows; the event's records found by
-- the terms index (batch records hold many events).
SELECT to_jsonb(t) - 'record_terms' - 'terms' - 'search'
FROM pgobs.trail_records AS t
WHERE t.record_terms @> ARRAY['event_id=' || %(id)s::bigint] AND t.event_id = %(id)s
ORDER BY t.at, t.id, t.seq

-- name: recent_events
SELECT id, created_at, entity_type, entity_id, event_type
FROM pgobs.events
WHERE (%(entity_type)s::text IS NULL OR entity_type = %(entity_type)s)
  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: circuit_sync
-- A worker's calls per circuit since its last report, added to the fleet's counts, and the
-- state of every circuit it knows, in one round trip (about once a second, at once after a
-- failure). The counts are a sliding window of two buckets (see 0009): the bucket before counts
-- for the part of it still inside the window. A closed circuit opens when, in the window, at
-- least min_requests calls were made and at least threshold of them failed; its probe time is
-- open_s away. Rows are locked in target order, so concurrent reports never deadlock. A report
-- for an open or half-open circuit adds nothing: those calls began before it opened. `tripped`
-- says this report opened it (and NOTIFYs the fleet). Circuits met for the first time are
-- created, closed.
WITH r AS MATERIALIZED (
    SELECT * FROM unnest(%(targets)s::text[], %(requests)s::int[], %(failures)s::int[],
                         %(thresholds)s::float8[], %(min_requests)s::int[],
                         %(window_s)s::float8[], %(open_s)s::float8[], %(errors)s::text[])
         AS r(target, requests, failures, threshold, min_requests, window_s, open_s, error)
), cur AS MATERIALIZED (
    SELECT c.target, c.requests, c.failures, c.prev_requests, c.prev_failures, c.bucket_start
    FROM pgobs.circuits AS c
    WHERE c.target = ANY(%(targets)s::text[]) AND c.state = 'closed'
    ORDER BY c.target
    FOR UPDATE
), rolled AS (
    SELECT r.*, n.*
    FROM cur AS c
    JOIN r USING (target)
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM now() - c.bucket_start)::float8 / r.window_s AS age) AS a
    CROSS JOIN LATERAL (SELECT
        CASE WHEN a.age >= 2 THEN 0 WHEN a.age >= 1 THEN c.requests ELSE c.prev_requests END
            AS new_prev_requests,
        CASE WHEN a.age >= 2 THEN 0 WHEN a.age >= 1 THEN c.failures ELSE c.prev_failures END
            AS new_prev_failures,
        CASE WHEN a.age >= 1 THEN 0 ELSE c.requests END + r.requests AS new_requests,
        CASE WHEN a.age >= 1 THEN 0 ELSE c.failures END + r.failures AS new_failures,
        CASE WHEN a.age >= 2 THEN now()
             WHEN a.age >= 1 THEN c.bucket_start + make_interval(secs => r.window_s)
             ELSE c.bucket_start END AS new_bucket_start) AS n
), judged AS (
    SELECT k.*, k.failures > 0 AND w.requests >= k.min_requests AND w.requests > 0
                AND w.failures >= k.threshold * w.requests AS trips
    FROM rolled AS k
    CROSS JOIN LATERAL (SELECT greatest(0.0, 1.0 - extract(epoch FROM now() - k.new_bucket_start)
                                                   ::float8 / k.window_s) AS weight) AS x
    CROSS JOIN LATERAL (SELECT k.new_requests + k.new_prev_requests * x.weight AS requests,
                               k.new_failures + k.new_prev_failures * x.weight AS failures) AS w
), updated AS (
    UPDATE pgobs.circuits AS c
    SET requests = j.new_requests, failures = j.new_failures,
        prev_requests = j.new_prev_requests, prev_failures = j.new_prev_failures,
        bucket_start = j.new_bucket_start, window_s = j.window_s,
        state = CASE WHEN j.trips THEN 'open' ELSE 'closed' END,
        opened_at = CASE WHEN j.trips THEN now() ELSE c.opened_at END,
        open_s = CASE WHEN j.trips THEN j.open_s ELSE c.open_s END,
        probe_at = CASE WHEN j.trips THEN now() + make_interval(secs => j.open_s)
                        ELSE c.probe_at END,
        failed_probes = CASE WHEN j.trips THEN 0 ELSE c.failed_probes END,
        successes = 0,
        last_error = coalesce(j.error, c.last_error),
        updated_at = now()
    FROM judged AS j
    WHERE c.target = j.target
    RETURNING c.target, c.state, c.requests, c.failures, c.prev_requests, c.prev_failures,
              c.bucket_start, c.window_s, c.open_s, c.probe_at, c.probe_by, c.probe_until,
              j.trips
), made AS (
    INSERT INTO pgobs.circuits (target, requests, failures, window_s, last_error)
    SELECT t.target, coalesce(r.requests, 0), coalesce(r.failures, 0),
           coalesce(r.window_s, 30), r.error
    FROM unnest(%(known)s::text[]) AS t(target)
    LEFT JOIN r USING (target)
    WHERE NOT EXISTS (SELECT FROM pgobs.circuits AS c WHERE c.target = t.target)
    ORDER BY t.target
    ON CONFLICT (target) DO NOTHING
), notified AS (
    -- The other workers learn of an opening at once (delivered on commit), with no round trip
    -- of its own; the outer query reads this CTE so that it runs.
    SELECT pg_notify('pgobs_circuits', '') FROM updated WHERE trips LIMIT 1
)
SELECT s.target, s.state,
       CASE WHEN e.age < 1 THEN s.requests + s.prev_requests * (1 - e.age)
            WHEN e.age < 2 THEN s.requests * (2 - e.age) ELSE 0 END::float8 AS requests,
       CASE WHEN e.age < 1 THEN s.failures + s.prev_failures * (1 - e.age)
            WHEN e.age < 2 THEN s.failures * (2 - e.age) ELSE 0 END::float8 AS failures,
       coalesce(extract(epoch FROM CASE s.state WHEN 'open' THEN s.probe_at
                                                ELSE s.probe_until END - now()), 0)::float8
           AS wait_s,
       s.open_s, coalesce(s.probe_by = %(worker)s, false) AS ours, s.tripped
FROM (
    SELECT u.target, u.state, u.requests, u.failures, u.prev_requests, u.prev_failures,
           u.bucket_start, u.window_s, u.open_s, u.probe_at, u.probe_by, u.probe_until,
           u.trips AS tripped
    FROM updated AS u
    UNION ALL
    SELECT c.target, c.state, c.requests, c.failures, c.prev_requests, c.prev_failures,
           c.bucket_start, c.window_s, c.open_s, c.probe_at, c.probe_by, c.probe_until, false
    FROM pgobs.circuits AS c
    WHERE c.target = ANY(%(known)s::text[])
      AND NOT EXISTS (SELECT FROM updated AS u WHERE u.target = c.target)
) AS s
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM now() - s.bucket_start)::float8 / s.window_s AS age) AS e
WHERE (SELECT count(*) FROM notified) >= 0

-- name: circuit_take_probe
-- The one probe of the whole fleet: granted to the first worker that asks once the probe time
-- has come (or once the probe granted before it ran out of time: its worker died). No row back:
-- another worker probes, or the circuit is not due. `was` is the state before.
WITH old AS MATERIALIZED (
    SELECT target, state FROM pgobs.circuits WHERE target = %(target)s FOR UPDATE
)
UPDATE pgobs.circuits AS c
SET state = 'half_open', probe_by = %(worker)s,
    probe_until = now() + make_interval(secs => %(lease_s)s), updated_at = now()
FROM old
WHERE c.target = old.target
  AND ((old.state = 'open' AND c.probe_at <= now())
       OR (old.state = 'half_open' AND (c.probe_by IS NULL OR c.probe_until < now())))
RETURNING old.state AS was

-- name: circuit_probe_done
-- The probe's result, from the worker it was granted to (a reset or another grant since makes
-- this a no-op: no row back). A good probe closes the circuit once success_threshold of them
-- succeeded in a row (counts start afresh), else frees the probe for the next one; a failed one
-- opens it again for twice as long, up to max_open_s.
UPDATE pgobs.circuits AS c
SET state = CASE WHEN NOT %(ok)s THEN 'open'
                 WHEN c.successes + 1 >= %(success_threshold)s THEN 'closed'
                 ELSE 'half_open' END,
    successes = CASE WHEN %(ok)s AND c.successes + 1 < %(success_threshold)s
                     THEN c.successes + 1 ELSE 0 END,
    open_s = CASE WHEN %(ok)s THEN c.open_s
                  ELSE least(greatest(c.open_s, 0.001) * 2, %(max_open_s)s) END,
    probe_at = CASE WHEN %(ok)s THEN c.probe_at
                    ELSE now() + make_interval(secs => least(greatest(c.open_s, 0.001) * 2,
                                                             %(max_open_s)s)) END,
    failed_probes = c.failed_probes + CASE WHEN %(ok)s THEN 0 ELSE 1 END,
    requests = 0, failures = 0, prev_requests = 0, prev_failures = 0, bucket_start = now(),
    probe_by = NULL, probe_until = NULL,
    last_error = coalesce(%(error)s, c.last_error),
    updated_at = now()
WHERE c.target = %(target)s AND c.state = 'half_open' AND c.probe_by = %(worker)s
RETURNING c.state, c.open_s, extract(epoch FROM c.probe_at - now())::float8 AS wait_s

-- name: circuits_notify
-- Tells every worker's notifier that a circuit changed state: they read it at once.
SELECT pg_notify('pgobs_circuits', '')

-- name: circuits_list
SELECT c.target, c.state,
       (CASE WHEN e.age < 1 THEN c.requests + c.prev_requests * (1 - e.age)
             WHEN e.age < 2 THEN c.requests * (2 - e.age) ELSE 0 END)::float8 AS requests,
       (CASE WHEN e.age < 1 THEN c.failures + c.prev_failures * (1 - e.age)
             WHEN e.age < 2 THEN c.failures * (2 - e.age) ELSE 0 END)::float8 AS failures,
       c.window_s, c.opened_at, c.open_s,
       CASE c.state WHEN 'open' THEN c.probe_at WHEN 'half_open' THEN c.probe_until END AS next_at,
       c.probe_by, c.failed_probes, c.last_error, c.updated_at
FROM pgobs.circuits AS c
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM now() - c.bucket_start)::float8 / c.window_s AS age) AS e
ORDER BY c.state <> 'open', c.state <> 'half_open', c.target

-- name: circuit_reset
-- An operator closes a circuit by hand: counts start afresh, a probe in flight is forgotten.
UPDATE pgobs.circuits
SET state = 'closed', requests = 0, failures = 0, prev_requests = 0, prev_failures = 0,
    bucket_start = now(), successes = 0, opened_at = NULL, open_s = 0, probe_at = NULL,
    probe_by = NULL, probe_until = NULL, failed_probes = 0, updated_at = now()
WHERE target = %(target)s
RETURNING target

-- name: circuit_release_deferred
-- A circuit closed: the jobs of its actions that wait (for a later probe time, or a retry's
-- backoff) are due now. Run by the worker whose probe closed it, and by each worker that learns
-- of a reset by hand, for the actions it knows.
UPDATE pgobs.jobs SET run_at = now()
WHERE state = 'scheduled' AND run_at > now()
  AND observer || '/' || coalesce(action, '#' || action_index) = ANY(%(keys)s::text[])
RETURNING id

-- name: search_trail
-- pgobs search: {where} is the query, translated by pgobs.search.to_sql (parameters p0, p1,
-- ...); the time bound lets the planner skip every partition before it. Newest first.
SELECT t.at, t.id, t.seq, t.kind, t.status, t.event_id, t.job_id, t.entity_type, t.entity_id,
       t.event_type, t.tenant, t.actor,
       CASE WHEN t.observer IS NOT NULL THEN ARRAY[t.observer]
            ELSE coalesce(t.observers, ARRAY[]::text[]) END AS observers,
       t.action, t.action_type, t.attempt, t.status_code, t.duration_ms, t.next_run_at, t.message
FROM pgobs.trail_records AS t
WHERE t.at >= now() - %(since)s::interval AND {where}
ORDER BY t.at DESC, t.id DESC, t.seq DESC
LIMIT %(limit)s

-- name: trail_ship_lock
-- One shipper per fleet: the lock is held by the shipper's own session while it ships (class
-- 2024061504 is the trail's; 2024061503 is maintenance's, 0007).
SELECT pg_try_advisory_lock(2024061504, 1)

-- name: trail_ship_batch
-- The next records to ship after the cursor, in (txid, id, seq) order (a batch record's jobs
-- one by one, from pgobs.trail_records), with the text full-text search sees (pgobs.trail_text, the same on both backends). Only below the horizon: the
-- oldest open transaction that is writing the trail now (it holds RowExclusiveLock on it or a
-- partition), else the snapshot's xmax, so the cursor never passes a record still to commit.
-- Not the snapshot's xmin: a long transaction of another database would stall shipping. (Every
-- pgobs statement that writes the trail writes it in the statement that takes its xid.)
WITH cursor AS MATERIALIZED (
    SELECT coalesce(max(txid), '0') AS txid, coalesce(max(id), 0) AS id,
           coalesce(max(seq), 0) AS seq
    FROM pgobs.trail_shipping WHERE sink = %(sink)s
), writers AS (
    SELECT x.transactionid::text AS xid32
    FROM pg_locks AS r JOIN pg_locks AS x ON x.locktype = 'transactionid' AND x.granted AND x.virtualtransaction = r.virtualtransaction AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock' AND r.granted
      AND r.relation IN (SELECT 'pgobs.trail'::regclass UNION ALL
                         SELECT inhrelid FROM pg_inherits WHERE inhparent = 'pgobs.trail'::regclass)
), horizon AS MATERIALIZED (
    SELECT coalesce(
        (SELECT min(o) FROM pg_snapshot_xip(s.snap) AS o
         WHERE (o::text::numeric %% 4294967296)::text IN (SELECT xid32 FROM writers)),
        pg_snapshot_xmax(s.snap)) AS xid
    FROM (SELECT pg_current_snapshot() AS snap) AS s
)
SELECT t.txid::text AS txid, t.id, t.seq, t.at, t.kind, t.status, t.event_id, t.job_id,
       t.entity_type, t.entity_id, t.event_type, t.tenant, t.actor, t.observer, t.observers, t.action,
       t.action_type, t.attempt, t.status_code, t.duration_ms, t.next_run_at, t.message, t.data,
       pgobs.trail_text(t.message, t.data) AS text
FROM cursor AS c, horizon AS h, pgobs.trail_records AS t
WHERE (t.txid, t.id) >= (c.txid, c.id) AND (t.txid, t.id, t.seq) > (c.txid, c.id, c.seq)
  AND t.txid < h.xid
ORDER BY t.txid, t.id, t.seq
LIMIT %(limit)s

-- name: trail_ship_advance
-- After a bulk request: the cursor moves past the batch, and the documents Elasticsearch
-- rejected are recorded (and not sent again).
WITH rejected AS (
    INSERT INTO pgobs.trail_rejects (sink, trail_id, seq, at, error)
    SELECT %(sink)s, r.id, r.seq, r.at, r.error
    FROM unnest(%(reject_ids)s::bigint[], %(reject_seqs)s::int[], %(reject_ats)s::timestamptz[],
                %(reject_errors)s::text[]) AS r(id, seq, at, error)
    ON CONFLICT (sink, trail_id, seq) DO UPDATE SET error = EXCLUDED.error, rejected_at = now()
)
INSERT INTO pgobs.trail_shipping (sink, txid, id, seq, shipped, rejected, updated_at)
VALUES (%(sink)s, %(txid)s::text::xid8, %(id)s, %(seq)s, %(shipped)s, %(rejected)s, now())
ON CONFLICT (sink) DO UPDATE
SET txid = EXCLUDED.txid, id = EXCLUDED.id, seq = EXCLUDED.seq,
    shipped = pgobs.trail_shipping.shipped + EXCLUDED.shipped,
    rejected = pgobs.trail_shipping.rejected + EXCLUDED.rejected, updated_at = now()

-- name: trail_ship_backlog
-- Documents not shipped yet (a batch record's jobs each; counted up to 1,000,000) and the age
-- of the oldest.
WITH cursor AS MATERIALIZED (
    SELECT coalesce(max(txid), '0') AS txid, coalesce(max(id), 0) AS id,
           coalesce(max(seq), 0) AS seq
    FROM pgobs.trail_shipping WHERE sink = %(sink)s
), waiting AS (
    SELECT t.at FROM cursor AS c, pgobs.trail_records AS t
    WHERE (t.txid, t.id) >= (c.txid, c.id) AND (t.txid, t.id, t.seq) > (c.txid, c.id, c.seq)
    LIMIT 1000000
)
SELECT count(*), coalesce(extract(epoch FROM now() - min(at)), 0)::float8 FROM waiting

-- name: wake_lock_alive
-- Whether the wake-up lock's session still exists, after its socket turned readable (see
-- WakeLock._hold): it raises when the server ended it.
SELECT 1

-- name: status_checkpointed_listener_ids
-- Listener ids with a checkpoint: pgobs.run_maintenance() keeps every event each one has not
-- fanned out, so status shows them even once their stopped instance rows have gone.
SELECT listener_id FROM pgobs.checkpoints
WHERE %(listener_id)s::text IS NULL OR listener_id = %(listener_id)s
