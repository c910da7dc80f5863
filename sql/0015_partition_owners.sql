-- pgobs schema, version 0015: the owner of a tracked partitioned table may create and attach
-- its partitions; capture writes only for tables pgobs.track tracked.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0015_partition_owners.sql`.
--
-- Postgres clones a partitioned table's row trigger to a new partition as the role that creates
-- or attaches it, and checks that role's EXECUTE right on the trigger function: with capture's
-- functions revoked from PUBLIC (0005), the table's owner could no longer add a partition once
-- the table was tracked ("permission denied for function"). track() now grants the three
-- functions a partitioned tree's triggers call to the table's owner. That role could attach them
-- to tables of its own with any arguments, so the functions no longer trust their arguments:
-- each checks that the table it fires on is, or is a partition of, a table tracked with that
-- entity type (pgobs.tracked, written by track() and untrack()), and refuses to write
-- otherwise. The registry names tables by regclass, so a dump and restore keeps it. The
-- check is one primary-key lookup per row of a partitioned table (about 15 us, measured on
-- 30,000-row INSERTs: 2.7 s before, 3.2 s after); plain tables' capture does not change.
BEGIN;

CREATE TABLE pgobs.tracked (
    root   regclass PRIMARY KEY,
    entity text NOT NULL
);
COMMENT ON TABLE pgobs.tracked IS
    'tables pgobs.track tracked and their entity type: capture writes only for them and their '
    'partitions';

-- Every table tracked before this migration: the arguments of the triggers track() installed.
INSERT INTO pgobs.tracked (root, entity)
SELECT DISTINCT ON (a.args[2]) a.args[2]::oid::regclass, a.args[1]
FROM pg_catalog.pg_trigger AS t
CROSS JOIN LATERAL (SELECT pgobs.trigger_arguments(t.tgargs) AS args) AS a
WHERE t.tgparentid = 0
  AND t.tgfoid IN ('pgobs.capture_partitioned()'::regprocedure,
                   'pgobs.capture_moves()'::regprocedure,
                   'pgobs.capture_truncate()'::regprocedure)
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = a.args[2]::oid)
ORDER BY a.args[2], t.tgrelid::oid = a.args[2]::oid DESC;
INSERT INTO pgobs.tracked (root, entity)
SELECT DISTINCT ON (t.tgrelid) t.tgrelid::regclass, a.args[1]
FROM pg_catalog.pg_trigger AS t
CROSS JOIN LATERAL (SELECT pgobs.trigger_arguments(t.tgargs) AS args) AS a
WHERE t.tgparentid = 0 AND t.tgname LIKE E'pgobs\\_capture\\_%'
  AND t.tgfoid IN ('pgobs.capture_rows()'::regprocedure, 'pgobs.capture_update()'::regprocedure)
ON CONFLICT (root) DO NOTHING;

-- The slow path of capture's check (the fast one looks the table and its tree's root up): a
-- table tracked inside a bigger tree is found walking up the tree; else the capture trigger is
-- one pgobs.track did not install, and its writes would be forged events.
CREATE FUNCTION pgobs.check_capture(rel oid, entity text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pgobs.tracked AS t
        WHERE t.root IN (SELECT a.relid FROM pg_partition_ancestors(rel) AS a)
          AND t.entity = check_capture.entity
    ) THEN
        RETURN;
    END IF;
    RAISE EXCEPTION 'pgobs: % is not tracked as %: a capture trigger on it was not installed '
        'by pgobs.track, and writes nothing', rel::regclass, quote_literal(entity)
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'drop that trigger: capture is what pgobs track TABLE installs';
END;
$$;
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
    IF NOT EXISTS (
        SELECT 1 FROM pgobs.tracked AS t
        WHERE t.root IN (TG_RELID::regclass, pg_partition_root(TG_RELID)) AND t.entity = TG_ARGV[0]
    ) THEN
        PERFORM pgobs.check_capture(TG_RELID, TG_ARGV[0]);
    END IF;
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


CREATE OR REPLACE FUNCTION pgobs.capture_moves() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
#variable_conflict use_variable
DECLARE
    state_scope text := 'moving_' || TG_ARGV[1] || '_' || pg_trigger_depth();
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pgobs.tracked AS t
        WHERE t.root IN (TG_RELID::regclass, pg_partition_root(TG_RELID)) AND t.entity = TG_ARGV[0]
    ) THEN
        PERFORM pgobs.check_capture(TG_RELID, TG_ARGV[0]);
    END IF;
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


CREATE OR REPLACE FUNCTION pgobs.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A table column named like a variable (marker, tenant, actor) means the variable.
#variable_conflict use_variable
DECLARE
    mark text := 'truncating_' || TG_ARGV[1];
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pgobs.tracked AS t
        WHERE t.root IN (TG_RELID::regclass, pg_partition_root(TG_RELID)) AND t.entity = TG_ARGV[0]
    ) THEN
        PERFORM pgobs.check_capture(TG_RELID, TG_ARGV[0]);
    END IF;
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
    -- What capture checks before it writes (0015), and the right a partitioned table's owner
    -- needs to create or attach partitions: Postgres clones the capture trigger as that role.
    INSERT INTO pgobs.tracked (root, entity) VALUES (target, entity)
    ON CONFLICT (root) DO UPDATE SET entity = EXCLUDED.entity;
    IF rel.relkind = 'p' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION pgobs.capture_partitioned(), '
                       'pgobs.capture_moves(), pgobs.capture_truncate() TO %I',
                       pg_get_userbyid(rel.relowner));
    END IF;
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
    DELETE FROM pgobs.tracked AS t WHERE t.root = target;
END;
$$;


REVOKE EXECUTE ON FUNCTION pgobs.check_capture(oid, text) FROM PUBLIC;

-- The owners of tables tracked before this migration get what track() now grants.
DO $$
DECLARE
    owner text;
BEGIN
    FOR owner IN
        SELECT DISTINCT pg_get_userbyid(c.relowner)
        FROM pgobs.tracked AS t JOIN pg_catalog.pg_class AS c ON c.oid = t.root::oid
        WHERE c.relkind = 'p'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION pgobs.capture_partitioned(), '
                       'pgobs.capture_moves(), pgobs.capture_truncate() TO %I', owner);
    END LOOP;
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0015');
COMMIT;
