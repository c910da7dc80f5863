-- pgobs schema, version 0015: the owner of a tracked partitioned table can create and attach
-- its partitions again.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0015_partition_owners.sql`.
--
-- Postgres copies a partitioned table's row trigger to a new partition as the role that creates
-- or attaches it, and checks that role's EXECUTE right on the trigger function. With capture's
-- functions revoked from PUBLIC (0005), the table's owner could no longer add a partition once
-- the table was tracked ("permission denied for function"). EXECUTE on a trigger function is
-- only ever used to create triggers: track() now grants capture_partitioned to the owner of a
-- partitioned table it tracks, and an event trigger refuses every CREATE TRIGGER that calls one
-- of pgobs' functions unless a superuser or the pgobs schema's owner runs it (pgobs.track, the
-- partition sync of 0012, which runs as its superuser owner). So the owner can add partitions,
-- and still cannot attach capture to a table of its own to mint events. Nothing is checked per
-- row: capture costs what it did. Event triggers need a superuser: a migration run without one
-- grants nothing and says so (the owner then adds partitions as a superuser, as before).
BEGIN;

-- Who may create triggers that call pgobs' functions, or rename them (the partition sync knows
-- its triggers by name: a renamed one made a partition look tracked on its own, and every
-- partition DDL of the database failed): a superuser, or a member of the role that owns the
-- schema (the role that migrates and tracks). Triggers given as elements of CREATE SCHEMA are
-- listed by that command too. Cloned triggers are no command at all, so adding a partition
-- does not come here.
CREATE FUNCTION pgobs.guard_capture_triggers() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    made record;
BEGIN
    IF (SELECT r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user)
       OR pg_has_role(current_user, (SELECT n.nspowner FROM pg_namespace AS n
                                     WHERE n.nspname = 'pgobs'), 'MEMBER') THEN
        RETURN;
    END IF;
    FOR made IN
        SELECT t.tgname, t.tgrelid::regclass AS relid, f.proname, c.command_tag
        FROM pg_event_trigger_ddl_commands() AS c
        JOIN pg_trigger AS t ON t.oid = c.objid
        JOIN pg_proc AS f ON f.oid = t.tgfoid
        WHERE c.classid = 'pg_trigger'::regclass
          AND f.pronamespace = 'pgobs'::regnamespace
    LOOP
        RAISE EXCEPTION 'pgobs: % of trigger % on %, which calls pgobs.%, is for pgobs track '
            'alone', lower(made.command_tag), made.tgname, made.relid, made.proname
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'capture a table with: pgobs track TABLE (as the role that migrates)';
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.guard_capture_triggers() FROM PUBLIC;

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
        -- Postgres copies the row trigger to each partition created or attached later as the
        -- role that does it, and checks its right to the function: the table's owner gets it
        -- where the guard below stops it from attaching capture anywhere else.
        IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgobs_guard_capture'
                   AND evtenabled <> 'D') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION pgobs.capture_partitioned() TO %I',
                           pg_get_userbyid(rel.relowner));
        END IF;
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


-- After ALTER TABLE (OWNER TO among others): the owner of every tracked partitioned table the
-- command touched holds the right its partitions need (idempotent; one catalog read when the
-- command touched none). As its superuser owner, since a grant is the function owner's to make.
CREATE FUNCTION pgobs.grant_capture_to_owners() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner text;
BEGIN
    FOR owner IN
        SELECT DISTINCT pg_get_userbyid(r.relowner)
        FROM pg_event_trigger_ddl_commands() AS c
        JOIN pg_class AS r ON r.oid = c.objid AND r.relkind = 'p'
        JOIN pg_trigger AS t ON t.tgrelid = r.oid AND t.tgname = 'pgobs_capture'
             AND t.tgparentid = 0 AND t.tgfoid = 'pgobs.capture_partitioned()'::regprocedure
        WHERE c.classid = 'pg_class'::regclass
          AND NOT has_function_privilege(r.relowner, 'pgobs.capture_partitioned()', 'EXECUTE')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION pgobs.capture_partitioned() TO %I', owner);
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.grant_capture_to_owners() FROM PUBLIC;

-- The guards, and the right for the owners of tables tracked before this migration.
DO $$
DECLARE
    owner text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE WARNING 'pgobs: not a superuser, so the owner of a tracked partitioned table '
            'cannot create or attach its partitions (Postgres checks its right to the capture '
            'function, which is granted only where an event trigger guards it)'
            USING HINT = 'add partitions of tracked tables as a superuser, or migrate as one';
        RETURN;
    END IF;
    CREATE EVENT TRIGGER pgobs_guard_capture ON ddl_command_end
        WHEN TAG IN ('CREATE TRIGGER', 'ALTER TRIGGER', 'CREATE SCHEMA')
        EXECUTE FUNCTION pgobs.guard_capture_triggers();
    -- A partition created as an element of CREATE SCHEMA is synced too (0012 listened to
    -- CREATE TABLE and ALTER TABLE alone), and a tracked table's new owner gets the right.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger
               WHERE evtname = 'pgobs_sync_tracked_partitions') THEN
        DROP EVENT TRIGGER pgobs_sync_tracked_partitions;
        CREATE EVENT TRIGGER pgobs_sync_tracked_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE SCHEMA')
            EXECUTE FUNCTION pgobs.sync_tracked_partitions_on_ddl();
    END IF;
    CREATE EVENT TRIGGER pgobs_capture_owners ON ddl_command_end
        WHEN TAG IN ('ALTER TABLE')
        EXECUTE FUNCTION pgobs.grant_capture_to_owners();
    FOR owner IN
        SELECT DISTINCT pg_get_userbyid(c.relowner)
        FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
        WHERE t.tgname = 'pgobs_capture' AND t.tgparentid = 0 AND c.relkind = 'p'
          AND t.tgfoid = 'pgobs.capture_partitioned()'::regprocedure
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION pgobs.capture_partitioned() TO %I', owner);
    END LOOP;
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0015');
COMMIT;
