-- pgobs schema, version 0010: an event's idempotency key, which dedup uses when present.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0010_dedup_cache.sql`.
-- pgobs.dedup and pgobs.cache keep their shape (0001): dedup's fingerprints are claimed inside
-- the fan-out statement (fan_out in queries.sql), the cache is read and written by the workers.
BEGIN;

-- Set by the application through pgobs.emit(..., idempotency_key): two events with the same key
-- are one for an observer that declares dedup, whatever their data.
ALTER TABLE pgobs.events ADD COLUMN IF NOT EXISTS idempotency_key text;
COMMENT ON COLUMN pgobs.events.idempotency_key IS
    'given to pgobs.emit by the application; an observer''s dedup uses it as the fingerprint';

-- A custom event with an idempotency key. An overload without defaults, so every existing call
-- of the four-argument emit resolves as before; that one now writes through this one.
CREATE OR REPLACE FUNCTION pgobs.emit(
    entity_type     text,
    event_type      text,
    entity_id       text,
    data            jsonb,
    idempotency_key text
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    new_id bigint;
BEGIN
    -- A name, nothing that could pass for a captured type in a log ('INSERT ', 'Insert\t').
    IF event_type IS NULL OR event_type !~ '^[A-Za-z0-9_.:-]{1,128}$' THEN
        RAISE EXCEPTION 'pgobs.emit: event type % is not a name', quote_nullable(event_type)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use letters, digits and _ . : - (no spaces), such as order_paid';
    END IF;
    IF upper(event_type) IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') THEN
        RAISE EXCEPTION 'pgobs.emit: event type % is reserved for captured row changes',
            event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'emit a name of your own, such as order_paid, or track the table';
    END IF;
    IF length(idempotency_key) > 512 THEN
        RAISE EXCEPTION 'pgobs.emit: the idempotency key is % characters long',
            length(idempotency_key)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use at most 512 characters, such as order-123-paid or a UUID';
    END IF;
    INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor,
                              idempotency_key)
    VALUES (entity_type, entity_id, event_type, coalesce(data, '{}'),
            nullif(current_setting('pgobs.tenant', true), ''),
            nullif(current_setting('pgobs.actor', true), ''),
            nullif(idempotency_key, ''))
    RETURNING id INTO new_id;
    PERFORM pgobs.wake_listeners();
    RETURN new_id;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.emit(text, text, text, jsonb, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgobs.emit(
    entity_type text,
    event_type  text,
    entity_id   text DEFAULT NULL,
    data        jsonb DEFAULT '{}'
) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pgobs.emit(entity_type, event_type, entity_id, data, NULL::text)
$$;

-- The listener's read returns the key too (a new column changes the row type: drop, create).
DROP FUNCTION pgobs.read_events(pg_snapshot, pg_snapshot, xid8, bigint, integer, bigint);
CREATE FUNCTION pgobs.read_events(
    prev pg_snapshot, cur pg_snapshot, after_txid xid8, after_id bigint,
    max_rows integer, max_bytes bigint
) RETURNS TABLE (
    id bigint, txid xid8, entity_type text, entity_id text, event_type text, data jsonb,
    old_data jsonb, changed_fields text[], tenant text, actor text, created_at timestamptz,
    idempotency_key text, size bigint
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    total bigint := 0;
BEGIN
    FOR id, txid, entity_type, entity_id, event_type, data, old_data, changed_fields, tenant,
        actor, created_at, idempotency_key IN
        SELECT s.id, s.txid, s.entity_type, s.entity_id, s.event_type, s.data, s.old_data,
               s.changed_fields, s.tenant, s.actor, s.created_at, s.idempotency_key
        FROM pgobs.slice_events(prev, cur, after_txid, after_id, max_rows) AS s
    LOOP
        size := CASE WHEN pg_column_compression(data) IS NULL
                     THEN coalesce(pg_column_size(data), 0) ELSE octet_length(data::text) END
              + CASE WHEN pg_column_compression(old_data) IS NULL
                     THEN coalesce(pg_column_size(old_data), 0)
                     ELSE octet_length(old_data::text) END
              + coalesce(octet_length(entity_id), 0) + coalesce(pg_column_size(changed_fields), 0)
              + coalesce(octet_length(idempotency_key), 0);
        RETURN NEXT;
        total := total + size;
        EXIT WHEN total >= max_bytes;
    END LOOP;
END;
$$;
REVOKE ALL ON FUNCTION pgobs.read_events(pg_snapshot, pg_snapshot, xid8, bigint, integer, bigint)
    FROM PUBLIC;

-- The roles' rights on what this migration made (pgobs.create_roles in 0005 grants the rest).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgobs_app') THEN
        GRANT EXECUTE ON FUNCTION pgobs.emit(text, text, text, jsonb, text) TO pgobs_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgobs_worker') THEN
        GRANT EXECUTE ON FUNCTION
            pgobs.read_events(pg_snapshot, pg_snapshot, xid8, bigint, integer, bigint)
            TO pgobs_worker;
    END IF;
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0010');
COMMIT;
