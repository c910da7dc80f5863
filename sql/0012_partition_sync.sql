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

-- A trigger's arguments (tgargs: each one NUL-terminated). encode(..., 'escape') writes a NUL
-- as \000 and a backslash as \\; each \\ is rewritten \134 first, so that every backslash starts
-- a four-character escape and \000 is found only where a NUL was (an argument holding a
-- backslash followed by 000 once split there, and the sync's error failed all DDL). E'' strings:
-- a session with standard_conforming_strings off reads them the same.
CREATE FUNCTION pgobs.trigger_arguments(args bytea) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(convert_from(decode(u.x, 'escape'), 'UTF8') ORDER BY u.n)
                        FILTER (WHERE u.n < cardinality(parts.a)), '{}')
    FROM (SELECT string_to_array(replace(encode(args, 'escape'), E'\\\\', E'\\134'), E'\\000')
            AS a) AS parts
    CROSS JOIN LATERAL unnest(parts.a) WITH ORDINALITY AS u(x, n)
$$;

-- The pgobs triggers on rel that rel's own tracking installed (not ones cloned from a parent):
-- only those calling pgobs' functions, since anyone may name a trigger of theirs pgobs_capture.
CREATE OR REPLACE FUNCTION pgobs.own_triggers(rel regclass) RETURNS SETOF name
LANGUAGE sql STABLE AS $$
    SELECT t.tgname FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid AND f.pronamespace = 'pgobs'::regnamespace
    WHERE t.tgrelid = rel AND t.tgparentid = 0
        AND (t.tgname LIKE E'pgobs\\_capture%' OR t.tgname = 'pgobs_wake')
$$;

-- The tracked partitioned tables: their root row trigger, which only pgobs.track can create
-- (capture_partitioned is not executable by other roles), and the arguments it was given:
-- entity_type, root oid, operations joined by ',', then the key columns.
CREATE FUNCTION pgobs.tracked_trees(OUT root regclass, OUT args text[])
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    SELECT t.tgrelid::regclass, pgobs.trigger_arguments(t.tgargs)
    FROM pg_catalog.pg_trigger t
    WHERE t.tgname = 'pgobs_capture' AND t.tgparentid = 0
      AND t.tgfoid = 'pgobs.capture_partitioned()'::regprocedure
$$;

-- The arguments a tree was tracked with, read back from its row trigger.
CREATE FUNCTION pgobs.tracked_arguments(root regclass, OUT entity text, OUT id_column text,
                                        OUT operations text[])
LANGUAGE sql STABLE AS $$
    SELECT t.args[1], array_to_string(t.args[4:], ','), string_to_array(t.args[3], ',')
    FROM pgobs.tracked_trees() AS t
    WHERE t.root = tracked_arguments.root
$$;

-- The partitions of every tracked tree, with the arguments their statement triggers must have:
-- the root's own for the pairing of moves, its first two (entity_type, root oid) for TRUNCATE,
-- as the bytes pg_trigger holds, so that each trigger is compared without being parsed; and
-- whether the partition is tracked on its own. Set-based: a sync's cost is a walk of each tree
-- and an index probe per partition (a parse per trigger made every DDL of a database with a
-- 1,000-partition tracked tree take 160 ms).
CREATE FUNCTION pgobs.tracked_members(
    OUT root regclass, OUT args text[], OUT member regclass, OUT relkind "char",
    OUT moves_args bytea, OUT truncate_args bytea, OUT truncates boolean, OUT tracked_alone boolean)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    -- MATERIALIZED: each root's arguments parsed once, not once per partition.
    WITH tree AS MATERIALIZED (
        SELECT t.tgrelid::regclass AS root, t.tgargs, a.args,
               convert_to(a.args[1], 'UTF8') || decode('00', 'hex')
                   || convert_to(a.args[2], 'UTF8') || decode('00', 'hex') AS truncate_args
        FROM pg_catalog.pg_trigger t
        CROSS JOIN LATERAL (SELECT pgobs.trigger_arguments(t.tgargs) AS args) AS a
        WHERE t.tgname = 'pgobs_capture' AND t.tgparentid = 0
          AND t.tgfoid = 'pgobs.capture_partitioned()'::regprocedure)
    SELECT tree.root, tree.args, p.relid::regclass, m.relkind, tree.tgargs, tree.truncate_args,
           'TRUNCATE' = ANY(string_to_array(tree.args[3], ',')),
           EXISTS (SELECT 1 FROM pgobs.own_triggers(p.relid::regclass))
    FROM tree
    CROSS JOIN LATERAL pg_catalog.pg_partition_tree(tree.root) AS p
    JOIN pg_catalog.pg_class m ON m.oid = p.relid
    WHERE p.relid <> tree.root
$$;

-- Every member of a tracked partitioned tree gets the statement triggers `track` gives the
-- members it finds (with the tree's own arguments: a member that came from another tree has
-- its triggers replaced); tables that left a tracked tree lose that tree's triggers; a table
-- tracked on its own cannot join a tracked tree (its rows would be captured twice).
-- Only the members that need it are touched (DROP TRIGGER locks a table exclusively: re-tracking
-- the whole tree once locked every partition for an ATTACH). Idempotent, and cheap when nothing
-- changed (a catalog read).
CREATE FUNCTION pgobs.sync_tracked_partitions() RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    member record;
    stale record;
    arg_list text;
BEGIN
    SELECT m.member, m.root INTO member
    FROM pgobs.tracked_members() AS m WHERE m.tracked_alone LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgobs: % is tracked on its own and would be captured twice as a '
            'partition of %, which is tracked', member.member, member.root
            USING HINT = format('untrack %s first (pgobs untrack %s)', member.member, member.member);
    END IF;
    FOR stale IN
        SELECT t.tgrelid::regclass AS relid, t.tgname
        FROM pg_catalog.pg_trigger t
        JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid AND f.pronamespace = 'pgobs'::regnamespace
        WHERE t.tgname LIKE E'pgobs\\_tree\\_%'
          AND NOT EXISTS (SELECT 1 FROM pgobs.tracked_members() AS m WHERE m.member = t.tgrelid)
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', stale.tgname, stale.relid);
    END LOOP;
    FOR member IN
        SELECT m.* FROM pgobs.tracked_members() AS m
        WHERE (SELECT count(*) FROM pg_catalog.pg_trigger x
               WHERE x.tgrelid = m.member AND x.tgname LIKE E'pgobs\\_tree\\_%'
                 AND x.tgargs = CASE WHEN x.tgname LIKE '%truncate%' THEN m.truncate_args
                                     ELSE m.moves_args END)
              <> CASE WHEN m.relkind = 'p' THEN 2 ELSE 0 END
                 + CASE WHEN NOT m.truncates THEN 0 WHEN m.relkind = 'p' THEN 2 ELSE 1 END
    LOOP
        FOR stale IN
            SELECT t.tgname FROM pg_catalog.pg_trigger t
            WHERE t.tgrelid = member.member AND t.tgname LIKE E'pgobs\\_tree\\_%'
        LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', stale.tgname, member.member);
        END LOOP;
        SELECT string_agg(format('%L', a), ', ' ORDER BY n) INTO arg_list
        FROM unnest(member.args) WITH ORDINALITY AS u(a, n);
        IF member.relkind = 'p' THEN
            EXECUTE format(
                'CREATE TRIGGER pgobs_tree_moves BEFORE UPDATE OR DELETE ON %s FOR EACH STATEMENT '
                'EXECUTE FUNCTION pgobs.capture_moves(%s)', member.member, arg_list);
            EXECUTE format(
                'CREATE TRIGGER pgobs_tree_moved AFTER UPDATE ON %s FOR EACH STATEMENT '
                'EXECUTE FUNCTION pgobs.capture_moves(%s)', member.member, arg_list);
        END IF;
        IF member.truncates THEN
            EXECUTE format(
                'CREATE TRIGGER pgobs_tree_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT '
                'EXECUTE FUNCTION pgobs.capture_truncate(%L, %L)',
                member.member, member.args[1], member.args[2]);
            IF member.relkind = 'p' THEN
                EXECUTE format(
                    'CREATE TRIGGER pgobs_tree_truncated AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                    'EXECUTE FUNCTION pgobs.capture_truncate(%L, %L)',
                    member.member, member.args[1], member.args[2]);
            END IF;
        END IF;
    END LOOP;
END;
$$;

-- Runs the sync only after DDL on a partitioned table or a partition (an ATTACH or DETACH names
-- the parent): the sync walks every tracked tree, which with 1,000 partitions costs ~100 ms, and
-- every other CREATE TABLE or ALTER TABLE of the application must stay as cheap as before.
-- standard_conforming_strings: the functions it reaches are parsed in the DDL's session.
CREATE FUNCTION pgobs.sync_tracked_partitions_on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
        JOIN pg_catalog.pg_class r ON r.oid = c.objid
        WHERE c.classid = 'pg_catalog.pg_class'::regclass
          AND (r.relkind = 'p' OR r.relispartition))
    THEN
        PERFORM pgobs.sync_tracked_partitions();
    END IF;
END;
$$;
REVOKE EXECUTE ON FUNCTION pgobs.trigger_arguments(bytea), pgobs.tracked_trees(),
    pgobs.tracked_members(),
    pgobs.tracked_arguments(regclass), pgobs.sync_tracked_partitions(),
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
