-- pgobs schema, version 0015: the owner of a tracked partitioned table can create and attach
-- its partitions again.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0015_partition_owners.sql`.
--
-- Postgres copies a partitioned table's row trigger to a new partition as the role that creates
-- or attaches it, and checks that role's EXECUTE right on the trigger function. With capture's
-- functions revoked from PUBLIC (0005), the table's owner could no longer add a partition once
-- the table was tracked ("permission denied for function"). EXECUTE on a trigger function is
-- only ever used to create triggers: an event trigger grants capture_partitioned to the owner
-- of each partitioned table track() installs capture on (and to its next owner), and another
-- refuses every CREATE TRIGGER that calls one of pgobs' functions unless a superuser or the
-- pgobs schema's owner runs it (pgobs.track, the partition sync of 0012, which runs as its
-- superuser owner). So the owner can add partitions,
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

-- The owners of tracked partitioned tables among ``rels`` (all of them when NULL) hold the
-- right their partitions need (idempotent). As its superuser owner: a grant is the function
-- owner's to make.
CREATE FUNCTION pgobs.grant_capture_right(rels oid[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner text;
BEGIN
    FOR owner IN
        SELECT DISTINCT pg_get_userbyid(r.relowner)
        FROM pg_trigger AS t JOIN pg_class AS r ON r.oid = t.tgrelid AND r.relkind = 'p'
        WHERE t.tgname = 'pgobs_capture' AND t.tgparentid = 0
          AND t.tgfoid = 'pgobs.capture_partitioned()'::regprocedure
          AND (rels IS NULL OR r.oid = ANY(rels))
          AND NOT has_function_privilege(r.relowner, 'pgobs.capture_partitioned()', 'EXECUTE')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION pgobs.capture_partitioned() TO %I', owner);
    END LOOP;
END;
$$;

-- After CREATE TRIGGER (pgobs.track installing capture) and ALTER TABLE (OWNER TO among
-- others): the tables the command touched. One catalog read when it touched none tracked.
CREATE FUNCTION pgobs.grant_capture_to_owners() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pgobs.grant_capture_right(ARRAY(
        SELECT CASE WHEN c.classid = 'pg_trigger'::regclass
                    THEN (SELECT t.tgrelid FROM pg_trigger AS t WHERE t.oid = c.objid)
                    ELSE c.objid END
        FROM pg_event_trigger_ddl_commands() AS c
        WHERE c.classid IN ('pg_class'::regclass, 'pg_trigger'::regclass)));
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.grant_capture_right(oid[]), pgobs.grant_capture_to_owners()
    FROM PUBLIC;

-- The guards, and the right for the owners of tables tracked before this migration.
DO $$
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
    -- CREATE TABLE and ALTER TABLE alone); a table track() captures, or its new owner, gets
    -- the right; so do the owners of tables tracked before this migration.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger
               WHERE evtname = 'pgobs_sync_tracked_partitions') THEN
        DROP EVENT TRIGGER pgobs_sync_tracked_partitions;
        CREATE EVENT TRIGGER pgobs_sync_tracked_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE SCHEMA')
            EXECUTE FUNCTION pgobs.sync_tracked_partitions_on_ddl();
    END IF;
    CREATE EVENT TRIGGER pgobs_capture_owners ON ddl_command_end
        WHEN TAG IN ('CREATE TRIGGER', 'ALTER TABLE')
        EXECUTE FUNCTION pgobs.grant_capture_to_owners();
    PERFORM pgobs.grant_capture_right(NULL);
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0015');
COMMIT;
