-- pgobs schema, version 0016: event retention stays fast under a job backlog.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0016_maintenance_backlog.sql`.
--
-- maintain_events (0007) kept each expired event that a pending job still names, by asking
-- pgobs.jobs for every batch: with no index on jobs.event_id (one would cost every job write),
-- each batch hashed the whole queue. With a million jobs waiting, 200,000 expired events took
-- 12.5 s in 40 batches. Now the oldest event any pending job names is read once per run, and
-- only events from it on are checked against the queue: expired events are old, the backlog's
-- are new, and a batch entirely before it is deleted without reading the queue at all.
BEGIN;

CREATE OR REPLACE FUNCTION pgobs.maintain_events(dry_run boolean, batch_size integer) RETURNS bigint
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
    -- The oldest event a pending job names, read once: an event before it has no job (a job
    -- written later for an old event is a retried dead letter, which carries its payload).
    oldest_pending bigint;
BEGIN
    IF cutoff IS NULL THEN
        RETURN 0;  -- events_retention unset: keep every event
    END IF;
    IF NOT dry_run AND NOT pg_try_advisory_xact_lock(2024061503, 1) THEN
        RETURN 0;  -- another run is removing events: leave them to it
    END IF;
    SELECT min(j.event_id) INTO oldest_pending FROM pgobs.jobs AS j;
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
                  AND (e.id < oldest_pending OR oldest_pending IS NULL
                       OR NOT EXISTS (SELECT FROM pgobs.jobs AS j WHERE j.event_id = e.id));
            ELSE
                DELETE FROM pgobs.events AS e
                WHERE e.ctid = ANY(candidates)
                  AND (e.id < oldest_pending OR oldest_pending IS NULL
                       OR NOT EXISTS (SELECT FROM pgobs.jobs AS j WHERE j.event_id = e.id));
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

INSERT INTO pgobs.schema_migrations (version) VALUES ('0016');
COMMIT;
