-- pgobs schema, version 0011: outcome writes find their jobs by primary key, never by the index
-- of running jobs.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0011_outcome_plans.sql`.
--
-- Every start, outcome, lease extension and release names its jobs by id and checks
-- `state = 'running'`. That check matched the partial index jobs_running, which holds few live
-- rows but, between vacuums, one dead entry for every job that ever ran: planned on statistics
-- that saw few running jobs, each write bitmap-scanned the whole index and its heap pages (27,000
-- entries and 1,100 pages per statement after 30,000 jobs), so a drain slowed from 13,000 to
-- 4,000 jobs/s as it went. The extra `leased_until IS NOT NULL` (true of every running job) is not
-- implied by those statements, so they can only use the primary key; the rescuer's
-- `leased_until < now()` implies it and keeps the index.
BEGIN;

DROP INDEX pgobs.jobs_running;
CREATE INDEX jobs_running ON pgobs.jobs (leased_until)
    WHERE state = 'running' AND leased_until IS NOT NULL;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0011');
COMMIT;
