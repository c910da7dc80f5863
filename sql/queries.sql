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
SET synchronous_commit = off

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
SELECT txid::text::bigint, event_id FROM pgobs.checkpoints WHERE listener_id = %(listener_id)s

-- name: fetch_committed_events
-- Events whose transaction has ended (txid below the snapshot's xmin), after the checkpoint,
-- in commit-safe order. A lower id that commits late still has txid >= xmin until it commits.
-- Names are qualified: a bare "ORDER BY txid" would sort by the bigint output column, not the
-- indexed xid8 one, and read the whole table.
SELECT e.id, e.txid::text::bigint AS txid_number, e.entity_type, e.entity_id, e.event_type,
       e.data, e.old_data, e.changed_fields, e.tenant, e.actor, e.created_at
FROM pgobs.events AS e
WHERE (e.txid, e.id) > (%(txid)s::text::xid8, %(event_id)s)
  AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY e.txid, e.id
LIMIT %(limit)s

-- name: fan_out
-- One batch's whole write, as one statement on the leader's session (atomic; one round trip):
-- a job per matched action, audit rows for events an observer could not judge, the new
-- checkpoint, and the jobs doorbell (delivered on commit).
WITH new_jobs AS (
    INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, priority, max_attempts)
    SELECT * FROM unnest(%(event_ids)s::bigint[], %(observers)s::text[],
                         %(action_indexes)s::int[], %(action_types)s::text[],
                         %(priorities)s::smallint[], %(max_attempts)s::int[])
), audited AS (
    INSERT INTO pgobs.audit (kind, status, event_id, observer, entity_type, entity_id,
                             event_type, message)
    SELECT 'event', 'error', a.* FROM unnest(%(audit_event_ids)s::bigint[],
        %(audit_observers)s::text[], %(audit_entity_types)s::text[],
        %(audit_entity_ids)s::text[], %(audit_event_types)s::text[],
        %(audit_messages)s::text[]) AS a
), saved AS (
    INSERT INTO pgobs.checkpoints (listener_id, txid, event_id, last_processed_at, updated_at)
    VALUES (%(listener_id)s, %(txid)s::text::xid8, %(event_id)s, %(last_processed_at)s, now())
    ON CONFLICT (listener_id) DO UPDATE
    SET txid = EXCLUDED.txid, event_id = EXCLUDED.event_id,
        last_processed_at = EXCLUDED.last_processed_at, updated_at = now()
    RETURNING 1
)
SELECT pg_notify('pgobs_jobs', '') FROM saved WHERE %(notify)s

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
-- Events committed but not yet fanned out (capped), and the age of the oldest one.
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM (
    SELECT e.created_at
    FROM pgobs.events e
    WHERE (e.txid, e.id) > (
        coalesce((SELECT txid FROM pgobs.checkpoints WHERE listener_id = %(listener_id)s), '0'),
        coalesce((SELECT event_id FROM pgobs.checkpoints WHERE listener_id = %(listener_id)s), 0))
    ORDER BY e.txid, e.id
    LIMIT 100000
) AS pending

-- name: track_table
SELECT pgobs.track(%(table)s::regclass, %(entity)s, %(id_column)s)

-- name: claim_jobs
-- Due, unleased jobs by priority then due time; SKIP LOCKED lets any number of workers claim
-- at once. Each claim takes a lease and counts an attempt. The event rides along (or the
-- payload, for a retried dead letter whose event was purged). The shapes (= ANY(ARRAY(...)),
-- LATERAL ... LIMIT 1) pin index lookups: with hash joins a claim scanned whole tables.
WITH claimed AS (
    UPDATE pgobs.jobs AS j
    SET locked_by = %(worker)s,
        locked_until = now() + make_interval(secs => %(lease_s)s),
        attempts = j.attempts + 1
    WHERE j.id = ANY(ARRAY(
        SELECT id FROM pgobs.jobs
        WHERE locked_until IS NULL AND run_at <= now()
        ORDER BY priority DESC, run_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED))
    RETURNING j.id, j.event_id, j.observer, j.action_index, j.attempts, j.max_attempts,
              j.payload
)
SELECT c.id, c.observer, c.action_index, c.attempts, c.max_attempts, c.payload,
       c.event_id, e.entity_type, e.entity_id, e.event_type, e.data, e.old_data,
       e.changed_fields, e.tenant, e.actor, e.created_at
FROM claimed c
LEFT JOIN LATERAL (
    SELECT * FROM pgobs.events AS ev WHERE ev.id = c.event_id LIMIT 1
) AS e ON true

-- name: write_outcomes
-- Every outcome of a batch in one statement (one round trip, atomic): completed jobs are
-- deleted; retries get their next run_at and the error appended; dead letters move to the DLQ
-- in the statement that removes them; on_failure: log drops them into the audit trail.
WITH completed AS (
    DELETE FROM pgobs.jobs WHERE id = ANY(%(completed)s::bigint[])
), retried AS (
    UPDATE pgobs.jobs AS j
    SET locked_by = NULL, locked_until = NULL,
        run_at = now() + make_interval(secs => r.delay_s),
        last_error = r.error,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'error', r.error, 'kind', 'transient', 'at', now()))
    FROM unnest(%(retry_ids)s::bigint[], %(retry_delays)s::float8[], %(retry_errors)s::text[])
         AS r(id, delay_s, error)
    WHERE j.id = r.id AND j.id = ANY(%(retry_ids)s::bigint[]) AND j.locked_by = %(worker)s
), failed AS (
    DELETE FROM pgobs.jobs AS j
    USING unnest(%(dead_ids)s::bigint[], %(dead_errors)s::text[], %(dead_kinds)s::text[])
          AS r(id, error, kind)
    WHERE j.id = r.id AND j.id = ANY(%(dead_ids)s::bigint[]) AND j.locked_by = %(worker)s
    RETURNING j.*, r.error, r.kind
), dead AS (
    INSERT INTO pgobs.dlq (job_id, event_id, observer, action_index, action_type, event, payload,
                           priority, attempts, max_attempts, last_error, error_kind, errors,
                           created_at)
    SELECT f.id, f.event_id, f.observer, f.action_index, f.action_type,
           coalesce((SELECT to_jsonb(e) - 'txid' FROM pgobs.events e WHERE e.id = f.event_id),
                    f.payload, '{}'::jsonb),
           f.payload, f.priority, f.attempts, f.max_attempts, f.error, f.kind,
           f.errors || jsonb_build_array(jsonb_build_object(
               'attempt', f.attempts, 'error', f.error, 'kind', f.kind, 'at', now())),
           f.created_at
    FROM failed f
    RETURNING observer
), dropped AS (
    DELETE FROM pgobs.jobs AS j
    USING unnest(%(drop_ids)s::bigint[], %(drop_errors)s::text[], %(drop_kinds)s::text[])
          AS r(id, error, kind)
    WHERE j.id = r.id AND j.id = ANY(%(drop_ids)s::bigint[]) AND j.locked_by = %(worker)s
    RETURNING j.event_id, j.observer, j.action_type, j.attempts, r.error, r.kind
), audited AS (
    INSERT INTO pgobs.audit (kind, status, event_id, observer, action_type, message, details)
    SELECT 'action', 'failed', d.event_id, d.observer, d.action_type, d.error,
           jsonb_build_object('attempts', d.attempts, 'error_kind', d.kind)
    FROM dropped d
)
SELECT observer FROM dead

-- name: extend_leases
UPDATE pgobs.jobs SET locked_until = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY(%(ids)s) AND locked_by = %(worker)s

-- name: release_jobs
-- Graceful shutdown: hand claimed jobs that never started back, without spending an attempt.
UPDATE pgobs.jobs SET locked_by = NULL, locked_until = NULL, attempts = greatest(attempts - 1, 0)
WHERE id = ANY(%(ids)s) AND locked_by = %(worker)s

-- name: rescue_expired_jobs
-- A lease that ran out means its worker died or stalled: the job is claimable again, and it
-- counts as a failed attempt (so a job that kills its worker ends in the DLQ, not in a loop).
UPDATE pgobs.jobs
SET locked_by = NULL, locked_until = NULL,
    last_error = 'lease expired: the worker running it died or stalled',
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempts, 'error', 'lease expired: the worker running it died or stalled',
        'kind', 'transient', 'at', now(), 'worker', locked_by))
WHERE locked_until < now() AND attempts < max_attempts
RETURNING id

-- name: dead_letter_expired_jobs
WITH failed AS (
    DELETE FROM pgobs.jobs AS j
    WHERE j.locked_until < now() AND j.attempts >= j.max_attempts
    RETURNING j.*
)
INSERT INTO pgobs.dlq (job_id, event_id, observer, action_index, action_type, event, payload,
                       priority, attempts, max_attempts, last_error, error_kind, errors, created_at)
SELECT f.id, f.event_id, f.observer, f.action_index, f.action_type,
       coalesce((SELECT to_jsonb(e) - 'txid' FROM pgobs.events e WHERE e.id = f.event_id),
                f.payload, '{}'::jsonb),
       f.payload, f.priority, f.attempts, f.max_attempts,
       'lease expired on the last attempt: the worker running it died or stalled', 'transient',
       f.errors || jsonb_build_array(jsonb_build_object(
           'attempt', f.attempts, 'error', 'lease expired on the last attempt', 'kind',
           'transient', 'at', now(), 'worker', f.locked_by)),
       f.created_at
FROM failed f
RETURNING observer

-- name: cache_invalidate
DELETE FROM pgobs.cache WHERE key = ANY(%(keys)s)

-- name: dlq_list
SELECT id, observer, action_index, action_type, event_id, attempts, error_kind, last_error,
       failed_at
FROM pgobs.dlq
WHERE %(observer)s::text IS NULL OR observer = %(observer)s
ORDER BY failed_at DESC, id DESC
LIMIT %(limit)s

-- name: dlq_show
SELECT to_jsonb(d) FROM pgobs.dlq AS d WHERE d.id = %(id)s

-- name: dlq_select_ids
SELECT id FROM pgobs.dlq
WHERE %(observer)s::text IS NULL OR observer = %(observer)s
ORDER BY id

-- name: dlq_retry
-- Back to the queue with fresh attempts, in the transaction that removes the dead letter. The
-- job keeps the event as its payload, so a retry works even after the event was purged.
WITH taken AS (
    DELETE FROM pgobs.dlq WHERE id = ANY(%(ids)s) RETURNING *
)
INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, payload, priority,
                        max_attempts, errors)
SELECT event_id, observer, action_index, action_type, coalesce(payload, event), priority,
       max_attempts,
       errors || jsonb_build_array(jsonb_build_object('retried_from_dlq', id, 'at', now()))
FROM taken
RETURNING id

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

-- name: set_waiting
-- The leader says whether it waits for a wake-up (see pgobs.listener_wakeups in 0001).
INSERT INTO pgobs.listener_wakeups (listener_id, waiting, updated_at)
VALUES (%(listener_id)s, %(waiting)s, now())
ON CONFLICT (listener_id) DO UPDATE SET waiting = EXCLUDED.waiting, updated_at = now()
