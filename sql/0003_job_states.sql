-- pgobs schema, version 0003: jobs carry an explicit state and the identity of their action.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0003_job_states.sql`.
--
-- available  due now: claims read these in priority order (index jobs_available)
-- scheduled  waiting out a retry backoff until run_at (index jobs_scheduled, read from the due end)
-- running    claimed by locked_by until leased_until (index jobs_running, for the rescuer)
--
-- A claim no longer counts an attempt: the worker records when it starts a job (attempted_at),
-- in the round trip that already writes outcomes, so a job that was claimed but never started
-- spends nothing, even when its worker is killed.
BEGIN;

ALTER TABLE pgobs.jobs
    ADD COLUMN state text NOT NULL DEFAULT 'available'
        CHECK (state IN ('available', 'scheduled', 'running')),
    ADD COLUMN action text,
    ADD COLUMN attempted_at timestamptz,
    ADD COLUMN claims integer NOT NULL DEFAULT 0;

UPDATE pgobs.jobs
SET state = CASE WHEN locked_until IS NOT NULL THEN 'running'
                 WHEN run_at > now() THEN 'scheduled'
                 ELSE 'available' END,
    attempted_at = CASE WHEN locked_until IS NOT NULL THEN now() END;

DROP INDEX pgobs.jobs_claimable;
DROP INDEX pgobs.jobs_leased;
-- Renamed so that a worker of an earlier version, whose statements know nothing of states, fails
-- loudly instead of claiming or completing jobs behind the new ones' backs: stop every worker
-- before migrating to 0003.
ALTER TABLE pgobs.jobs RENAME COLUMN locked_until TO leased_until;
CREATE INDEX jobs_available ON pgobs.jobs (priority DESC, id) WHERE state = 'available';
CREATE INDEX jobs_scheduled ON pgobs.jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_running ON pgobs.jobs (leased_until) WHERE state = 'running';

ALTER TABLE pgobs.dlq ADD COLUMN action text;

COMMENT ON COLUMN pgobs.jobs.leased_until IS 'the lease of a running job: rescued when it passes';
COMMENT ON COLUMN pgobs.jobs.state IS
    'available (due), scheduled (waiting for run_at after a failure) or running (leased)';
COMMENT ON COLUMN pgobs.jobs.action IS
    'the action''s identity within its observer: its name: in observers.yaml, else its type. '
    'NULL for jobs written before migration 0003, which are resolved by action_index';
COMMENT ON COLUMN pgobs.jobs.action_index IS
    'the action''s position when the job was created; part of the stable webhook-id';
COMMENT ON COLUMN pgobs.jobs.attempts IS 'attempts started (a claim alone does not count)';
COMMENT ON COLUMN pgobs.jobs.attempted_at IS 'when the current claim started running, if it did';
COMMENT ON COLUMN pgobs.jobs.claims IS 'times claimed, started or not';
COMMENT ON COLUMN pgobs.dlq.action IS 'the action''s identity within its observer (see jobs)';

-- Which actions each live worker can run: a job whose action no live worker knows for a while
-- has been removed from the config for good, and is dead-lettered with a message naming it.
CREATE UNLOGGED TABLE pgobs.workers (
    worker_id  text PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    actions    text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgobs.workers IS
    'one row per running worker pool; actions are ''observer/action'' keys it runs';

INSERT INTO pgobs.schema_migrations (version) VALUES ('0003');
COMMIT;
