-- pgobs capture API, version 0002: the row and statement triggers, track/untrack and emit.
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

-- The row trigger installed by pgobs.track(). TG_ARGV: entity_type, id column.
-- It must never make the application's write fail: a row that jsonb cannot hold (over 255 MB)
-- is recorded with the reason instead of its data.
CREATE OR REPLACE FUNCTION pgobs.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_doc jsonb;
    old_doc jsonb;
    changed text[];
    unrepresentable boolean := false;
BEGIN
    BEGIN
        IF TG_OP <> 'DELETE' THEN new_doc := to_jsonb(NEW); END IF;
        IF TG_OP <> 'INSERT' THEN old_doc := to_jsonb(OLD); END IF;
    EXCEPTION WHEN OTHERS THEN
        unrepresentable := true;
        IF TG_OP <> 'DELETE' THEN new_doc := jsonb_build_object('_pgobs_error', SQLERRM); END IF;
        IF TG_OP <> 'INSERT' THEN old_doc := jsonb_build_object('_pgobs_error', SQLERRM); END IF;
    END;

    IF TG_OP = 'UPDATE' AND NOT unrepresentable THEN
        SELECT array_agg(n.key ORDER BY n.key) INTO changed
        FROM jsonb_each(new_doc) AS n
        WHERE n.value IS DISTINCT FROM old_doc -> n.key;
        IF changed IS NULL THEN
            RETURN NULL;  -- an UPDATE that changes nothing is not an event
        END IF;
    END IF;

    INSERT INTO pgobs.events
        (entity_type, entity_id, event_type, data, old_data, changed_fields, tenant, actor)
    VALUES (
        TG_ARGV[0],
        coalesce(new_doc, old_doc) ->> TG_ARGV[1],
        TG_OP,
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
LANGUAGE plpgsql AS $$
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
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER pgobs_capture AFTER %s ON %s '
        'FOR EACH ROW EXECUTE FUNCTION pgobs.capture(%L, %L)',
        array_to_string(ops, ' OR '), target, entity, key_column);
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER pgobs_wake AFTER %s ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION pgobs.wake()',
        array_to_string(ops, ' OR '), target);
END;
$$;

CREATE OR REPLACE FUNCTION pgobs.untrack(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS pgobs_capture ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS pgobs_wake ON %s', target);
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0002');
COMMIT;
