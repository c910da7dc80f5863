-- pgobs capture, version 0005: capture without a subtransaction per statement, partitioned
-- tables (cross-partition UPDATEs are UPDATE events), TRUNCATE events, composite keys, and least
-- privilege (nothing of pgobs is executable by PUBLIC; three group roles).
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0005_capture.sql`.
BEGIN;

-- A row is captured set-based, with no subtransaction, unless converting it to jsonb could fail:
-- its stored size is over 128 kB (jsonb holds at most 255 MB; values compress at most ~255x and
-- grow at most ~4x as jsonb, so 128 kB stored stays far below it), or it holds json (not jsonb)
-- with a \u0000 escape, which jsonb rejects (any \u escape in a database that is not UTF-8).
-- Only such rows are converted one by one, each in a subtransaction of its own.
CREATE OR REPLACE FUNCTION pgobs.needs_guard(captured anyelement, json_marker text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    -- CASE fixes the order: a big row is never converted to text (over 1 GB that fails too).
    SELECT CASE
        WHEN pg_column_size(captured) > 131072 THEN true
        WHEN json_marker IS NULL THEN false
        ELSE strpos(captured::text, json_marker) > 0
    END
$$;

-- The marker needs_guard looks for when rel has a json column (nested in arrays, domains or
-- composite types too), else NULL: rows of tables without json are never converted to text.
-- PL/pgSQL, not SQL, so its plans are cached: it runs once per captured statement or row, and
-- a SQL function planned on each call tripled the cost of capturing an UPDATE.
CREATE OR REPLACE FUNCTION pgobs.json_marker(rel oid) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- Built-in types other than json cannot hold json: the common case ends here.
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
            AND (a.atttypid IN ('pg_catalog.json'::regtype, 'pg_catalog._json'::regtype)
                 OR a.atttypid >= 16384)
    ) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (
        WITH RECURSIVE types(oid) AS (
            SELECT a.atttypid FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
            UNION
            SELECT inner_type.oid
            FROM types
            JOIN pg_catalog.pg_type t ON t.oid = types.oid
            CROSS JOIN LATERAL (
                SELECT t.typbasetype WHERE t.typtype = 'd'
                UNION ALL SELECT t.typelem WHERE t.typcategory = 'A'
                UNION ALL
                SELECT c.atttypid FROM pg_catalog.pg_attribute c
                WHERE t.typtype = 'c' AND c.attrelid = t.typrelid AND c.attnum > 0
                    AND NOT c.attisdropped
            ) AS inner_type(oid)
        )
        SELECT 1 FROM types WHERE types.oid = 'pg_catalog.json'::regtype
    ) THEN
        RETURN NULL;
    END IF;
    RETURN CASE WHEN pg_catalog.getdatabaseencoding() = 'UTF8' THEN 'u0000' ELSE '\u' END;
END;
$$;

-- A row's document, or the reason it has none: the one place capture spends a subtransaction,
-- reached only for rows needs_guard picked.
CREATE OR REPLACE FUNCTION pgobs.guarded_doc(captured anyelement) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN to_jsonb(captured);
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('_pgobs_error', SQLERRM);
END;
$$;

-- entity_id of a row: the key column's value; for several key columns, their values in key
-- order joined by ',' (a ',' or '%' inside a value is written %2C or %25, so ids stay
-- unambiguous); NULL for a row recorded without its data.
CREATE OR REPLACE FUNCTION pgobs.entity_id(doc jsonb, key_columns text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN cardinality(key_columns) = 1 THEN doc ->> key_columns[1]
        WHEN doc ?| key_columns THEN (
        SELECT string_agg(
            replace(replace(coalesce(doc ->> k.name, ''), '%', '%25'), ',', '%2C'), ','
            ORDER BY k.position)
        FROM unnest(key_columns) WITH ORDINALITY AS k(name, position)
    ) END
$$;

-- The changed columns of an update, NULL when nothing changed.
CREATE OR REPLACE FUNCTION pgobs.changed_fields(new_doc jsonb, old_doc jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(n.key ORDER BY n.key)
    FROM jsonb_each(new_doc) AS n
    WHERE n.value IS DISTINCT FROM old_doc -> n.key
$$;

-- INSERT and DELETE of plain tables, per statement from its transition table: one set-based
-- write however many rows. TG_ARGV: entity_type, then the key columns. It never makes the
-- application's write fail: a row jsonb cannot hold is recorded with the reason instead (CASE
-- calls guarded_doc, and so opens a subtransaction, for those rows only).
CREATE OR REPLACE FUNCTION pgobs.capture_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
#variable_conflict use_variable
DECLARE
    tenant text := nullif(current_setting('pgobs.tenant', true), '');
    actor text := nullif(current_setting('pgobs.actor', true), '');
    key_columns text[] := TG_ARGV[1:TG_NARGS - 1];
    single_key text := CASE WHEN TG_NARGS = 2 THEN TG_ARGV[1] END;
    marker text := pgobs.json_marker(TG_RELID);
BEGIN
    -- "captured.*", not "captured": a table column of that name would shadow the row alias.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor)
        SELECT TG_ARGV[0], coalesce(d ->> single_key, pgobs.entity_id(d, key_columns)),
               'INSERT', d, tenant, actor
        FROM (
            SELECT CASE WHEN pgobs.needs_guard(captured.*, marker)
                        THEN pgobs.guarded_doc(captured.*) ELSE to_jsonb(captured.*) END AS d
            FROM new_rows AS captured
        ) AS rows;
    ELSE
        INSERT INTO pgobs.events (entity_type, entity_id, event_type, old_data, tenant, actor)
        SELECT TG_ARGV[0], coalesce(d ->> single_key, pgobs.entity_id(d, key_columns)),
               'DELETE', d, tenant, actor
        FROM (
            SELECT CASE WHEN pgobs.needs_guard(captured.*, marker)
                        THEN pgobs.guarded_doc(captured.*) ELSE to_jsonb(captured.*) END AS d
            FROM old_rows AS captured
        ) AS rows;
    END IF;
    RETURN NULL;
END;
$$;

-- One UPDATE event (or none, when nothing changed). A document that is a conversion error has
-- no changed fields.
CREATE OR REPLACE FUNCTION pgobs.write_update(
    entity text, key_columns text[], new_doc jsonb, old_doc jsonb
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed text[];
    broken boolean := new_doc ? '_pgobs_error' OR old_doc ? '_pgobs_error';
BEGIN
    IF NOT broken THEN
        changed := pgobs.changed_fields(new_doc, old_doc);
        IF changed IS NULL THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO pgobs.events
        (entity_type, entity_id, event_type, data, old_data, changed_fields, tenant, actor)
    VALUES (
        entity,
        coalesce(pgobs.entity_id(new_doc, key_columns), pgobs.entity_id(old_doc, key_columns)),
        'UPDATE', new_doc, old_doc, changed,
        nullif(current_setting('pgobs.tenant', true), ''),
        nullif(current_setting('pgobs.actor', true), '')
    );
END;
$$;

-- UPDATE of plain tables, per row: only a row trigger pairs each old row with its new one.
-- An UPDATE that changes nothing is not an event. TG_ARGV: entity_type, then the key columns.
-- Written out in full rather than through write_update: a nested PL/pgSQL call per row tripled
-- the cost of a 20,000-row UPDATE here.
CREATE OR REPLACE FUNCTION pgobs.capture_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
#variable_conflict use_variable
DECLARE
    marker text := pgobs.json_marker(TG_RELID);
    new_doc jsonb;
    old_doc jsonb;
    changed text[];
BEGIN
    IF pg_column_size(NEW) > 131072 OR pg_column_size(OLD) > 131072
        OR (marker IS NOT NULL AND (strpos(NEW::text, marker) > 0 OR strpos(OLD::text, marker) > 0))
    THEN
        PERFORM pgobs.write_update(
            TG_ARGV[0], TG_ARGV[1:TG_NARGS - 1], pgobs.guarded_doc(NEW), pgobs.guarded_doc(OLD));
        RETURN NULL;
    END IF;
    new_doc := to_jsonb(NEW);
    old_doc := to_jsonb(OLD);
    SELECT array_agg(n.key ORDER BY n.key) INTO changed
    FROM jsonb_each(new_doc) AS n
    WHERE n.value IS DISTINCT FROM old_doc -> n.key;
    IF changed IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO pgobs.events
        (entity_type, entity_id, event_type, data, old_data, changed_fields, tenant, actor)
    VALUES (
        TG_ARGV[0],
        CASE WHEN TG_NARGS = 2 THEN coalesce(new_doc ->> TG_ARGV[1], old_doc ->> TG_ARGV[1])
             ELSE pgobs.entity_id(new_doc, TG_ARGV[1:TG_NARGS - 1]) END,
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

-- Capture's state within a statement, per backend: whether an UPDATE of a partitioned tree is
-- pairing its row moves (scope 'moving_<root>_<trigger depth>', with the DELETE half waiting in
-- held), or a partitioned tree is being truncated ('truncating_<root>'). A table only pgobs'
-- owner writes, because any role may set any pgobs.* setting: state kept in settings let a
-- writer hide its DELETEs and TRUNCATEs. Rows live for one statement; a rolled-back statement
-- takes its rows with it.
CREATE UNLOGGED TABLE pgobs.capture_state (
    backend integer NOT NULL,
    scope   text NOT NULL,
    held    jsonb,
    PRIMARY KEY (backend, scope)
);

-- Partitioned tables are captured per row by one trigger on the parent, which Postgres clones
-- to every partition, existing and future, and fires however the row is written (through the
-- parent or a partition). An UPDATE that moves a row to another partition runs as a DELETE on
-- the old partition followed by an INSERT on the new one, firing neither UPDATE row trigger;
-- while an UPDATE of the tree pairs its moves (capture_moves), the DELETE half is held in
-- pgobs.capture_state and the INSERT half that follows it writes one UPDATE event with both
-- rows. The setting pgobs.moving_<root>_<depth> only spares other rows the lookup. TG_ARGV:
-- entity_type, root oid, tracked operations as 'INSERT,UPDATE,...', then the key columns.
CREATE OR REPLACE FUNCTION pgobs.capture_partitioned() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
#variable_conflict use_variable
DECLARE
    entity text := TG_ARGV[0];
    ops text[] := string_to_array(TG_ARGV[2], ',');
    key_columns text[] := TG_ARGV[3:TG_NARGS - 1];
    state_scope text := 'moving_' || TG_ARGV[1] || '_' || pg_trigger_depth();
    moving boolean := false;
    marker text := pgobs.json_marker(TG_RELID);
    held jsonb;
    doc jsonb;
BEGIN
    IF TG_OP <> 'UPDATE' AND current_setting('pgobs.' || state_scope, true) = 'on' THEN
        moving := EXISTS (
            SELECT 1 FROM pgobs.capture_state s
            WHERE s.backend = pg_backend_pid() AND s.scope = state_scope);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF 'UPDATE' = ANY(ops) THEN
            IF pgobs.needs_guard(NEW, marker) OR pgobs.needs_guard(OLD, marker) THEN
                PERFORM pgobs.write_update(
                    entity, key_columns, pgobs.guarded_doc(NEW), pgobs.guarded_doc(OLD));
            ELSE
                PERFORM pgobs.write_update(entity, key_columns, to_jsonb(NEW), to_jsonb(OLD));
            END IF;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF NOT moving AND NOT 'DELETE' = ANY(ops) THEN
            RETURN NULL;
        END IF;
        doc := CASE WHEN pgobs.needs_guard(OLD, marker) THEN pgobs.guarded_doc(OLD)
                    ELSE to_jsonb(OLD) END;
        IF moving THEN
            PERFORM pgobs.release_moved(entity, TG_ARGV[2], key_columns, state_scope);
            UPDATE pgobs.capture_state s SET held = doc
            WHERE s.backend = pg_backend_pid() AND s.scope = state_scope;
            RETURN NULL;
        END IF;
        INSERT INTO pgobs.events (entity_type, entity_id, event_type, old_data, tenant, actor)
        VALUES (entity, pgobs.entity_id(doc, key_columns), 'DELETE', doc,
                nullif(current_setting('pgobs.tenant', true), ''),
                nullif(current_setting('pgobs.actor', true), ''));
    ELSE
        IF moving THEN
            UPDATE pgobs.capture_state s SET held = NULL
            FROM (SELECT s2.held FROM pgobs.capture_state s2
                  WHERE s2.backend = pg_backend_pid() AND s2.scope = state_scope
                  FOR UPDATE) AS before
            WHERE s.backend = pg_backend_pid() AND s.scope = state_scope
            RETURNING before.held INTO held;
        END IF;
        IF held IS NULL AND NOT 'INSERT' = ANY(ops) OR held IS NOT NULL AND NOT 'UPDATE' = ANY(ops)
        THEN
            RETURN NULL;
        END IF;
        doc := CASE WHEN pgobs.needs_guard(NEW, marker) THEN pgobs.guarded_doc(NEW)
                    ELSE to_jsonb(NEW) END;
        IF held IS NOT NULL THEN
            PERFORM pgobs.write_update(entity, key_columns, doc, held);
        ELSE
            INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor)
            VALUES (entity, pgobs.entity_id(doc, key_columns), 'INSERT', doc,
                    nullif(current_setting('pgobs.tenant', true), ''),
                    nullif(current_setting('pgobs.actor', true), ''));
        END IF;
    END IF;
    PERFORM pgobs.wake_listeners();
    RETURN NULL;
END;
$$;

-- A held DELETE half whose INSERT never came (a BEFORE INSERT trigger on the new partition
-- dropped the row): the row is gone, so it is a DELETE event.
CREATE OR REPLACE FUNCTION pgobs.release_moved(
    entity text, ops text, key_columns text[], scope text
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    held jsonb;
BEGIN
    UPDATE pgobs.capture_state s SET held = NULL
    FROM (SELECT s2.held FROM pgobs.capture_state s2
          WHERE s2.backend = pg_backend_pid() AND s2.scope = release_moved.scope
          FOR UPDATE) AS before
    WHERE s.backend = pg_backend_pid() AND s.scope = release_moved.scope
    RETURNING before.held INTO held;
    IF held IS NULL OR NOT 'DELETE' = ANY(string_to_array(ops, ',')) THEN
        RETURN;
    END IF;
    INSERT INTO pgobs.events (entity_type, entity_id, event_type, old_data, tenant, actor)
    VALUES (entity, pgobs.entity_id(held, key_columns), 'DELETE', held,
            nullif(current_setting('pgobs.tenant', true), ''),
            nullif(current_setting('pgobs.actor', true), ''));
END;
$$;

-- Statement triggers on each partitioned table of a tracked tree. Before an UPDATE: its row
-- moves are to be paired. Before a DELETE in the same statement (only a MERGE has both): a
-- DELETE half could be a real delete, so nothing is paired and moves stay DELETE plus INSERT.
-- After the UPDATE: a held half is released and pairing ends. TG_ARGV: as capture_partitioned.
CREATE OR REPLACE FUNCTION pgobs.capture_moves() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
#variable_conflict use_variable
DECLARE
    state_scope text := 'moving_' || TG_ARGV[1] || '_' || pg_trigger_depth();
BEGIN
    IF TG_WHEN = 'AFTER' THEN
        PERFORM pgobs.release_moved(
            TG_ARGV[0], TG_ARGV[2], TG_ARGV[3:TG_NARGS - 1], state_scope);
    END IF;
    IF TG_WHEN = 'BEFORE' AND TG_OP = 'UPDATE' THEN
        INSERT INTO pgobs.capture_state (backend, scope) VALUES (pg_backend_pid(), state_scope)
        ON CONFLICT ON CONSTRAINT capture_state_pkey DO UPDATE SET held = NULL;
        PERFORM set_config('pgobs.' || state_scope, 'on', true);
    ELSE
        DELETE FROM pgobs.capture_state s
        WHERE s.backend = pg_backend_pid() AND s.scope = state_scope;
        PERFORM set_config('pgobs.' || state_scope, '', true);
    END IF;
    RETURN NULL;
END;
$$;

-- TRUNCATE of a tracked table: one event, entity_id NULL, data {"table": "schema.name"} naming
-- the table truncated. Fired BEFORE TRUNCATE on the tracked table and on each partition it had
-- when tracked; truncating a partitioned table marks its tree in pgobs.capture_state so its
-- partitions, which Postgres truncates with it, add no event of their own; the AFTER TRUNCATE
-- trigger on partitioned tables clears the mark. TG_ARGV: entity_type, root oid.
CREATE OR REPLACE FUNCTION pgobs.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
#variable_conflict use_variable
DECLARE
    mark text := 'truncating_' || TG_ARGV[1];
BEGIN
    IF TG_WHEN = 'AFTER' THEN
        DELETE FROM pgobs.capture_state s WHERE s.backend = pg_backend_pid() AND s.scope = mark;
        RETURN NULL;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pgobs.capture_state s WHERE s.backend = pg_backend_pid() AND s.scope = mark
    ) THEN
        RETURN NULL;
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = TG_RELID) = 'p' THEN
        INSERT INTO pgobs.capture_state (backend, scope) VALUES (pg_backend_pid(), mark);
    END IF;
    INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor)
    VALUES (TG_ARGV[0], NULL, 'TRUNCATE',
            jsonb_build_object('table', format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)),
            nullif(current_setting('pgobs.tenant', true), ''),
            nullif(current_setting('pgobs.actor', true), ''));
    PERFORM pgobs.wake_listeners();
    RETURN NULL;
END;
$$;

-- Write a custom event; returns its id. INSERT, UPDATE, DELETE and TRUNCATE are what capture
-- writes: observers trust them to be row changes, so emit refuses them.
CREATE OR REPLACE FUNCTION pgobs.emit(
    entity_type text,
    event_type  text,
    entity_id   text DEFAULT NULL,
    data        jsonb DEFAULT '{}'
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
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
    INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, tenant, actor)
    VALUES (entity_type, entity_id, event_type, data,
            nullif(current_setting('pgobs.tenant', true), ''),
            nullif(current_setting('pgobs.actor', true), ''))
    RETURNING id INTO new_id;
    PERFORM pgobs.wake_listeners();
    RETURN new_id;
END;
$$;

-- The pgobs triggers on rel that rel's own tracking installed (not ones cloned from a parent).
CREATE OR REPLACE FUNCTION pgobs.own_triggers(rel regclass) RETURNS SETOF name
LANGUAGE sql STABLE AS $$
    SELECT t.tgname FROM pg_catalog.pg_trigger t
    WHERE t.tgrelid = rel AND t.tgparentid = 0
        AND (t.tgname LIKE 'pgobs\_capture%' OR t.tgname = 'pgobs_wake')
$$;

-- The tracked table whose capture trigger rel inherits, if any (rel is one of its partitions).
CREATE OR REPLACE FUNCTION pgobs.tracked_ancestor(rel regclass) RETURNS regclass
LANGUAGE sql STABLE AS $$
    SELECT a.relid::regclass
    FROM pg_catalog.pg_partition_ancestors(rel) AS a
    WHERE a.relid <> rel AND EXISTS (SELECT 1 FROM pgobs.own_triggers(a.relid::regclass))
    LIMIT 1
$$;

-- Start capturing a table's row changes as events of entity_type (default: the table's name).
-- id_column: the column, or comma-separated columns, whose values make entity_id; default the
-- primary key. A table with neither is refused: its events could not say which row changed.
-- Partitioned tables are tracked whole; one of their partitions cannot be tracked on its own
-- while they are. pgobs' own tables are refused (tracking pgobs.events would recurse).
CREATE OR REPLACE FUNCTION pgobs.track(
    target      regclass,
    entity_type text DEFAULT NULL,
    id_column   text DEFAULT NULL,
    operations  text[] DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']
) RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    rel pg_class;
    entity text;
    key_columns text[];
    missing text;
    ops text[];
    row_ops text;
    ancestor regclass;
    member record;
    key_args text;
BEGIN
    SELECT * INTO rel FROM pg_class c WHERE c.oid = target;
    entity := coalesce(entity_type, rel.relname);
    IF rel.relnamespace = 'pgobs'::regnamespace THEN
        RAISE EXCEPTION 'pgobs.track: % is one of pgobs'' own tables', target
            USING HINT = 'track your application''s tables';
    END IF;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pgobs.track: % is not a table', target
            USING HINT = 'track the table it reads from';
    END IF;
    SELECT array_agg(DISTINCT upper(op)) INTO ops FROM unnest(operations) AS op;
    IF ops IS NULL OR NOT ops <@ ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] THEN
        RAISE EXCEPTION 'pgobs.track: operations must be among INSERT, UPDATE, DELETE, TRUNCATE, got %',
            operations;
    END IF;
    ancestor := pgobs.tracked_ancestor(target);
    IF ancestor IS NOT NULL THEN
        RAISE EXCEPTION 'pgobs.track: % is a partition of %, which is tracked and captures its rows',
            target, ancestor
            USING HINT = format('untrack %s first to track its partitions on their own', ancestor);
    END IF;
    SELECT t.relid::regclass INTO member
    FROM pg_partition_tree(target) AS t
    WHERE t.relid <> target AND EXISTS (SELECT 1 FROM pgobs.own_triggers(t.relid::regclass))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgobs.track: its partition % is tracked on its own', member.relid
            USING HINT = format('untrack %s first, then track %s', member.relid, target);
    END IF;
    IF id_column IS NOT NULL THEN
        SELECT array_agg(btrim(c) ORDER BY n) INTO key_columns
        FROM unnest(string_to_array(id_column, ',')) WITH ORDINALITY AS k(c, n);
        SELECT string_agg(k, ', ') INTO missing FROM unnest(key_columns) AS k
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = target AND a.attname = k AND a.attnum > 0 AND NOT a.attisdropped);
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'pgobs.track: % has no column %', target, missing
                USING HINT = 'give the id column(s) as they are named in the table';
        END IF;
    ELSE
        SELECT array_agg(a.attname::text ORDER BY k.n) INTO key_columns
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = target AND i.indisprimary;
        IF key_columns IS NULL THEN
            RAISE EXCEPTION 'pgobs.track: % has no primary key to take entity ids from', target
                USING HINT = 'name the column(s) that identify a row: --id-column col '
                    '(SQL: id_column => ''col''; several: ''a,b'')';
        END IF;
    END IF;
    PERFORM pgobs.untrack(target);  -- operations dropped from a re-track leave no trigger
    SELECT string_agg(format('%L', k), ', ') INTO key_args FROM unnest(key_columns) AS k;

    IF rel.relkind = 'p' THEN
        SELECT string_agg(op, ',' ORDER BY op) INTO row_ops FROM unnest(ops) AS op;
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION pgobs.capture_partitioned(%L, %L, %L, %s)',
            target, entity, target::oid, row_ops, key_args);
        FOR member IN
            SELECT t.relid::regclass AS relid, c.relkind, t.relid = target AS is_root
            FROM pg_partition_tree(target) AS t JOIN pg_class c ON c.oid = t.relid
        LOOP
            IF member.relkind = 'p' THEN
                EXECUTE format(
                    'CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %s FOR EACH STATEMENT '
                    'EXECUTE FUNCTION pgobs.capture_moves(%L, %L, %L, %s)',
                    CASE WHEN member.is_root THEN 'pgobs_capture_moves' ELSE 'pgobs_tree_moves' END,
                    member.relid, entity, target::oid, row_ops, key_args);
                EXECUTE format(
                    'CREATE TRIGGER %I AFTER UPDATE ON %s FOR EACH STATEMENT '
                    'EXECUTE FUNCTION pgobs.capture_moves(%L, %L, %L, %s)',
                    CASE WHEN member.is_root THEN 'pgobs_capture_moved' ELSE 'pgobs_tree_moved' END,
                    member.relid, entity, target::oid, row_ops, key_args);
            END IF;
            IF 'TRUNCATE' = ANY(ops) THEN
                EXECUTE format(
                    'CREATE TRIGGER %I BEFORE TRUNCATE ON %s FOR EACH STATEMENT '
                    'EXECUTE FUNCTION pgobs.capture_truncate(%L, %L)',
                    CASE WHEN member.is_root THEN 'pgobs_capture_truncate'
                         ELSE 'pgobs_tree_truncate' END,
                    member.relid, entity, target::oid);
                IF member.relkind = 'p' THEN
                    EXECUTE format(
                        'CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                        'EXECUTE FUNCTION pgobs.capture_truncate(%L, %L)',
                        CASE WHEN member.is_root THEN 'pgobs_capture_truncated'
                             ELSE 'pgobs_tree_truncated' END,
                        member.relid, entity, target::oid);
                END IF;
            END IF;
        END LOOP;
        RETURN;
    END IF;

    IF 'INSERT' = ANY(ops) THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture_insert AFTER INSERT ON %s '
            'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
            'EXECUTE FUNCTION pgobs.capture_rows(%L, %s)', target, entity, key_args);
    END IF;
    IF 'UPDATE' = ANY(ops) THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture_update AFTER UPDATE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION pgobs.capture_update(%L, %s)', target, entity, key_args);
    END IF;
    IF 'DELETE' = ANY(ops) THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture_delete AFTER DELETE ON %s '
            'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
            'EXECUTE FUNCTION pgobs.capture_rows(%L, %s)', target, entity, key_args);
    END IF;
    IF 'TRUNCATE' = ANY(ops) THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_capture_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT '
            'EXECUTE FUNCTION pgobs.capture_truncate(%L, %L)', target, entity, target::oid);
    END IF;
    SELECT string_agg(op, ' OR ') INTO row_ops FROM unnest(ops) AS op WHERE op <> 'TRUNCATE';
    IF row_ops IS NOT NULL THEN
        EXECUTE format(
            'CREATE TRIGGER pgobs_wake AFTER %s ON %s FOR EACH STATEMENT '
            'EXECUTE FUNCTION pgobs.wake()', row_ops, target);
    END IF;
END;
$$;

-- Stop capturing a table (a partitioned one with all its partitions).
CREATE OR REPLACE FUNCTION pgobs.untrack(target regclass) RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    ancestor regclass := pgobs.tracked_ancestor(target);
    installed record;
BEGIN
    IF ancestor IS NOT NULL THEN
        RAISE EXCEPTION 'pgobs.untrack: % is a partition of %, which is tracked', target, ancestor
            USING HINT = format('untrack %s to stop capturing its partitions', ancestor);
    END IF;
    FOR installed IN
        SELECT target AS relid, name FROM pgobs.own_triggers(target) AS name
        UNION ALL
        SELECT t.tgrelid::regclass, t.tgname
        FROM pg_partition_tree(target) AS p
        JOIN pg_trigger t ON t.tgrelid = p.relid
        WHERE p.relid <> target AND t.tgname LIKE 'pgobs\_tree\_%'
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', installed.name, installed.relid);
    END LOOP;
END;
$$;

-- Least privilege: nothing of pgobs is executable by PUBLIC (a later migration that adds a
-- function revokes it too; tests/integration/test_privileges.py checks). A trigger function's EXECUTE right is checked when a trigger is created, so no other role can
-- attach pgobs' capture to a table of its own and mint row-change events; the triggers
-- pgobs.track installs keep firing for every role that writes the tracked tables.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgobs FROM PUBLIC;

-- The three group roles (NOLOGIN; grant them to your login roles) and their rights in this
-- database. Roles belong to the whole cluster: an existing one is reused. Idempotent; run it
-- again as a role with CREATEROLE when the migration could not (see README, Roles).
--   pgobs_app:      emit custom events (capture needs no right at all).
--   pgobs_operator: read events, jobs, the DLQ and the audit trail; retry and purge dead letters.
--   pgobs_worker:   what `pgobs worker` does: read events, run the job queue, write checkpoints,
--                   dead letters, the audit trail, the dedup, cache and circuit tables.
-- Dead letters back to the queue with fresh attempts, in the transaction that removes them; the
-- job keeps the event as its payload, so a retry works even after the event was purged. The
-- operator role runs this instead of writing jobs itself: a job it could write would be an event
-- it could forge.
CREATE OR REPLACE FUNCTION pgobs.retry_dead_letters(ids bigint[]) RETURNS SETOF bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH taken AS (
        DELETE FROM pgobs.dlq WHERE id = ANY(ids) RETURNING *
    )
    INSERT INTO pgobs.jobs (event_id, observer, action, action_index, action_type, payload,
                            priority, max_attempts, errors)
    SELECT event_id, observer, action, action_index, action_type, coalesce(payload, event),
           priority, max_attempts,
           errors || jsonb_build_array(jsonb_build_object('retried_from_dlq', id, 'at', now()))
    FROM taken
    RETURNING id
$$;
REVOKE EXECUTE ON FUNCTION pgobs.retry_dead_letters(bigint[]) FROM PUBLIC;

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
    GRANT EXECUTE ON FUNCTION pgobs.emit(text, text, text, jsonb) TO pgobs_app;

    GRANT SELECT ON pgobs.events, pgobs.jobs, pgobs.dlq, pgobs.audit, pgobs.checkpoints,
        pgobs.listeners, pgobs.circuits TO pgobs_operator;
    GRANT EXECUTE ON FUNCTION pgobs.retry_dead_letters(bigint[]) TO pgobs_operator;
    GRANT DELETE ON pgobs.dlq TO pgobs_operator;

    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgobs TO pgobs_worker;
    -- The listener reads events through these (0004).
    GRANT EXECUTE ON FUNCTION
        pgobs.slice_events(pg_snapshot, pg_snapshot, xid8, bigint, integer),
        pgobs.read_events(pg_snapshot, pg_snapshot, xid8, bigint, integer, bigint)
        TO pgobs_worker;
    REVOKE INSERT, UPDATE, DELETE ON pgobs.events FROM pgobs_worker;
    REVOKE ALL ON pgobs.capture_state FROM pgobs_worker;
    REVOKE INSERT, UPDATE, DELETE ON pgobs.schema_migrations FROM pgobs_worker;
    -- Tables of later migrations are the queue's and the worker's to use as well.
    ALTER DEFAULT PRIVILEGES IN SCHEMA pgobs
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO pgobs_worker;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.create_roles() FROM PUBLIC;

-- Run now when the roles exist already (another database of the cluster created them) or the
-- migrating role may create them; otherwise the migration still succeeds, and says what to run.
DO $$
BEGIN
    IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user)
        OR (SELECT count(*) FROM pg_roles
            WHERE rolname IN ('pgobs_app', 'pgobs_operator', 'pgobs_worker')) = 3
    THEN
        PERFORM pgobs.create_roles();
    ELSE
        RAISE NOTICE 'pgobs: roles pgobs_app, pgobs_operator and pgobs_worker were not created '
            '(% cannot create roles); a role with CREATEROLE can run SELECT pgobs.create_roles()',
            current_user;
    END IF;
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0005');
COMMIT;
