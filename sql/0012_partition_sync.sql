-- pgobs schema, version 0012: partitions created, attached or detached after `track` are
-- captured, or stop being captured, like the ones the table had when it was tracked.
-- Applied by `pgobs migrate`; also works as `psql -v ON_ERROR_STOP=1 -f sql/0012_partition_sync.sql`.
--
-- A tracked partitioned table's row trigger is inherited by every partition, present and future,
-- but its statement triggers (TRUNCATE, and the pairing of moves inside a sub-partitioned tree)
-- are installed per table by `track`: a partition added later truncated without an event, and a
-- detached one kept emitting TRUNCATE events for the tree it had left. An event trigger now
-- re-tracks a tree whose members changed after every CREATE TABLE and ALTER TABLE, and removes the
-- tree's triggers from tables that left it. Event triggers need a superuser: a migration run
-- without one says so, and then `pgobs track` run again after partitioning DDL does the same.
BEGIN;

-- The arguments a tree was tracked with, read back from its row trigger: capture_partitioned's
-- (entity_type, root oid, operations joined by ',', key columns...). tgargs holds them
-- NUL-terminated; encode(..., 'escape') writes each NUL as \000, decode() reverses the rest.
CREATE FUNCTION pgobs.tracked_arguments(root regclass, OUT entity text, OUT id_column text,
                                        OUT operations text[])
LANGUAGE sql STABLE AS $$
    SELECT a[1], array_to_string(a[4:], ','), string_to_array(a[3], ',')
    FROM pg_catalog.pg_trigger t
    CROSS JOIN LATERAL (
        SELECT array_agg(convert_from(decode(x, 'escape'), 'UTF8') ORDER BY n) AS a
        FROM unnest(string_to_array(encode(t.tgargs, 'escape'), '\000')) WITH ORDINALITY
            AS u(x, n)
        WHERE x <> '') AS args
    WHERE t.tgrelid = root AND t.tgname = 'pgobs_capture' AND t.tgparentid = 0
$$;

-- Every tracked partitioned tree whose members lack the statement triggers `track` gives them
-- is tracked again; tables that left a tracked tree lose that tree's triggers; a table tracked
-- on its own cannot join a tracked tree (its rows would be captured twice). Idempotent, and
-- cheap when nothing changed (a catalog read).
CREATE FUNCTION pgobs.sync_tracked_partitions() RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    tree record;
    stale record;
    clash record;
BEGIN
    SELECT p.relid::regclass AS member, t.tgrelid::regclass AS root INTO clash
    FROM pg_catalog.pg_trigger t
    CROSS JOIN LATERAL pg_catalog.pg_partition_tree(t.tgrelid) AS p
    WHERE t.tgname = 'pgobs_capture' AND t.tgparentid = 0 AND p.relid <> t.tgrelid
      AND EXISTS (SELECT 1 FROM pgobs.own_triggers(p.relid::regclass))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgobs: % is tracked on its own and would be captured twice as a '
            'partition of %, which is tracked', clash.member, clash.root
            USING HINT = format('untrack %s first (pgobs untrack %s)', clash.member, clash.member);
    END IF;
    FOR stale IN
        SELECT t.tgrelid::regclass AS relid, t.tgname
        FROM pg_catalog.pg_trigger t
        WHERE t.tgname LIKE 'pgobs\_tree\_%' AND pgobs.tracked_ancestor(t.tgrelid) IS NULL
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', stale.tgname, stale.relid);
    END LOOP;
    FOR tree IN
        SELECT t.tgrelid::regclass AS root, a.*
        FROM pg_catalog.pg_trigger t
        JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid AND c.relkind = 'p'
        CROSS JOIN LATERAL pgobs.tracked_arguments(t.tgrelid) AS a
        WHERE t.tgname = 'pgobs_capture' AND t.tgparentid = 0
          AND EXISTS (
            SELECT 1
            FROM pg_catalog.pg_partition_tree(t.tgrelid) AS p
            JOIN pg_catalog.pg_class m ON m.oid = p.relid
            WHERE p.relid <> t.tgrelid
              AND ((m.relkind = 'p' AND NOT EXISTS (
                        SELECT 1 FROM pg_catalog.pg_trigger x
                        WHERE x.tgrelid = p.relid AND x.tgname = 'pgobs_tree_moves'))
                   OR ('TRUNCATE' = ANY(a.operations) AND NOT EXISTS (
                        SELECT 1 FROM pg_catalog.pg_trigger x
                        WHERE x.tgrelid = p.relid AND x.tgname = 'pgobs_tree_truncate'))))
    LOOP
        PERFORM pgobs.track(tree.root, tree.entity, tree.id_column, tree.operations);
    END LOOP;
END;
$$;

CREATE FUNCTION pgobs.sync_tracked_partitions_on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pgobs.sync_tracked_partitions();
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.tracked_arguments(regclass), pgobs.sync_tracked_partitions(),
    pgobs.sync_tracked_partitions_on_ddl() FROM PUBLIC;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER pgobs_sync_tracked_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
            EXECUTE FUNCTION pgobs.sync_tracked_partitions_on_ddl();
    ELSE
        RAISE WARNING 'pgobs: not a superuser, so partitions added to a tracked table later are '
            'not given its TRUNCATE capture automatically'
            USING HINT = 'run pgobs track on the partitioned table again after adding partitions, '
                         'or migrate as a superuser';
    END IF;
END;
$$;

INSERT INTO pgobs.schema_migrations (version) VALUES ('0012');
COMMIT;
