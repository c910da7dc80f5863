-- pgobs listener, version 0004: reading by snapshots (no stall on any open transaction), batches
-- bounded by bytes, and wake-ups tied to a live listener session.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0004_listener.sql`.
BEGIN;

-- The checkpoint is now a snapshot, as PgQ's batches are: every event whose transaction is
-- visible in `snapshot` has been fanned out, and none other, except while a slice is drained:
-- then `target` holds the snapshot being caught up to, and (last_txid, event_id) the last event
-- fanned out of the events visible in `target` and not in `snapshot`, in (txid, id) order.
-- Outside a slice (last_txid, event_id) is the last event fanned out, for people to read.
-- The old column `txid` is renamed so that a listener of an older version, whose (txid, id)
-- reading would double or lose events on this checkpoint, fails instead of leading.
ALTER TABLE pgobs.checkpoints RENAME COLUMN txid TO last_txid;
ALTER TABLE pgobs.checkpoints ADD COLUMN snapshot pg_snapshot, ADD COLUMN target pg_snapshot;
-- An old checkpoint (T, E) fanned out exactly the events up to (T, E): every transaction below T
-- had ended. As a snapshot that is "all below T visible" with the slice up to now, position
-- (T, E), still to drain: the rest of T's events and every later committed one.
UPDATE pgobs.checkpoints
SET snapshot = CASE WHEN last_txid < '3' THEN '3:3:'::pg_snapshot
                    ELSE format('%s:%s:', last_txid, last_txid)::pg_snapshot END,
    target = pg_current_snapshot();
ALTER TABLE pgobs.checkpoints ALTER COLUMN snapshot SET NOT NULL;

-- The events of the slice from snapshot `prev` to snapshot `cur`, after position
-- (after_txid, after_id), in (txid, id) order: those whose transaction is visible in `cur` and
-- was not in `prev`. Only two kinds of transaction qualify, each found by index on
-- events (txid, id): those in progress in `prev` (its xip list) that have ended by `cur`, and
-- those at or above prev's xmax. Nothing below prev's xmin is ever looked at, so a transaction
-- open for an hour costs each read one array element, not an hour of events.
-- Three parts, so that no part's index scan starts from a bound it cannot use: the rest of the
-- position's own transaction, then the ended xip transactions above it, then the new range;
-- each limited, so that even a planner that sorts a part sorts at most max_rows rows.
CREATE FUNCTION pgobs.slice_events(
    prev pg_snapshot, cur pg_snapshot, after_txid xid8, after_id bigint, max_rows integer
) RETURNS SETOF pgobs.events
LANGUAGE sql STABLE AS $$
    SELECT * FROM (
        (SELECT * FROM pgobs.events AS e
         WHERE (e.txid, e.id) > (after_txid, after_id) AND e.txid <= after_txid
           AND pg_visible_in_snapshot(e.txid, cur) AND NOT pg_visible_in_snapshot(e.txid, prev)
         ORDER BY e.txid, e.id LIMIT max_rows)
        UNION ALL
        (SELECT * FROM pgobs.events AS e
         WHERE e.txid = ANY(ARRAY(
             SELECT x FROM pg_snapshot_xip(prev) AS x
             WHERE x > after_txid AND pg_visible_in_snapshot(x, cur)))
         ORDER BY e.txid, e.id LIMIT max_rows)
        UNION ALL
        (SELECT * FROM pgobs.events AS e
         WHERE e.txid >= pg_snapshot_xmax(prev) AND e.txid > after_txid
           AND e.txid < pg_snapshot_xmax(cur) AND pg_visible_in_snapshot(e.txid, cur)
         ORDER BY e.txid, e.id LIMIT max_rows)
    ) AS slice
    ORDER BY slice.txid, slice.id
    LIMIT max_rows
$$;

-- One listener batch: the slice's next events, at most max_rows of them and, past the first,
-- no more than max_bytes of data (600 rows of 4 MB once took a listener to 4.1 GB). The loop
-- stops at the budget, so rows past it are never read or decompressed. `size` is each row's
-- data and old_data as the listener receives them: a compressed value counts its text length.
CREATE FUNCTION pgobs.read_events(
    prev pg_snapshot, cur pg_snapshot, after_txid xid8, after_id bigint,
    max_rows integer, max_bytes bigint
) RETURNS TABLE (
    id bigint, txid xid8, entity_type text, entity_id text, event_type text, data jsonb,
    old_data jsonb, changed_fields text[], tenant text, actor text, created_at timestamptz,
    size bigint
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    total bigint := 0;
BEGIN
    FOR id, txid, entity_type, entity_id, event_type, data, old_data, changed_fields, tenant,
        actor, created_at IN
        SELECT s.id, s.txid, s.entity_type, s.entity_id, s.event_type, s.data, s.old_data,
               s.changed_fields, s.tenant, s.actor, s.created_at
        FROM pgobs.slice_events(prev, cur, after_txid, after_id, max_rows) AS s
    LOOP
        size := CASE WHEN pg_column_compression(data) IS NULL
                     THEN coalesce(pg_column_size(data), 0) ELSE octet_length(data::text) END
              + CASE WHEN pg_column_compression(old_data) IS NULL
                     THEN coalesce(pg_column_size(old_data), 0)
                     ELSE octet_length(old_data::text) END
              + coalesce(octet_length(entity_id), 0) + coalesce(pg_column_size(changed_fields), 0);
        RETURN NEXT;
        total := total + size;
        EXIT WHEN total >= max_bytes;
    END LOOP;
END;
$$;

REVOKE ALL ON FUNCTION pgobs.slice_events(pg_snapshot, pg_snapshot, xid8, bigint, integer)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION pgobs.read_events(pg_snapshot, pg_snapshot, xid8, bigint, integer, bigint)
    FROM PUBLIC;

-- Wake-ups. A waiting leader keeps a session of its own holding advisory lock
-- (2024061502, 0) exclusively. A writer's statement tries it shared: when that fails a leader
-- waits, and the writer sends NOTIFY (delivered at its commit). When it succeeds no leader waits
-- (all are reading on, or none runs), the writer sends nothing and holds the lock shared until
-- it ends. A leader that turns to waiting takes the lock back, which waits for every such writer
-- to end (its events visible), then sends one NOTIFY: no committed event is left unannounced,
-- and a listener that exits takes its lock, so writers stop notifying, with its session.
CREATE OR REPLACE FUNCTION pgobs.wake_listeners() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(2024061502, 0) THEN
        PERFORM pg_notify('pgobs_events', '');
    END IF;
END;
$$;

-- The waiting flags it replaces could outlive every listener.
DROP TABLE pgobs.listener_wakeups;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0004');
COMMIT;
