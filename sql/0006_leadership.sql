-- pgobs schema, version 0006: leader locks that cannot collide, and the leader's proof of life.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0006_leadership.sql`.
BEGIN;

-- One row per listener_id. lock_key is assigned once, so no two ids share a leader lock (with
-- hashtext(listener_id) two colliding ids did, and one of them never led): the lock is
-- pg_advisory_lock(2024061501, lock_key). The leader's fan-out loop writes beat_at on the
-- session that holds the lock (leader_pid); a standby that finds it stale while that session
-- waits on its client ends the session and leads (see fence_stale_leader in queries.sql).
CREATE TABLE pgobs.leadership (
    listener_id text PRIMARY KEY,
    lock_key    integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    leader_pid  integer,
    beat_at     timestamptz
);

INSERT INTO pgobs.schema_migrations (version) VALUES ('0006');
COMMIT;
