-- pgobs schema, version 0017: the operator reads where the trail ships (pgobs status).
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0017_operator_sinks.sql`.
--
-- `pgobs status` shows each search sink's shipped, rejected and waiting documents; run as
-- pgobs_operator it could only say the shipping cursor was not its to read. create_roles() as
-- 0014 left it, plus SELECT on pgobs.trail_shipping and pgobs.trail_rejects for the operator.
BEGIN;

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

    -- The operator: reads the pipeline, the trail and where it ships, retries and purges dead
    -- letters, changes the settings and runs maintenance (0007, 0008, 0014, 0017).
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

INSERT INTO pgobs.schema_migrations (version) VALUES ('0017');
COMMIT;
